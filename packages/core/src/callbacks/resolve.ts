import type { CallbackHookName, CallbackPipeline, CallbackPlugin, CallbackTensorName } from '../contract.js';
import { AbortError, CallbackError, InvalidArgumentError, type TensorWriter } from '../errors.js';
import { Tensor } from '../tensor.js';
import { MultiPipelineCallbacks } from './pipeline-callback.js';

type AnyPlugin = CallbackPlugin<string>;
type Hook = NonNullable<AnyPlugin['onStepEnd']>;
type TensorMap = Record<string, Tensor<'float32'>>;

/** Tensors callbacks may read but never replace. */
const READ_ONLY: ReadonlySet<string> = new Set<CallbackTensorName>(['predOriginalSample']);

/** A callback after normalisation: plain functions get a name, a hook and the requested tensor inputs. */
interface ResolvedCallback {
  readonly name: string;
  readonly tensorInputs: readonly string[];
  readonly enforce?: 'pre' | 'post';
  readonly hooks: Partial<Record<CallbackHookName, Hook>>;
  readonly self: unknown;
}

const ENFORCE_ORDER = { pre: 0, normal: 1, post: 2 } as const;

function isPlugin(value: unknown): value is AnyPlugin {
  if (typeof value !== 'object' || value === null) return false;
  const { onStepBegin, onStepEnd } = value as AnyPlugin;
  return typeof onStepBegin === 'function' || typeof onStepEnd === 'function';
}

function unknownNamesError(pipelineName: string, source: string, unknown: readonly string[], allowed: readonly string[]) {
  return new InvalidArgumentError(
    `${source} asks for tensor inputs that ${pipelineName} does not have: ${unknown.join(', ')}. ` +
      `Allowed: ${allowed.join(', ')}.`,
  );
}

/** What the pipeline tells the resolver about its tensors. */
export interface CallbackTensorSettings {
  pipelineName: string;
  /** The pipeline's `callbackTensorInputs`. */
  allowed: readonly string[];
  /** Names in `allowed` that this generation cannot offer, with the reason (e.g. the scheduler computes no x0). */
  unavailable?: Readonly<Record<string, string>>;
}

/** The callback options of `generate`, as given (JavaScript callers may pass anything). */
export interface CallbackOptionValues {
  callbackOnStepEnd?: unknown;
  callbackOnStepEndTensorInputs?: unknown;
  callbackOnStepBegin?: unknown;
  callbackOnStepBeginTensorInputs?: unknown;
}

function requestedNames(option: string, value: unknown, settings: CallbackTensorSettings): readonly string[] {
  if (value === undefined) return ['latents'];
  if (!Array.isArray(value) || value.some((name) => typeof name !== 'string')) {
    throw new InvalidArgumentError(`${option} must be an array of tensor names, e.g. ['latents']; got ${JSON.stringify(value) ?? typeof value}.`);
  }
  checkNames(option, value, settings);
  return value;
}

function checkNames(source: string, names: readonly string[], { allowed, pipelineName, unavailable = {} }: CallbackTensorSettings): void {
  const unknown = names.filter((name) => !allowed.includes(name));
  if (unknown.length > 0) throw unknownNamesError(pipelineName, source, unknown, allowed);
  const missing = names.filter((name) => name in unavailable);
  if (missing.length > 0) {
    throw new InvalidArgumentError(`${source} asks for ${missing.map((name) => `${name} (${unavailable[name]})`).join(', ')}.`);
  }
}

/**
 * Turns the callback options into one ordered list: arrays are flattened, falsy entries skipped,
 * `MultiPipelineCallbacks` unfolded, plugins sorted by `enforce` (stable), every tensor name checked against the
 * pipeline's allow-list before the first step runs.
 */
