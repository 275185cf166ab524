/**
 * What every diffusers scheduler port shares: config resolution, the noise-schedule tables (computed with torch's
 * float32 arithmetic, since round-off there accumulates over a run), numpy's timestep spacing, the sigma
 * interpolation helpers, and a base class with the step-index bookkeeping of diffusers' `SchedulerMixin`s.
 */
import { ConfigError, InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import type { Scheduler, SchedulerOutput, SchedulerStepOptions } from './scheduler.js';

export { parsePythonJson } from '../util/python-json.js';

// ---------------------------------------------------------------------------------------------------------------
// Config resolution
// ---------------------------------------------------------------------------------------------------------------

/** One config key: its class default, what it accepts, and how an accepted value is normalised. */
export interface ConfigField<T> {
  readonly defaultValue: T;
  /** What the key accepts, in words, for error messages: e.g. `an integer ≥ 1`. */
  readonly allowed: string;
  /** The value the scheduler uses, or `{ ok: false }` when `value` is not acceptable. */
  accept(value: unknown): { ok: true; value: T } | { ok: false };
}

/** A cross-key rule broken by a config: reported like a bad key. */
export interface ConfigProblem {
  /** camelCase key to blame. */
  key: string;
  value: unknown;
  allowed: string;
}

/** A scheduler class's config keys (camelCase) with their defaults, plus rules that span several keys. */
export interface SchedulerConfigSchema<C extends Record<string, unknown>> {
  readonly className: string;
  readonly fields: { readonly [K in keyof C]: ConfigField<C[K]> };
  readonly checks?: readonly ((config: C) => ConfigProblem | undefined)[];
}

const NON_FINITE_SPELLINGS: Readonly<Record<string, number>> = { NaN: NaN, Infinity: Infinity, '-Infinity': -Infinity };

function accepted<T>(value: T): { ok: true; value: T } {
  return { ok: true, value };
}
const REJECTED = { ok: false } as const;

/** A JS number, or one of the strings `refs.json`-style files use for Python's non-finite floats. */
function toNumber(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  if (typeof value === 'string' && Object.hasOwn(NON_FINITE_SPELLINGS, value)) return NON_FINITE_SPELLINGS[value];
  return undefined;
}

function rangeWords(min: number | undefined, max: number | undefined, minExclusive: boolean, maxExclusive: boolean): string {
  const lower = min === undefined ? '' : `${minExclusive ? '>' : '≥'} ${min}`;
  const upper = max === undefined ? '' : `${maxExclusive ? '<' : '≤'} ${max}`;
  return [lower, upper].filter(Boolean).join(' and ');
}

function inRange(x: number, min?: number, max?: number, minExclusive = false, maxExclusive = false): boolean {
  if (min !== undefined && !(minExclusive ? x > min : x >= min)) return false;
  if (max !== undefined && !(maxExclusive ? x < max : x <= max)) return false;
  return true;
}

export interface NumberFieldOptions {
  min?: number;
  max?: number;
  minExclusive?: boolean;
  maxExclusive?: boolean;
}

/** An integer key (e.g. `num_train_timesteps`). */
export function integerField(defaultValue: number, options: NumberFieldOptions = {}): ConfigField<number> {
  const { min, max, minExclusive = false, maxExclusive = false } = options;
  const range = rangeWords(min, max, minExclusive, maxExclusive);
  return {
    defaultValue,
    allowed: range ? `an integer ${range}` : 'an integer',
    accept: (value) =>
      typeof value === 'number' && Number.isInteger(value) && inRange(value, min, max, minExclusive, maxExclusive)
        ? accepted(value)
        : REJECTED,
  };
}

/** A float key; without bounds it also takes ±Infinity and NaN (given as numbers or as their Python spellings). */
export function numberField(defaultValue: number, options?: NumberFieldOptions): ConfigField<number>;
export function numberField(defaultValue: number | null, options: NumberFieldOptions & { nullable: true }): ConfigField<number | null>;
export function numberField(
  defaultValue: number | null,
  options: NumberFieldOptions & { nullable?: boolean } = {},
): ConfigField<number | null> {
  const { min, max, minExclusive = false, maxExclusive = false, nullable = false } = options;
  const range = rangeWords(min, max, minExclusive, maxExclusive);
  return {
    defaultValue,
    allowed: `a number${range ? ` ${range}` : ''}${nullable ? ' or null' : ''}`,
    accept: (value) => {
      if (value === null) return nullable ? accepted(null) : REJECTED;
      const number = toNumber(value);
      return number !== undefined && inRange(number, min, max, minExclusive, maxExclusive) ? accepted(number) : REJECTED;
    },
  };
}

/** A boolean key. `null` reads as false, as Python's `if None:` does. */
export function booleanField(defaultValue: boolean): ConfigField<boolean> {
  return {
    defaultValue,
    allowed: 'true or false',
    accept: (value) => (typeof value === 'boolean' ? accepted(value) : value === null ? accepted(false) : REJECTED),
  };
}

/** A string key with a fixed set of values (`beta_schedule`, `timestep_spacing`, `prediction_type`, …). */
export function choiceField<V extends string>(values: readonly V[], defaultValue: V): ConfigField<V>;
export function choiceField<V extends string>(values: readonly V[], defaultValue: V | null, options: { nullable: true }): ConfigField<V | null>;
export function choiceField<V extends string>(
  values: readonly V[],
  defaultValue: V | null,
  options: { nullable?: boolean } = {},
): ConfigField<V | null> {
  const nullable = options.nullable ?? false;
  return {
    defaultValue,
    allowed: `one of ${values.map((v) => JSON.stringify(v)).join(', ')}${nullable ? ' or null' : ''}`,
    accept: (value) => {
      if (value === null) return nullable ? accepted(null) : REJECTED;
      return typeof value === 'string' && (values as readonly string[]).includes(value) ? accepted(value as V) : REJECTED;
    },
  };
}

/** `trained_betas`: null, or a list of betas in [0, 1). */
export function betasListField(): ConfigField<readonly number[] | null> {
  return {
    defaultValue: null,
    allowed: 'null or a list of numbers in [0, 1)',
    accept: (value) => {
      if (value === null) return accepted(null);
      const list = ArrayBuffer.isView(value) ? Array.from(value as Float32Array) : value;
      if (!Array.isArray(list) || !list.every((b) => typeof b === 'number' && b >= 0 && b < 1)) return REJECTED;
      return accepted(Object.freeze([...(list as number[])]));
    },
  };
}

export function toSnakeCase(camelKey: string): string {
  return camelKey.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);
}

