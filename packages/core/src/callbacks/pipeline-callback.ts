import type {
  CallbackHookName,
  CallbackKwargs,
  CallbackPipeline,
  CallbackPlugin,
  CallbackResult,
  CallbackTensorName,
  JsonSchema,
  StandardSchemaV1,
} from '../contract.js';
import { InvalidArgumentError } from '../errors.js';

/** diffusers' `PipelineCallback` config, camelCased. */
export interface PipelineCallbackOptions {
  /** Fraction of the steps after which the callback acts: the step `floor(numTimesteps · ratio)`. Default 1.0. */
  cutoffStepRatio?: number | null;
  /** The step index at which the callback acts; giving it alone disables the ratio. */
  cutoffStepIndex?: number | null;
}

/** diffusers' `PipelineCallback` checks: exactly one of ratio and index, each in range. */
function resolveCutoffOptions(options: PipelineCallbackOptions): { cutoffStepRatio: number | null; cutoffStepIndex: number | null } {
  // diffusers defaults the ratio to 1.0; naming only an index means "use the index", as the seed guide writes
  // `cutoff_step_ratio=None, cutoff_step_index=10` explicitly.
  const cutoffStepIndex = options.cutoffStepIndex ?? null;
  const cutoffStepRatio = options.cutoffStepRatio === undefined ? (cutoffStepIndex === null ? 1.0 : null) : options.cutoffStepRatio;
  if ((cutoffStepRatio === null) === (cutoffStepIndex === null)) {
    throw new InvalidArgumentError('Either cutoffStepRatio or cutoffStepIndex should be provided, not both or none.');
  }
  if (cutoffStepRatio !== null && (typeof cutoffStepRatio !== 'number' || !(cutoffStepRatio >= 0 && cutoffStepRatio <= 1))) {
    throw new InvalidArgumentError(`cutoffStepRatio must be a number between 0.0 and 1.0, got ${String(cutoffStepRatio)}.`);
  }
  if (cutoffStepIndex !== null && !(Number.isInteger(cutoffStepIndex) && cutoffStepIndex >= 0)) {
    throw new InvalidArgumentError(`cutoffStepIndex must be a non-negative integer, got ${String(cutoffStepIndex)}.`);
  }
  return { cutoffStepRatio, cutoffStepIndex };
}

/**
 * The registry's view of `PipelineCallback`'s options, for plugins built on it: a Standard Schema that applies the
 * constructor's rules (so the registry rejects exactly what `new` rejects, with the same message) and the JSON
 * Schema, with each option described as the plugin words it.
 */
export function pipelineCallbackOptions(descriptions: { cutoffStepRatio: string; cutoffStepIndex: string }): {
  options: StandardSchemaV1<PipelineCallbackOptions, PipelineCallbackOptions>;
  optionsJsonSchema: JsonSchema;
} {
  const validate = (value: unknown): StandardSchemaV1.Result<PipelineCallbackOptions> => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return { issues: [{ message: 'Expected an object of options' }] };
    const unknown = Object.keys(value).filter((key) => key !== 'cutoffStepRatio' && key !== 'cutoffStepIndex');
    if (unknown.length > 0) return { issues: [{ message: `Unknown option ${unknown.join(', ')}; allowed: cutoffStepRatio, cutoffStepIndex`, path: [unknown[0]] }] };
    try {
      resolveCutoffOptions(value as PipelineCallbackOptions);
    } catch (error) {
      if (!(error instanceof InvalidArgumentError)) throw error;
      return { issues: [{ message: error.message }] };
    }
    return { value: value as PipelineCallbackOptions };
  };
  return {
    options: { '~standard': { version: 1, vendor: '@diff/core', validate } },
    optionsJsonSchema: {
      type: 'object',
      additionalProperties: false,
      properties: {
        cutoffStepRatio: { anyOf: [{ type: 'number', minimum: 0, maximum: 1 }, { type: 'null' }], description: descriptions.cutoffStepRatio },
        cutoffStepIndex: { anyOf: [{ type: 'integer', minimum: 0 }, { type: 'null' }], description: descriptions.cutoffStepIndex },
      },
    },
  };
}

