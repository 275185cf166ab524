import type { CallbackKwargs, CallbackPipeline, CallbackTensorName } from '../contract.js';
import { InvalidArgumentError } from '../errors.js';
import type { RgbImage } from '../image-types.js';
import { Tensor } from '../tensor.js';

/**
 * How the rows of a CFG-doubled tensor are laid out while guidance is on (B = images in the batch):
 * - `negativeFirst`: `[negative × B; positive × B]` (prompt embeddings). `negative` names the callback tensor that
 *   holds the negative rows on their own, where the pipeline offers one (SD's `negativePromptEmbeds`).
 * - `duplicated`: the same B rows twice (the inpainting mask, the ControlNet image).
 * - `pairTiled`: `[negative, positive]` once per image (SDXL's `addTimeIds`, which diffusers tiles with `repeat`).
 */
export type CfgRows = { kind: 'negativeFirst'; negative?: CallbackTensorName } | { kind: 'duplicated' } | { kind: 'pairTiled' };
export type CfgLayout = Partial<Record<CallbackTensorName, CfgRows>>;

type TensorMap = Record<string, Tensor<'float32'> | undefined>;

/** An IP-Adapter scale, given as an option or set by a callback: a finite number. */
export function checkIPAdapterScale(scale: unknown, source = 'ipAdapterScale'): number {
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    throw new InvalidArgumentError(`${source} must be a finite number (0 = adapter off, 1 = full strength), got ${String(scale)}.`);
  }
  return scale;
}

function pickRows(tensor: Tensor<'float32'>, rows: readonly number[]): Tensor<'float32'> {
  return Tensor.cat(rows.map((row) => tensor.narrow(0, row, 1)));
}

/** The negative and positive rows of a doubled tensor, each `[B, …]`. */
export function splitRows(layout: CfgRows, tensor: Tensor<'float32'>, batchSize: number) {
  if (layout.kind === 'pairTiled') {
    const images = Array.from({ length: batchSize }, (_, image) => 2 * image);
    return { negative: pickRows(tensor, images), positive: pickRows(tensor, images.map((row) => row + 1)) };
  }
  return { negative: tensor.narrow(0, 0, batchSize), positive: tensor.narrow(0, batchSize, batchSize) };
}

function joinRows(layout: CfgRows, negative: Tensor<'float32'>, positive: Tensor<'float32'>): Tensor<'float32'> {
  if (layout.kind !== 'pairTiled') return Tensor.cat([negative, positive]);
  const rows: Tensor<'float32'>[] = [];
  for (let image = 0; image < positive.shape[0]; image++) rows.push(negative.narrow(0, image, 1), positive.narrow(0, image, 1));
  return Tensor.cat(rows);
}

export interface GenerationContextSettings {
  pipelineName: string;
  modelFamily: CallbackPipeline['modelFamily'];
  callbackTensorInputs: readonly CallbackTensorName[];
  cfgLayout: CfgLayout;
  guidanceScale: number;
  /** The IP-Adapter scale the generation starts with (0 where the model has no adapter). */
  ipAdapterScale?: number;
  /** Whether an adapter picture conditions this generation (else the UNet gets scale 0, whatever callbacks set). */
  ipAdapterActive?: boolean;
  timesteps: ArrayLike<number>;
  batchSize: number;
  latentChannels: number;
  vaeScaleFactor: number;
  signal?: AbortSignal;
  decodeLatents: (latents: Tensor<'float32'>) => Promise<RgbImage[]>;
}

/**
 * The per-generation state a callback sees as `pipeline`. Each `generate` call makes its own, so concurrent
 * generations on one pipeline never see each other's guidance scale, interrupt flag or tensors.
 */
export class GenerationContext implements CallbackPipeline {
  readonly pipelineName: string;
  readonly modelFamily: CallbackPipeline['modelFamily'];
  readonly callbackTensorInputs: readonly CallbackTensorName[];
  readonly cfgTensorInputs: readonly CallbackTensorName[];
  private currentGuidanceScale: number;
  interrupt = false;
  private currentIPAdapterScale: number;
  private readonly ipAdapterActive: boolean;
  readonly timesteps: readonly number[];
  readonly batchSize: number;
  readonly latentChannels: number;
  readonly vaeScaleFactor: number;
  readonly signal: AbortSignal;
  readonly decodeLatents: (latents: Tensor<'float32'>) => Promise<RgbImage[]>;
  /** Guidance was on when the generation started, so the pipeline computed negative conditioning. */
  private readonly startedWithGuidance: boolean;
  private readonly initialGuidanceScale: number;
  private readonly cfgLayout: CfgLayout;
  /** The loop's own tensors, so that disabling guidance also halves the doubled tensors no callback asked for. */
  private loopTensors: TensorMap = {};
  /** Negative rows put aside by `disableGuidance`, for `enableGuidance`. */
  private readonly keptNegatives = new Map<string, Tensor<'float32'>>();

