import { InvalidArgumentError, PipelineCallback, pipelineCallbackOptions, withConstructorRules, type PipelineCallbackOptions } from '@diff/core/plugin';
import type { CallbackKwargs, CallbackPipeline, CallbackPlugin, CallbackPluginDescriptor, JsonSchema } from '@diff/core/contract';
import { z } from 'zod';

export type { PipelineCallbackOptions } from '@diff/core/plugin';

/**
 * Turns classifier-free guidance off at the cut-off step (`floor(numTimesteps · cutoffStepRatio)`, or
 * `cutoffStepIndex`): from the next step on, the model runs on the conditional half of the batch only.
 *
 * Which tensors are doubled for guidance, and how their rows are laid out, is the pipeline's business
 * (`pipeline.cfgTensorInputs`): `disableGuidance` halves all of them — in the kwargs and in the pipeline's own state —
 * so this class needs no tensor inputs and works on every pipeline, with any `numImagesPerPrompt`.
 */
export class CFGCutoffCallback<Name extends string = never> extends PipelineCallback<Name> {
  readonly tensorInputs: readonly Name[] = [];

  callbackFn(pipeline: CallbackPipeline, stepIndex: number, _timestep: number, callbackKwargs: CallbackKwargs<Name>) {
    return stepIndex === this.cutoffStep(pipeline) ? pipeline.disableGuidance(callbackKwargs) : callbackKwargs;
  }
}

/** diffusers' `SDCFGCutoffCallback`: declares the SD 1.x prompt embeddings, as diffusers does. */
export class SDCFGCutoffCallback extends CFGCutoffCallback<'promptEmbeds'> {
  override readonly tensorInputs = ['promptEmbeds'] as const;
}

/** diffusers' `SDXLCFGCutoffCallback`: declares the SDXL conditioning, so it is a type error on SD 1.x pipelines. */
export class SDXLCFGCutoffCallback extends CFGCutoffCallback<'promptEmbeds' | 'addTextEmbeds' | 'addTimeIds'> {
  override readonly tensorInputs = ['promptEmbeds', 'addTextEmbeds', 'addTimeIds'] as const;
}

/** diffusers' `SDXLControlnetCFGCutoffCallback`: the SDXL conditioning and the control image. */
export class SDXLControlnetCFGCutoffCallback extends CFGCutoffCallback<'promptEmbeds' | 'addTextEmbeds' | 'addTimeIds' | 'image'> {
  override readonly tensorInputs = ['promptEmbeds', 'addTextEmbeds', 'addTimeIds', 'image'] as const;
}

export interface GuidanceIntervalOptions {
  /** Fraction of the steps before which guidance is off: guidance starts at step `floor(numTimesteps · start)`. Default 0. */
  start?: number;
  /** Fraction of the steps from which guidance is off again: step `floor(numTimesteps · end)`. Default 1. */
  end?: number;
}

/**
 * Classifier-free guidance only inside an interval of the steps: steps `i` with
 * `floor(N · start) ≤ i < floor(N · end)` (N = `numTimesteps`) run the doubled batch, the others the conditional
 * half only — the early steps lay out the picture without the guidance push, the late ones refine it cheaply.
 *
 * The generation must start with guidance on (`guidanceScale > 1`, the default): turning guidance back on needs the
 * negative conditioning the pipeline computes only then, and `enableGuidance` throws otherwise.
 */
export class GuidanceIntervalCallback implements CallbackPlugin<never> {
  readonly specificationVersion = 'v1' as const;
  // disableGuidance/enableGuidance rewrite the pipeline's own tensors; the callback reads none.
  readonly tensorInputs = [] as const;
  // Before other step-begin hooks, so that they see the guidance this step's model call runs with.
  readonly enforce = 'pre' as const;
  readonly config: Readonly<Required<GuidanceIntervalOptions>>;