export function resolveCallbacks(options: CallbackOptionValues, settings: CallbackTensorSettings): GenerationCallbacks {
  const { allowed, unavailable = {} } = settings;
  const resolved: ResolvedCallback[] = [];

  const visitFunctions = (hook: CallbackHookName, option: string, requested: readonly string[]) => (entry: unknown): void => {
    if (!entry) return;
    if (Array.isArray(entry)) return entry.forEach(visitFunctions(hook, option, requested));
    if (typeof entry !== 'function') {
      throw new InvalidArgumentError(
        `${option} entries must be functions or arrays of them (plugins go in callbackOnStepEnd, whatever hooks they ` +
          `implement); got ${Object.prototype.toString.call(entry)}.`,
      );
    }
    resolved.push({ name: entry.name || option, tensorInputs: requested, hooks: { [hook]: entry as Hook }, self: undefined });
  };

  const endRequested = requestedNames('callbackOnStepEndTensorInputs', options.callbackOnStepEndTensorInputs, settings);
  const visitEnd = (entry: unknown): void => {
    if (!entry) return;
    if (Array.isArray(entry)) return entry.forEach(visitEnd);
    if (entry instanceof MultiPipelineCallbacks) return entry.callbacks.forEach(visitEnd);
    if (typeof entry === 'function') return visitFunctions('onStepEnd', 'callbackOnStepEnd', endRequested)(entry);
    if (!isPlugin(entry)) {
      throw new InvalidArgumentError(
        'callbackOnStepEnd entries must be functions, plugins (objects with onStepBegin and/or onStepEnd) or arrays ' +
          `of them; got ${Object.prototype.toString.call(entry)}.`,
      );
    }
    const name = entry.name || 'anonymous plugin';
    if (entry.specificationVersion !== 'v1') {
      throw new InvalidArgumentError(
        `Callback "${name}" implements callback specification ${String(entry.specificationVersion)}; ` +
          `this version of @diff/core supports: v1.`,
      );
    }
    if (!Array.isArray(entry.tensorInputs)) throw new InvalidArgumentError(`Callback "${name}" must declare tensorInputs (an array of tensor names).`);
    checkNames(`Callback "${name}"`, entry.tensorInputs, settings);
    const optional = (entry.optionalTensorInputs ?? []).filter((input: string) => allowed.includes(input) && !(input in unavailable));
    const hooks: ResolvedCallback['hooks'] = {};
    if (typeof entry.onStepBegin === 'function') hooks.onStepBegin = entry.onStepBegin as Hook;
    if (typeof entry.onStepEnd === 'function') hooks.onStepEnd = entry.onStepEnd as Hook;
    resolved.push({ name, tensorInputs: [...entry.tensorInputs, ...optional], enforce: entry.enforce, hooks, self: entry });
  };
  visitEnd(options.callbackOnStepEnd);

  const beginRequested = requestedNames('callbackOnStepBeginTensorInputs', options.callbackOnStepBeginTensorInputs, settings);
  visitFunctions('onStepBegin', 'callbackOnStepBegin', beginRequested)(options.callbackOnStepBegin);

  resolved.sort((a, b) => ENFORCE_ORDER[a.enforce ?? 'normal'] - ENFORCE_ORDER[b.enforce ?? 'normal']);
  return new GenerationCallbacks(resolved, allowed);
}

/** The resolved callbacks of one generation, and the single place where any of them is called. */
export class GenerationCallbacks {
  /** Per hook: the tensors handed to its callbacks (the union of what each asks for, in allow-list order). */
  readonly tensorInputs: Readonly<Record<CallbackHookName, readonly string[]>>;
  /** Per tensor: the callback that last replaced it in this generation, so a bad value can name its author. */
  readonly #writers = new Map<string, TensorWriter>();

  constructor(
    private readonly callbacks: readonly ResolvedCallback[],
    private readonly allowed: readonly string[],
  ) {
    const inputsOf = (hook: CallbackHookName) => {
      const wanted = new Set(callbacks.filter((callback) => callback.hooks[hook]).flatMap((callback) => callback.tensorInputs));
      return allowed.filter((name) => wanted.has(name));
    };
    this.tensorInputs = { onStepBegin: inputsOf('onStepBegin'), onStepEnd: inputsOf('onStepEnd') };
  }

  /** Whether any callback implements `hook` (the loop skips the kwargs work otherwise). */
  has(hook: CallbackHookName): boolean {
    return this.callbacks.some((callback) => callback.hooks[hook]);
  }

  /** The callback that last replaced `name` (returned it, or assigned it in the kwargs), if any did. */
  lastWriter(name: string): TensorWriter | undefined {
    return this.#writers.get(name);
  }

  /** The names of the callbacks that receive `name` at `hook` (and so could have edited its values in place). */
  receivers(hook: CallbackHookName, name: string): string[] {
    return this.callbacks.filter((callback) => callback.hooks[hook] && callback.tensorInputs.includes(name)).map((callback) => callback.name);
  }