  constructor(settings: GenerationContextSettings) {
    this.pipelineName = settings.pipelineName;
    this.modelFamily = settings.modelFamily;
    this.callbackTensorInputs = settings.callbackTensorInputs;
    this.cfgLayout = settings.cfgLayout;
    this.cfgTensorInputs = Object.freeze(Object.keys(settings.cfgLayout) as CallbackTensorName[]);
    this.currentGuidanceScale = settings.guidanceScale;
    this.initialGuidanceScale = settings.guidanceScale;
    this.currentIPAdapterScale = settings.ipAdapterScale ?? 0;
    this.ipAdapterActive = settings.ipAdapterActive ?? false;
    this.startedWithGuidance = settings.guidanceScale > 1;
    this.timesteps = Object.freeze(Array.from(settings.timesteps));
    this.batchSize = settings.batchSize;
    this.latentChannels = settings.latentChannels;
    this.vaeScaleFactor = settings.vaeScaleFactor;
    this.signal = settings.signal ?? new AbortController().signal;
    this.decodeLatents = settings.decodeLatents;
  }

  get numTimesteps(): number {
    return this.timesteps.length;
  }

  get guidanceScale(): number {
    return this.currentGuidanceScale;
  }

  /** Checked here, so that a callback setting a bad scale is named in the error (NaN would give a NaN picture). */
  set guidanceScale(scale: number) {
    if (typeof scale !== 'number' || !Number.isFinite(scale)) {
      throw new InvalidArgumentError(`guidanceScale must be a finite number (≤ 1 turns guidance off), got ${String(scale)}.`);
    }
    this.currentGuidanceScale = scale;
  }

  get ipAdapterScale(): number {
    return this.currentIPAdapterScale;
  }

  /** Checked here, so that a callback setting a bad scale is named in the error. */
  set ipAdapterScale(scale: number) {
    this.currentIPAdapterScale = checkIPAdapterScale(scale);
  }

  /** The scale the UNet gets: 0 without an adapter picture, so a scale callback cannot switch on empty embeddings. */
  get ipAdapterFeedScale(): number {
    return this.ipAdapterActive ? this.currentIPAdapterScale : 0;
  }

  /** diffusers: `guidance_scale > 1` (the ONNX UNets here take no guidance embedding). */
  get doClassifierFreeGuidance(): boolean {
    return this.guidanceScale > 1;
  }

  /** Called by the denoising loop: the tensors `disableGuidance`/`enableGuidance` keep consistent. */
  attachLoopTensors(tensors: TensorMap): void {
    this.loopTensors = tensors;
  }

  disableGuidance<Kwargs extends Partial<CallbackKwargs<string>>>(callbackKwargs: Kwargs): Kwargs {
    if (!this.doClassifierFreeGuidance) return callbackKwargs;
    this.rewrite(callbackKwargs, (name, layout, doubled) => {
      const { negative, positive } = splitRows(layout, doubled, this.batchSize);
      this.keptNegatives.set(name, negative);
      return positive;
    });
    this.guidanceScale = 0;
    return callbackKwargs;
  }

  enableGuidance<Kwargs extends Partial<CallbackKwargs<string>>>(callbackKwargs: Kwargs, guidanceScale = this.initialGuidanceScale): Kwargs {
    if (!this.startedWithGuidance) {
      throw new InvalidArgumentError(
        `enableGuidance: this generation started with guidanceScale ${this.initialGuidanceScale} (≤ 1), so no negative ` +
          'conditioning was computed. Start with guidanceScale > 1 and turn guidance off with disableGuidance instead.',
      );
    }
    if (!(Number.isFinite(guidanceScale) && guidanceScale > 1)) {
      throw new InvalidArgumentError(`enableGuidance needs a guidance scale greater than 1, got ${guidanceScale}.`);
    }
    if (this.doClassifierFreeGuidance) {
      this.guidanceScale = guidanceScale;
      return callbackKwargs;
    }
    this.rewrite(callbackKwargs, (name, layout, positive) => {
      const negative =
        layout.kind === 'duplicated' ? positive
        : layout.kind === 'negativeFirst' && layout.negative ? this.current(layout.negative, callbackKwargs)
        : this.keptNegatives.get(name);
      if (!negative) throw new InvalidArgumentError(`enableGuidance: the negative rows of ${name} are missing.`);
      return joinRows(layout, negative, positive);
    });
    this.guidanceScale = guidanceScale;
    return callbackKwargs;
  }

  private current(name: string, callbackKwargs: Partial<CallbackKwargs<string>>): Tensor<'float32'> | undefined {
    return (callbackKwargs as TensorMap)[name] ?? this.loopTensors[name];
  }

  /** Replaces each CFG-doubled tensor, in the kwargs (in place) and in the loop state alike. */
  private rewrite(
    callbackKwargs: Partial<CallbackKwargs<string>>,
    change: (name: string, layout: CfgRows, tensor: Tensor<'float32'>) => Tensor<'float32'>,
  ): void {
    const kwargs = callbackKwargs as TensorMap;
    for (const [name, layout] of Object.entries(this.cfgLayout) as [string, CfgRows][]) {
      const tensor = this.current(name, callbackKwargs);
      if (!tensor) continue;
      const changed = change(name, layout, tensor);
      if (name in kwargs) kwargs[name] = changed;
      this.loopTensors[name] = changed;
    }
  }
}
