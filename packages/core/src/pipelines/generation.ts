import { GenerationContext } from '../callbacks/context.js';
import { resolveStepEndCallbacks } from '../callbacks/step-end.js';
import type { CallbackTensorName } from '../contract.js';
import type { OnnxModel } from '../runtime/onnx-model.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import { latentDecoder } from './steps.js';

/** What `startGeneration` needs of a pipeline. */
interface GeneratingPipeline {
  readonly scheduler: Scheduler;
  readonly callbackTensorInputs: readonly CallbackTensorName[];
  readonly components: { readonly vaeDecoder: OnnxModel; readonly scalingFactor: number };
}

/**
 * How every `generate` starts: the callbacks resolved and checked against the pipeline's allow-list before any model
 * runs, a fresh scheduler (a clone: concurrent generations never share scheduler state), and a maker for the
 * per-call state the callbacks see, once the schedule and the batch are known.
 */
export function startGeneration(
  pipelineName: string,
  pipeline: GeneratingPipeline,
  options: { callbackOnStepEnd?: unknown; callbackOnStepEndTensorInputs?: readonly string[]; signal?: AbortSignal },
) {
  const callbacks = resolveStepEndCallbacks(options.callbackOnStepEnd, {
    tensorInputs: options.callbackOnStepEndTensorInputs,
    allowed: pipeline.callbackTensorInputs,
    pipelineName,
  });
  const context = (settings: { guidanceScale: number; timesteps: ArrayLike<number>; batchSize: number }) =>
    new GenerationContext(pipelineName, pipeline.callbackTensorInputs, {
      ...settings,
      signal: options.signal,
      decodeLatents: latentDecoder(pipeline.components),
    });
  return { callbacks, scheduler: pipeline.scheduler.clone(), context };
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
