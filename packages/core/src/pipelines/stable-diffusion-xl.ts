import type { StableDiffusionXLTensorName } from '../contract.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import type { Tensor } from '../tensor.js';
import { denoise } from './denoise.js';
import { pictureSize, startGeneration } from './generation.js';
import type { StableDiffusionBaseOptions } from './stable-diffusion.js';
import {
  checkMicroConditioning,
  conditioningXL,
  encodePromptXL,
  loadStableDiffusionXLComponents,
  predictNoiseXL,
  timeIdsTensor,
  type CropCoordsTuple,
  type ImageSizeTuple,
  type StableDiffusionXLComponents,
  type StableDiffusionXLLoadOptions,
} from './stable-diffusion-xl-steps.js';
import { finishOutput, prepareLatents, type OutputType, type PipelineOutput } from './steps.js';
import { prepareIPAdapter } from './ip-adapter.js';
import { generationSettings } from './validation.js';
import { SDXL_CFG_LAYOUT } from './cfg-layouts.js';

/** Options shared by the SDXL pipelines (diffusers' `__call__` arguments, camelCased). */
export interface StableDiffusionXLBaseOptions<
  Requested extends StableDiffusionXLTensorName,
  Output extends OutputType,
  BeginRequested extends StableDiffusionXLTensorName = 'latents',
> extends StableDiffusionBaseOptions<StableDiffusionXLTensorName, Requested, Output, BeginRequested> {
  /** Prompt for the second tokenizer and text encoder; defaults to `prompt`. */
  prompt2?: string | readonly string[];
  /** Negative prompt for the second tokenizer and text encoder; defaults to `negativePrompt`. */
  negativePrompt2?: string | readonly string[];
  /** Required with `promptEmbeds`: the second encoder's `text_embeds` for the same prompts. */
  pooledPromptEmbeds?: Tensor<'float32'>;
  /** Required with `negativePromptEmbeds`. */
  negativePooledPromptEmbeds?: Tensor<'float32'>;
  /** Micro-conditioning (SDXL paper §2.2): the size the picture "was" before resizing; default the output size. */
  originalSize?: ImageSizeTuple;
  /** Where the picture "was" cropped from; default (0, 0), which gives well-centred pictures. */
  cropsCoordsTopLeft?: CropCoordsTuple;
  /** Default: the output size. */
  targetSize?: ImageSizeTuple;
  /**
   * Micro-conditioning of the negative batch (diffusers issue 4208). Text-to-image uses the three only when both
   * sizes are given (else the negative rows repeat the positive ones); image-to-image defaults each size to its
   * positive counterpart.
   */
  negativeOriginalSize?: ImageSizeTuple;
  /** Default (0, 0). */
  negativeCropsCoordsTopLeft?: CropCoordsTuple;
  /** See `negativeOriginalSize`. */
  negativeTargetSize?: ImageSizeTuple;
}

export interface StableDiffusionXLOptions<
  Requested extends StableDiffusionXLTensorName = 'latents',
  Output extends OutputType = 'image',
  BeginRequested extends StableDiffusionXLTensorName = 'latents',
> extends StableDiffusionXLBaseOptions<Requested, Output, BeginRequested> {
  height?: number;
  width?: number;
  /** Start from these (unscaled) latents instead of fresh noise. */
  latents?: Tensor<'float32'>;
}

/** The micro-conditioning options of the SDXL text-to-image pipelines. */
type TextToImageMicroConditioning = Pick<
  StableDiffusionXLBaseOptions<StableDiffusionXLTensorName, OutputType>,
  'originalSize' | 'cropsCoordsTopLeft' | 'targetSize' | 'negativeOriginalSize' | 'negativeCropsCoordsTopLeft' | 'negativeTargetSize'
>;

/**
 * diffusers' `_get_add_time_ids` of the SDXL text-to-image pipelines, defaults filled in and checked:
 * `(original size, crop corner, target size)`; the negative row repeats the positive one unless both negative sizes
 * are given.
 */
export function textToImageTimeIds(options: TextToImageMicroConditioning, size: { height: number; width: number }) {
  const {
    originalSize = [size.height, size.width],
    cropsCoordsTopLeft = [0, 0],
    targetSize = [size.height, size.width],
    negativeOriginalSize,
    negativeCropsCoordsTopLeft = [0, 0],
    negativeTargetSize,
  } = options;
  checkMicroConditioning({ originalSize, cropsCoordsTopLeft, targetSize, negativeOriginalSize, negativeCropsCoordsTopLeft, negativeTargetSize });
  const positive = [...originalSize, ...cropsCoordsTopLeft, ...targetSize];
  const negative = negativeOriginalSize && negativeTargetSize ? [...negativeOriginalSize, ...negativeCropsCoordsTopLeft, ...negativeTargetSize] : positive;
  return { positive, negative };
}

