import type { GenerationContext } from '../callbacks/context.js';
import type { StableDiffusionInpaintTensorName } from '../contract.js';
import { InvalidArgumentError, ModelLoadError, UnsupportedError } from '../errors.js';
import { randn, type Generator } from '../random/generator.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import { Tensor } from '../tensor.js';
import { denoise } from './denoise.js';
import { pictureSize, startGeneration } from './generation.js';
import {
  blendKnownRegion,
  encodeImageLatents,
  maskOutImage,
  prepareMaskLatents,
  preprocessImage,
  preprocessMask,
  requireVaeEncoder,
  strengthTimesteps,
  type ImageSize,
  type VaeEncoding,
} from './image-latents.js';
import { imageSize, type ImageInput } from './images.js';
import { loadCommonComponents, type CommonComponents, type PipelineLoadOptions } from './loading.js';
import type { StableDiffusionBaseOptions } from './stable-diffusion.js';
import type { ImageToImageComponents } from './stable-diffusion-img2img.js';
import {
  checkBatch,
  encodeGuidedPrompt,
  finishOutput,
  predictNoiseWithUnet,
  prepareLatents,
  repeatRows,
  type OutputType,
  type PipelineOutput } from './steps.js';
import { prepareIPAdapter } from './ip-adapter.js';
import { generationSettings } from './validation.js';
import { INPAINT_CFG_LAYOUT, SD_CFG_LAYOUT } from './cfg-layouts.js';
import { memoizeSuccess } from '../util/memoize.js';

export interface StableDiffusionInpaintOptions<
  Requested extends StableDiffusionInpaintTensorName = 'latents',
  Output extends OutputType = 'image',
  BeginRequested extends StableDiffusionInpaintTensorName = 'latents',
> extends StableDiffusionBaseOptions<StableDiffusionInpaintTensorName, Requested, Output, BeginRequested> {
  /** The picture to repaint part of; resized to `width`×`height`. */
  image: ImageInput;
  /** Same size as `image`. White (≥ 50 % grey once converted to grayscale) is repainted, black is kept. */
  maskImage: ImageInput;
  /**
   * How far to move away from the picture inside the mask, in [0, 1] (default 1: start from pure noise). Below 1 the
   * picture is noised to the start of the last `strength` fraction of the schedule, and only those steps run.
   */
  strength?: number;
  /** Default: the UNet's `sample_size` × the VAE factor. */
  height?: number;
  width?: number;
  /**
   * Use these (unscaled) latents as the noise instead of drawing it. As in diffusers, the run then starts from them
   * times `initNoiseSigma`, whatever the strength.
   */
  latents?: Tensor<'float32'>;
}

/** How many channels the UNet's `sample` takes: its config's `in_channels`, else the ONNX input's channel axis. */
export async function unetInChannels(components: Pick<CommonComponents, 'unet' | 'unetConfig'>): Promise<number> {
  const { unet, unetConfig } = components;
  if (typeof unetConfig.in_channels === 'number') return unetConfig.in_channels;
  const channels = (await unet.inputs()).find((input) => input.name === 'sample')?.shape[1];
  if (typeof channels === 'number') return channels;
  throw new ModelLoadError(unet.path, "declares no input channel count: unet/config.json has no in_channels and the ONNX 'sample' input's channel axis is dynamic.");
}

/** The UNet's input channel count where inpainting can use it: 9 (an inpainting UNet) or 4 (a plain one), as diffusers. */
export async function inpaintingUnetChannels(components: Pick<CommonComponents, 'unet' | 'unetConfig'>): Promise<4 | 9> {
  const channels = await unetInChannels(components);
  if (channels !== 4 && channels !== 9) {
    throw new UnsupportedError(`${components.unet.path}: the UNet takes ${channels} input channels; inpainting needs 9 (an inpainting UNet) or 4 (a plain one).`);
  }
  return channels;
}

/**
 * Inpainting with Stable Diffusion 1.x / 2.x ONNX exports (diffusers' `StableDiffusionInpaintPipeline`), with
 * either an inpainting UNet (9 input channels: latents, mask and masked-picture latents) or a plain one (4 channels:
 * the region to keep is put back after every step).
 */
export class StableDiffusionInpaintPipeline {
  static readonly callbackTensorInputs: readonly StableDiffusionInpaintTensorName[] = [
    'latents', 'promptEmbeds', 'negativePromptEmbeds', 'mask', 'maskedImageLatents', 'predOriginalSample', 'ipAdapterImageEmbeds',
  ];
  readonly callbackTensorInputs = StableDiffusionInpaintPipeline.callbackTensorInputs;
  readonly components: ImageToImageComponents;
  /** The scheduler template; each generation runs on its own `clone()`. Assign another to swap schedulers. */
  scheduler: Scheduler;
  readonly #unetInChannels = memoizeSuccess(() => inpaintingUnetChannels(this.components));

