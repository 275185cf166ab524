import type { CallbackPipeline, CallbackTensorName, StepEndCallback } from '../contract.js';
import { AbortError, CallbackError, InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { MultiPipelineCallbacks } from './pipeline-callback.js';

type AnyCallback = StepEndCallback<string>;
type TensorMap = Record<string, Tensor<'float32'>>;

/** A callback after normalisation: plain functions get a name and the requested tensor inputs. */
interface ResolvedCallback {
  readonly name: string;
  readonly tensorInputs: readonly string[];
  readonly enforce?: 'pre' | 'post';
  readonly onStepEnd: AnyCallback['onStepEnd'];
  readonly self: unknown;
}

const ENFORCE_ORDER = { pre: 0, normal: 1, post: 2 } as const;

function isPlugin(value: unknown): value is AnyCallback {
  return typeof value === 'object' && value !== null && typeof (value as AnyCallback).onStepEnd === 'function';
}

function unknownNamesError(pipelineName: string, source: string, unknown: readonly string[], allowed: readonly string[]) {
  return new InvalidArgumentError(
    `${source} asks for tensor inputs that ${pipelineName} does not have: ${unknown.join(', ')}. ` +
      `Allowed: ${allowed.join(', ')}.`,
  );
}

/**
 * Turns the `callbackOnStepEnd` option into an ordered list of callbacks: arrays are flattened, falsy entries
 * skipped, `MultiPipelineCallbacks` unfolded, plugins sorted by `enforce` (stable), every tensor name checked
 * against the pipeline's allow-list before the first step runs.
 */
export function resolveStepEndCallbacks(
  option: unknown,
  settings: { tensorInputs?: readonly string[]; allowed: readonly string[]; pipelineName: string },
): StepEndCallbacks {
  const { allowed, pipelineName } = settings;
  const requested = settings.tensorInputs ?? ['latents'];
  const unknownRequested = requested.filter((name) => !allowed.includes(name));
  if (unknownRequested.length > 0) {
    throw unknownNamesError(pipelineName, 'callbackOnStepEndTensorInputs', unknownRequested, allowed);
  }

  const resolved: ResolvedCallback[] = [];
  const visit = (entry: unknown): void => {
    if (!entry) return;
    if (Array.isArray(entry)) return entry.forEach(visit);
    if (entry instanceof MultiPipelineCallbacks) return entry.callbacks.forEach(visit);
    if (typeof entry === 'function') {
      resolved.push({
        name: entry.name || 'callbackOnStepEnd',
        tensorInputs: requested,
        onStepEnd: entry as AnyCallback['onStepEnd'],
        self: undefined,
      });
      return;
    }
    if (!isPlugin(entry)) {
      throw new InvalidArgumentError(
        `callbackOnStepEnd entries must be functions, step-end plugins (objects with onStepEnd) or arrays of them; ` +
          `got ${Object.prototype.toString.call(entry)}.`,
      );
    }
    const name = entry.name || 'anonymous plugin';
    if (entry.specificationVersion !== 'v1') {
      throw new InvalidArgumentError(
        `Callback "${name}" implements callback specification ${String(entry.specificationVersion)}; ` +
          `this version of @diff/core supports: v1.`,
      );
    }
    const unknown = entry.tensorInputs.filter((input) => !allowed.includes(input));
    if (unknown.length > 0) throw unknownNamesError(pipelineName, `Callback "${name}"`, unknown, allowed);
    const optional = (entry.optionalTensorInputs ?? []).filter((input: CallbackTensorName) => allowed.includes(input));
    resolved.push({
      name,
      tensorInputs: [...entry.tensorInputs, ...optional],
      enforce: entry.enforce,
      onStepEnd: entry.onStepEnd as AnyCallback['onStepEnd'],
      self: entry,
    });
  };
  visit(option);
  resolved.sort((a, b) => ENFORCE_ORDER[a.enforce ?? 'normal'] - ENFORCE_ORDER[b.enforce ?? 'normal']);
  return new StepEndCallbacks(resolved, allowed);
}

/** The resolved callbacks of one generation, and the single place where they are called. */
export class StepEndCallbacks {
  /** The tensors handed to the callbacks: the union of what each asks for, in allow-list order. */
  readonly tensorInputs: readonly string[];

  constructor(
    private readonly callbacks: readonly ResolvedCallback[],
    private readonly allowed: readonly string[],
  ) {
    const wanted = new Set(callbacks.flatMap((callback) => callback.tensorInputs));
    this.tensorInputs = allowed.filter((name) => wanted.has(name));
  }

  get isEmpty(): boolean {
    return this.callbacks.length === 0;
  }

  /**
   * Runs every callback in order. `tensors` holds the pipeline's current tensors by name; the return value holds
   * the tensors the callbacks replaced (same names), to be written back by the pipeline.
   */
  async run(pipeline: CallbackPipeline, stepIndex: number, timestep: number, tensors: TensorMap): Promise<TensorMap> {
    let kwargs: TensorMap = {};
    for (const name of this.tensorInputs) kwargs[name] = tensors[name];
    for (const callback of this.callbacks) {
      kwargs = await this.invoke(callback, pipeline, stepIndex, timestep, kwargs);
      if (pipeline.signal.aborted) throw new AbortError(undefined, { cause: pipeline.signal.reason });
    }
    const replaced: TensorMap = {};
    for (const [name, tensor] of Object.entries(kwargs)) if (tensor !== tensors[name]) replaced[name] = tensor;
    return replaced;
  }

  /** Every callback call goes through here, so that any failure names the callback, the hook and the step. */
  private async invoke(
    callback: ResolvedCallback,
    pipeline: CallbackPipeline,
    stepIndex: number,
    timestep: number,
    kwargs: TensorMap,
  ): Promise<TensorMap> {
    let result: unknown;
    try {
      result = await callback.onStepEnd.call(callback.self, pipeline, stepIndex, timestep, kwargs);
    } catch (error) {
      if (error instanceof CallbackError || error instanceof AbortError) throw error;
      const reason = error instanceof Error ? error.message : String(error);
      throw new CallbackError(callback.name, 'onStepEnd', stepIndex, reason, { cause: error });
    }
    if (result === undefined) return kwargs;
    if (typeof result !== 'object' || result === null || Array.isArray(result)) {
      throw new CallbackError(callback.name, 'onStepEnd', stepIndex, `it must return the callback kwargs object (or nothing), got ${typeof result}.`);
    }
    for (const [name, value] of Object.entries(result)) {
      if (!this.allowed.includes(name)) {
        throw new CallbackError(callback.name, 'onStepEnd', stepIndex, `it returned "${name}", which this pipeline does not accept. Allowed: ${this.allowed.join(', ')}.`);
      }
      if (!(value instanceof Tensor) || value.dtype !== 'float32') {
        throw new CallbackError(callback.name, 'onStepEnd', stepIndex, `it returned "${name}" that is not a float32 Tensor.`);
      }
    }
    // Names a callback leaves out keep their tensors, as diffusers' `callback_outputs.pop(name, default)`.
    return { ...kwargs, ...(result as TensorMap) };
  }
}

