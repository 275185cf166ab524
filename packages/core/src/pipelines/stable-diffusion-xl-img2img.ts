import type { StableDiffusionXLTensorName } from '../contract.js';
import { InvalidArgumentError } from '../errors.js';
import type { OnnxModel } from '../runtime/onnx-model.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import type { Tensor } from '../tensor.js';
import { denoise } from './denoise.js';
import { startGeneration } from './generation.js';
import {
  defaultImageSize,
  prepareImageToImageLatents,
  preprocessImage,
  requireVaeEncoder,
  strengthTimesteps,
  type ImageSize,
} from './image-latents.js';
import type { ImageInput } from './images.js';
import type { StableDiffusionXLBaseOptions } from './stable-diffusion-xl.js';
import {
  checkMicroConditioning,
  conditioningXL,
  encodePromptXL,
  loadStableDiffusionXLComponents,
  predictNoiseXL,
  timeIdsTensor,
  type CropCoordsTuple,
  type StableDiffusionXLComponents,
  type StableDiffusionXLLoadOptions,
} from './stable-diffusion-xl-steps.js';
import { finishOutput, type OutputType, type PipelineOutput } from './steps.js';
import { prepareIPAdapter } from './ip-adapter.js';
import { generationSettings } from './validation.js';
import { SDXL_IMAGE_CFG_LAYOUT } from './cfg-layouts.js';

export interface StableDiffusionXLImg2ImgLoadOptions extends StableDiffusionXLLoadOptions {
  /**
   * Condition on aesthetic scores instead of the target size (UNets trained with 5 time ids, like the refiner's).
   * Default: model_index.json's `requires_aesthetics_score`, else false (the base model).
   */
  requiresAestheticsScore?: boolean;
}

export interface StableDiffusionXLImg2ImgOptions<
  Requested extends StableDiffusionXLTensorName = 'latents',
  Output extends OutputType = 'image',
  BeginRequested extends StableDiffusionXLTensorName = 'latents',
> extends StableDiffusionXLBaseOptions<Requested, Output, BeginRequested> {
  /** The starting picture, used at its own size rounded down to a multiple of the VAE factor (8). */
  image: ImageInput;
  /** How far to move away from the picture, in [0, 1] (default 0.3): only the last `strength` of the schedule runs. */
  strength?: number;
  /**
   * Used with `requiresAestheticsScore` only: diffusers' base path builds the negative time ids with
   * `cropsCoordsTopLeft`.
   */
  negativeCropsCoordsTopLeft?: CropCoordsTuple;
  /** With `requiresAestheticsScore`: the score the positive condition asks for (default 6). */
  aestheticScore?: number;
  /** With `requiresAestheticsScore`: the score of the negative condition (default 2.5). */
  negativeAestheticScore?: number;
}

/** The micro-conditioning options of the SDXL pipelines that start from a picture (image-to-image, inpainting). */
export type ImageMicroConditioning = Pick<
  StableDiffusionXLImg2ImgOptions,
  'originalSize' | 'cropsCoordsTopLeft' | 'targetSize' | 'negativeOriginalSize' | 'negativeCropsCoordsTopLeft' | 'negativeTargetSize' | 'aestheticScore' | 'negativeAestheticScore'
>;

/**
 * diffusers' `_get_add_time_ids` of the SDXL pipelines that start from a picture, its defaults filled in and checked:
 * `(original size, crop corner, target size)` per row, or with `requiresAestheticsScore` `(…, aesthetic score)`.
 */
export function imageTimeIds(options: ImageMicroConditioning, size: ImageSize, requiresAestheticsScore: boolean) {
  const {
    originalSize = [size.height, size.width],
    cropsCoordsTopLeft = [0, 0],
    targetSize = [size.height, size.width],
    negativeOriginalSize = originalSize,
    negativeCropsCoordsTopLeft = [0, 0],
    negativeTargetSize = targetSize,
    aestheticScore = 6,
    negativeAestheticScore = 2.5,
  } = options;
  checkMicroConditioning({ originalSize, cropsCoordsTopLeft, targetSize, negativeOriginalSize, negativeCropsCoordsTopLeft, negativeTargetSize });
  if (!Number.isFinite(aestheticScore) || !Number.isFinite(negativeAestheticScore)) {
    throw new InvalidArgumentError(`aestheticScore and negativeAestheticScore must be finite numbers, got ${aestheticScore} and ${negativeAestheticScore}.`);
  }
  return requiresAestheticsScore
    ? {
        positive: [...originalSize, ...cropsCoordsTopLeft, aestheticScore],
        negative: [...negativeOriginalSize, ...negativeCropsCoordsTopLeft, negativeAestheticScore],
      }
    : // diffusers' base path takes the positive crop corner for the negative row too.
      {
        positive: [...originalSize, ...cropsCoordsTopLeft, ...targetSize],
        negative: [...negativeOriginalSize, ...cropsCoordsTopLeft, ...negativeTargetSize],
      };
}

/**
 * The time ids of the SDXL pipelines that start from a picture as the UNet takes them. Unlike text-to-image, diffusers
 * stacks the rows here: every image's negative ids, then every positive.
 */
export function stackedTimeIds(
  ids: { positive: readonly number[]; negative: readonly number[] },
  batchSize: number,
  doClassifierFreeGuidance: boolean,
  unetConfig: Readonly<Record<string, unknown>>,
  pooledWidth: number,
): Tensor<'float32'> {
  const perImage = (row: readonly number[]) => Array<readonly number[]>(batchSize).fill(row);
  const rows = doClassifierFreeGuidance ? [...perImage(ids.negative), ...perImage(ids.positive)] : perImage(ids.positive);
  return timeIdsTensor(rows, unetConfig, pooledWidth);
}

