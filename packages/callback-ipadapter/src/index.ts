import type { CallbackKwargs, CallbackPipeline, CallbackPlugin, CallbackPluginDescriptor, JsonSchema } from '@diff/core/contract';
import { InvalidArgumentError, PipelineCallback, pipelineCallbackOptions, withConstructorRules, type PipelineCallbackOptions } from '@diff/core/plugin';
import { z } from 'zod';

export type { PipelineCallbackOptions } from '@diff/core/plugin';

/**
 * diffusers' `IPAdapterScaleCutoffCallback`: sets the IP-Adapter scale to 0 at the end of the cut-off step
 * (`floor(numTimesteps · cutoffStepRatio)`, or `cutoffStepIndex`), so the adapter is off from the next step on.
 *
 * diffusers calls `set_ip_adapter_scale(0.0)` on the shared pipeline, which leaks into every later call; here the
 * scale belongs to the generation that ran the callback (`pipeline` is its per-call context). It reads no tensors,
 * so it fits every pipeline; on a model without an adapter the scale it sets has no effect.
 */
export class IPAdapterScaleCutoffCallback extends PipelineCallback<never> {
  readonly tensorInputs: readonly never[] = [];

  callbackFn(pipeline: CallbackPipeline, stepIndex: number, _timestep: number, callbackKwargs: CallbackKwargs<never>) {
    if (stepIndex === this.cutoffStep(pipeline)) pipeline.ipAdapterScale = 0;
    return callbackKwargs;
  }
}

/** The built-in shapes of the scale between `start` and `end`. */
export const IP_ADAPTER_SCALE_SCHEDULES = ['linear', 'cosine', 'step'] as const;
export type IPAdapterScaleScheduleName = (typeof IP_ADAPTER_SCALE_SCHEDULES)[number];

/** A custom schedule: the scale step `stepIndex` (0-based) of a run of `numTimesteps` steps runs with. */
export type IPAdapterScaleFunction = (stepIndex: number, numTimesteps: number) => number;

/** A built-in schedule, JSON-able. Progress runs from 0 at step 0 to 1 at the last step. */
export interface BuiltInIPAdapterScaleSchedule {
  schedule: IPAdapterScaleScheduleName;
  /** The scale up to the progress `start`. Default 1. */
  from?: number;
  /** The scale from the progress `end` on. Default 0. */
  to?: number;
  /** The progress (0–1) at which the scale starts to move from `from`. Default 0; must stay 0 for `'step'`. */
  start?: number;
  /** The progress (0–1) at which the scale reaches `to` (where `'step'` jumps). Default 1; greater than `start`. */
  end?: number;
}

/** Either a built-in schedule or `scaleAt`, not both. */
export type IPAdapterScaleScheduleOptions =
  | (BuiltInIPAdapterScaleSchedule & { scaleAt?: never })
  | { scaleAt: IPAdapterScaleFunction; schedule?: never; from?: never; to?: never; start?: never; end?: never };

const SHAPE_OPTIONS = ['from', 'to', 'start', 'end'] as const;

