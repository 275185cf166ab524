import type { StableDiffusionTensorName } from '../contract.js';
import type { OnnxModel } from '../runtime/onnx-model.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import { denoise } from './denoise.js';
import { startGeneration } from './generation.js';
import {
  defaultImageSize,
  prepareImageToImageLatents,
  preprocessImage,
  requireVaeEncoder,
  strengthTimesteps,
} from './image-latents.js';
import type { ImageInput } from './images.js';
import { loadCommonComponents, type CommonComponents, type PipelineLoadOptions } from './loading.js';
import type { StableDiffusionBaseOptions } from './stable-diffusion.js';
import { encodeGuidedPrompt, finishOutput, predictNoiseWithUnet, type OutputType, type PipelineOutput } from './steps.js';
import { prepareIPAdapter } from './ip-adapter.js';
import { generationSettings } from './validation.js';
import { SD_CFG_LAYOUT } from './cfg-layouts.js';

export interface StableDiffusionImg2ImgOptions<
  Requested extends StableDiffusionTensorName = 'latents',
  Output extends OutputType = 'image',
  BeginRequested extends StableDiffusionTensorName = 'latents',
> extends StableDiffusionBaseOptions<StableDiffusionTensorName, Requested, Output, BeginRequested> {
  /** The starting picture, used at its own size rounded down to a multiple of the VAE factor (8). */
  image: ImageInput;
  /**
   * How far to move away from the picture, in [0, 1] (default 0.8): the picture is noised to the start of the last
   * `strength` fraction of the schedule, and only those steps run. 1 keeps little more than its colours.
   */
  strength?: number;
}

/** A pipeline whose components include the VAE encoder. */
export type ImageToImageComponents = CommonComponents & { vaeEncoder: OnnxModel };

/** Image-to-image with Stable Diffusion 1.x / 2.x ONNX exports (diffusers' `StableDiffusionImg2ImgPipeline`). */
export class StableDiffusionImg2ImgPipeline {
  static readonly callbackTensorInputs: readonly StableDiffusionTensorName[] = ['latents', 'promptEmbeds', 'negativePromptEmbeds', 'predOriginalSample', 'ipAdapterImageEmbeds'];
  readonly callbackTensorInputs = StableDiffusionImg2ImgPipeline.callbackTensorInputs;
  readonly components: ImageToImageComponents;
  /** The scheduler template; each generation runs on its own `clone()`. Assign another to swap schedulers. */
  scheduler: Scheduler;

  /** Throws a `ModelLoadError` when the components lack the VAE encoder. */
  constructor(components: CommonComponents) {
    this.components = { ...components, vaeEncoder: requireVaeEncoder(components, 'StableDiffusionImg2ImgPipeline') };
    this.scheduler = components.scheduler;
  }

  static async fromPretrained(dir: string, options: PipelineLoadOptions = {}): Promise<StableDiffusionImg2ImgPipeline> {
    return new StableDiffusionImg2ImgPipeline(await loadCommonComponents(dir, options));
  }

  /**
   * Image-to-image on the models of an already loaded SD pipeline (text-to-image, inpainting, …) and its current
   * scheduler, as diffusers' `from_pipe`: the ONNX sessions are shared, nothing is loaded again. Disposing either
   * pipeline frees the shared sessions (the other loads them again on its next use).
   */
  static fromPipe(pipe: { readonly components: CommonComponents; readonly scheduler: Scheduler }): StableDiffusionImg2ImgPipeline {
    const pipeline = new StableDiffusionImg2ImgPipeline(pipe.components);
    pipeline.scheduler = pipe.scheduler;
    return pipeline;
  }

  async generate<const Requested extends StableDiffusionTensorName = 'latents', Output extends OutputType = 'image', const BeginRequested extends StableDiffusionTensorName = 'latents'>(
    options: StableDiffusionImg2ImgOptions<Requested, Output, BeginRequested>,
  ): Promise<PipelineOutput<Output>> {
    const { unet, vaeScaleFactor } = this.components;
    const { numInferenceSteps, guidanceScale, guidanceRescale, numImagesPerPrompt, ...size } = generationSettings(
      options,
      await defaultImageSize(options.image, vaeScaleFactor),
      { guidanceScale: 7.5, vaeScaleFactor, limits: this.components.limits },
    );
    const { strength = 0.8, generator } = options;
    const { callbacks, scheduler, context } = await startGeneration({ name: 'StableDiffusionImg2ImgPipeline', family: 'stable-diffusion' }, this, options);
    const timesteps = strengthTimesteps(scheduler, numInferenceSteps, strength);

    const { promptEmbeds, negativePromptEmbeds, batchSize } = await encodeGuidedPrompt(this.components, options, numImagesPerPrompt, guidanceScale > 1);
    const { latents } = await prepareImageToImageLatents({
      vae: this.components, scheduler, image: await preprocessImage(options.image, size), timestep: timesteps[0], batchSize, generator,
    });
    const ipAdapter = await prepareIPAdapter(this.components, options, { batchSize, doClassifierFreeGuidance: guidanceScale > 1 });
    const pipeline = context({ guidanceScale, timesteps, batchSize, cfgLayout: { ...SD_CFG_LAYOUT, ...ipAdapter.cfgLayout }, ipAdapterScale: ipAdapter.ipAdapterScale, ipAdapterActive: ipAdapter.ipAdapterActive });

    const denoised = await denoise<StableDiffusionTensorName>({
      scheduler, timesteps, pipeline, callbacks, generator, guidanceRescale, eta: options.eta,
      tensors: { latents, promptEmbeds, negativePromptEmbeds, ...ipAdapter.tensors },
      predictNoise: (latentModelInput, timestep, _stepIndex, tensors) =>
        predictNoiseWithUnet(unet, latentModelInput, timestep, tensors, pipeline),
    });
    return finishOutput(options.outputType ?? ('image' as Output), denoised, this.components);
  }

  /** Frees every ONNX Runtime session of this pipeline (shared with the pipeline it was made from, if any). */
  async dispose(): Promise<void> {
    await this.components.pool.dispose();
  }
}
