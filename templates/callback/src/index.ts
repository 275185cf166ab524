/**
 * A template callback package for diff: `LatentStatsCallback` reports the mean, standard deviation, minimum and
 * maximum of every image's latents after each step — a cheap way to watch a generation converge, or to spot one
 * that diverges (values blowing up, NaN) before it is decoded.
 *
 * It imports only `@diff/core/contract` (types) and `@diff/core/plugin` (runtime values without ONNX Runtime), so
 * the package stays cheap to load wherever the registry lists callbacks. Copy this folder, rename the package and
 * the callback, and keep the parts the comments call out.
 */
import type {
  CallbackKwargs,
  CallbackPipeline,
  CallbackPlugin,
  CallbackPluginDescriptor,
  CallbackTensorName,
  JsonSchema,
  PredOriginalSampleName,
} from '@diff/core/contract';
import { InvalidArgumentError, type Tensor } from '@diff/core/plugin';
import { z } from 'zod';

/** Summary statistics of one image's latents (all channels). */
export interface TensorStats {
  readonly mean: number;
  /** Population standard deviation. */
  readonly std: number;
  readonly min: number;
  readonly max: number;
  /** Whether every value is a finite number (no NaN, no ±Infinity). */
  readonly finite: boolean;
}

/** What `onStats` receives after a reported step. */
export interface LatentStats {
  readonly stepIndex: number;
  readonly timestep: number;
  readonly numTimesteps: number;
  /** The tensor measured: `'latents'` where `'denoised'` was asked for but the scheduler computes no x0 (PNDM). */
  readonly source: LatentStatsSource;
  /** One entry per image of the batch. */
  readonly images: readonly TensorStats[];
}

export type LatentStatsHandler = (stats: LatentStats) => void | Promise<void>;
export type LatentStatsSource = 'latents' | 'denoised';

const SOURCES: readonly LatentStatsSource[] = ['latents', 'denoised'];

export interface LatentStatsCallbackOptions {
  /** Receives the statistics; the generation waits for a promise it returns. */
  onStats: LatentStatsHandler;
  /** Report after every this many steps (step indices every−1, 2·every−1, …); the last step always. Default 1. */
  every?: number;
  /**
   * `'latents'` (default): the latents the next step starts from. `'denoised'`: the scheduler's estimate of the
   * clean latents at this step (x0), where the scheduler computes one; the latents otherwise.
   */
  source?: LatentStatsSource;
}

/** Statistics of each row (image) of a `[batch, …]` tensor, in one pass per row (Welford, in float64). */
export function tensorStats(tensor: Tensor<'float32'>): TensorStats[] {
  const [rows] = tensor.shape;
  const rowSize = tensor.size / rows;
  return Array.from({ length: rows }, (_, row) => {
    let mean = 0;
    let squares = 0;
    let min = Infinity;
    let max = -Infinity;
    let finite = true;
    for (let i = 0; i < rowSize; i++) {
      const value = tensor.data[row * rowSize + i];
      finite &&= Number.isFinite(value);
      const delta = value - mean;
      mean += delta / (i + 1);
      squares += delta * (value - mean);
      min = Math.min(min, value);
      max = Math.max(max, value);
    }
    return { mean, std: Math.sqrt(squares / rowSize), min, max, finite };
  });
}

function checkOptions(options: LatentStatsCallbackOptions): void {
  // JavaScript callers may pass anything: each message names the option and what is allowed.
  const { onStats, every = 1, source = 'latents' } = options ?? ({} as LatentStatsCallbackOptions);
  if (typeof onStats !== 'function') {
    throw new InvalidArgumentError('LatentStatsCallback needs onStats, a function that receives the statistics of each reported step.');
  }
  if (!(Number.isInteger(every) && every >= 1)) {
    throw new InvalidArgumentError(`LatentStatsCallback: every must be a positive integer (steps between reports), got ${String(every)}.`);
  }
  if (!SOURCES.includes(source)) {
    throw new InvalidArgumentError(`LatentStatsCallback: source must be 'latents' or 'denoised', got ${String(source)}.`);
  }
}

/** The tensors the hook receives: the latents always, x0 (read-only) where the scheduler computes it. */
type StatsKwargs = CallbackKwargs<'latents'> & Partial<CallbackKwargs<PredOriginalSampleName>>;

