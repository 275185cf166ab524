import type {
  CallbackKwargs,
  CallbackPipeline,
  CallbackPlugin,
  CallbackPluginDescriptor,
  CallbackTensorName,
  JsonSchema,
  PredOriginalSampleName,
} from '@diff/core/contract';
import { InvalidArgumentError } from '@diff/core/plugin';
import { z } from 'zod';

/** The tensors `when` receives: the latents after the step, and the scheduler's x0 estimate where it computes one. */
export type InterruptKwargs = CallbackKwargs<'latents'> & Partial<CallbackKwargs<PredOriginalSampleName>>;

/** Decides after a step whether to stop: diffusers' step-end signature, returning (or resolving to) a boolean. */
export type InterruptPredicate = (
  pipeline: CallbackPipeline,
  stepIndex: number,
  timestep: number,
  callbackKwargs: InterruptKwargs,
) => boolean | Promise<boolean>;

/** When to stop; the first condition met wins. At least one is required. */
export interface InterruptCallbackOptions {
  /** Stop after this step index (diffusers' seed guide stops after step 10). */
  atStep?: number;
  /** Stop after step `floor(numTimesteps · atRatio)`; 1 never stops, as that step does not exist. */
  atRatio?: number;
  /** Stop after the first step that ends once this many milliseconds have passed since the generation's first step began. */
  afterMs?: number;
  /** Stop after the first step at which this returns (or resolves to) `true`. */
  when?: InterruptPredicate;
  /** The clock `afterMs` reads, in milliseconds. Default `performance.now`; tests pass a fake one. */
  now?: () => number;
}

