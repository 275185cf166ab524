import { GenerationContext, type CfgLayout } from '../callbacks/context.js';
import { resolveCallbacks, type CallbackOptionValues } from '../callbacks/resolve.js';
import type { CallbackPipeline, CallbackTensorName } from '../contract.js';
import type { OnnxModel } from '../runtime/onnx-model.js';
import { resolveScheduler, type SchedulerName } from '../schedulers/index.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import { hasIPAdapter } from './ip-adapter.js';
import { latentDecoder } from './steps.js';

/** Which pipeline is generating: its class name and model family, as callbacks see them. */
export interface PipelineIdentity {
  readonly name: string;
  readonly family: CallbackPipeline['modelFamily'];
}

/** What `startGeneration` needs of a pipeline. */
interface GeneratingPipeline {
  readonly scheduler: Scheduler;
  readonly callbackTensorInputs: readonly CallbackTensorName[];
  readonly components: {
    readonly unet: OnnxModel;
    readonly vaeDecoder: OnnxModel;
    readonly scalingFactor: number;
    readonly vaeScaleFactor: number;
    readonly unetConfig: Readonly<Record<string, unknown>>;
  };
}

/**
 * How every `generate` starts: the callbacks resolved and checked against the pipeline's allow-list before any model
 * runs, a fresh scheduler (the per-call `scheduler` option, else a clone of the pipeline's: concurrent generations
 * never share scheduler state), and a maker for the
 * per-call state the callbacks see, once the schedule, the batch and the CFG layout are known.
 */
export async function startGeneration(
  identity: PipelineIdentity,
  pipeline: GeneratingPipeline,
  options: CallbackOptionValues & { signal?: AbortSignal; scheduler?: SchedulerName | Scheduler },
) {
  const scheduler = resolveScheduler(options.scheduler, pipeline.scheduler);
  const unavailable: Record<string, string> = {};
  if (!scheduler.computesPredOriginalSample) {
    unavailable.predOriginalSample = `${scheduler.className} computes no predicted clean sample; use optionalTensorInputs for it`;
  }
  if (!(await hasIPAdapter(pipeline.components.unet))) {
    unavailable.ipAdapterImageEmbeds = 'this model has no IP-Adapter; use optionalTensorInputs for it';
  }
  const callbacks = resolveCallbacks(options, { pipelineName: identity.name, allowed: pipeline.callbackTensorInputs, unavailable });
  const { components } = pipeline;
  const outChannels = components.unetConfig.out_channels;
  const context = (settings: { guidanceScale: number; timesteps: ArrayLike<number>; batchSize: number; cfgLayout: CfgLayout; ipAdapterScale?: number; ipAdapterActive?: boolean }) =>
    new GenerationContext({
      ...settings,
      pipelineName: identity.name,
      modelFamily: identity.family,
      callbackTensorInputs: pipeline.callbackTensorInputs,
      latentChannels: typeof outChannels === 'number' ? outChannels : 4,
      vaeScaleFactor: components.vaeScaleFactor,
      signal: options.signal,
      decodeLatents: latentDecoder(components),
    });
  return { callbacks, scheduler, context };
}

/** The picture size asked for, else diffusers' default: the UNet config's `sample_size` × the VAE factor. */
export function pictureSize(
  options: { readonly height?: number; readonly width?: number },
  components: { readonly unetConfig: Record<string, unknown>; readonly vaeScaleFactor: number },
  fallbackSampleSize: number,
): { height: number; width: number } {
  const sampleSize = components.unetConfig.sample_size;
  const defaultSize = (typeof sampleSize === 'number' ? sampleSize : fallbackSampleSize) * components.vaeScaleFactor;
  return { height: options.height ?? defaultSize, width: options.width ?? defaultSize };
}
