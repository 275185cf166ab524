import type { CallbackPipeline, CallbackTensorName } from '../contract.js';
import type { RgbImage } from '../pipelines/images.js';
import type { Tensor } from '../tensor.js';

/**
 * The per-generation state a callback sees as `pipeline`. Each `generate` call makes its own, so concurrent
 * generations on one pipeline never see each other's guidance scale or interrupt flag.
 */
export class GenerationContext implements CallbackPipeline {
  guidanceScale: number;
  interrupt = false;
  readonly timesteps: readonly number[];
  readonly batchSize: number;
  readonly signal: AbortSignal;

  constructor(
    readonly pipelineName: string,
    readonly callbackTensorInputs: readonly CallbackTensorName[],
    settings: {
      guidanceScale: number;
      timesteps: ArrayLike<number>;
      batchSize: number;
      signal?: AbortSignal;
      decodeLatents: (latents: Tensor<'float32'>) => Promise<RgbImage[]>;
    },
  ) {
    this.guidanceScale = settings.guidanceScale;
    this.timesteps = Object.freeze(Array.from(settings.timesteps));
    this.batchSize = settings.batchSize;
    this.signal = settings.signal ?? new AbortController().signal;
    this.decodeLatents = settings.decodeLatents;
  }

  readonly decodeLatents: (latents: Tensor<'float32'>) => Promise<RgbImage[]>;

  get numTimesteps(): number {
    return this.timesteps.length;
  }

  /** diffusers: `guidance_scale > 1` (the ONNX UNets here take no guidance embedding). */
  get doClassifierFreeGuidance(): boolean {
    return this.guidanceScale > 1;
  }
}