function describeValue(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

function checkBuiltInSchedule(options: BuiltInIPAdapterScaleSchedule): Readonly<Required<BuiltInIPAdapterScaleSchedule>> {
  const { schedule, from = 1, to = 0, start = 0, end = 1 } = options;
  const fail = (message: string) => new InvalidArgumentError(`IPAdapterScaleScheduleCallback: ${message}`);
  if (!IP_ADAPTER_SCALE_SCHEDULES.includes(schedule)) {
    throw fail(`schedule must be one of ${IP_ADAPTER_SCALE_SCHEDULES.map((name) => `'${name}'`).join(', ')}, got ${describeValue(schedule)}.`);
  }
  for (const [option, value] of [['from', from], ['to', to]] as const) {
    if (!Number.isFinite(value)) throw fail(`${option} must be a finite number (an IP-Adapter scale: 0 = off, 1 = full strength), got ${describeValue(value)}.`);
  }
  if (!(typeof start === 'number' && typeof end === 'number' && start >= 0 && start < end && end <= 1)) {
    throw fail(`start and end must be numbers with 0 ≤ start < end ≤ 1 (fractions of the run), got start ${describeValue(start)} and end ${describeValue(end)}.`);
  }
  if (schedule === 'step' && start !== 0) {
    throw fail(`start has no meaning for the 'step' schedule, which holds \`from\` until end and then jumps to \`to\`; leave it at 0, got ${describeValue(start)}.`);
  }
  return Object.freeze({ schedule, from, to, start, end });
}

/** How far `u` (0–1) of the way from `from` to `to` each built-in schedule is. */
const EASING: Record<IPAdapterScaleScheduleName, (u: number) => number> = {
  linear: (u) => u,
  cosine: (u) => (1 - Math.cos(Math.PI * u)) / 2,
  step: (u) => (u >= 1 ? 1 : 0),
};

/**
 * The IP-Adapter scale as a function of the step — what diffusers users write by hand around
 * `set_ip_adapter_scale`. Before each step's model call (`onStepBegin`, ahead of other plugins) it sets
 * `pipeline.ipAdapterScale` to the scale of that step, so step `i` runs with `scaleAt(i, numTimesteps)`:
 *
 * - Built-in schedules: step `i` of `N` is at progress `p = i / (N − 1)` (0 at the first step, 1 at the last; 0 when
 *   `N = 1`). The scale is `from` while `p ≤ start`, `to` once `p ≥ end`, and in between
 *   `from · (1 − w) + to · w` with `u = (p − start) / (end − start)` and `w = u` (`'linear'`),
 *   `w = (1 − cos πu) / 2` (`'cosine'`), or `w = 0` until `p` reaches `end` (`'step'`: a jump at `end`).
 *   `{ schedule: 'linear' }` ramps from 1 at step 0 to 0 at the last step.
 * - `scaleAt(stepIndex, numTimesteps)`: any function returning a finite number.
 *
 * The schedule replaces the generation's `ipAdapterScale` option from step 0 on, for that generation only; on a
 * model without an adapter the scale it sets has no effect.
 */
export class IPAdapterScaleScheduleCallback implements CallbackPlugin<never> {
  readonly specificationVersion = 'v1' as const;
  readonly tensorInputs = [] as const;
  // Before other step-begin hooks, so that they see the scale this step's model call runs with.
  readonly enforce = 'pre' as const;
  /** The built-in schedule with its defaults filled in; `undefined` for a custom `scaleAt`. */
  readonly config: Readonly<Required<BuiltInIPAdapterScaleSchedule>> | undefined;
  private readonly customScaleAt: IPAdapterScaleFunction | undefined;

  constructor(options: IPAdapterScaleScheduleOptions) {
    const given = (options ?? {}) as Partial<BuiltInIPAdapterScaleSchedule> & { scaleAt?: unknown };
    if (given.scaleAt !== undefined) {
      if (typeof given.scaleAt !== 'function') {
        throw new InvalidArgumentError(`IPAdapterScaleScheduleCallback: scaleAt must be a function (stepIndex, numTimesteps) => scale, got ${typeof given.scaleAt}.`);
      }
      const shaping = ['schedule', ...SHAPE_OPTIONS].filter((option) => given[option as keyof typeof given] !== undefined);
      if (shaping.length > 0) {
        throw new InvalidArgumentError(
          `IPAdapterScaleScheduleCallback takes either schedule (with from, to, start, end) or scaleAt, not both; got scaleAt with ${shaping.join(', ')}.`,
        );
      }
      this.customScaleAt = given.scaleAt as IPAdapterScaleFunction;
      this.config = undefined;
    } else if (given.schedule === undefined) {
      throw new InvalidArgumentError(
        `IPAdapterScaleScheduleCallback needs schedule (${IP_ADAPTER_SCALE_SCHEDULES.map((name) => `'${name}'`).join(', ')}) or a scaleAt function.`,
      );
    } else {
      this.config = checkBuiltInSchedule(given as BuiltInIPAdapterScaleSchedule);
    }
  }

  get name(): string {
    return this.constructor.name;
  }

  /** The scale step `stepIndex` of a run of `numTimesteps` steps runs with. */
  scaleAt(stepIndex: number, numTimesteps: number): number {
    if (this.customScaleAt) {
      const scale = this.customScaleAt(stepIndex, numTimesteps);
      if (typeof scale !== 'number' || !Number.isFinite(scale)) {
        throw new InvalidArgumentError(
          `IPAdapterScaleScheduleCallback: scaleAt(${stepIndex}, ${numTimesteps}) returned ${describeValue(scale)}; it must return a finite number.`,
        );
      }
      return scale;
    }
    const { schedule, from, to, start, end } = this.config as Required<BuiltInIPAdapterScaleSchedule>;
    const progress = numTimesteps > 1 ? stepIndex / (numTimesteps - 1) : 0;
    const u = Math.min(1, Math.max(0, (progress - start) / (end - start)));
    const w = EASING[schedule](u);
    // Interpolated so that w = 0 and w = 1 give `from` and `to` exactly.
    return from * (1 - w) + to * w;
  }

  onStepBegin(pipeline: CallbackPipeline, stepIndex: number, _timestep: number, callbackKwargs: CallbackKwargs<never>) {
    pipeline.ipAdapterScale = this.scaleAt(stepIndex, pipeline.numTimesteps);
    return callbackKwargs;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Registry descriptors. The rules live in the constructors; the schemas reuse them, so that a registry rejects
// exactly what `new` rejects, with the same message.

/** The options' JSON Schema with defaults and descriptions. zod types sub-schemas as possibly `true`; ours never are. */
function jsonSchemaOf(schema: z.ZodType): JsonSchema {
  return z.toJSONSchema(schema, { io: 'input' }) as JsonSchema;
}

// The options and rules of diffusers' PipelineCallback, as core describes them for every plugin built on it.
const cutoffOptions = pipelineCallbackOptions({
  cutoffStepRatio: 'Fraction of the steps after which the IP-Adapter is off: the cut-off step is floor(numTimesteps · ratio). Default 1.0 (no cut-off) unless cutoffStepIndex is given.',
  cutoffStepIndex: 'The step index after which the IP-Adapter is off; giving it alone disables the ratio. Not together with cutoffStepRatio.',
});

/** `ipadapter`: diffusers' IP-Adapter scale cut-off, for every pipeline of a model with an adapter. */
export const plugin: CallbackPluginDescriptor<PipelineCallbackOptions, undefined, PipelineCallbackOptions> = {
  specificationVersion: 'v1',
  name: 'ipadapter',
  description: 'Turns the IP-Adapter off (scale 0) after a fraction of the steps (diffusers’ IPAdapterScaleCutoffCallback), for this generation only.',
  ...cutoffOptions,
  create: (options) => new IPAdapterScaleCutoffCallback(options),
};

// No zod defaults for the shape options: with `scaleAt` given at runtime they must be absent, so the constructor
// applies the defaults (the JSON Schema still shows them).
const scheduleOptions = z
  .strictObject({
    schedule: z
      .enum(IP_ADAPTER_SCALE_SCHEDULES)
      .optional()
      .describe("How the scale moves from `from` to `to` between start and end: 'linear', 'cosine' (eased) or 'step' (a jump at end). Required unless scaleAt is given at runtime."),
    from: z.number().optional().meta({ default: 1 }).describe('The scale up to the progress start (progress: 0 at the first step, 1 at the last).'),
    to: z.number().optional().meta({ default: 0 }).describe('The scale from the progress end on.'),
    start: z.number().min(0).max(1).optional().meta({ default: 0 }).describe("The progress at which the scale starts to move from `from`; must stay 0 for 'step'."),
    end: z.number().min(0).max(1).optional().meta({ default: 1 }).describe("The progress at which the scale reaches `to` (where 'step' jumps); greater than start."),
  });

/** Values the registry cannot carry in JSON. */
export interface IPAdapterScaleScheduleRuntime {
  /** A custom schedule instead of the JSON `schedule`: the scale of step `stepIndex` of `numTimesteps`. */
  scaleAt?: IPAdapterScaleFunction;
}

/**
 * `ipadapter-schedule`: `createCallback('ipadapter-schedule', { schedule: 'linear' })`, or
 * `createCallback('ipadapter-schedule', {}, { scaleAt })`.
 */
export const schedulePlugin: CallbackPluginDescriptor<
  z.output<typeof scheduleOptions>,
  IPAdapterScaleScheduleRuntime,
  z.input<typeof scheduleOptions>
> = {
  specificationVersion: 'v1',
  name: 'ipadapter-schedule',
  description: 'Sets the IP-Adapter scale before every step from a schedule (linear, cosine or step from `from` to `to`), for this generation only.',
  // Without `schedule` the options can only be checked with the runtime's scaleAt, in `create`.
  options: withConstructorRules(scheduleOptions, (options) => options.schedule !== undefined && checkBuiltInSchedule(options as BuiltInIPAdapterScaleSchedule)),
  optionsJsonSchema: jsonSchemaOf(scheduleOptions),
  create: (options, runtime) =>
    new IPAdapterScaleScheduleCallback((runtime?.scaleAt === undefined ? options : { ...options, scaleAt: runtime.scaleAt }) as IPAdapterScaleScheduleOptions),
};

declare module '@diff/core/contract' {
  interface CallbackPluginRegistry {
    ipadapter: typeof plugin;
    'ipadapter-schedule': typeof schedulePlugin;
  }
}