export function toCamelCase(snakeKey: string): string {
  return snakeKey.replace(/_([a-z0-9])/g, (_match, letter: string) => letter.toUpperCase());
}

function describeValue(value: unknown): string {
  if (typeof value === 'number') return String(value);
  if (value === undefined) return 'undefined';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function configError(className: string, problem: ConfigProblem): ConfigError {
  const key = toSnakeCase(problem.key);
  return new ConfigError(
    `${className} config: ${key} (${problem.key}) = ${describeValue(problem.value)} is not allowed; expected ${problem.allowed}.`,
  );
}

function assertPlainObject(className: string, what: string, value: unknown): asserts value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(`${className} ${what} must be an object of config keys, got ${describeValue(value)}.`);
  }
}

/**
 * diffusers' `from_config` for one class: class defaults for missing keys, then `config` (snake_case keys as in
 * scheduler_config.json, or camelCase), then `overrides` (either case). Keys starting with `_` (`_class_name`,
 * `_diffusers_version`, `_use_default_values`) and keys of other classes are ignored. Every used value is checked;
 * a bad one throws `ConfigError` naming the class, the key, the value and what is allowed.
 */
export function resolveSchedulerConfig<C extends Record<string, unknown>>(
  schema: SchedulerConfigSchema<C>,
  config: Readonly<Record<string, unknown>> | null = {},
  overrides: Readonly<Record<string, unknown>> = {},
): C {
  const { className, fields } = schema;
  const given = new Map<string, unknown>();
  for (const [what, source] of [['config', config ?? {}], ['overrides', overrides]] as const) {
    assertPlainObject(className, what, source);
    for (const [rawKey, value] of Object.entries(source)) {
      if (rawKey.startsWith('_')) continue;
      const key = toCamelCase(rawKey);
      if (Object.hasOwn(fields, key) && value !== undefined) given.set(key, value);
    }
  }

  const resolved: Record<string, unknown> = {};
  for (const key of Object.keys(fields) as (keyof C & string)[]) {
    const field = fields[key];
    if (!given.has(key)) {
      resolved[key] = field.defaultValue;
      continue;
    }
    const value = given.get(key);
    const result = field.accept(value);
    if (!result.ok) throw configError(className, { key, value, allowed: field.allowed });
    resolved[key] = result.value;
  }
  for (const check of schema.checks ?? []) {
    const problem = check(resolved as C);
    if (problem) throw configError(className, problem);
  }
  return resolved as C;
}

