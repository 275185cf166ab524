import type { Generator } from '../random/generator.js';
import type { Tensor } from '../tensor.js';

/** Options of one `step` call. */
export interface SchedulerStepOptions {
  /** Source of the noise for stochastic schedulers (Euler Ancestral, DDIM with eta > 0). */
  generator?: Generator;
  /** DDIM's η (diffusers' `eta`, 0 = deterministic DDIM, 1 = DDPM-like); schedulers without one ignore it. */
  eta?: number;
}

/** What `step` returns: diffusers' `SchedulerOutput`, camelCased. */
export interface SchedulerOutput {
  prevSample: Tensor<'float32'>;
  /** The model's estimate of the clean sample, where the algorithm computes one. */
  predOriginalSample?: Tensor<'float32'>;
}

/**
 * The scheduler interface every pipeline drives: diffusers' API shape, camelCased.
 * An instance holds the state of one run (step index, stored model outputs); `clone()` gives a fresh instance
 * with the same config so that two runs never share state.
 */
export interface Scheduler {
  /** diffusers' class name, e.g. `'EulerDiscreteScheduler'`. */
  readonly className: string;
  /** Whether `step` returns `predOriginalSample` (the estimate of the clean sample); PNDM computes none. */
  readonly computesPredOriginalSample: boolean;
  /** The resolved config (camelCase keys, class defaults filled in); `fromConfig(config)` rebuilds an equal scheduler. */
  readonly config: Readonly<Record<string, unknown>>;
  /** UNet calls per `step`-sequence element (diffusers' `order`); img2img uses it to cut the schedule. */
  readonly order: number;
  readonly initNoiseSigma: number;
  /** The timesteps of the current schedule, in the order the loop visits them (empty before `setTimesteps`). */
  readonly timesteps: Float64Array;
  readonly numInferenceSteps: number | undefined;
  /** Index into `timesteps` of the next `step` call, once the run has started. */
  readonly stepIndex: number | undefined;
  readonly beginIndex: number | undefined;

  setTimesteps(numInferenceSteps: number): void;
  setBeginIndex(beginIndex: number): void;
  scaleModelInput(sample: Tensor<'float32'>, timestep: number): Tensor<'float32'>;
  step(modelOutput: Tensor<'float32'>, timestep: number, sample: Tensor<'float32'>, options?: SchedulerStepOptions): SchedulerOutput;
  /** Noise `originalSamples` to the level of `timestep` (one timestep for the whole batch). */
  addNoise(originalSamples: Tensor<'float32'>, noise: Tensor<'float32'>, timestep: number): Tensor<'float32'>;
  /** A fresh instance with the same config and no run state. */
  clone(): Scheduler;
}
