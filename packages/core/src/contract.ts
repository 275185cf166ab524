/**
 * The callback contract of diff: the one module plugin packages build against (`@diff/core/contract`).
 * Types only — importing it loads no code.
 *
 * Execution semantics, in diffusers' terms:
 * - A pipeline runs its step-end callbacks once per denoising step, after `scheduler.step`, in order (plugins with
 *   `enforce: 'pre'` first, then those without, then `'post'`; the given order within each group). Each callback
 *   receives the kwargs the previous one returned.
 * - `callbackKwargs` holds the tensors named by the callbacks' `tensorInputs` (or `callbackOnStepEndTensorInputs`
 *   for plain functions). Tensors a callback returns (or writes into the kwargs object) replace the pipeline's own
 *   from the next step on. Names outside the pipeline's `callbackTensorInputs` are an error.
 * - The `pipeline` argument is a per-call context, never the shared pipeline object: setting `guidanceScale` or
 *   `interrupt` affects only the generation that called the callback.
 * - A callback that throws (or rejects) ends the generation with a `CallbackError` naming the callback, the step
 *   and the hook; the original error is its `cause`.
 */
import type { RgbImage } from './pipelines/images.js';
import type { Tensor } from './tensor.js';

/** The version of this contract. A plugin states the version it was written for; the core refuses others. */
export type CallbackSpecificationVersion = 'v1';

/** Names of the tensors each pipeline lets callbacks read and replace (diffusers' `_callback_tensor_inputs`). */
export type StableDiffusionTensorName = 'latents' | 'promptEmbeds' | 'negativePromptEmbeds';
export type StableDiffusionInpaintTensorName = StableDiffusionTensorName | 'mask' | 'maskedImageLatents';
export type StableDiffusionControlNetTensorName = StableDiffusionTensorName | 'image';
export type StableDiffusionXLTensorName = 'latents' | 'promptEmbeds' | 'addTextEmbeds' | 'addTimeIds';
export type StableDiffusionXLControlNetTensorName = StableDiffusionXLTensorName | 'image';
/** Every tensor name any built-in pipeline offers. */
export type CallbackTensorName =
  | StableDiffusionInpaintTensorName
  | StableDiffusionControlNetTensorName
  | StableDiffusionXLControlNetTensorName;

/** The tensors handed to a callback: exactly the requested names. */
export type CallbackKwargs<Name extends string = CallbackTensorName> = { [K in Name]: Tensor<'float32'> };

/**
 * What a callback sees as `pipeline`: the state of one generation.
 * Mirrors the attributes diffusers' guide uses (`num_timesteps`, `guidance_scale`, `_guidance_scale`, `_interrupt`).
 */
export interface CallbackPipeline {
  /** The pipeline class, e.g. `'StableDiffusionPipeline'`. */
  readonly pipelineName: string;
  /** Number of denoising steps of this run (diffusers' `num_timesteps`: the length of the timestep schedule). */
  readonly numTimesteps: number;
  readonly timesteps: readonly number[];
  /** Images in the latent batch (prompts × numImagesPerPrompt); CFG-doubled tensors have twice as many rows. */
  readonly batchSize: number;
  /** Settable. 1 or less turns classifier-free guidance off from the next step on; halve the CFG-doubled tensors then. */
  guidanceScale: number;
  readonly doClassifierFreeGuidance: boolean;
  /** Settable. `true` skips the remaining steps; the current latents are decoded. */
  interrupt: boolean;
  /** The tensors this pipeline lets callbacks read and replace. */
  readonly callbackTensorInputs: readonly CallbackTensorName[];
  /** Aborted when the caller aborts the generation. */
  readonly signal: AbortSignal;
  /**
   * Decodes latents with this pipeline's VAE into RGB pictures, e.g. for a per-step preview. Costs one VAE decoder
   * run; the generation itself is unaffected.
   */
  decodeLatents(latents: Tensor<'float32'>): Promise<RgbImage[]>;
}

/** What a callback may return: the kwargs (changed or not), or nothing (changes made in place still apply). */
export type CallbackResult<Name extends string = CallbackTensorName> =
  | Partial<CallbackKwargs<Name>>
  | void
  | Promise<Partial<CallbackKwargs<Name>> | void>;

/** A plain function callback: diffusers' `callback_on_step_end(pipeline, step_index, timestep, callback_kwargs)`. */
export type CallbackOnStepEnd<Name extends string = CallbackTensorName> = (
  pipeline: CallbackPipeline,
  stepIndex: number,
  timestep: number,
  callbackKwargs: CallbackKwargs<Name>,
) => CallbackResult<Name>;

/** The hooks a plugin can implement. Only the step end exists today, as in diffusers. */
export type CallbackHookName = 'onStepEnd';

/**
 * A step-end plugin (diffusers' `PipelineCallback`): a named object that declares the tensors it needs.
 * `Name` is the union of tensor names it reads; passing it to a pipeline that lacks one of them is a type error.
 */
export interface StepEndCallback<Name extends string = CallbackTensorName> {
  readonly specificationVersion: CallbackSpecificationVersion;
  /** Shown in errors: `CallbackError: [name] onStepEnd at step 3: …`. */
  readonly name: string;
  /** The tensors the plugin needs; each must be in the pipeline's `callbackTensorInputs`. */
  readonly tensorInputs: readonly Name[];
  /**
   * Tensors the plugin uses when the pipeline has them (e.g. the inpainting mask, which text-to-image lacks).
   * Never an error, never a type error.
   */
  readonly optionalTensorInputs?: readonly CallbackTensorName[];
  /** Ordering relative to other plugins, as vite's `enforce`. */
  readonly enforce?: 'pre' | 'post';
  onStepEnd(
    pipeline: CallbackPipeline,
    stepIndex: number,
    timestep: number,
    callbackKwargs: CallbackKwargs<Name>,
  ): CallbackResult<Name>;
}

/** Something that may sit in a callback list: `false`, `null` and `undefined` are skipped (`cond && plugin`). */
export type Falsy = false | null | undefined | 0 | '';

/**
 * The `callbackOnStepEnd` option of a pipeline whose tensors are `Name`: a function, a plugin, or a (nested)
 * array of them in which falsy entries are skipped. Plain functions receive the `Requested` tensors
 * (`callbackOnStepEndTensorInputs`, default `['latents']`); plugins receive the tensors they declare.
 */
export type CallbackOnStepEndOption<Name extends string, Requested extends Name = Name> =
  | CallbackOnStepEnd<Requested>
  | StepEndCallback<Name>
  | readonly CallbackOnStepEndOption<Name, Requested>[]
  | Falsy;