// ---------------------------------------------------------------------------------------------------------------
// Shared keys
// ---------------------------------------------------------------------------------------------------------------

export const BETA_SCHEDULES = ['linear', 'scaled_linear', 'squaredcos_cap_v2'] as const;
export type BetaSchedule = (typeof BETA_SCHEDULES)[number];

export const TIMESTEP_SPACINGS = ['linspace', 'leading', 'trailing'] as const;
export type TimestepSpacing = (typeof TIMESTEP_SPACINGS)[number];

export const PREDICTION_TYPES = ['epsilon', 'v_prediction', 'sample'] as const;
export type PredictionType = (typeof PREDICTION_TYPES)[number];

/** The keys that define the training noise schedule; every scheduler has them, with the same defaults. */
export type BetaScheduleConfig = {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaSchedule;
  trainedBetas: readonly number[] | null;
};

export const BETA_SCHEDULE_FIELDS: SchedulerConfigSchema<BetaScheduleConfig>['fields'] = {
  numTrainTimesteps: integerField(1000, { min: 1 }),
  betaStart: numberField(0.0001, { min: 0, max: 1, maxExclusive: true }),
  betaEnd: numberField(0.02, { min: 0, max: 1, minExclusive: true, maxExclusive: true }),
  betaSchedule: choiceField(BETA_SCHEDULES, 'linear'),
  trainedBetas: betasListField(),
};

/** `beta_start < beta_end`, and `trained_betas` (when given) holds one beta per training timestep. */
export const BETA_SCHEDULE_CHECKS: readonly ((config: BetaScheduleConfig) => ConfigProblem | undefined)[] = [
  (config) =>
    config.trainedBetas === null && config.betaSchedule !== 'squaredcos_cap_v2' && !(config.betaStart < config.betaEnd)
      ? { key: 'betaStart', value: config.betaStart, allowed: `a value below beta_end (${config.betaEnd})` }
      : undefined,
  (config) =>
    config.trainedBetas !== null && config.trainedBetas.length !== config.numTrainTimesteps
      ? {
          key: 'trainedBetas',
          value: `a list of ${config.trainedBetas.length} betas`,
          allowed: `num_train_timesteps (${config.numTrainTimesteps}) betas`,
        }
      : undefined,
];

// ---------------------------------------------------------------------------------------------------------------
// float32 arithmetic as torch does it
// ---------------------------------------------------------------------------------------------------------------

export const f32 = Math.fround;

/** float32 fused multiply-add `a·b + c` with a single rounding (a, b, c float32 values). */
export function fmaF32(a: number, b: number, c: number): number {
  const product = a * b; // exact: two 24-bit significands fit in 53 bits
  const sum = product + c;
  const rounded = f32(sum);
  if (rounded === sum) return rounded;
  // Rounding the double sum to float32 rounds twice; that only matters when `sum` sits exactly halfway between two
  // floats, where the sign of the double sum's own error decides the direction.
  const other = 2 * sum - rounded;
  if (f32(other) !== other) return rounded;
  const partner = sum - product;
  const error = product - (sum - partner) + (c - partner);
  if (error === 0) return rounded;
  return error > 0 ? Math.max(rounded, other) : Math.min(rounded, other);
}

/**
 * torch.linspace(start, end, steps, dtype=float32) on CPU, bit for bit: float32 step `(end − start)/(steps − 1)`,
 * element i = fma(step, i, start) in the first half and fma(−step, steps − 1 − i, end) in the second. (Evaluating
 * the vector kernel as `base + k·step` blocks of 8 instead misses 44 of the 87 reference sigmas.)
 */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const from = f32(start);
  const to = f32(end);
  const step = f32(f32(to - from) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) out[i] = i < halfway ? fmaF32(step, i, from) : fmaF32(-step, steps - i - 1, to);
  return out;
}

/** diffusers' `betas_for_alpha_bar` with the cosine ("squaredcos_cap_v2") transform; double math, float32 storage. */
function cosineBetas(numTrainTimesteps: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number): number => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
  const betas = new Float32Array(numTrainTimesteps);
  for (let i = 0; i < numTrainTimesteps; i++) {
    const t1 = i / numTrainTimesteps;
    const t2 = (i + 1) / numTrainTimesteps;
    betas[i] = Math.min(1 - alphaBar(t2) / alphaBar(t1), maxBeta);
  }
  return betas;
}

