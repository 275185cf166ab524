/**
 * The callback contract of diff: the one module plugin packages build against (`@diff/core/contract`).
 * Types only — importing it loads no code — and a leaf: it names only other type-only leaves.
 *
 * Execution semantics, in diffusers' terms:
 * - Each denoising step runs, in this order: the `onStepBegin` hooks (before the model runs; plain functions from
 *   `callbackOnStepBegin`), the model and the guidance, `scheduler.step`, then the `onStepEnd` hooks (diffusers'
 *   `callback_on_step_end`). Within a hook, plugins with `enforce: 'pre'` run first, then those without, then
 *   `'post'`; the given order within each group. Each callback receives the kwargs the previous one returned.
 * - `callbackKwargs` holds the tensors named by the callbacks' `tensorInputs` (or the `…TensorInputs` option for plain
 *   functions). Tensors a callback returns (or writes into the kwargs object) replace the pipeline's own from then on
 *   (a step-begin change already feeds this step's model call). Names outside the pipeline's `callbackTensorInputs`
 *   are an error.
 * - The `pipeline` argument is a per-call context, never the shared pipeline object: setting `guidanceScale`,
 *   `interrupt` or calling `disableGuidance` affects only the generation that called the callback.
 * - A callback that throws (or rejects) ends the generation with a `CallbackError` naming the callback, the step
 *   and the hook; the original error is its `cause`.
 */
import type { StandardSchemaV1 } from '@standard-schema/spec';
import type { RgbImage } from './image-types.js';
import type { Tensor } from './tensor.js';

export type { RgbImage } from './image-types.js';
export type { StandardSchemaV1 } from '@standard-schema/spec';

/** The version of this contract. A plugin states the version it was written for; the core refuses others. */
export type CallbackSpecificationVersion = 'v1';

/**
 * The scheduler's estimate of the clean latents at this step (diffusers' `pred_original_sample`, which diffusers
 * discards): present at step end where the scheduler computes one (DDIM, Euler, Euler ancestral, DPM-Solver, LMS;
 * PNDM does not). Read-only: a callback may not replace it.
 */
export type PredOriginalSampleName = 'predOriginalSample';

/**
 * The IP-Adapter's image embeddings `[rows, 1, D]`, CFG-doubled like the prompt embeddings (zeros as the negative
 * half). Present where the model folder has an adapter, whatever the pipeline class: ask for it through
 * `optionalTensorInputs`; asking for it by name on a model without one is an error.
 */
export type IPAdapterTensorName = 'ipAdapterImageEmbeds';

/** Names of the tensors each pipeline lets callbacks read and replace (diffusers' `_callback_tensor_inputs`). */
export type StableDiffusionTensorName = 'latents' | 'promptEmbeds' | 'negativePromptEmbeds' | PredOriginalSampleName | IPAdapterTensorName;
export type StableDiffusionInpaintTensorName = StableDiffusionTensorName | 'mask' | 'maskedImageLatents';
export type StableDiffusionControlNetTensorName = StableDiffusionTensorName | 'image';
export type StableDiffusionXLTensorName =
  | 'latents'
  | 'promptEmbeds'
  | 'addTextEmbeds'
  | 'addTimeIds'
  | PredOriginalSampleName
  | IPAdapterTensorName;
export type StableDiffusionXLControlNetTensorName = StableDiffusionXLTensorName | 'image';
export type StableDiffusionXLInpaintTensorName = StableDiffusionXLTensorName | 'mask' | 'maskedImageLatents';
/** Every tensor name any built-in pipeline offers. */
export type CallbackTensorName =
  | StableDiffusionInpaintTensorName
  | StableDiffusionControlNetTensorName
  | StableDiffusionXLControlNetTensorName
  | StableDiffusionXLInpaintTensorName;

/** The tensors handed to a callback: exactly the requested names. */
export type CallbackKwargs<Name extends string = CallbackTensorName> = { [K in Name]: Tensor<'float32'> };

/**
 * What a callback sees as `pipeline`: the state of one generation.
 * Mirrors the attributes diffusers' guide uses (`num_timesteps`, `guidance_scale`, `_guidance_scale`, `_interrupt`).
 */
