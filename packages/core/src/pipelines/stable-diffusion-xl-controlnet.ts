import type { StableDiffusionXLControlNetTensorName } from '../contract.js';
import { InvalidArgumentError } from '../errors.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import type { Tensor } from '../tensor.js';
import { SDXL_CFG_LAYOUT } from './cfg-layouts.js';
import { denoise } from './denoise.js';
import { startGeneration } from './generation.js';
import type { StableDiffusionBaseOptions } from './stable-diffusion.js';
import {
  controlCfgLayout,
  controlNetFolders,
  controlNetResidualFeeds,
  controlOutputSize,
  controlSettings,
  loadControlNets,
  matchResiduals,
  prepareControlImage,
  type ControlNet,
  type ControlNetLoadOptions,
  type ControlNetOptions,
  type ResidualNames,
} from './stable-diffusion-controlnet.js';
import {
  CONDITIONING_INPUTS,
  conditioningXL,
  encodePromptXL,
  loadStableDiffusionXLComponents,
  predictNoiseXL,
  type StableDiffusionXLComponents,
  type StableDiffusionXLLoadOptions,
} from './stable-diffusion-xl-steps.js';
import { textToImageTimeIds, tiledTimeIds, type StableDiffusionXLOptions } from './stable-diffusion-xl.js';
import { finishOutput, prepareLatents, type OutputType, type PipelineOutput } from './steps.js';
import { prepareIPAdapter } from './ip-adapter.js';
import { generationSettings } from './validation.js';
import { memoizeSuccess } from '../util/memoize.js';

export interface StableDiffusionXLControlNetLoadOptions extends StableDiffusionXLLoadOptions, ControlNetLoadOptions {}

export interface StableDiffusionXLControlNetOptions<
  Requested extends StableDiffusionXLControlNetTensorName = 'latents',
  Output extends OutputType = 'image',
  BeginRequested extends StableDiffusionXLControlNetTensorName = 'latents',
> extends StableDiffusionBaseOptions<StableDiffusionXLControlNetTensorName, Requested, Output, BeginRequested>,
    Pick<
      StableDiffusionXLOptions,
      | 'prompt2'
      | 'negativePrompt2'
      | 'pooledPromptEmbeds'
      | 'negativePooledPromptEmbeds'
      | 'originalSize'
      | 'cropsCoordsTopLeft'
      | 'targetSize'
      | 'negativeOriginalSize'
      | 'negativeCropsCoordsTopLeft'
      | 'negativeTargetSize'
      | 'latents'
    >,
    ControlNetOptions {}

export type StableDiffusionXLControlNetComponents = StableDiffusionXLComponents & { readonly controlnets: readonly ControlNet[] };

/** The UNet conditioning an SDXL ControlNet takes too. */
const SDXL_CONTROLNET_CONDITIONING = Object.values(CONDITIONING_INPUTS);

/**
 * Text-to-image with Stable Diffusion XL ONNX exports guided by one or several ControlNets (diffusers'
 * `StableDiffusionXLControlNetPipeline`; several ControlNets act as its `MultiControlNetModel`: their residuals are
 * summed). The ControlNets are SDXL ones: they take the pooled text embeddings and time ids as the UNet does, and the
 * UNet must be exported with the ControlNet residual inputs.
 *
 * Callbacks may read and replace `image`, laid out as in `StableDiffusionControlNetPipeline`:
 * `[rows, 3·ControlNets, height, width]`, `[negative; positive]` (the same picture twice) while classifier-free
 * guidance is on outside guess mode, one row per image otherwise. `disableGuidance` (`SDXLControlnetCFGCutoffCallback`)
 * keeps the conditional half of it along with the prompt embeddings, pooled embeddings and time ids, whatever
 * `numImagesPerPrompt`.
 */
export class StableDiffusionXLControlNetPipeline {
  static readonly callbackTensorInputs: readonly StableDiffusionXLControlNetTensorName[] = [
    'latents', 'promptEmbeds', 'addTextEmbeds', 'addTimeIds', 'image', 'predOriginalSample', 'ipAdapterImageEmbeds',
  ];
  readonly callbackTensorInputs = StableDiffusionXLControlNetPipeline.callbackTensorInputs;
  /** The scheduler template; each generation runs on its own `clone()`. Assign another to swap schedulers. */
  scheduler: Scheduler;
  readonly #residualNames = memoizeSuccess(() => matchResiduals(this.components, SDXL_CONTROLNET_CONDITIONING));

  constructor(readonly components: StableDiffusionXLControlNetComponents) {
    if (components.controlnets.length === 0) throw new InvalidArgumentError('StableDiffusionXLControlNetPipeline needs at least one ControlNet.');
    this.scheduler = components.scheduler;
  }

