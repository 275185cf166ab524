import type { CfgLayout } from '../callbacks/context.js';
import type { StableDiffusionXLInpaintTensorName } from '../contract.js';
import { InvalidArgumentError } from '../errors.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import type { Tensor } from '../tensor.js';
import { INPAINT_CFG_LAYOUT, SDXL_IMAGE_CFG_LAYOUT } from './cfg-layouts.js';
import { denoise } from './denoise.js';
import { pictureSize, startGeneration } from './generation.js';
import { requireVaeEncoder, strengthTimesteps } from './image-latents.js';
import type { ImageInput } from './images.js';
import type { StableDiffusionBaseOptions } from './stable-diffusion.js';
import { checkSameSize, inpaintingLoop, inpaintingUnetChannels, prepareInpaintingLatents } from './stable-diffusion-inpaint.js';
import {
  imageTimeIds,
  stackedTimeIds,
  type ImageMicroConditioning,
  type StableDiffusionXLImg2ImgComponents,
  type StableDiffusionXLImg2ImgLoadOptions,
  type StableDiffusionXLImg2ImgOptions,
} from './stable-diffusion-xl-img2img.js';
import {
  conditioningXL,
  encodePromptXL,
  loadStableDiffusionXLComponents,
  predictNoiseXL,
  type StableDiffusionXLComponents,
} from './stable-diffusion-xl-steps.js';
import { finishOutput, type OutputType, type PipelineOutput } from './steps.js';
import { prepareIPAdapter } from './ip-adapter.js';
import { generationSettings } from './validation.js';
import { memoizeSuccess } from '../util/memoize.js';

export interface StableDiffusionXLInpaintOptions<
  Requested extends StableDiffusionXLInpaintTensorName = 'latents',
  Output extends OutputType = 'image',
  BeginRequested extends StableDiffusionXLInpaintTensorName = 'latents',
> extends StableDiffusionBaseOptions<StableDiffusionXLInpaintTensorName, Requested, Output, BeginRequested>,
    Pick<StableDiffusionXLImg2ImgOptions, 'prompt2' | 'negativePrompt2' | 'pooledPromptEmbeds' | 'negativePooledPromptEmbeds'>,
    ImageMicroConditioning {
  /** The picture to repaint part of; resized to `width`×`height`. */
  image: ImageInput;
  /** Same size as `image`. White (≥ 50 % grey once converted to grayscale) is repainted, black is kept. */
  maskImage: ImageInput;
  /**
   * How far to move away from the picture inside the mask, in [0, 1]. Default 0.9999, as diffusers: the picture
   * noised to the start of the last `strength` fraction of the schedule, and only those `int(steps · strength)` steps
   * run (49 of 50). At exactly 1 the run starts from pure noise. Unused with `denoisingStart`.
   */
  strength?: number;
  /** Default: the UNet's `sample_size` × the VAE factor. */
  height?: number;
  width?: number;
  /**
   * Use these (unscaled) latents as the noise instead of drawing it. As in diffusers, the run then starts from them
   * times `initNoiseSigma`, whatever the strength. Not with `denoisingStart`.
   */
  latents?: Tensor<'float32'>;
  /**
   * In (0, 1): start at this fraction of the training schedule (the refiner's half of an ensemble of experts), from
   * the picture's latents without added noise; only the timesteps below `int(round(T − denoisingStart · T))` run.
   */
  denoisingStart?: number;
  /**
   * In (0, 1): stop at this fraction of the training schedule (the base model's half of an ensemble of experts):
   * only the timesteps ≥ `int(round(T − denoisingEnd · T))` run. Greater than `denoisingStart` when both are given.
   */
  denoisingEnd?: number;
}

/**
 * The CFG layout of SDXL inpainting. diffusers stacks the time ids here as in image-to-image,
 * `[negative × B; positive × B]`, not tiled per image as text-to-image does.
 */
const CFG_LAYOUT: CfgLayout = { ...SDXL_IMAGE_CFG_LAYOUT, ...INPAINT_CFG_LAYOUT };

/**
 * Inpainting with Stable Diffusion XL ONNX exports (diffusers' `StableDiffusionXLInpaintPipeline`), with either an
 * inpainting UNet (9 input channels: latents, mask and masked-picture latents) or a plain one (4 channels: the region
 * to keep is put back after every step).
 */