/** The training betas (float32) of a config, as the diffusers schedulers' constructors compute them. */
export function betasFor(config: BetaScheduleConfig): Float32Array {
  if (config.trainedBetas !== null) return Float32Array.from(config.trainedBetas);
  const n = config.numTrainTimesteps;
  switch (config.betaSchedule) {
    case 'linear':
      return torchLinspaceF32(config.betaStart, config.betaEnd, n);
    case 'scaled_linear':
      return torchLinspaceF32(Math.sqrt(config.betaStart), Math.sqrt(config.betaEnd), n).map((b) => b * b);
    case 'squaredcos_cap_v2':
      return cosineBetas(n);
  }
}

/** torch.cumprod(1 - betas) in float32: torch accumulates in double and stores float32. */
export function alphasCumprodFor(betas: Float32Array): Float32Array {
  const alphasCumprod = new Float32Array(betas.length);
  let product = 1;
  for (let i = 0; i < betas.length; i++) {
    product *= f32(1 - betas[i]);
    alphasCumprod[i] = product;
  }
  return alphasCumprod;
}

/** diffusers' `rescale_zero_terminal_snr` (arXiv:2305.08891, Algorithm 1) in torch float32 steps. */
export function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const alphasBarSqrt = alphasCumprodFor(betas).map(Math.sqrt);
  const first = alphasBarSqrt[0];
  const last = alphasBarSqrt[alphasBarSqrt.length - 1];
  const scale = f32(first / f32(first - last));
  const alphasBar = alphasBarSqrt.map((s) => {
    const shifted = f32(f32(s - last) * scale);
    return shifted * shifted;
  });
  return alphasBar.map((bar, i) => (i === 0 ? f32(1 - bar) : f32(1 - f32(bar / alphasBar[i - 1]))));
}

/** `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in float32: the sigma of every training timestep. */
export function sigmasFromAlphasCumprod(alphasCumprod: Float32Array): Float32Array {
  return alphasCumprod.map((a) => Math.sqrt(f32(f32(1 - a) / a)));
}

/** np.log of a float32 sigma table (kept float32, as numpy does). */
export function logSigmasOf(sigmas: Float32Array): Float32Array {
  return sigmas.map(Math.log);
}

// ---------------------------------------------------------------------------------------------------------------
// numpy helpers and timestep spacing
// ---------------------------------------------------------------------------------------------------------------

/** numpy's `round` / `np.round`: half to even. */
export function roundHalfToEven(x: number): number {
  const nearest = Math.round(x);
  return nearest - x === 0.5 && nearest % 2 !== 0 ? nearest - 1 : nearest;
}

/** np.linspace(start, stop, num) in float64 (`i·step + start`, the last element set to `stop`). */
export function numpyLinspace(start: number, stop: number, num: number): Float64Array {
  const out = new Float64Array(num);
  const divisions = num - 1;
  if (divisions <= 0) {
    if (num === 1) out[0] = start;
    return out;
  }
  const delta = stop - start;
  const step = delta / divisions;
  for (let i = 0; i < num; i++) out[i] = step === 0 ? (i / divisions) * delta + start : i * step + start;
  out[num - 1] = stop;
  return out;
}

/**
 * np.arange(start, stop, step) for floats: length `ceil((stop - start) / step)` and values `start + i·d` with
 * `d = (start + step) - start` — which is why `arange(1000, 0, -1000/61)` has 62 elements.
 */
export function numpyArange(start: number, stop: number, step: number): Float64Array {
  const length = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Float64Array(length);
  if (length === 0) return out;
  out[0] = start;
  const delta = start + step - start;
  for (let i = 1; i < length; i++) out[i] = start + i * delta;
  return out;
}

/**
 * The inference timesteps of diffusers' `timestep_spacing`, in loop order (descending), as float64 values:
 * - `leading`: `arange(N) · (T // N) + steps_offset`;
 * - `trailing`: `round(arange(T, 0, -T/N)) - 1`;
 * - `linspace`: `linspace(0, T - 1, N)`, rounded half to even when `roundLinspace` (DDIM, PNDM), left fractional
 *   otherwise (Euler, LMS store it as float32).
 */