  static async fromPretrained(dir: string, options: StableDiffusionXLControlNetLoadOptions = {}): Promise<StableDiffusionXLControlNetPipeline> {
    const { controlnets: folders, ...loadOptions } = options;
    const controlnetFolders = controlNetFolders(dir, folders);
    const components = await loadStableDiffusionXLComponents(dir, loadOptions);
    return new StableDiffusionXLControlNetPipeline({ ...components, controlnets: await loadControlNets(controlnetFolders, components.pool) });
  }

  /**
   * The residual names, read from the models (once). A `ModelLoadError` says what does not fit when a ControlNet was
   * made for another UNet (another residual count or text width, or an SD 1.x / 2.x ControlNet).
   */
  residualNames(): Promise<ResidualNames> {
    return this.#residualNames();
  }

  async generate<const Requested extends StableDiffusionXLControlNetTensorName = 'latents', Output extends OutputType = 'image', const BeginRequested extends StableDiffusionXLControlNetTensorName = 'latents'>(
    options: StableDiffusionXLControlNetOptions<Requested, Output, BeginRequested>,
  ): Promise<PipelineOutput<Output>> {
    const { unet, unetConfig, vaeScaleFactor, controlnets } = this.components;
    const control = controlSettings(options, controlnets);
    const { height, width, numInferenceSteps, guidanceScale, guidanceRescale, numImagesPerPrompt } = generationSettings(
      options,
      await controlOutputSize(options, control.images[0], vaeScaleFactor),
      { guidanceScale: 5, vaeScaleFactor, limits: this.components.limits },
    );
    // diffusers' default original size is the control image's, which is the output size.
    const timeIds = textToImageTimeIds(options, { height, width });
    const { generator } = options;
    const { callbacks, scheduler, context } = await startGeneration({ name: 'StableDiffusionXLControlNetPipeline', family: 'stable-diffusion-xl' }, this, options);
    const residualNames = await this.residualNames();
    const doClassifierFreeGuidance = guidanceScale > 1;
    const encoded = await encodePromptXL(this.components, {
      ...options, numImagesPerPrompt, doClassifierFreeGuidance, forceZerosForEmptyPrompt: this.components.forceZerosForEmptyPrompt,
    });
    const images = encoded.promptEmbeds.shape[0];
    const image = await prepareControlImage(control, { width, height }, images, doClassifierFreeGuidance);
    const addTimeIds = tiledTimeIds(timeIds, images, doClassifierFreeGuidance, unetConfig, encoded.pooledPromptEmbeds.shape[1]);

    scheduler.setTimesteps(numInferenceSteps);
    const timesteps = scheduler.timesteps;
    const latentShape = [images, 4, height / vaeScaleFactor, width / vaeScaleFactor];
    const latents = prepareLatents(latentShape, scheduler.initNoiseSigma, generator, options.latents);
    const ipAdapter = await prepareIPAdapter(this.components, options, { batchSize: images, doClassifierFreeGuidance: guidanceScale > 1 });
    const pipeline = context({ guidanceScale, timesteps, batchSize: images, cfgLayout: { ...controlCfgLayout(SDXL_CFG_LAYOUT, control.guessMode), ...ipAdapter.cfgLayout }, ipAdapterScale: ipAdapter.ipAdapterScale, ipAdapterActive: ipAdapter.ipAdapterActive });

    const denoised = await denoise<StableDiffusionXLControlNetTensorName>({
      scheduler, timesteps, pipeline, callbacks, generator, guidanceRescale, eta: options.eta,
      tensors: { latents, ...conditioningXL(encoded, addTimeIds), image, ...ipAdapter.tensors },
      predictNoise: predictNoiseXL(unet, pipeline, ({ latentModelInput, timestep, stepIndex }, tensors) =>
        controlNetResidualFeeds(controlnets, residualNames, control, {
          latentModelInput, timestep, stepIndex, stepCount: timesteps.length, batchSize: images, cfg: pipeline.doClassifierFreeGuidance,
          image: tensors.image as Tensor<'float32'>,
          // The ControlNets take the UNet's conditioning (in guess mode under guidance, its conditional rows).
          conditioning: Object.fromEntries(
            Object.entries(CONDITIONING_INPUTS).map(([name, input]) => {
              const tensorName = name as keyof typeof CONDITIONING_INPUTS;
              return [input, { tensor: tensors[tensorName] as Tensor<'float32'>, rows: SDXL_CFG_LAYOUT[tensorName]! }];
            }),
          ),
        }),
      ),
    });
    return finishOutput(options.outputType ?? ('image' as Output), denoised, this.components);
  }

  /** Frees every ONNX Runtime session of this pipeline. */
  async dispose(): Promise<void> {
    await this.components.pool.dispose();
  }
}