  /** Throws a `ModelLoadError` when the components lack the VAE encoder. */
  constructor(components: CommonComponents) {
    this.components = { ...components, vaeEncoder: requireVaeEncoder(components, 'StableDiffusionInpaintPipeline') };
    this.scheduler = components.scheduler;
  }

  static async fromPretrained(dir: string, options: PipelineLoadOptions = {}): Promise<StableDiffusionInpaintPipeline> {
    return new StableDiffusionInpaintPipeline(await loadCommonComponents(dir, options));
  }

  /**
   * Inpainting on the models of an already loaded SD pipeline and its current scheduler, as diffusers' `from_pipe`:
   * the ONNX sessions are shared, nothing is loaded again. Disposing either pipeline frees the shared sessions.
   */
  static fromPipe(pipe: { readonly components: CommonComponents; readonly scheduler: Scheduler }): StableDiffusionInpaintPipeline {
    const pipeline = new StableDiffusionInpaintPipeline(pipe.components);
    pipeline.scheduler = pipe.scheduler;
    return pipeline;
  }

  /** 9 for an inpainting UNet, 4 for a plain one (diffusers accepts nothing else). */
  unetInChannels(): Promise<4 | 9> {
    return this.#unetInChannels();
  }

  async generate<const Requested extends StableDiffusionInpaintTensorName = 'latents', Output extends OutputType = 'image', const BeginRequested extends StableDiffusionInpaintTensorName = 'latents'>(
    options: StableDiffusionInpaintOptions<Requested, Output, BeginRequested>,
  ): Promise<PipelineOutput<Output>> {
    const { unet, vaeScaleFactor } = this.components;
    const { height, width, numInferenceSteps, guidanceScale, guidanceRescale, numImagesPerPrompt } = generationSettings(
      options,
      pictureSize(options, this.components, 64),
      { guidanceScale: 7.5, vaeScaleFactor, limits: this.components.limits },
    );
    const { strength = 1, generator } = options;
    await checkSameSize(options.image, options.maskImage);
    const { callbacks, scheduler, context } = await startGeneration({ name: 'StableDiffusionInpaintPipeline', family: 'stable-diffusion' }, this, options);
    const inChannels = await this.unetInChannels();
    const timesteps = strengthTimesteps(scheduler, numInferenceSteps, strength);
    const doClassifierFreeGuidance = guidanceScale > 1;
    const { promptEmbeds, negativePromptEmbeds, batchSize } = await encodeGuidedPrompt(this.components, options, numImagesPerPrompt, doClassifierFreeGuidance);
    const { latents, noise, imageLatents, mask, maskedImageLatents } = await prepareInpaintingLatents({
      vae: this.components, scheduler, image: options.image, maskImage: options.maskImage, size: { width, height }, vaeScaleFactor,
      inChannels, batchSize, doClassifierFreeGuidance, generator, strength, timestep: timesteps[0], latents: options.latents,
    });
    const ipAdapter = await prepareIPAdapter(this.components, options, { batchSize, doClassifierFreeGuidance: guidanceScale > 1 });
    const pipeline = context({ guidanceScale, timesteps, batchSize, cfgLayout: { ...SD_CFG_LAYOUT, ...INPAINT_CFG_LAYOUT, ...ipAdapter.cfgLayout }, ipAdapterScale: ipAdapter.ipAdapterScale, ipAdapterActive: ipAdapter.ipAdapterActive });
    const inpainting = inpaintingLoop({ inChannels, pipeline, scheduler, timesteps, noise, imageLatents });
    const denoised = await denoise<StableDiffusionInpaintTensorName>({
      scheduler, timesteps, pipeline, callbacks, generator, guidanceRescale, eta: options.eta,
      tensors: { latents, promptEmbeds, negativePromptEmbeds, mask, maskedImageLatents, ...ipAdapter.tensors },
      predictNoise: (latentModelInput, timestep, _stepIndex, tensors) =>
        predictNoiseWithUnet(unet, inpainting.unetSample(latentModelInput, tensors), timestep, tensors, pipeline),
      afterStep: inpainting.afterStep,
    });
    return finishOutput(options.outputType ?? ('image' as Output), denoised, this.components);
  }

  /** Frees every ONNX Runtime session of this pipeline (shared with the pipeline it was made from, if any). */
  async dispose(): Promise<void> {
    await this.components.pool.dispose();
  }
}

/** diffusers' inpainting takes a mask of the picture's own size; anything else is refused, naming both sizes. */
export async function checkSameSize(image: ImageInput, maskImage: ImageInput): Promise<void> {
  const [imageDims, maskDims] = await Promise.all([imageSize(image), imageSize(maskImage)]);
  if (imageDims.width !== maskDims.width || imageDims.height !== maskDims.height) {
    throw new InvalidArgumentError(
      `maskImage is ${maskDims.width}×${maskDims.height} but image is ${imageDims.width}×${imageDims.height}; give a mask of the picture's size.`,
    );
  }
}