/** The time ids as the UNet takes them: as diffusers, the [negative, positive] pair tiled once per image (`repeat(batch, 1)`), not stacked. */
export function tiledTimeIds(
  ids: { positive: readonly number[]; negative: readonly number[] },
  images: number,
  doClassifierFreeGuidance: boolean,
  unetConfig: Readonly<Record<string, unknown>>,
  pooledWidth: number,
): Tensor<'float32'> {
  const pairPerImage = doClassifierFreeGuidance ? [ids.negative, ids.positive] : [ids.positive];
  return timeIdsTensor(Array.from({ length: images }, () => pairPerImage).flat(), unetConfig, pooledWidth);
}

/** Text-to-image with Stable Diffusion XL ONNX exports (diffusers' `StableDiffusionXLPipeline`, base model). */
export class StableDiffusionXLPipeline {
  static readonly callbackTensorInputs: readonly StableDiffusionXLTensorName[] = ['latents', 'promptEmbeds', 'addTextEmbeds', 'addTimeIds', 'predOriginalSample', 'ipAdapterImageEmbeds'];
  readonly callbackTensorInputs = StableDiffusionXLPipeline.callbackTensorInputs;
  /** The scheduler template; each generation runs on its own `clone()`. Assign another to swap schedulers. */
  scheduler: Scheduler;

  constructor(readonly components: StableDiffusionXLComponents) {
    this.scheduler = components.scheduler;
  }

  static async fromPretrained(dir: string, options: StableDiffusionXLLoadOptions = {}): Promise<StableDiffusionXLPipeline> {
    return new StableDiffusionXLPipeline(await loadStableDiffusionXLComponents(dir, options));
  }

  async generate<const Requested extends StableDiffusionXLTensorName = 'latents', Output extends OutputType = 'image', const BeginRequested extends StableDiffusionXLTensorName = 'latents'>(
    options: StableDiffusionXLOptions<Requested, Output, BeginRequested>,
  ): Promise<PipelineOutput<Output>> {
    const { unet, unetConfig, vaeScaleFactor } = this.components;
    const { height, width, numInferenceSteps, guidanceScale, guidanceRescale, numImagesPerPrompt } = generationSettings(
      options,
      pictureSize(options, this.components, 128),
      { guidanceScale: 5, vaeScaleFactor, limits: this.components.limits },
    );
    const { generator } = options;
    const timeIds = textToImageTimeIds(options, { height, width });
    const { callbacks, scheduler, context } = await startGeneration({ name: 'StableDiffusionXLPipeline', family: 'stable-diffusion-xl' }, this, options);
    const doClassifierFreeGuidance = guidanceScale > 1;
    const encoded = await encodePromptXL(this.components, {
      ...options, numImagesPerPrompt, doClassifierFreeGuidance, forceZerosForEmptyPrompt: this.components.forceZerosForEmptyPrompt,
    });

    const images = encoded.promptEmbeds.shape[0];
    const addTimeIds = tiledTimeIds(timeIds, images, doClassifierFreeGuidance, unetConfig, encoded.pooledPromptEmbeds.shape[1]);

    scheduler.setTimesteps(numInferenceSteps);
    const timesteps = scheduler.timesteps;
    const latentShape = [images, 4, height / vaeScaleFactor, width / vaeScaleFactor];
    const latents = prepareLatents(latentShape, scheduler.initNoiseSigma, generator, options.latents);
    const ipAdapter = await prepareIPAdapter(this.components, options, { batchSize: images, doClassifierFreeGuidance: guidanceScale > 1 });
    const pipeline = context({ guidanceScale, timesteps, batchSize: images, cfgLayout: { ...SDXL_CFG_LAYOUT, ...ipAdapter.cfgLayout }, ipAdapterScale: ipAdapter.ipAdapterScale, ipAdapterActive: ipAdapter.ipAdapterActive });

    const denoised = await denoise<StableDiffusionXLTensorName>({
      scheduler, timesteps, pipeline, callbacks, generator, guidanceRescale, eta: options.eta,
      tensors: { latents, ...conditioningXL(encoded, addTimeIds), ...ipAdapter.tensors },
      predictNoise: predictNoiseXL(unet, pipeline),
    });
    return finishOutput(options.outputType ?? ('image' as Output), denoised, this.components);
  }

  /** Frees every ONNX Runtime session of this pipeline. */
  async dispose(): Promise<void> {
    await this.components.pool.dispose();
  }
}
