import type { CallbackOptions, StableDiffusionTensorName } from '../contract.js';
import type { Generator } from '../random/generator.js';
import type { SchedulerName } from '../schedulers/index.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import type { Tensor } from '../tensor.js';
import { loadCommonComponents, type CommonComponents, type PipelineLoadOptions } from './loading.js';
import { denoise } from './denoise.js';
import { pictureSize, startGeneration } from './generation.js';
import {
  encodeGuidedPrompt,
  finishOutput,
  predictNoiseWithUnet,
  prepareLatents,
  type OutputType,
  type PipelineOutput,
} from './steps.js';
import { prepareIPAdapter, type IPAdapterOptions } from './ip-adapter.js';
import { generationSettings } from './validation.js';
import { SD_CFG_LAYOUT } from './cfg-layouts.js';

/** Options shared by the SD 1.x pipelines (diffusers' `__call__` arguments, camelCased). */
export interface StableDiffusionBaseOptions<Name extends string, Requested extends Name, Output extends OutputType, BeginRequested extends Name = 'latents' & Name>
  extends CallbackOptions<Name, Requested, BeginRequested>, IPAdapterOptions {
  prompt?: string | readonly string[];
  negativePrompt?: string | readonly string[];
  numInferenceSteps?: number;
  /**
   * The scheduler for this call: a name (`'euler'`, `'dpmpp-2m-karras'`, … built from the model's scheduler config)
   * or an instance (cloned). Default: the pipeline's `scheduler`.
   */
  scheduler?: SchedulerName | Scheduler;
  guidanceScale?: number;
  /** Rescales the guided prediction towards the text one (0 = off), diffusers' `guidance_rescale`. */
  guidanceRescale?: number;
  numImagesPerPrompt?: number;
  /** DDIM's η (0 = deterministic); other schedulers ignore it, as in diffusers. */
  eta?: number;
  generator?: Generator;
  promptEmbeds?: Tensor<'float32'>;
  negativePromptEmbeds?: Tensor<'float32'>;
  outputType?: Output;
  signal?: AbortSignal;
}

export interface StableDiffusionOptions<
  Requested extends StableDiffusionTensorName = 'latents',
  Output extends OutputType = 'image',
  BeginRequested extends StableDiffusionTensorName = 'latents',
> extends StableDiffusionBaseOptions<StableDiffusionTensorName, Requested, Output, BeginRequested> {
  height?: number;
  width?: number;
  /** Start from these (unscaled) latents instead of fresh noise. */
  latents?: Tensor<'float32'>;
}

/** Text-to-image with Stable Diffusion 1.x / 2.x ONNX exports (diffusers' `StableDiffusionPipeline`). */
export class StableDiffusionPipeline {
  static readonly callbackTensorInputs: readonly StableDiffusionTensorName[] = ['latents', 'promptEmbeds', 'negativePromptEmbeds', 'predOriginalSample', 'ipAdapterImageEmbeds'];
  readonly callbackTensorInputs = StableDiffusionPipeline.callbackTensorInputs;
  /** The scheduler template; each generation runs on its own `clone()`. Assign another to swap schedulers. */
  scheduler: Scheduler;

  constructor(readonly components: CommonComponents) {
    this.scheduler = components.scheduler;
  }

  static async fromPretrained(dir: string, options: PipelineLoadOptions = {}): Promise<StableDiffusionPipeline> {
    return new StableDiffusionPipeline(await loadCommonComponents(dir, options));
  }

  async generate<const Requested extends StableDiffusionTensorName = 'latents', Output extends OutputType = 'image', const BeginRequested extends StableDiffusionTensorName = 'latents'>(
    options: StableDiffusionOptions<Requested, Output, BeginRequested>,
  ): Promise<PipelineOutput<Output>> {
    const { unet, vaeScaleFactor } = this.components;
    const { height, width, numInferenceSteps, guidanceScale, guidanceRescale, numImagesPerPrompt } = generationSettings(
      options,
      pictureSize(options, this.components, 64),
      { guidanceScale: 7.5, vaeScaleFactor, limits: this.components.limits },
    );
    const { generator } = options;
    const { callbacks, scheduler, context } = await startGeneration({ name: 'StableDiffusionPipeline', family: 'stable-diffusion' }, this, options);
    const { promptEmbeds, negativePromptEmbeds, batchSize } = await encodeGuidedPrompt(this.components, options, numImagesPerPrompt, guidanceScale > 1);

    scheduler.setTimesteps(numInferenceSteps);
    const timesteps = scheduler.timesteps;
    const latentShape = [batchSize, 4, height / vaeScaleFactor, width / vaeScaleFactor];
    const latents = prepareLatents(latentShape, scheduler.initNoiseSigma, generator, options.latents);
    const ipAdapter = await prepareIPAdapter(this.components, options, { batchSize, doClassifierFreeGuidance: guidanceScale > 1 });
    const pipeline = context({ guidanceScale, timesteps, batchSize, cfgLayout: { ...SD_CFG_LAYOUT, ...ipAdapter.cfgLayout }, ipAdapterScale: ipAdapter.ipAdapterScale, ipAdapterActive: ipAdapter.ipAdapterActive });

    const denoised = await denoise<StableDiffusionTensorName>({
      scheduler, timesteps, pipeline, callbacks, generator, guidanceRescale, eta: options.eta,
      tensors: { latents, promptEmbeds, negativePromptEmbeds, ...ipAdapter.tensors },
      predictNoise: (latentModelInput, timestep, _stepIndex, tensors) => predictNoiseWithUnet(unet, latentModelInput, timestep, tensors, pipeline),
    });
    return finishOutput(options.outputType ?? ('image' as Output), denoised, this.components);
  }

  /** Frees every ONNX Runtime session of this pipeline. */
  async dispose(): Promise<void> {
    await this.components.pool.dispose();
  }
}