export function spacedTimesteps(
  spacing: TimestepSpacing,
  numTrainTimesteps: number,
  numInferenceSteps: number,
  stepsOffset: number,
  options: { roundLinspace: boolean },
): Float64Array {
  switch (spacing) {
    case 'leading': {
      const stepRatio = Math.floor(numTrainTimesteps / numInferenceSteps);
      return Float64Array.from({ length: numInferenceSteps }, (_, i) => (numInferenceSteps - 1 - i) * stepRatio + stepsOffset);
    }
    case 'trailing':
      return numpyArange(numTrainTimesteps, 0, -numTrainTimesteps / numInferenceSteps).map((t) => roundHalfToEven(t) - 1);
    case 'linspace': {
      const ascending = numpyLinspace(0, numTrainTimesteps - 1, numInferenceSteps);
      return (options.roundLinspace ? ascending.map(roundHalfToEven) : ascending).reverse();
    }
  }
}

/** np.interp(x, xp, fp) for increasing `xp`: clamps outside the range, exact at the nodes. */
export function interp(x: number, xp: ArrayLike<number>, fp: ArrayLike<number>): number {
  const last = xp.length - 1;
  if (Number.isNaN(x)) return x;
  if (x < xp[0]) return fp[0];
  if (x >= xp[last]) return fp[last];
  let low = 0;
  let high = last;
  while (high - low > 1) {
    const mid = (low + high) >> 1;
    if (xp[mid] <= x) low = mid;
    else high = mid;
  }
  if (xp[low] === x) return fp[low];
  const slope = (fp[low + 1] - fp[low]) / (xp[low + 1] - xp[low]);
  return slope * (x - xp[low]) + fp[low];
}

/** `np.interp(timesteps, arange(len(sigmas)), sigmas)`: the training sigmas at (fractional) timesteps. */
export function sigmasAtTimesteps(timesteps: ArrayLike<number>, trainingSigmas: Float32Array): Float64Array {
  const positions = Float64Array.from({ length: trainingSigmas.length }, (_, i) => i);
  return Float64Array.from(timesteps, (t) => interp(t, positions, trainingSigmas));
}

/**
 * diffusers' `_sigma_to_t`: the fractional timestep of `sigma`, by linear interpolation in log σ between the two
 * neighbouring training sigmas (`logSigmas` ascending, float32 as numpy keeps them). Not rounded.
 */
export function sigmaToT(sigma: number, logSigmas: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  // Last index whose log σ is ≤ logSigma (0 when none), kept below the end so that [low, low + 1] is an interval.
  let low = 0;
  for (let i = 0; i < logSigmas.length; i++) if (logSigma - logSigmas[i] >= 0) low = i;
  low = Math.min(low, logSigmas.length - 2);
  const lowLog = logSigmas[low];
  const highLog = logSigmas[low + 1];
  const weight = Math.min(Math.max((lowLog - logSigma) / (lowLog - highLog), 0), 1);
  return (1 - weight) * low + weight * (low + 1);
}

/** Karras et al. (2022) sigmas: `(σmax^(1/ρ) + ramp·(σmin^(1/ρ) − σmax^(1/ρ)))^ρ` over `linspace(0, 1, n)`, ρ = 7. */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, numInferenceSteps: number, rho = 7): Float64Array {
  const minInvRho = sigmaMin ** (1 / rho);
  const maxInvRho = sigmaMax ** (1 / rho);
  return numpyLinspace(0, 1, numInferenceSteps).map((ramp) => (maxInvRho + ramp * (minInvRho - maxInvRho)) ** rho);
}

/** diffusers' exponential sigmas: `exp(linspace(log σmax, log σmin, n))`. */
export function exponentialSigmas(sigmaMin: number, sigmaMax: number, numInferenceSteps: number): Float64Array {
  return numpyLinspace(Math.log(sigmaMax), Math.log(sigmaMin), numInferenceSteps).map(Math.exp);
}

/**
 * diffusers' `index_for_timestep`: the position of `timestep` in `schedule`, the SECOND occurrence when it occurs
 * more than once (so that img2img, starting mid-schedule, never skips a sigma); `undefined` when absent.
 * Compared in float32, since diffusers keeps fractional timesteps as float32.
 */