/**
 * diffusers' inpainting `prepare_latents` then `prepare_mask_latents`, in their order of draws: the picture's VAE
 * sample (when the start or the 4-channel blending needs it), the noise, then the masked picture's VAE sample. The
 * run starts from the noise × `initNoiseSigma` at strength 1 or with given `latents` (they are the noise then), else
 * from the picture noised to `timestep` — or, with `addNoise` off (SDXL's `denoisingStart`), from the picture's latents
 * as they are. `imageLatents` comes back where the blending of a 4-channel UNet needs it.
 */
export async function prepareInpaintingLatents(settings: {
  vae: VaeEncoding;
  scheduler: Scheduler;
  image: ImageInput;
  maskImage: ImageInput;
  size: ImageSize;
  vaeScaleFactor: number;
  inChannels: 4 | 9;
  batchSize: number;
  doClassifierFreeGuidance: boolean;
  generator: Generator | undefined;
  strength: number;
  timestep: number;
  latents?: Tensor<'float32'>;
  addNoise?: boolean;
}) {
  const { vae, scheduler, size, vaeScaleFactor, inChannels, batchSize, doClassifierFreeGuidance, generator, addNoise = true } = settings;
  const image = await preprocessImage(settings.image, size);
  const startsFromNoise = addNoise && (settings.strength === 1 || settings.latents !== undefined);
  const imageLatents = inChannels === 4 || !startsFromNoise ? repeatRows(await encodeImageLatents(vae, image, generator), batchSize) : undefined;
  const latentShape = [batchSize, 4, size.height / vaeScaleFactor, size.width / vaeScaleFactor];
  const noise = settings.latents ?? randn(latentShape, { generator });
  const latents = !imageLatents || startsFromNoise
    ? prepareLatents(latentShape, scheduler.initNoiseSigma, generator, noise)
    : addNoise ? scheduler.addNoise(imageLatents, noise, settings.timestep) : imageLatents;

  const maskCondition = await preprocessMask(settings.maskImage, size);
  const { mask, maskedImageLatents } = await prepareMaskLatents({
    vae, mask: maskCondition, maskedImage: maskOutImage(image, maskCondition), vaeScaleFactor, batchSize, doClassifierFreeGuidance, generator,
  });
  return { latents, noise, imageLatents: inChannels === 4 ? imageLatents : undefined, mask, maskedImageLatents };
}

type InpaintingTensors = Partial<Record<'mask' | 'maskedImageLatents', Tensor<'float32'>>>;

/**
 * The inpainting parts of the denoising loop: the UNet's `sample` (a 9-channel UNet takes the latents, the mask and
 * the masked-picture latents concatenated) and, with a 4-channel UNet, the step that puts the known region back from
 * the picture's latents noised to the next timestep (clean after the last). The mask and masked-picture latents are
 * read from the loop's tensors, where a callback may have replaced or halved them.
 */
export function inpaintingLoop(settings: {
  inChannels: 4 | 9;
  pipeline: GenerationContext;
  scheduler: Scheduler;
  timesteps: ArrayLike<number>;
  noise: Tensor<'float32'>;
  imageLatents?: Tensor<'float32'>;
}) {
  const { inChannels, pipeline, scheduler, timesteps, noise, imageLatents } = settings;
  /** A conditioning tensor as the next UNet call needs it. */
  const conditioning = (name: keyof InpaintingTensors, tensor: Tensor<'float32'> | undefined) => {
    if (!tensor) throw new InvalidArgumentError(`${name} is missing: a callback must not remove it.`);
    const cfg = pipeline.doClassifierFreeGuidance;
    checkBatch(name, tensor, (cfg ? 2 : 1) * pipeline.batchSize, cfg);
    return tensor;
  };
  return {
    unetSample: (latentModelInput: Tensor<'float32'>, tensors: InpaintingTensors): Tensor<'float32'> =>
      inChannels === 9
        ? Tensor.cat([latentModelInput, conditioning('mask', tensors.mask), conditioning('maskedImageLatents', tensors.maskedImageLatents)], 1)
        : latentModelInput,
    afterStep: inChannels === 4 && imageLatents
      ? (stepped: Tensor<'float32'>, stepIndex: number, tensors: InpaintingTensors): Tensor<'float32'> => {
        const latentMask = conditioning('mask', tensors.mask);
        const known = stepIndex < timesteps.length - 1 ? scheduler.addNoise(imageLatents, noise, timesteps[stepIndex + 1]) : imageLatents;
        return blendKnownRegion(stepped, known, pipeline.doClassifierFreeGuidance ? latentMask.chunk(2)[0] : latentMask);
      }
      : undefined,
  };
}