/** An SDXL pipeline whose components include the VAE encoder. */
export type StableDiffusionXLImg2ImgComponents = StableDiffusionXLComponents & { vaeEncoder: OnnxModel };

/** Image-to-image with Stable Diffusion XL ONNX exports (diffusers' `StableDiffusionXLImg2ImgPipeline`, base model). */
export class StableDiffusionXLImg2ImgPipeline {
  static readonly callbackTensorInputs: readonly StableDiffusionXLTensorName[] = ['latents', 'promptEmbeds', 'addTextEmbeds', 'addTimeIds', 'predOriginalSample', 'ipAdapterImageEmbeds'];
  readonly callbackTensorInputs = StableDiffusionXLImg2ImgPipeline.callbackTensorInputs;
  readonly components: StableDiffusionXLImg2ImgComponents;
  /** diffusers' `requires_aesthetics_score`: time ids `(original size, crop, aesthetic score)` instead of `(…, target size)`. */
  readonly requiresAestheticsScore: boolean;
  /** The scheduler template; each generation runs on its own `clone()`. Assign another to swap schedulers. */
  scheduler: Scheduler;

  /** Throws a `ModelLoadError` when the components lack the VAE encoder. */
  constructor(components: StableDiffusionXLComponents, settings: { requiresAestheticsScore?: boolean } = {}) {
    this.components = { ...components, vaeEncoder: requireVaeEncoder(components, 'StableDiffusionXLImg2ImgPipeline') };
    this.requiresAestheticsScore = settings.requiresAestheticsScore ?? components.modelIndex.requires_aesthetics_score === true;
    this.scheduler = components.scheduler;
  }

  static async fromPretrained(dir: string, options: StableDiffusionXLImg2ImgLoadOptions = {}): Promise<StableDiffusionXLImg2ImgPipeline> {
    return new StableDiffusionXLImg2ImgPipeline(await loadStableDiffusionXLComponents(dir, options), options);
  }

  /**
   * Image-to-image on the models of an already loaded SDXL pipeline and its current scheduler, as diffusers'
   * `from_pipe`: the ONNX sessions are shared, nothing is loaded again. Disposing either pipeline frees the shared
   * sessions (the other loads them again on its next use).
   */
  static fromPipe(
    pipe: { readonly components: StableDiffusionXLComponents; readonly scheduler: Scheduler },
    settings: { requiresAestheticsScore?: boolean } = {},
  ): StableDiffusionXLImg2ImgPipeline {
    const pipeline = new StableDiffusionXLImg2ImgPipeline(pipe.components, settings);
    pipeline.scheduler = pipe.scheduler;
    return pipeline;
  }

  async generate<const Requested extends StableDiffusionXLTensorName = 'latents', Output extends OutputType = 'image', const BeginRequested extends StableDiffusionXLTensorName = 'latents'>(
    options: StableDiffusionXLImg2ImgOptions<Requested, Output, BeginRequested>,
  ): Promise<PipelineOutput<Output>> {
    const { unet, unetConfig, vaeScaleFactor } = this.components;
    const { numInferenceSteps, guidanceScale, guidanceRescale, numImagesPerPrompt, ...size } = generationSettings(
      options,
      await defaultImageSize(options.image, vaeScaleFactor),
      { guidanceScale: 5, vaeScaleFactor, limits: this.components.limits },
    );
    const { strength = 0.3, generator } = options;
    const timeIds = imageTimeIds(options, size, this.requiresAestheticsScore);
    const { callbacks, scheduler, context } = await startGeneration({ name: 'StableDiffusionXLImg2ImgPipeline', family: 'stable-diffusion-xl' }, this, options);
    const timesteps = strengthTimesteps(scheduler, numInferenceSteps, strength);
    const doClassifierFreeGuidance = guidanceScale > 1;
    const encoded = await encodePromptXL(this.components, {
      ...options, numImagesPerPrompt, doClassifierFreeGuidance, forceZerosForEmptyPrompt: this.components.forceZerosForEmptyPrompt,
    });
    const batchSize = encoded.promptEmbeds.shape[0];
    const { latents } = await prepareImageToImageLatents({
      vae: this.components, scheduler, image: await preprocessImage(options.image, size), timestep: timesteps[0], batchSize, generator,
    });
    const addTimeIds = stackedTimeIds(timeIds, batchSize, doClassifierFreeGuidance, unetConfig, encoded.pooledPromptEmbeds.shape[1]);

    const ipAdapter = await prepareIPAdapter(this.components, options, { batchSize, doClassifierFreeGuidance: guidanceScale > 1 });
    const pipeline = context({ guidanceScale, timesteps, batchSize, cfgLayout: { ...SDXL_IMAGE_CFG_LAYOUT, ...ipAdapter.cfgLayout }, ipAdapterScale: ipAdapter.ipAdapterScale, ipAdapterActive: ipAdapter.ipAdapterActive });
    const denoised = await denoise<StableDiffusionXLTensorName>({
      scheduler, timesteps, pipeline, callbacks, generator, guidanceRescale, eta: options.eta,
      tensors: { latents, ...conditioningXL(encoded, addTimeIds), ...ipAdapter.tensors },
      predictNoise: predictNoiseXL(unet, pipeline),
    });
    return finishOutput(options.outputType ?? ('image' as Output), denoised, this.components);
  }

  /** Frees every ONNX Runtime session of this pipeline (shared with the pipeline it was made from, if any). */
  async dispose(): Promise<void> {
    await this.components.pool.dispose();
  }
}