export interface CallbackPipeline {
  /** The pipeline class, e.g. `'StableDiffusionPipeline'`. */
  readonly pipelineName: string;
  /** The model family: picks the latent space (SD 1.x/2.x or SDXL), e.g. for latent previews. */
  readonly modelFamily: 'stable-diffusion' | 'stable-diffusion-xl';
  /** Number of denoising steps of this run (diffusers' `num_timesteps`: the length of the timestep schedule). */
  readonly numTimesteps: number;
  readonly timesteps: readonly number[];
  /** Images in the latent batch (prompts × numImagesPerPrompt); CFG-doubled tensors have twice as many rows. */
  readonly batchSize: number;
  /**
   * Settable. 1 or less turns classifier-free guidance off from the next model call on; the CFG-doubled tensors must
   * then be halved — `disableGuidance` does both.
   */
  guidanceScale: number;
  readonly doClassifierFreeGuidance: boolean;
  /**
   * The callback tensors that hold `[negative; positive]` rows (or the same rows twice) while guidance is on, in
   * this generation: declared by the pipeline, never guessed from batch sizes.
   */
  readonly cfgTensorInputs: readonly CallbackTensorName[];
  /**
   * Turns classifier-free guidance off (guidance scale 0, as diffusers' cut-off callbacks do) and keeps the
   * conditional half of every CFG-doubled tensor — in `callbackKwargs` (changed in place and returned) and in the
   * pipeline's own state for those the callback did not ask for. Does nothing when guidance is already off.
   */
  disableGuidance<Kwargs extends Partial<CallbackKwargs<string>>>(callbackKwargs: Kwargs): Kwargs;
  /**
   * The inverse: guidance back on at `guidanceScale` (default: the scale this generation was started with), the
   * doubled tensors rebuilt from the negative conditioning the pipeline kept. Needs a generation started with
   * guidance on (`guidanceScale > 1`): otherwise no negative conditioning exists and it throws.
   */
  enableGuidance<Kwargs extends Partial<CallbackKwargs<string>>>(callbackKwargs: Kwargs, guidanceScale?: number): Kwargs;
  /**
   * Settable: the IP-Adapter scale from the next model call on (0 = adapter off), for this generation only — the
   * shared pipeline keeps its own. A finite number; no effect on a model without an adapter.
   */
  ipAdapterScale: number;
  /** Settable. `true` skips the remaining steps; the current latents are decoded and returned normally. */
  interrupt: boolean;
  /** The tensors this pipeline lets callbacks read and replace. */
  readonly callbackTensorInputs: readonly CallbackTensorName[];
  /** Aborted when the caller aborts the generation. */
  readonly signal: AbortSignal;
  /** Latent channels and the VAE's downscaling factor of this pipeline's model. */
  readonly latentChannels: number;
  readonly vaeScaleFactor: number;
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

/** A plain function run at the start of each step, before the model (`callbackOnStepBegin`). Same signature. */
export type CallbackOnStepBegin<Name extends string = CallbackTensorName> = CallbackOnStepEnd<Name>;

/** The hooks a plugin can implement. */
export type CallbackHookName = 'onStepBegin' | 'onStepEnd';

/**
 * A callback plugin (diffusers' `PipelineCallback`): a named object that declares the tensors it needs and implements
 * `onStepBegin`, `onStepEnd` or both. `Name` is the union of tensor names it reads; passing it to a pipeline that
 * lacks one of them is a type error.
 */
export interface CallbackPlugin<Name extends string = CallbackTensorName> {
  readonly specificationVersion: CallbackSpecificationVersion;
  /** Shown in errors: `Callback "name" failed in onStepEnd at step 3: …`. */
  readonly name: string;
  /** The tensors the plugin needs; each must be in the pipeline's `callbackTensorInputs`. */
  readonly tensorInputs: readonly Name[];
  /**
   * Tensors the plugin uses when the generation has them (e.g. the inpainting mask, which text-to-image lacks, or
   * `predOriginalSample`, which PNDM does not compute). Never an error, never a type error.
   */
  readonly optionalTensorInputs?: readonly CallbackTensorName[];
  /** Ordering relative to other plugins, as vite's `enforce`. */
  readonly enforce?: 'pre' | 'post';
  /** Before the model runs at `stepIndex`; tensors replaced here feed this step's model call. */
  onStepBegin?(pipeline: CallbackPipeline, stepIndex: number, timestep: number, callbackKwargs: CallbackKwargs<Name>): CallbackResult<Name>;
  /** After `scheduler.step` at `stepIndex` (diffusers' `callback_on_step_end`). */
  onStepEnd?(pipeline: CallbackPipeline, stepIndex: number, timestep: number, callbackKwargs: CallbackKwargs<Name>): CallbackResult<Name>;
}

/** Something that may sit in a callback list: `false`, `null` and `undefined` are skipped (`cond && plugin`). */
export type Falsy = false | null | undefined | 0 | '';

/**
 * The `callbackOnStepEnd` option of a pipeline whose tensors are `Name`: a function, a plugin, or a (nested)
 * array of them in which falsy entries are skipped. Plain functions receive the `Requested` tensors
 * (`callbackOnStepEndTensorInputs`, default `['latents']`); plugins receive the tensors they declare and run their
 * `onStepBegin` hooks too.
 */
export type CallbackOnStepEndOption<Name extends string, Requested extends Name = Name> =
  | CallbackOnStepEnd<Requested>
  | CallbackPlugin<Name>
  | readonly CallbackOnStepEndOption<Name, Requested>[]
  | Falsy;

/** The `callbackOnStepBegin` option: plain functions (or arrays of them); plugins go in `callbackOnStepEnd`. */
export type CallbackOnStepBeginOption<Requested extends string> =
  | CallbackOnStepBegin<Requested>
  | readonly CallbackOnStepBeginOption<Requested>[]
  | Falsy;

/** The callback options every pipeline's `generate` takes. */
export interface CallbackOptions<Name extends string, Requested extends Name = 'latents' & Name, BeginRequested extends Name = 'latents' & Name> {
  callbackOnStepEnd?: CallbackOnStepEndOption<Name, Requested>;
  /** Tensors handed to plain step-end functions (default `['latents']`); plugins declare their own. */
  callbackOnStepEndTensorInputs?: readonly Requested[];
  callbackOnStepBegin?: CallbackOnStepBeginOption<BeginRequested>;
  /** Tensors handed to plain step-begin functions (default `['latents']`). */
  callbackOnStepBeginTensorInputs?: readonly BeginRequested[];
}

// ---------------------------------------------------------------------------------------------------------------
// The plugin registry: callbacks by name, with options that arrive as JSON or strings (CLI flags, HTTP requests,
// job queues).

/** The part of JSON Schema the registry's users read: types, defaults, descriptions, ranges and enums. */
export interface JsonSchema {
  type?: 'object' | 'number' | 'integer' | 'string' | 'boolean' | 'array' | 'null' | readonly string[];
  properties?: Readonly<Record<string, JsonSchema>>;
  required?: readonly string[];
  items?: JsonSchema;
  anyOf?: readonly JsonSchema[];
  oneOf?: readonly JsonSchema[];
  enum?: readonly unknown[];
  const?: unknown;
  default?: unknown;
  description?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  additionalProperties?: boolean | JsonSchema;
  [keyword: string]: unknown;
}

/**
 * How a package offers its callback to apps by name. `options` validates the JSON-able options synchronously (any
 * Standard Schema validator: zod 4, valibot, arktype…) and its output is what `create` receives; `optionsJsonSchema`
 * describes them for listings, `key=value` parsing and forms. Options that are functions (`onPreview`, `when`) are
 * never part of JSON: apps pass them in `runtime`.
 */
export interface CallbackPluginDescriptor<Options = unknown, Runtime = undefined, Input = unknown> {
  readonly specificationVersion: CallbackSpecificationVersion;
  /** The registry name, e.g. `'cfg-cutoff'`: lowercase words joined by `-`. */
  readonly name: string;
  /** One sentence, shown by `diff-sd callbacks` and in forms. */
  readonly description: string;
  readonly options: StandardSchemaV1<Input, Options>;
  readonly optionsJsonSchema: JsonSchema;
  create(options: Options, runtime?: Runtime): CallbackPlugin<string>;
}

/**
 * Registry names → descriptor types. Empty here; each plugin package augments it so that `createCallback` checks
 * the options of the names it knows:
 *
 * ```ts
 * declare module '@diff/core/contract' {
 *   interface CallbackPluginRegistry { 'cfg-cutoff': typeof plugin }
 * }
 * ```
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface CallbackPluginRegistry {}

/** The options a registered name accepts (its schema's input type). */
export type CallbackPluginOptions<Name extends keyof CallbackPluginRegistry> =
  CallbackPluginRegistry[Name] extends CallbackPluginDescriptor<unknown, unknown, infer Input> ? Input : never;

/** The runtime values (functions) a registered name accepts. */
export type CallbackPluginRuntime<Name extends keyof CallbackPluginRegistry> =
  CallbackPluginRegistry[Name] extends CallbackPluginDescriptor<unknown, infer Runtime, unknown> ? Runtime : never;

/**
 * A callback made by the registry: its tensor names are known only at run time, so any pipeline accepts it statically
 * and checks its `tensorInputs` against its allow-list when the generation starts (an `InvalidArgumentError`).
 */
export type RegisteredCallback = CallbackPlugin<never>;

/** What `listCallbackPlugins()` returns for each plugin. */
export interface CallbackPluginInfo {
  readonly name: string;
  readonly description: string;
  readonly optionsJsonSchema: JsonSchema;
}
