import { AbortError, InvalidArgumentError } from '../errors.js';
import { Generator } from '../random/generator.js';
import { Tensor } from '../tensor.js';

/**
 * The default of `maxPixels`: SDXL at 1024×1024 with a batch of 8. Larger requests are refused before any tensor is
 * allocated, so a typo in a size cannot take the process's memory.
 */
export const DEFAULT_MAX_PIXELS = 1024 * 1024 * 8;

/** The per-pipeline limits, from the load options. */
export interface GenerationLimits {
  /** Width × height × the number of images of one `generate` call. */
  readonly maxPixels: number;
}

/** Reads the load options' limits, checked. */
export function generationLimits(options: { maxPixels?: unknown }): GenerationLimits {
  const { maxPixels = DEFAULT_MAX_PIXELS } = options;
  if (typeof maxPixels !== 'number' || !(maxPixels >= 64)) {
    throw new InvalidArgumentError(`maxPixels must be a number ≥ 64 (pixels per generate call, Infinity for no limit), got ${String(maxPixels)}.`);
  }
  return { maxPixels };
}

function requireInteger(name: string, value: unknown, min: number): void {
  if (!Number.isInteger(value) || (value as number) < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, got ${describeValue(value)}.`);
}

/** A value as an error message shows it: short, and never throwing (BigInts, cycles, symbols). */
function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value !== 'object' || value === null) return String(value);
  if (Array.isArray(value)) return `an array of ${value.length}`;
  return Object.prototype.toString.call(value);
}

/** The options every pipeline shares, as `generate` receives them (JavaScript callers may pass anything). */
interface SharedGenerationOptions {
  prompt?: unknown;
  prompt2?: unknown;
  negativePrompt?: unknown;
  negativePrompt2?: unknown;
  promptEmbeds?: unknown;
  negativePromptEmbeds?: unknown;
  pooledPromptEmbeds?: unknown;
  negativePooledPromptEmbeds?: unknown;
  ipAdapterImageEmbeds?: unknown;
  latents?: unknown;
  numInferenceSteps?: unknown;
  guidanceScale?: unknown;
  guidanceRescale?: unknown;
  numImagesPerPrompt?: unknown;
  eta?: unknown;
  generator?: unknown;
  signal?: unknown;
  outputType?: unknown;
}

/** The shared options with diffusers' defaults filled in, and the picture size. */
export interface GenerationSettings {
  height: number;
  width: number;
  numInferenceSteps: number;
  guidanceScale: number;
  guidanceRescale: number;
  numImagesPerPrompt: number;
}

const OUTPUT_TYPES: readonly unknown[] = ['image', 'np', 'latent'];

/** Prompt options: a string or a non-empty array of strings, when given. */
function checkPromptTypes(options: SharedGenerationOptions): void {
  for (const name of ['prompt', 'prompt2', 'negativePrompt', 'negativePrompt2'] as const) {
    const value = options[name];
    if (value === undefined || typeof value === 'string') continue;
    if (!Array.isArray(value) || value.length === 0 || value.some((entry) => typeof entry !== 'string')) {
      throw new InvalidArgumentError(`${name} must be a string or a non-empty array of strings, got ${describeValue(value)}.`);
    }
  }
}

/** Tensors given as options: float32 Tensors of finite values (NaN in, NaN picture out). */
function checkTensorOptions(options: SharedGenerationOptions): void {
  for (const name of ['promptEmbeds', 'negativePromptEmbeds', 'pooledPromptEmbeds', 'negativePooledPromptEmbeds', 'ipAdapterImageEmbeds', 'latents'] as const) {
    const value = options[name];
    if (value === undefined) continue;
    if (!(value instanceof Tensor) || value.dtype !== 'float32') throw new InvalidArgumentError(`${name} must be a float32 Tensor, got ${describeValue(value)}.`);
    if (!isFinitePass(value.data)) throw new InvalidArgumentError(`${name} holds NaN or Infinity; give finite values.`);
  }
}

/** One pass over the values; false when any is NaN or ±Infinity. */
export function isFinitePass(data: Float32Array | Float64Array): boolean {
  // x − x is 0 for finite x and NaN for NaN and ±Infinity: one subtraction and compare per value.
  for (let i = 0; i < data.length; i++) if (data[i] - data[i] !== 0) return false;
  return true;
}

/** The number of images a call asks for: prompts (or embedding rows) × images per prompt. */
function imageCount(options: SharedGenerationOptions, numImagesPerPrompt: number): number {
  const prompts = Array.isArray(options.prompt) ? options.prompt.length : options.promptEmbeds instanceof Tensor ? options.promptEmbeds.shape[0] : 1;
  return prompts * numImagesPerPrompt;
}

/**
 * The settings every pipeline shares — diffusers' defaults (50 steps, no rescale, one image per prompt; the
 * guidance scale is the pipeline's) — checked as diffusers' `check_inputs` checks them, plus the kinds of the
 * options JavaScript callers may get wrong and the pipeline's pixel limit, all before anything is allocated. `size`
 * is the picture size the pipeline settled on (given, from the UNet config, or from an input image).
 */
export function generationSettings(
  options: SharedGenerationOptions,
  size: { height: unknown; width: unknown },
  defaults: { guidanceScale: number; vaeScaleFactor: number; limits: GenerationLimits },
): GenerationSettings {
  const { height, width } = size;
  const { vaeScaleFactor, limits } = defaults;
  const settings = {
    numInferenceSteps: options.numInferenceSteps ?? 50,
    guidanceScale: options.guidanceScale ?? defaults.guidanceScale,
    guidanceRescale: options.guidanceRescale ?? 0,
    numImagesPerPrompt: options.numImagesPerPrompt ?? 1,
  };
  if (!isSide(height, vaeScaleFactor) || !isSide(width, vaeScaleFactor)) {
    throw new InvalidArgumentError(`height and width must be positive multiples of ${vaeScaleFactor}, got ${describeValue(height)}×${describeValue(width)}.`);
  }
  requireInteger('numInferenceSteps', settings.numInferenceSteps, 1);
  requireInteger('numImagesPerPrompt', settings.numImagesPerPrompt, 1);
  if (!isFiniteNumber(settings.guidanceScale)) throw new InvalidArgumentError(`guidanceScale must be a finite number, got ${describeValue(settings.guidanceScale)}.`);
  if (!(typeof settings.guidanceRescale === 'number' && settings.guidanceRescale >= 0 && settings.guidanceRescale <= 1)) {
    throw new InvalidArgumentError(`guidanceRescale must be between 0 and 1, got ${describeValue(settings.guidanceRescale)}.`);
  }
  if (options.eta !== undefined && !(isFiniteNumber(options.eta) && options.eta >= 0)) {
    throw new InvalidArgumentError(`eta must be a finite number ≥ 0 (0: deterministic DDIM), got ${describeValue(options.eta)}.`);
  }
  if (options.generator !== undefined && !(options.generator instanceof Generator)) {
    throw new InvalidArgumentError(`generator must be a Generator (new Generator().manualSeed(seed)), got ${describeValue(options.generator)}.`);
  }
  if (options.signal !== undefined && !isAbortSignal(options.signal)) {
    throw new InvalidArgumentError(`signal must be an AbortSignal, got ${describeValue(options.signal)}.`);
  }
  if (options.outputType !== undefined && !OUTPUT_TYPES.includes(options.outputType)) {
    throw new InvalidArgumentError(`outputType must be one of ${OUTPUT_TYPES.join(', ')}, got ${describeValue(options.outputType)}.`);
  }
  checkPromptTypes(options);
  checkTensorOptions(options);
  const images = imageCount(options, settings.numImagesPerPrompt as number);
  const pixels = height * width * images;
  if (pixels > limits.maxPixels) {
    throw new InvalidArgumentError(
      `${width}×${height} × ${images} image(s) is ${pixels} pixels, over this pipeline's ` +
        `limit of ${limits.maxPixels} (maxPixels; the default lets 1024×1024 × 8 through). Ask for fewer or smaller ` +
        'images, or load the pipeline with a larger maxPixels (fromPretrained(dir, { maxPixels })).',
    );
  }
  return { height, width, ...(settings as Omit<GenerationSettings, 'height' | 'width'>) };
}

/** By shape, not `instanceof`: signals from another realm or a polyfill are signals too. */
function isAbortSignal(value: unknown): boolean {
  const signal = value as Partial<AbortSignal> | null;
  return typeof signal === 'object' && signal !== null && typeof signal.aborted === 'boolean' && typeof signal.addEventListener === 'function';
}

function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

function isSide(value: unknown, vaeScaleFactor: number): value is number {
  return Number.isInteger(value) && (value as number) > 0 && (value as number) % vaeScaleFactor === 0;
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortError(undefined, { cause: signal.reason });
}
