/**
 * `@diff/core/testing`: what tests of pipelines and callbacks need without real weights — toy pipeline folders
 * (SD 1.x, SDXL, inpainting, ControlNet) whose small graphs run the real pipeline code in milliseconds, and a
 * per-call context for unit-testing a callback without a pipeline. Needs `onnx-proto` installed (an optional peer
 * dependency of @diff/core) to write the toy models.
 */
import { GenerationContext } from './callbacks/context.js';
import type { CallbackPipeline, CallbackTensorName } from './contract.js';

import type { Tensor } from './tensor.js';
import { SDXL_CFG_LAYOUT, SD_CFG_LAYOUT } from './pipelines/cfg-layouts.js';

export { writeToyPipeline, type ToyPipelineKind, type ToyPipelineOptions } from './testing/toy-models.js';

/** A per-call context as a pipeline would make it, for unit tests of callbacks; `attach` gives it the loop tensors. */
export function createCallbackTestContext(
  settings: {
    modelFamily?: CallbackPipeline['modelFamily'];
    guidanceScale?: number;
    numTimesteps?: number;
    batchSize?: number;
    callbackTensorInputs?: readonly CallbackTensorName[];
    signal?: AbortSignal;
  } = {},
): CallbackPipeline & { attach(tensors: Record<string, Tensor<'float32'>>): void } {
  const modelFamily = settings.modelFamily ?? 'stable-diffusion';
  const numTimesteps = settings.numTimesteps ?? 10;
  const xl = modelFamily === 'stable-diffusion-xl';
  const context = new GenerationContext({
    pipelineName: xl ? 'StableDiffusionXLPipeline' : 'StableDiffusionPipeline',
    modelFamily,
    callbackTensorInputs: settings.callbackTensorInputs ?? (xl
      ? ['latents', 'promptEmbeds', 'addTextEmbeds', 'addTimeIds', 'predOriginalSample']
      : ['latents', 'promptEmbeds', 'negativePromptEmbeds', 'predOriginalSample']),
    cfgLayout: xl ? SDXL_CFG_LAYOUT : SD_CFG_LAYOUT,
    guidanceScale: settings.guidanceScale ?? 7.5,
    timesteps: Array.from({ length: numTimesteps }, (_, i) => Math.round(999 - (i * 1000) / numTimesteps)),
    batchSize: settings.batchSize ?? 1,
    latentChannels: 4,
    vaeScaleFactor: 8,
    signal: settings.signal,
    decodeLatents: async () => [],
  });
  return Object.assign(context, { attach: (tensors: Record<string, Tensor<'float32'>>) => context.attachLoopTensors(tensors) });
}