export function indexForTimestep(schedule: ArrayLike<number>, timestep: number): number | undefined {
  const target = f32(timestep);
  let first: number | undefined;
  for (let i = 0; i < schedule.length; i++) {
    if (f32(schedule[i]) !== target) continue;
    if (first !== undefined) return i;
    first = i;
  }
  return first;
}

// ---------------------------------------------------------------------------------------------------------------
// Tensor helpers
// ---------------------------------------------------------------------------------------------------------------

/** Throws unless every tensor has the shape of the first (named in the message). */
export function assertSameShapes(className: string, method: string, tensors: Readonly<Record<string, Tensor>>): void {
  const entries = Object.entries(tensors);
  const [firstName, first] = entries[0];
  for (const [name, tensor] of entries.slice(1)) {
    if (tensor.shape.length !== first.shape.length || tensor.shape.some((d, i) => d !== first.shape[i])) {
      throw new InvalidArgumentError(
        `${className}.${method}: ${name} has shape [${tensor.shape.join(', ')}] but ${firstName} has ` +
          `[${first.shape.join(', ')}]; they must match.`,
      );
    }
  }
}

/** A float32 tensor of `shape` whose element i is `value(i)` (computed in double, stored float32). */
export function float32TensorFrom(shape: readonly number[], value: (index: number) => number): Tensor<'float32'> {
  let size = 1;
  for (const dim of shape) size *= dim;
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = value(i);
  return new Tensor(data, shape);
}

/** DDPM-style forward noising: `√ᾱ·x0 + √(1−ᾱ)·noise` at one `alphas_cumprod` value. */
export function addNoiseAtAlphaCumprod(
  alphaCumprod: number,
  originalSamples: Tensor<'float32'>,
  noise: Tensor<'float32'>,
): Tensor<'float32'> {
  const signal = f32(Math.sqrt(alphaCumprod));
  const noiseScale = f32(Math.sqrt(f32(1 - alphaCumprod)));
  const x0 = originalSamples.data;
  const n = noise.data;
  return float32TensorFrom(originalSamples.shape, (i) => f32(signal * x0[i]) + f32(noiseScale * n[i]));
}

/** Sigma-space forward noising (Euler, LMS, DPM): `x0 + σ·noise`. */
export function addNoiseAtSigma(sigma: number, originalSamples: Tensor<'float32'>, noise: Tensor<'float32'>): Tensor<'float32'> {
  const x0 = originalSamples.data;
  const n = noise.data;
  return float32TensorFrom(originalSamples.shape, (i) => x0[i] + f32(n[i] * sigma));
}

// ---------------------------------------------------------------------------------------------------------------
// Base class
// ---------------------------------------------------------------------------------------------------------------

/**
 * The parts of `Scheduler` every port shares: the resolved config, the run state (schedule, step and begin index),
 * diffusers' `_init_step_index`, argument checks and `clone`. Subclasses take their resolved config (a type alias,
 * so that it is a `Record<string, unknown>`) in a constructor of one argument, which `clone` relies on.
 */
export abstract class SchedulerBase<C extends Record<string, unknown>> implements Scheduler {
  abstract readonly className: string;
  abstract readonly computesPredOriginalSample: boolean;
  readonly config: Readonly<C>;
  readonly order: number = 1;

  protected currentTimesteps: Float64Array = new Float64Array(0);
  protected currentNumInferenceSteps: number | undefined;
  protected currentStepIndex: number | undefined;
  protected currentBeginIndex: number | undefined;

  protected constructor(config: C) {
    this.config = Object.freeze({ ...config });
  }

  abstract get initNoiseSigma(): number;
  abstract setTimesteps(numInferenceSteps: number): void;
  abstract scaleModelInput(sample: Tensor<'float32'>, timestep: number): Tensor<'float32'>;
  abstract step(
    modelOutput: Tensor<'float32'>,
    timestep: number,
    sample: Tensor<'float32'>,
    options?: SchedulerStepOptions,
  ): SchedulerOutput;
  abstract addNoise(originalSamples: Tensor<'float32'>, noise: Tensor<'float32'>, timestep: number): Tensor<'float32'>;

  get timesteps(): Float64Array {
    return this.currentTimesteps;
  }

  get numInferenceSteps(): number | undefined {
    return this.currentNumInferenceSteps;
  }

  get stepIndex(): number | undefined {
    return this.currentStepIndex;
  }

  get beginIndex(): number | undefined {
    return this.currentBeginIndex;
  }