export class StableDiffusionXLInpaintPipeline {
  static readonly callbackTensorInputs: readonly StableDiffusionXLInpaintTensorName[] = [
    'latents', 'promptEmbeds', 'addTextEmbeds', 'addTimeIds', 'mask', 'maskedImageLatents', 'predOriginalSample', 'ipAdapterImageEmbeds',
  ];
  readonly callbackTensorInputs = StableDiffusionXLInpaintPipeline.callbackTensorInputs;
  readonly components: StableDiffusionXLImg2ImgComponents;
  /** diffusers' `requires_aesthetics_score`: time ids `(original size, crop, aesthetic score)` instead of `(…, target size)`. */
  readonly requiresAestheticsScore: boolean;
  /** The scheduler template; each generation runs on its own `clone()`. Assign another to swap schedulers. */
  scheduler: Scheduler;
  readonly #unetInChannels = memoizeSuccess(() => inpaintingUnetChannels(this.components));

  /** Throws a `ModelLoadError` when the components lack the VAE encoder. */
  constructor(components: StableDiffusionXLComponents, settings: { requiresAestheticsScore?: boolean } = {}) {
    this.components = { ...components, vaeEncoder: requireVaeEncoder(components, 'StableDiffusionXLInpaintPipeline') };
    this.requiresAestheticsScore = settings.requiresAestheticsScore ?? components.modelIndex.requires_aesthetics_score === true;
    this.scheduler = components.scheduler;
  }

  static async fromPretrained(dir: string, options: StableDiffusionXLImg2ImgLoadOptions = {}): Promise<StableDiffusionXLInpaintPipeline> {
    return new StableDiffusionXLInpaintPipeline(await loadStableDiffusionXLComponents(dir, options), options);
  }

  /**
   * Inpainting on the models of an already loaded SDXL pipeline and its current scheduler, as diffusers' `from_pipe`:
   * the ONNX sessions are shared, nothing is loaded again. Disposing either pipeline frees the shared sessions.
   */
  static fromPipe(
    pipe: { readonly components: StableDiffusionXLComponents; readonly scheduler: Scheduler },
    settings: { requiresAestheticsScore?: boolean } = {},
  ): StableDiffusionXLInpaintPipeline {
    const pipeline = new StableDiffusionXLInpaintPipeline(pipe.components, settings);
    pipeline.scheduler = pipe.scheduler;
    return pipeline;
  }

  /** 9 for an inpainting UNet, 4 for a plain one (diffusers accepts nothing else). */
  unetInChannels(): Promise<4 | 9> {
    return this.#unetInChannels();
  }

  async generate<const Requested extends StableDiffusionXLInpaintTensorName = 'latents', Output extends OutputType = 'image', const BeginRequested extends StableDiffusionXLInpaintTensorName = 'latents'>(
    options: StableDiffusionXLInpaintOptions<Requested, Output, BeginRequested>,
  ): Promise<PipelineOutput<Output>> {
    const { unet, unetConfig, vaeScaleFactor } = this.components;
    const { height, width, numInferenceSteps, guidanceScale, guidanceRescale, numImagesPerPrompt } = generationSettings(
      options,
      pictureSize(options, this.components, 128),
      { guidanceScale: 7.5, vaeScaleFactor, limits: this.components.limits },
    );
    const { strength = 0.9999, denoisingStart, denoisingEnd, generator } = options;
    checkScheduleOptions(strength, denoisingStart, denoisingEnd, options.latents);
    const size = { width, height };
    const timeIds = imageTimeIds(options, size, this.requiresAestheticsScore);
    await checkSameSize(options.image, options.maskImage);
    const { callbacks, scheduler, context } = await startGeneration({ name: 'StableDiffusionXLInpaintPipeline', family: 'stable-diffusion-xl' }, this, options);
    const inChannels = await this.unetInChannels();
    const timesteps = inpaintingTimesteps(scheduler, numInferenceSteps, strength, denoisingStart, denoisingEnd);
    const doClassifierFreeGuidance = guidanceScale > 1;
    const encoded = await encodePromptXL(this.components, {
      ...options, numImagesPerPrompt, doClassifierFreeGuidance, forceZerosForEmptyPrompt: this.components.forceZerosForEmptyPrompt,
    });
    const batchSize = encoded.promptEmbeds.shape[0];
    const { latents, noise, imageLatents, mask, maskedImageLatents } = await prepareInpaintingLatents({
      vae: this.components, scheduler, image: options.image, maskImage: options.maskImage, size, vaeScaleFactor, inChannels, batchSize,
      doClassifierFreeGuidance, generator, strength, timestep: timesteps[0], latents: options.latents, addNoise: denoisingStart === undefined,
    });
    const addTimeIds = stackedTimeIds(timeIds, batchSize, doClassifierFreeGuidance, unetConfig, encoded.pooledPromptEmbeds.shape[1]);

    const ipAdapter = await prepareIPAdapter(this.components, options, { batchSize, doClassifierFreeGuidance: guidanceScale > 1 });
    const pipeline = context({ guidanceScale, timesteps, batchSize, cfgLayout: { ...CFG_LAYOUT, ...ipAdapter.cfgLayout }, ipAdapterScale: ipAdapter.ipAdapterScale, ipAdapterActive: ipAdapter.ipAdapterActive });
    const inpainting = inpaintingLoop({ inChannels, pipeline, scheduler, timesteps, noise, imageLatents });
    const predictNoise = predictNoiseXL(unet, pipeline);
    const denoised = await denoise<StableDiffusionXLInpaintTensorName>({
      scheduler, timesteps, pipeline, callbacks, generator, guidanceRescale, eta: options.eta,
      tensors: { latents, ...conditioningXL(encoded, addTimeIds), mask, maskedImageLatents, ...ipAdapter.tensors },
      predictNoise: (latentModelInput, timestep, stepIndex, tensors) =>
        predictNoise(inpainting.unetSample(latentModelInput, tensors), timestep, stepIndex, tensors),
      afterStep: inpainting.afterStep,
    });
    return finishOutput(options.outputType ?? ('image' as Output), denoised, this.components);
  }