  /**
   * Runs every callback implementing `hook`, in order. `tensors` holds the pipeline's current tensors by name; the
   * return value holds the tensors the callbacks replaced (same names), to be written back by the pipeline.
   */
  async run(hook: CallbackHookName, pipeline: CallbackPipeline, stepIndex: number, timestep: number, tensors: TensorMap): Promise<TensorMap> {
    let kwargs: TensorMap = {};
    for (const name of this.tensorInputs[hook]) if (tensors[name] !== undefined) kwargs[name] = tensors[name];
    for (const callback of this.callbacks) {
      const fn = callback.hooks[hook];
      if (!fn) continue;
      kwargs = await this.invoke(callback, hook, fn, pipeline, stepIndex, timestep, kwargs, tensors);
      if (pipeline.signal.aborted) throw new AbortError(undefined, { cause: pipeline.signal.reason });
    }
    const replaced: TensorMap = {};
    for (const [name, tensor] of Object.entries(kwargs)) if (tensor !== tensors[name]) replaced[name] = tensor;
    return replaced;
  }

  /** Every callback call goes through here, so that any failure names the callback, the hook and the step. */
  private async invoke(
    callback: ResolvedCallback,
    hook: CallbackHookName,
    fn: Hook,
    pipeline: CallbackPipeline,
    stepIndex: number,
    timestep: number,
    kwargs: TensorMap,
    original: TensorMap,
  ): Promise<TensorMap> {
    const fail = (reason: string, cause?: unknown) => new CallbackError(callback.name, hook, stepIndex, reason, { cause });
    const given = { ...kwargs };
    let result: unknown;
    try {
      result = await untilAborted(fn.call(callback.self, pipeline, stepIndex, timestep, kwargs), pipeline.signal);
    } catch (error) {
      if (error instanceof CallbackError || error instanceof AbortError) throw error;
      throw fail(error instanceof Error ? error.message : String(error), error);
    }
    if (result !== undefined && (typeof result !== 'object' || result === null || Array.isArray(result))) {
      throw fail(`it must return the callback kwargs object (or nothing), got ${Array.isArray(result) ? 'an array' : typeof result}.`);
    }
    // Names a callback leaves out keep their tensors, as diffusers' `callback_outputs.pop(name, default)`; what it
    // wrote into the kwargs in place is checked like what it returned.
    const merged = { ...kwargs, ...(result as TensorMap | undefined) };
    for (const [name, value] of Object.entries(merged)) {
      if (!this.allowed.includes(name)) {
        throw fail(`it returned "${name}", which this pipeline does not accept. Allowed: ${this.allowed.join(', ')}.`);
      }
      if (!(value instanceof Tensor) || value.dtype !== 'float32') throw fail(`it returned "${name}" that is not a float32 Tensor.`);
      if (value === given[name]) continue;
      if (READ_ONLY.has(name) && value !== original[name]) throw fail(`it replaced "${name}", which callbacks may read but not replace.`);
      const shapeProblem = original[name] && shapeMismatch(name, value, original[name]);
      if (shapeProblem) throw fail(shapeProblem);
      this.#writers.set(name, { callbackName: callback.name, hook, stepIndex });
    }
    return merged;
  }
}

/**
 * Why a replacement cannot stand in for the loop's tensor, if it cannot: the latents keep their shape; other
 * tensors may change their rows (turning guidance off halves them) but nothing else.
 */
function shapeMismatch(name: string, replacement: Tensor<'float32'>, current: Tensor<'float32'>): string | undefined {
  const [got, had] = [replacement.shape, current.shape];
  const fits = name === 'latents'
    ? got.length === had.length && got.every((dim, axis) => dim === had[axis])
    : got.length === had.length && got.every((dim, axis) => axis === 0 || dim === had[axis]);
  if (fits) return undefined;
  const allowed = name === 'latents' ? 'the latents must keep their shape' : 'only the first axis (rows) may change';
  return `it returned "${name}" of shape [${got.join(', ')}] for one of shape [${had.join(', ')}]: ${allowed}.`;
}

/**
 * A callback's result, or an `AbortError` as soon as the generation's signal fires — so a callback that never
 * settles (a stuck upload, a lost message) cannot keep an aborted generation alive.
 */
async function untilAborted<T>(result: T, signal: AbortSignal): Promise<Awaited<T>> {
  if (typeof (result as PromiseLike<unknown> | null | undefined)?.then !== 'function') return result as Awaited<T>;
  let onAbort = (): void => undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(new AbortError(undefined, { cause: signal.reason }));
  });
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await Promise.race([Promise.resolve(result as PromiseLike<Awaited<T>>), aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