function describeValue(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

function checkOptions(options: InterruptCallbackOptions): void {
  const { atStep, atRatio, afterMs, when, now } = options;
  if (atStep === undefined && atRatio === undefined && afterMs === undefined && when === undefined) {
    throw new InvalidArgumentError('InterruptCallback needs at least one condition: atStep, atRatio, afterMs or when.');
  }
  if (atStep !== undefined && !(Number.isInteger(atStep) && atStep >= 0)) {
    throw new InvalidArgumentError(`InterruptCallback: atStep must be a non-negative integer (a step index), got ${describeValue(atStep)}.`);
  }
  if (atRatio !== undefined && !(typeof atRatio === 'number' && atRatio >= 0 && atRatio <= 1)) {
    throw new InvalidArgumentError(`InterruptCallback: atRatio must be a number between 0 and 1, got ${describeValue(atRatio)}.`);
  }
  if (afterMs !== undefined && !(Number.isFinite(afterMs) && afterMs >= 0)) {
    throw new InvalidArgumentError(`InterruptCallback: afterMs must be a finite number of milliseconds ≥ 0, got ${describeValue(afterMs)}.`);
  }
  if (when !== undefined && typeof when !== 'function') {
    throw new InvalidArgumentError(`InterruptCallback: when must be a function (pipeline, stepIndex, timestep, callbackKwargs) => boolean, got ${typeof when}.`);
  }
  if (now !== undefined && typeof now !== 'function') {
    throw new InvalidArgumentError(`InterruptCallback: now must be a function returning milliseconds, got ${typeof now}.`);
  }
}

/**
 * Sets `pipeline.interrupt = true` after a step — a fixed step, a fraction of the schedule, a time budget or a
 * predicate, whichever comes first. The generation then decodes the latents it has and returns them with
 * `interruptedAtStep` set. One instance may serve several generations at once: its state is kept per generation.
 */
export class InterruptCallback implements CallbackPlugin<'latents'> {
  readonly specificationVersion = 'v1' as const;
  readonly name = 'InterruptCallback';
  readonly tensorInputs = ['latents'] as const;
  readonly optionalTensorInputs: readonly CallbackTensorName[] = ['predOriginalSample'];
  readonly atStep?: number;
  readonly atRatio?: number;
  readonly afterMs?: number;
  private readonly when?: InterruptPredicate;
  private readonly now: () => number;
  /** When each generation's first step began, keyed by its per-call context. */
  private readonly startedAt = new WeakMap<CallbackPipeline, number>();

  constructor(options: InterruptCallbackOptions) {
    checkOptions(options ?? {});
    this.atStep = options.atStep;
    this.atRatio = options.atRatio;
    this.afterMs = options.afterMs;
    this.when = options.when;
    this.now = options.now ?? (() => performance.now());
  }

  /** The step after which `atStep` or `atRatio` stops a run of `numTimesteps` steps (`Infinity`: neither is set). */
  stopStep(pipeline: Pick<CallbackPipeline, 'numTimesteps'>): number {
    const byRatio = this.atRatio === undefined ? Infinity : Math.floor(pipeline.numTimesteps * this.atRatio);
    return Math.min(this.atStep ?? Infinity, byRatio);
  }

  onStepBegin(pipeline: CallbackPipeline): void {
    this.startTime(pipeline);
  }

  async onStepEnd(pipeline: CallbackPipeline, stepIndex: number, timestep: number, callbackKwargs: InterruptKwargs): Promise<void> {
    if (pipeline.interrupt) return;
    const overTime = this.afterMs !== undefined && this.now() - this.startTime(pipeline) >= this.afterMs;
    if (stepIndex >= this.stopStep(pipeline) || overTime || (await this.when?.(pipeline, stepIndex, timestep, callbackKwargs))) {
      pipeline.interrupt = true;
    }
  }

  /** The time the generation's first hook call saw (recorded by that call). */
  private startTime(pipeline: CallbackPipeline): number {
    let start = this.startedAt.get(pipeline);
    if (start === undefined) {
      start = this.now();
      this.startedAt.set(pipeline, start);
    }
    return start;
  }
}

/**
 * A Stop button: put `controller.callback` in `callbackOnStepEnd` of any number of generations; `interrupt()` stops
 * each of them at its next step boundary (before the next model call, or after the step in flight). The flag stays
 * set — generations started later stop before their first step — until `reset()`.
 */
export class InterruptController {
  private stopRequested = false;
  /** The plugin to attach; it reads no tensors, so it fits every pipeline. */
  readonly callback: CallbackPlugin<never>;

  constructor() {
    const stopIfRequested = (pipeline: CallbackPipeline): void => {
      if (this.stopRequested) pipeline.interrupt = true;
    };
    this.callback = Object.freeze({
      specificationVersion: 'v1',
      name: 'InterruptController',
      tensorInputs: [],
      onStepBegin: stopIfRequested,
      onStepEnd: stopIfRequested,
    });
  }

  /** Stops every attached generation at its next step boundary; it returns normally with what it has. */
  interrupt(): void {
    this.stopRequested = true;
  }

  /** Lets generations run again. */
  reset(): void {
    this.stopRequested = false;
  }

  get interrupted(): boolean {
    return this.stopRequested;
  }
}

const interruptOptionsSchema = z.strictObject({
  atStep: z.int().min(0).optional().describe('Stop after this step index (0-based).'),
  atRatio: z.number().min(0).max(1).optional().describe('Stop after step floor(numTimesteps · atRatio); 1 never stops.'),
  afterMs: z.number().min(0).optional().describe("Stop after the first step that ends once this many milliseconds have passed since the generation's first step began."),
});

/** Values the registry cannot carry in JSON. */
export interface InterruptRuntime {
  /** Stop after the first step at which this returns (or resolves to) `true`. */
  when?: InterruptPredicate;
}

/**
 * The registry descriptor: `registry.register(plugin)`, then `createCallback('interrupt', { atStep: 10 })` or
 * `createCallback('interrupt', {}, { when })`.
 */
export const plugin: CallbackPluginDescriptor<
  z.output<typeof interruptOptionsSchema>,
  InterruptRuntime,
  z.input<typeof interruptOptionsSchema>
> = {
  specificationVersion: 'v1',
  name: 'interrupt',
  description: 'Stops the generation after a step, a fraction of the steps, a time budget or a predicate, and decodes what it has.',
  options: interruptOptionsSchema,
  optionsJsonSchema: z.toJSONSchema(interruptOptionsSchema, { io: 'input' }) as JsonSchema,
  create: (options, runtime) => new InterruptCallback({ ...options, when: runtime?.when }),
};

declare module '@diff/core/contract' {
  interface CallbackPluginRegistry {
    interrupt: typeof plugin;
  }
}