  /** Frees every ONNX Runtime session of this pipeline (shared with the pipeline it was made from, if any). */
  async dispose(): Promise<void> {
    await this.components.pool.dispose();
  }
}

/** diffusers' `check_inputs` for strength, and the denoising fractions (which diffusers ignores silently outside (0, 1)). */
function checkScheduleOptions(strength: number, denoisingStart: number | undefined, denoisingEnd: number | undefined, latents: Tensor<'float32'> | undefined): void {
  if (!(strength >= 0 && strength <= 1)) throw new InvalidArgumentError(`strength must be between 0 and 1, got ${strength}.`);
  for (const [name, value] of [['denoisingStart', denoisingStart], ['denoisingEnd', denoisingEnd]] as const) {
    if (value !== undefined && !(value > 0 && value < 1)) throw new InvalidArgumentError(`${name} must be between 0 and 1 (both excluded), got ${value}.`);
  }
  if (denoisingStart !== undefined && denoisingEnd !== undefined && denoisingStart >= denoisingEnd) {
    throw new InvalidArgumentError(`denoisingStart (${denoisingStart}) must be less than denoisingEnd (${denoisingEnd}).`);
  }
  if (denoisingStart !== undefined && latents !== undefined) {
    throw new InvalidArgumentError("Give latents or denoisingStart, not both: with denoisingStart the run starts from the picture's latents, without noise.");
  }
}

/** Python's `round`: halves go to the even neighbour. */
function roundHalfEven(value: number): number {
  const floor = Math.floor(value);
  const fraction = value - floor;
  return fraction > 0.5 || (fraction === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
}

/** A fraction of the training schedule as diffusers' discrete cut-off timestep, `int(round(T − fraction · T))`. */
function timestepCutoff(scheduler: Scheduler, fraction: number): number {
  const trainTimesteps = scheduler.config.numTrainTimesteps as number;
  return roundHalfEven(trainTimesteps - fraction * trainTimesteps);
}

/**
 * diffusers' SDXL `get_timesteps` and `denoising_end` cut: the last `strength` of the schedule or, with
 * `denoisingStart`, the timesteps below its cut-off (one more for a second-order scheduler that would otherwise stop
 * between its two evaluations); then, with `denoisingEnd`, only those at or above its cut-off. Tells the scheduler
 * where the run begins and returns the timesteps to visit.
 */
function inpaintingTimesteps(
  scheduler: Scheduler,
  numInferenceSteps: number,
  strength: number,
  denoisingStart: number | undefined,
  denoisingEnd: number | undefined,
): Float64Array {
  let timesteps: Float64Array;
  if (denoisingStart === undefined) {
    timesteps = strengthTimesteps(scheduler, numInferenceSteps, strength);
  } else {
    scheduler.setTimesteps(numInferenceSteps);
    const cutoff = timestepCutoff(scheduler, denoisingStart);
    let count = scheduler.timesteps.filter((timestep) => timestep < cutoff).length;
    if (scheduler.order === 2 && count % 2 === 0) count = Math.min(count + 1, scheduler.timesteps.length);
    const beginIndex = scheduler.timesteps.length - count;
    scheduler.setBeginIndex(beginIndex);
    timesteps = scheduler.timesteps.subarray(beginIndex);
  }
  if (denoisingEnd !== undefined) {
    const cutoff = timestepCutoff(scheduler, denoisingEnd);
    timesteps = timesteps.subarray(0, timesteps.filter((timestep) => timestep >= cutoff).length);
  }
  if (timesteps.length === 0) {
    throw new InvalidArgumentError(
      `denoisingStart ${denoisingStart ?? '(none)'} and denoisingEnd ${denoisingEnd ?? '(none)'} leave no denoising step of the ` +
        `${numInferenceSteps}; widen the range or use more steps.`,
    );
  }
  return timesteps;
}