/**
 * Base class of the official callbacks (diffusers' `PipelineCallback`): validates the cut-off options and computes
 * the cut-off step. Subclasses declare `tensorInputs` and implement `callbackFn`.
 */
export abstract class PipelineCallback<Name extends string = CallbackTensorName> implements CallbackPlugin<Name> {
  readonly specificationVersion = 'v1' as const;
  abstract readonly tensorInputs: readonly Name[];
  readonly optionalTensorInputs?: readonly CallbackTensorName[];
  readonly enforce?: 'pre' | 'post';
  readonly config: { readonly cutoffStepRatio: number | null; readonly cutoffStepIndex: number | null };

  constructor(options: PipelineCallbackOptions = {}) {
    this.config = Object.freeze(resolveCutoffOptions(options));
  }

  get name(): string {
    return this.constructor.name;
  }

  /** The step index at which the callback acts in a run of `pipeline.numTimesteps` steps. */
  cutoffStep(pipeline: Pick<CallbackPipeline, 'numTimesteps'>): number {
    const { cutoffStepIndex, cutoffStepRatio } = this.config;
    return cutoffStepIndex ?? Math.trunc(pipeline.numTimesteps * (cutoffStepRatio as number));
  }

  abstract callbackFn(
    pipeline: CallbackPipeline,
    stepIndex: number,
    timestep: number,
    callbackKwargs: CallbackKwargs<Name>,
  ): CallbackResult<Name>;

  onStepEnd(
    pipeline: CallbackPipeline,
    stepIndex: number,
    timestep: number,
    callbackKwargs: CallbackKwargs<Name>,
  ): CallbackResult<Name> {
    return this.callbackFn(pipeline, stepIndex, timestep, callbackKwargs);
  }
}

/**
 * Several plugins as one (diffusers' `MultiPipelineCallbacks`): they run in the given order, each receiving the
 * kwargs the previous returned; the tensor inputs are the union of theirs, without duplicates. Pipelines unfold it
 * so that an error names the member that failed.
 */
export class MultiPipelineCallbacks<Name extends string = CallbackTensorName> implements CallbackPlugin<Name> {
  readonly specificationVersion = 'v1' as const;
  readonly name = 'MultiPipelineCallbacks';
  readonly callbacks: readonly CallbackPlugin<Name>[];

  constructor(callbacks: readonly CallbackPlugin<Name>[]) {
    if (!Array.isArray(callbacks)) {
      throw new InvalidArgumentError('MultiPipelineCallbacks takes an array of callbacks.');
    }
    this.callbacks = Object.freeze([...callbacks]);
  }

  get tensorInputs(): readonly Name[] {
    return [...new Set(this.callbacks.flatMap((callback) => callback.tensorInputs))];
  }

  get optionalTensorInputs(): readonly CallbackTensorName[] {
    return [...new Set(this.callbacks.flatMap((callback) => callback.optionalTensorInputs ?? []))];
  }

  onStepBegin(pipeline: CallbackPipeline, stepIndex: number, timestep: number, callbackKwargs: CallbackKwargs<Name>) {
    return this.runHook('onStepBegin', pipeline, stepIndex, timestep, callbackKwargs);
  }

  onStepEnd(pipeline: CallbackPipeline, stepIndex: number, timestep: number, callbackKwargs: CallbackKwargs<Name>) {
    return this.runHook('onStepEnd', pipeline, stepIndex, timestep, callbackKwargs);
  }

  private async runHook(
    hook: CallbackHookName,
    pipeline: CallbackPipeline,
    stepIndex: number,
    timestep: number,
    callbackKwargs: CallbackKwargs<Name>,
  ): Promise<Partial<CallbackKwargs<Name>>> {
    let kwargs = callbackKwargs;
    for (const callback of this.callbacks) {
      const result = await callback[hook]?.(pipeline, stepIndex, timestep, kwargs);
      kwargs = (result ?? kwargs) as CallbackKwargs<Name>;
    }
    return kwargs;
  }
}
