import { PipelineCallback, type Tensor } from '@diff/core';
import type {
  CallbackKwargs,
  CallbackPipeline,
  CallbackTensorName,
  StableDiffusionTensorName,
  StableDiffusionXLTensorName,
} from '@diff/core/contract';

/**
 * Keeps the conditional half of every CFG-doubled tensor: rows `[batchSize, 2·batchSize)` of a `[negative; positive]`
 * batch. Tensors that are not doubled (latents, a guess-mode control image) are left alone. Unlike diffusers'
 * `[-1:]`, this keeps every image's row when the batch holds more than one image.
 */
function keepConditionalHalf<Name extends string>(kwargs: CallbackKwargs<Name>, batchSize: number): CallbackKwargs<Name> {
  const result = { ...kwargs } as Record<string, Tensor<'float32'>>;
  for (const [name, tensor] of Object.entries<Tensor<'float32'>>(kwargs)) {
    if (tensor.shape[0] === 2 * batchSize) result[name] = tensor.narrow(0, batchSize, batchSize);
  }
  return result as CallbackKwargs<Name>;
}

/** The shared rule: at the cut-off step, guidance goes to 0 and the doubled tensors lose their negative half. */
abstract class CFGCutoffCallback<Name extends string> extends PipelineCallback<Name> {
  callbackFn(pipeline: CallbackPipeline, stepIndex: number, _timestep: number, callbackKwargs: CallbackKwargs<Name>) {
    if (stepIndex !== this.cutoffStep(pipeline)) return callbackKwargs;
    pipeline.guidanceScale = 0;
    return keepConditionalHalf(callbackKwargs, pipeline.batchSize);
  }
}

/** Inputs of the SD 1.x pipelines that are doubled for classifier-free guidance, where the pipeline has them. */
const SD_CFG_DOUBLED_EXTRAS: readonly CallbackTensorName[] = ['mask', 'maskedImageLatents', 'image'];

/**
 * Turns classifier-free guidance off after `cutoffStepRatio` of the steps (or at `cutoffStepIndex`) in every SD 1.x
 * pipeline: text-to-image, image-to-image, inpainting and ControlNet (where diffusers' own crashes).
 */
export class SDCFGCutoffCallback extends CFGCutoffCallback<Extract<StableDiffusionTensorName, 'promptEmbeds'>> {
  readonly tensorInputs = ['promptEmbeds'] as const;
  override readonly optionalTensorInputs = SD_CFG_DOUBLED_EXTRAS;
}

/** The same for SDXL pipelines: halves the prompt embeddings, pooled text embeddings and time ids. */
export class SDXLCFGCutoffCallback extends CFGCutoffCallback<Exclude<StableDiffusionXLTensorName, 'latents'>> {
  readonly tensorInputs = ['promptEmbeds', 'addTextEmbeds', 'addTimeIds'] as const;
}

/** The same for SDXL ControlNet pipelines: also halves the control image (parity with diffusers' list). */
export class SDXLControlnetCFGCutoffCallback extends CFGCutoffCallback<'promptEmbeds' | 'addTextEmbeds' | 'addTimeIds' | 'image'> {
  readonly tensorInputs = ['promptEmbeds', 'addTextEmbeds', 'addTimeIds', 'image'] as const;
}

export type { PipelineCallbackOptions } from '@diff/core';