/**
 * Reports latent statistics after every `every` steps and after the last one. It only reads tensors, keeps no state
 * between steps and runs after the other callbacks of the step (`enforce: 'post'`), so it measures what the next
 * step starts from. One instance may serve any number of generations at once.
 */
export class LatentStatsCallback implements CallbackPlugin<'latents'> {
  readonly specificationVersion = 'v1' as const;
  readonly name = 'LatentStatsCallback';
  /** `latents` exists in every pipeline; anything else a callback needs must be in the pipeline's allow-list. */
  readonly tensorInputs = ['latents'] as const;
  readonly optionalTensorInputs: readonly CallbackTensorName[];
  readonly enforce = 'post' as const;
  readonly every: number;
  readonly source: LatentStatsSource;
  private readonly onStats: LatentStatsHandler;

  constructor(options: LatentStatsCallbackOptions) {
    checkOptions(options);
    this.onStats = options.onStats;
    this.every = options.every ?? 1;
    this.source = options.source ?? 'latents';
    // Ask for x0 only when it is used: an optional input never fails, and an unused one costs a copy per step.
    this.optionalTensorInputs = this.source === 'denoised' ? ['predOriginalSample'] : [];
  }

  /** Whether `stepIndex` is reported: every `every` steps, the last step, and a step after which the run stops. */
  shouldReport(pipeline: Pick<CallbackPipeline, 'numTimesteps' | 'interrupt'>, stepIndex: number): boolean {
    return (stepIndex + 1) % this.every === 0 || stepIndex === pipeline.numTimesteps - 1 || pipeline.interrupt;
  }

  async onStepEnd(pipeline: CallbackPipeline, stepIndex: number, timestep: number, callbackKwargs: StatsKwargs): Promise<void> {
    if (!this.shouldReport(pipeline, stepIndex)) return;
    const denoised = this.source === 'denoised' ? callbackKwargs.predOriginalSample : undefined;
    await this.onStats({
      stepIndex,
      timestep,
      numTimesteps: pipeline.numTimesteps,
      source: denoised ? 'denoised' : 'latents',
      images: tensorStats(denoised ?? callbackKwargs.latents),
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Registry descriptor: how apps create the callback by name from JSON-able options (a CLI flag, an HTTP request).

const latentStatsOptionsSchema = z.strictObject({
  every: z.int().min(1).default(1).describe('Report after every this many steps; the last step is always reported.'),
  source: z
    .enum(SOURCES as [LatentStatsSource, ...LatentStatsSource[]])
    .default('latents')
    .describe("'latents': the latents the next step starts from; 'denoised': the scheduler's estimate of the clean latents (x0), falling back to the latents."),
});

/** Values the registry cannot carry in JSON: functions arrive here, never in the options. */
export interface LatentStatsRuntime {
  /** Receives the statistics of each reported step. Required. */
  onStats: LatentStatsHandler;
}

/**
 * The registry descriptor: `registerCallbackPlugin(plugin)`, then
 * `createCallback('latent-stats', { every: 5 }, { onStats: (stats) => console.log(stats) })`.
 */
export const plugin: CallbackPluginDescriptor<
  z.output<typeof latentStatsOptionsSchema>,
  LatentStatsRuntime,
  z.input<typeof latentStatsOptionsSchema>
> = {
  specificationVersion: 'v1',
  name: 'latent-stats',
  description: "Reports the mean, standard deviation, minimum and maximum of each image's latents after every few steps.",
  options: latentStatsOptionsSchema,
  optionsJsonSchema: z.toJSONSchema(latentStatsOptionsSchema, { io: 'input' }) as JsonSchema,
  create(options, runtime) {
    if (typeof runtime?.onStats !== 'function') {
      throw new InvalidArgumentError("The 'latent-stats' callback needs onStats at runtime: createCallback('latent-stats', options, { onStats }).");
    }
    return new LatentStatsCallback({ ...options, onStats: runtime.onStats });
  },
};

// Declaration merging: `createCallback('latent-stats', …)` checks its options and runtime values at compile time.
declare module '@diff/core/contract' {
  interface CallbackPluginRegistry {
    'latent-stats': typeof plugin;
  }
}