  /** diffusers' `set_begin_index`: the index of the first timestep of the run (img2img starts mid-schedule). */
  setBeginIndex(beginIndex: number): void {
    if (!Number.isInteger(beginIndex) || beginIndex < 0) {
      throw new InvalidArgumentError(`${this.className}.setBeginIndex: the begin index must be an integer ≥ 0, got ${beginIndex}.`);
    }
    this.currentBeginIndex = beginIndex;
  }

  clone(): this {
    const Class = this.constructor as new (config: C) => this;
    return new Class(this.config as C);
  }

  /** Rejects a step count diffusers cannot schedule: it must be an integer in [1, numTrainTimesteps]. */
  protected checkNumInferenceSteps(numInferenceSteps: number, numTrainTimesteps: number): void {
    if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1 || numInferenceSteps > numTrainTimesteps) {
      throw new InvalidArgumentError(
        `${this.className}.setTimesteps: numInferenceSteps must be an integer from 1 to num_train_timesteps ` +
          `(${numTrainTimesteps}), got ${numInferenceSteps}.`,
      );
    }
  }

  /** Installs a new schedule and clears the run state (step and begin index), as diffusers' `set_timesteps` does. */
  protected startRun(timesteps: Float64Array, numInferenceSteps: number): void {
    this.currentTimesteps = timesteps;
    this.currentNumInferenceSteps = numInferenceSteps;
    this.currentStepIndex = undefined;
    this.currentBeginIndex = undefined;
  }

  /** Throws the error diffusers raises for a scheduler used before `set_timesteps`. */
  protected assertTimestepsSet(method: string): void {
    if (this.currentNumInferenceSteps === undefined) {
      throw new InvalidArgumentError(`${this.className}.${method} was called before setTimesteps(numInferenceSteps); call it first.`);
    }
  }

  /** The index of `timestep` in the schedule (`indexForTimestep`), or an error naming the schedule. */
  protected indexOfTimestep(timestep: number): number {
    const index = indexForTimestep(this.currentTimesteps, timestep);
    if (index === undefined) {
      const shown = Array.from(this.currentTimesteps.slice(0, 12)).join(', ');
      throw new InvalidArgumentError(
        `${this.className}: timestep ${timestep} is not in the current schedule [${shown}${this.currentTimesteps.length > 12 ? ', …' : ''}].`,
      );
    }
    return index;
  }

  /**
   * The step index of the current call, starting the run when needed with diffusers' `_init_step_index`: the begin
   * index when one was set, else the index of `timestep` in the schedule.
   */
  protected stepIndexFor(timestep: number): number {
    this.currentStepIndex ??= this.currentBeginIndex ?? this.indexOfTimestep(timestep);
    return this.currentStepIndex;
  }

  /** Moves to the next step once `step` is done. */
  protected advanceStepIndex(): void {
    if (this.currentStepIndex !== undefined) this.currentStepIndex += 1;
  }

  /**
   * diffusers' `add_noise` index choice for sigma schedulers: the timestep's own index before a begin index is set,
   * the current step index once the run has started (inpainting), else the begin index (img2img).
   */
  protected noiseIndexFor(timestep: number): number {
    if (this.currentBeginIndex === undefined) return this.indexOfTimestep(timestep);
    return this.currentStepIndex ?? this.currentBeginIndex;
  }
}

/**
 * Schedulers that work on `alphas_cumprod` at integer timesteps (DDIM, PNDM): identity input scaling, unit initial
 * noise, DDPM-style `add_noise`, and `set_alpha_to_one`'s value for the step past timestep 0.
 */
export abstract class AlphaCumprodScheduler<C extends BetaScheduleConfig & { setAlphaToOne: boolean }> extends SchedulerBase<C> {
  readonly alphasCumprod: Float32Array;
  /** ᾱ of the "timestep" before 0: 1 with `set_alpha_to_one`, else ᾱ₀. */
  readonly finalAlphaCumprod: number;

  protected constructor(config: C, betas: Float32Array = betasFor(config)) {
    super(config);
    this.alphasCumprod = alphasCumprodFor(betas);
    this.finalAlphaCumprod = config.setAlphaToOne ? 1 : this.alphasCumprod[0];
  }

  get initNoiseSigma(): number {
    return 1;
  }

  scaleModelInput(sample: Tensor<'float32'>, _timestep: number): Tensor<'float32'> {
    return sample;
  }