  constructor(options: GuidanceIntervalOptions = {}) {
    const { start = 0, end = 1 } = options;
    if (!(typeof start === 'number' && typeof end === 'number' && start >= 0 && start < end && end <= 1)) {
      throw new InvalidArgumentError(`GuidanceIntervalCallback needs 0 ≤ start < end ≤ 1, got start ${String(start)} and end ${String(end)}.`);
    }
    this.config = Object.freeze({ start, end });
  }

  get name(): string {
    return this.constructor.name;
  }

  /** Whether step `stepIndex` of a run of `pipeline.numTimesteps` steps is guided. */
  guides(pipeline: Pick<CallbackPipeline, 'numTimesteps'>, stepIndex: number): boolean {
    const { numTimesteps } = pipeline;
    return Math.floor(numTimesteps * this.config.start) <= stepIndex && stepIndex < Math.floor(numTimesteps * this.config.end);
  }

  onStepBegin(pipeline: CallbackPipeline, stepIndex: number, _timestep: number, callbackKwargs: CallbackKwargs<never>) {
    const guided = this.guides(pipeline, stepIndex);
    if (guided && !pipeline.doClassifierFreeGuidance) return pipeline.enableGuidance(callbackKwargs);
    if (!guided && pipeline.doClassifierFreeGuidance) return pipeline.disableGuidance(callbackKwargs);
    return callbackKwargs;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Registry descriptors. The cross-option rules live in the constructors; the schemas reuse them, so that a registry
// rejects exactly what `new` rejects, with the same message.

/** The options' JSON Schema with defaults and descriptions. zod types sub-schemas as possibly `true`; ours never are. */
function jsonSchemaOf(schema: z.ZodType): JsonSchema {
  return z.toJSONSchema(schema, { io: 'input' }) as JsonSchema;
}

// The options and rules of diffusers' PipelineCallback, as core describes them for every plugin built on it.
const cfgCutoffOptions = pipelineCallbackOptions({
  cutoffStepRatio: 'Fraction of the steps after which guidance is off: the cut-off step is floor(numTimesteps · ratio). Default 1.0 (no cut-off) unless cutoffStepIndex is given.',
  cutoffStepIndex: 'The step index after which guidance is off; giving it alone disables the ratio. Not together with cutoffStepRatio.',
});

/** `cfg-cutoff`: diffusers' CFG cut-off for every SD and SDXL pipeline. */
export const plugin: CallbackPluginDescriptor<PipelineCallbackOptions, undefined, PipelineCallbackOptions> = {
  specificationVersion: 'v1',
  name: 'cfg-cutoff',
  description: 'Turns classifier-free guidance off after a fraction of the steps (diffusers’ CFG cut-off); the remaining steps run one model batch instead of two.',
  ...cfgCutoffOptions,
  create: (options) => new CFGCutoffCallback(options),
};

const guidanceIntervalOptions = z.strictObject({
  start: z.number().min(0).max(1).default(0).describe('Fraction of the steps before which guidance is off: guidance starts at step floor(numTimesteps · start).'),
  end: z.number().min(0).max(1).default(1).describe('Fraction of the steps from which guidance is off again: step floor(numTimesteps · end). Greater than start.'),
});

/** `guidance-interval`: classifier-free guidance only for the steps in [start, end) of the run. */
export const guidanceIntervalPlugin: CallbackPluginDescriptor<
  z.output<typeof guidanceIntervalOptions>,
  undefined,
  z.input<typeof guidanceIntervalOptions>
> = {
  specificationVersion: 'v1',
  name: 'guidance-interval',
  description: 'Classifier-free guidance only for the steps in [start, end) of the run (the generation must start with guidance on).',
  options: withConstructorRules(guidanceIntervalOptions, (options) => new GuidanceIntervalCallback(options)),
  optionsJsonSchema: jsonSchemaOf(guidanceIntervalOptions),
  create: (options) => new GuidanceIntervalCallback(options),
};

declare module '@diff/core/contract' {
  interface CallbackPluginRegistry {
    'cfg-cutoff': typeof plugin;
    'guidance-interval': typeof guidanceIntervalPlugin;
  }
}