  addNoise(originalSamples: Tensor<'float32'>, noise: Tensor<'float32'>, timestep: number): Tensor<'float32'> {
    assertSameShapes(this.className, 'addNoise', { originalSamples, noise });
    return addNoiseAtAlphaCumprod(this.alphaCumprodAt(timestep), originalSamples, noise);
  }

  /** `alphas_cumprod[timestep]` with Python's indexing (numpy's trailing spacing can yield timestep −1). */
  protected alphaCumprodAt(timestep: number): number {
    const count = this.alphasCumprod.length;
    if (!Number.isInteger(timestep) || timestep < -count || timestep >= count) {
      throw new InvalidArgumentError(
        `${this.className}: timestep ${timestep} is not an integer training timestep in [0, ${count - 1}].`,
      );
    }
    return this.alphasCumprod[timestep < 0 ? count + timestep : timestep];
  }

  /** ᾱ at the previous timestep of a step, `finalAlphaCumprod` past the start of the chain. */
  protected alphaCumprodBefore(prevTimestep: number): number {
    return prevTimestep >= 0 ? this.alphaCumprodAt(prevTimestep) : this.finalAlphaCumprod;
  }
}

/**
 * Schedulers that work in sigma space over the training sigmas (LMS, Euler, Euler Ancestral): `sigmas` of the run
 * with a final 0, `init_noise_sigma`, `x / √(σ² + 1)` input scaling and `x0 + σ·noise`. Before `setTimesteps`
 * `sigmas` holds every training sigma (descending, then 0), as diffusers' constructors leave it.
 */
export abstract class SigmaScheduler<C extends BetaScheduleConfig & { timestepSpacing: TimestepSpacing }> extends SchedulerBase<C> {
  readonly alphasCumprod: Float32Array;
  /** σ of every training timestep, ascending with t. */
  readonly trainingSigmas: Float32Array;
  protected currentSigmas: Float32Array;

  protected constructor(config: C, alphasCumprod: Float32Array = alphasCumprodFor(betasFor(config))) {
    super(config);
    this.alphasCumprod = alphasCumprod;
    this.trainingSigmas = sigmasFromAlphasCumprod(alphasCumprod);
    this.currentSigmas = withFinalZero(this.trainingSigmas.slice().reverse());
  }

  /** The sigmas of the run, one per timestep, then the final 0 (float32, as diffusers keeps them). */
  get sigmas(): Float32Array {
    return this.currentSigmas;
  }

  /** max σ for linspace and trailing spacing, √(max σ² + 1) for leading (float32 like diffusers). */
  get initNoiseSigma(): number {
    const maxSigma = this.currentSigmas.reduce((max, sigma) => Math.max(max, sigma), 0);
    return this.config.timestepSpacing === 'leading' ? f32(Math.sqrt(f32(f32(maxSigma * maxSigma) + 1))) : maxSigma;
  }

  scaleModelInput(sample: Tensor<'float32'>, timestep: number): Tensor<'float32'> {
    this.assertTimestepsSet('scaleModelInput');
    const sigma = this.currentSigmas[this.stepIndexFor(timestep)];
    const scale = f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
    const x = sample.data;
    return float32TensorFrom(sample.shape, (i) => x[i] / scale);
  }

  addNoise(originalSamples: Tensor<'float32'>, noise: Tensor<'float32'>, timestep: number): Tensor<'float32'> {
    this.assertTimestepsSet('addNoise');
    assertSameShapes(this.className, 'addNoise', { originalSamples, noise });
    return addNoiseAtSigma(this.currentSigmas[this.noiseIndexFor(timestep)], originalSamples, noise);
  }

  /** Installs the run's schedule: float32 timesteps and sigmas (a final 0 is appended). */
  protected startSigmaRun(timesteps: ArrayLike<number>, sigmas: ArrayLike<number>, numInferenceSteps: number): void {
    this.startRun(Float64Array.from(timesteps, f32), numInferenceSteps);
    this.currentSigmas = withFinalZero(sigmas);
  }
}

/** `concatenate([sigmas, [0.0]]).astype(float32)`. */
export function withFinalZero(sigmas: ArrayLike<number>): Float32Array {
  const out = new Float32Array(sigmas.length + 1);
  out.set(sigmas);
  return out;
}

/** Fills a new float32 array element by element; a plain loop, unlike `Float32Array.from(x, fn)` on the hot path. */
export function mapFloat32(length: number, valueAt: (index: number) => number): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = valueAt(i);
  return out;
}
