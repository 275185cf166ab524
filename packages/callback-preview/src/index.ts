import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type {
  CallbackKwargs,
  CallbackPipeline,
  CallbackPlugin,
  CallbackPluginDescriptor,
  CallbackTensorName,
  JsonSchema,
  PredOriginalSampleName,
  RgbImage,
} from '@diff/core/contract';
import { InvalidArgumentError, Tensor } from '@diff/core/plugin';
import { z } from 'zod';

// ---------------------------------------------------------------------------------------------------------------
// Latent → RGB factor tables

/**
 * A linear map from the latents the UNet sees to RGB: for each pixel, `rgb = Σ_c latent[c] · weights[c] + bias`,
 * then `range[0]` maps to 0 and `range[1]` to 255 (clamped, rounded).
 */
export interface LatentRgbFactors {
  /** One row per latent channel: that channel's contribution to `[R, G, B]`. */
  readonly weights: readonly (readonly [number, number, number])[];
  readonly bias: readonly [number, number, number];
  /** The RGB values shown as 0 and 255. */
  readonly range: readonly [number, number];
}

/** Stable Diffusion 1.x/2.x latents: RGB in about [−1, 1]. */
export const SD_LATENT_RGB_FACTORS: LatentRgbFactors = Object.freeze<LatentRgbFactors>({
  weights: [
    [0.3512, 0.2297, 0.3227],
    [0.325, 0.4974, 0.235],
    [-0.2829, 0.1762, 0.2721],
    [-0.212, -0.2616, -0.7177],
  ],
  bias: [0, 0, 0],
  range: [-1, 1],
});

/** SDXL latents: the seed guide's table (its R, G, B rows transposed into channel rows), 0–255 directly. */
export const SDXL_LATENT_RGB_FACTORS: LatentRgbFactors = Object.freeze<LatentRgbFactors>({
  weights: [
    [60, 60, 60],
    [-60, -5, 10],
    [25, 15, -5],
    [-70, -50, -35],
  ],
  bias: [150, 140, 130],
  range: [0, 255],
});

/** The built-in table for a model family. */
export function latentRgbFactorsFor(modelFamily: CallbackPipeline['modelFamily']): LatentRgbFactors {
  return modelFamily === 'stable-diffusion-xl' ? SDXL_LATENT_RGB_FACTORS : SD_LATENT_RGB_FACTORS;
}

const isFiniteNumber = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value);
const isRgbTriple = (value: unknown): boolean => Array.isArray(value) && value.length === 3 && value.every(isFiniteNumber);

function checkFactors(factors: LatentRgbFactors, where: string): void {
  const { weights, bias, range } = (factors ?? {}) as Partial<LatentRgbFactors>;
  if (!Array.isArray(weights) || weights.length === 0 || !weights.every(isRgbTriple)) {
    throw new InvalidArgumentError(`${where}: factors.weights must hold one [r, g, b] row of finite numbers per latent channel.`);
  }
  if (!isRgbTriple(bias)) throw new InvalidArgumentError(`${where}: factors.bias must be [r, g, b], three finite numbers.`);
  if (!(Array.isArray(range) && range.length === 2 && range.every(isFiniteNumber) && range[0] < range[1])) {
    throw new InvalidArgumentError(`${where}: factors.range must be [lo, hi] with lo < hi (the values shown as 0 and 255).`);
  }
}

function checkLatents(latents: Tensor<'float32'>, where: string): void {
  if (latents.shape.length !== 4) {
    throw new InvalidArgumentError(`${where}: latents must be [batch, channels, height, width], got shape [${latents.shape.join(', ')}].`);
  }
}

/**
 * The linear preview: one RGB picture per image of `latents` (`[batch, channels, height, width]`), at latent
 * resolution. One pass over the latents; no model runs.
 */
export function latentsToRgb(latents: Tensor<'float32'>, factors: LatentRgbFactors): RgbImage[] {
  checkLatents(latents, 'latentsToRgb');
  checkFactors(factors, 'latentsToRgb');
  const [batch, channels, height, width] = latents.shape;
  if (factors.weights.length !== channels) {
    throw new InvalidArgumentError(
      `latentsToRgb: the factors have ${factors.weights.length} channel rows but the latents have ${channels} channels; ` +
        "pass factors made for this model (or factors: 'fit').",
    );
  }
  // Fold the range into the weights, so each pixel costs channels × 3 multiply-adds and three clamped stores.
  const [lo, hi] = factors.range;
  const scale = 255 / (hi - lo);
  const weights = new Float64Array(3 * channels);
  for (let channel = 0; channel < channels; channel++) {
    for (let rgb = 0; rgb < 3; rgb++) weights[3 * channel + rgb] = factors.weights[channel][rgb] * scale;
  }
  const [biasR, biasG, biasB] = [0, 1, 2].map((rgb) => (factors.bias[rgb] - lo) * scale);
  const plane = height * width;
  const source = latents.data;
  const images: RgbImage[] = [];
  for (let image = 0; image < batch; image++) {
    const data = new Uint8Array(plane * 3);
    const pixels = new Uint8ClampedArray(data.buffer); // clamps to 0–255 and rounds on store
    const start = image * channels * plane;
    for (let pixel = 0; pixel < plane; pixel++) {
      let r = biasR;
      let g = biasG;
      let b = biasB;
      for (let channel = 0, at = start + pixel; channel < channels; channel++, at += plane) {
        const value = source[at];
        r += value * weights[3 * channel];
        g += value * weights[3 * channel + 1];
        b += value * weights[3 * channel + 2];
      }
      pixels[3 * pixel] = r;
      pixels[3 * pixel + 1] = g;
      pixels[3 * pixel + 2] = b;
    }
    images.push({ data, width, height, channels: 3 });
  }
  return images;
}

// ---------------------------------------------------------------------------------------------------------------
// Fitting factors to a VAE

/** What a fit needs: the per-call context a callback receives has all of it. */
export type LatentDecoder = Pick<CallbackPipeline, 'decodeLatents' | 'latentChannels' | 'vaeScaleFactor'>;

export interface FitLatentRgbFactorsOptions {
  /**
   * Latents to fit on (`[batch, channels, height, width]`), decoded as given: the final latents of a few varied
   * generations fit best. Default: a seeded pseudo-random batch (below).
   */
  latents?: Tensor<'float32'>;
  /**
   * Latent pictures in the random batch, decoded in one VAE call. Default: enough for 512 latent pixels — 8 at 8 × 8,
   * 1 at SD's 64 × 64 (then the fit costs one VAE decode).
   */
  samples?: number;
  /** Latent height and width of the random batch. Default 8 × 8 (64 × 64 pixels for SD). */
  height?: number;
  width?: number;
  /** Seed of the random batch. Default 0. */
  seed?: number;
}

/**
 * Random latents are constant over squares of this many latent pixels: inside a flat patch the decoder's local
 * mixing sees one latent value, so the pooled colour is what a linear map can predict (on @diff/model-tiny, iid
 * noise fits about 20 % worse).
 */
const RANDOM_PATCH = 4;
/** Latent pixels the default random batch holds: plenty for 5 unknowns per colour, and cheap at SD's sizes. */
const FIT_PIXELS = 512;

/** mulberry32 and Box–Muller: reproducible normal noise without pulling in the pipelines' generator. */
function normalSource(seed: number): () => number {
  let state = seed >>> 0;
  const uniform = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

/** Standard normal latents, constant over `RANDOM_PATCH`-sized squares. */
function randomPatchLatents(shape: readonly [number, number, number, number], seed: number): Tensor<'float32'> {
  const [samples, channels, height, width] = shape;
  const normal = normalSource(seed);
  const data = new Float32Array(samples * channels * height * width);
  const patchesAcross = Math.ceil(width / RANDOM_PATCH);
  const patches = new Float64Array(Math.ceil(height / RANDOM_PATCH) * patchesAcross);
  for (let plane = 0; plane < samples * channels; plane++) {
    patches.forEach((_, index) => (patches[index] = normal()));
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        data[(plane * height + y) * width + x] = patches[Math.floor(y / RANDOM_PATCH) * patchesAcross + Math.floor(x / RANDOM_PATCH)];
      }
    }
  }
  return new Tensor(data, shape);
}

/** Averages each `factor × factor` block of a picture: its colour at latent resolution, as floats (0–255). */
function averagePool(image: RgbImage, factor: number, height: number, width: number): Float64Array {
  if (image.width !== width * factor || image.height !== height * factor) {
    throw new InvalidArgumentError(
      `fitLatentRgbFactors: decoded a ${image.width}×${image.height} picture from ${width}×${height} latents; ` +
        `expected vaeScaleFactor (${factor}) times the latent size.`,
    );
  }
  const pooled = new Float64Array(height * width * 3);
  for (let y = 0; y < image.height; y++) {
    for (let x = 0; x < image.width; x++) {
      const into = 3 * (Math.floor(y / factor) * width + Math.floor(x / factor));
      const from = 3 * (y * image.width + x);
      for (let rgb = 0; rgb < 3; rgb++) pooled[into + rgb] += image.data[from + rgb];
    }
  }
  return pooled.map((sum) => sum / (factor * factor));
}

/** Solves `A · X = B` (A n×n, B n×m, row-major float64, both overwritten) by Gauss–Jordan elimination with partial pivoting. */
function solveLinearSystem(a: Float64Array, b: Float64Array, n: number, m: number): Float64Array {
  const magnitude = Math.max(...Array.from({ length: n }, (_, i) => Math.abs(a[i * n + i])));
  for (let column = 0; column < n; column++) {
    let pivot = column;
    for (let row = column + 1; row < n; row++) if (Math.abs(a[row * n + column]) > Math.abs(a[pivot * n + column])) pivot = row;
    if (!(Math.abs(a[pivot * n + column]) > 1e-12 * magnitude)) {
      throw new InvalidArgumentError('fitLatentRgbFactors: the latents do not vary enough to tell the channels apart; fit on more varied latents.');
    }
    for (let k = 0; k < n; k++) [a[column * n + k], a[pivot * n + k]] = [a[pivot * n + k], a[column * n + k]];
    for (let k = 0; k < m; k++) [b[column * m + k], b[pivot * m + k]] = [b[pivot * m + k], b[column * m + k]];
    for (let row = 0; row < n; row++) {
      if (row === column) continue;
      const ratio = a[row * n + column] / a[column * n + column];
      for (let k = column; k < n; k++) a[row * n + k] -= ratio * a[column * n + k];
      for (let k = 0; k < m; k++) b[row * m + k] -= ratio * b[column * m + k];
    }
  }
  for (let row = 0; row < n; row++) for (let k = 0; k < m; k++) b[row * m + k] /= a[row * n + row];
  return b;
}

function checkPositiveInteger(value: unknown, name: string): void {
  if (!(Number.isInteger(value) && (value as number) >= 1)) {
    throw new InvalidArgumentError(`fitLatentRgbFactors: ${name} must be a positive integer, got ${String(value)}.`);
  }
}

/**
 * Least-squares latent → RGB factors for any VAE: decodes a few latent pictures in one call, averages each decoded
 * picture over `vaeScaleFactor` blocks to latent resolution, and solves the normal equations (float64) for the
 * weights and bias that best predict those colours from the latent values at the same place. The result maps
 * straight to 0–255 (`range: [0, 255]`).
 */
export async function fitLatentRgbFactors(target: LatentDecoder, options: FitLatentRgbFactorsOptions = {}): Promise<LatentRgbFactors> {
  const { latents, height = 8, width = 8, seed = 0 } = options;
  const samples = options.samples ?? Math.ceil(FIT_PIXELS / (height * width));
  if (typeof target?.decodeLatents !== 'function' || !Number.isInteger(target.latentChannels) || !Number.isInteger(target.vaeScaleFactor)) {
    throw new InvalidArgumentError('fitLatentRgbFactors needs { decodeLatents, latentChannels, vaeScaleFactor }: pass the pipeline a callback receives.');
  }
  checkPositiveInteger(samples, 'samples');
  checkPositiveInteger(height, 'height');
  checkPositiveInteger(width, 'width');
  if (!Number.isInteger(seed)) throw new InvalidArgumentError(`fitLatentRgbFactors: seed must be an integer, got ${String(seed)}.`);
  if (latents) checkLatents(latents, 'fitLatentRgbFactors');

  const batch = latents ?? randomPatchLatents([samples, target.latentChannels, height, width], seed);
  const [, channels, rows, columns] = batch.shape;
  const pictures = await target.decodeLatents(batch);
  const plane = rows * columns;
  const features = channels + 1; // the channels, then 1 for the bias
  const gram = new Float64Array(features * features);
  const moments = new Float64Array(features * 3);
  const x = new Float64Array(features);
  pictures.forEach((picture, sample) => {
    const colours = averagePool(picture, target.vaeScaleFactor, rows, columns);
    for (let pixel = 0; pixel < plane; pixel++) {
      for (let channel = 0; channel < channels; channel++) x[channel] = batch.data[(sample * channels + channel) * plane + pixel];
      x[channels] = 1;
      for (let i = 0; i < features; i++) {
        for (let j = 0; j < features; j++) gram[i * features + j] += x[i] * x[j];
        for (let rgb = 0; rgb < 3; rgb++) moments[i * 3 + rgb] += x[i] * colours[3 * pixel + rgb];
      }
    }
  });
  const solution = solveLinearSystem(gram, moments, features, 3);
  const row = (i: number) => [solution[3 * i], solution[3 * i + 1], solution[3 * i + 2]] as [number, number, number];
  return {
    weights: Array.from({ length: channels }, (_, channel) => row(channel)),
    bias: row(channels),
    range: [0, 255],
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The preview callback

/** What a preview shows. */
export interface LatentPreview {
  readonly stepIndex: number;
  readonly timestep: number;
  readonly numTimesteps: number;
  /** One picture per image of the batch: latent size for `'linear'`, full size for `'vae'`. */
  readonly images: readonly RgbImage[];
  /** The tensor shown: `'latents'` where `'denoised'` was asked for but the scheduler computes no x0 (PNDM). */
  readonly source: PreviewSource;
}

export type PreviewHandler = (preview: LatentPreview) => void | Promise<void>;
export type PreviewMethod = 'linear' | 'vae';
export type PreviewSource = 'denoised' | 'latents';

export interface LatentPreviewCallbackOptions {
  /** Receives each preview; the generation waits for a promise it returns (`savePreviews` returns at once). */
  onPreview: PreviewHandler;
  /** Preview after every this many steps (step indices every−1, 2·every−1, …); the last step always. Default 1. */
  every?: number;
  /** `'linear'` (default): latent → RGB factors, latent size, no model call. `'vae'`: the VAE decoder, full size. */
  method?: PreviewMethod;
  /**
   * `'denoised'` (default): the scheduler's estimate of the clean latents at this step (x0), which looks like the
   * final picture early on; falls back to the latents where the scheduler computes none. `'latents'`: the noisy
   * latents the next step starts from.
   */
  source?: PreviewSource;
  /**
   * For `'linear'`: a factor table, or `'fit'` to fit one to the model's VAE on the first preview. Default: the
   * built-in table of the pipeline's model family.
   */
  factors?: LatentRgbFactors | 'fit';
}

const PREVIEW_METHODS: readonly PreviewMethod[] = ['linear', 'vae'];
const PREVIEW_SOURCES: readonly PreviewSource[] = ['denoised', 'latents'];

function checkPreviewOptions(options: LatentPreviewCallbackOptions): void {
  const { onPreview, every = 1, method = 'linear', source = 'denoised', factors } = options ?? ({} as LatentPreviewCallbackOptions);
  const where = 'LatentPreviewCallback';
  if (typeof onPreview !== 'function') throw new InvalidArgumentError(`${where} needs onPreview, a function that receives each preview.`);
  if (!(Number.isInteger(every) && every >= 1)) throw new InvalidArgumentError(`${where}: every must be a positive integer (steps between previews), got ${String(every)}.`);
  if (!PREVIEW_METHODS.includes(method)) throw new InvalidArgumentError(`${where}: method must be 'linear' or 'vae', got ${String(method)}.`);
  if (!PREVIEW_SOURCES.includes(source)) throw new InvalidArgumentError(`${where}: source must be 'denoised' or 'latents', got ${String(source)}.`);
  if (factors === undefined) return;
  if (method !== 'linear') throw new InvalidArgumentError(`${where}: factors apply to method 'linear' only; method 'vae' decodes with the VAE.`);
  if (factors !== 'fit') checkFactors(factors, where);
}

type PreviewKwargs = CallbackKwargs<'latents'> & Partial<CallbackKwargs<PredOriginalSampleName>>;

/** A fit in progress or done, with the model it was made for. */
interface Fit {
  readonly modelFamily: CallbackPipeline['modelFamily'];
  readonly latentChannels: number;
  readonly factors: Promise<LatentRgbFactors>;
}

/**
 * Shows the generation as it goes: after every `every` steps (and after the last), `onPreview` receives one RGB
 * picture per image. Runs after the other callbacks of the step (`enforce: 'post'`), so it shows what the next step
 * starts from and previews the step after which another callback interrupts. One instance may serve several
 * generations at once.
 *
 * `factors: 'fit'` fits factors to the VAE on the first preview (`fitLatentRgbFactors` on a seeded random batch at
 * the generation's latent size: about one VAE decode) and keeps them for this instance's lifetime. Nothing a
 * generation offers identifies a model's weights (two SD 1.5 fine-tunes look alike; the context's `decodeLatents` is
 * a new function per generation), so no cache key across instances would be sound. Use one instance per model; one
 * that meets another model family or latent channel count throws rather than showing wrong colours.
 */
export class LatentPreviewCallback implements CallbackPlugin<'latents'> {
  readonly specificationVersion = 'v1' as const;
  readonly name = 'LatentPreviewCallback';
  readonly tensorInputs = ['latents'] as const;
  readonly optionalTensorInputs: readonly CallbackTensorName[];
  readonly enforce = 'post' as const;
  readonly every: number;
  readonly method: PreviewMethod;
  readonly source: PreviewSource;
  private readonly onPreview: PreviewHandler;
  private readonly factors?: LatentRgbFactors | 'fit';
  private fit?: Fit;
  private fitted?: LatentRgbFactors;

  constructor(options: LatentPreviewCallbackOptions) {
    checkPreviewOptions(options);
    this.onPreview = options.onPreview;
    this.every = options.every ?? 1;
    this.method = options.method ?? 'linear';
    this.source = options.source ?? 'denoised';
    this.factors = options.factors;
    this.optionalTensorInputs = this.source === 'denoised' ? ['predOriginalSample'] : [];
  }

  /** With `factors: 'fit'`: the fitted table once the first preview made it (e.g. to save and pass next time). */
  get fittedFactors(): LatentRgbFactors | undefined {
    return this.fitted;
  }

  /** Whether `stepIndex` is previewed: every `every` steps, the last step, and a step after which the run stops. */
  shouldPreview(pipeline: Pick<CallbackPipeline, 'numTimesteps' | 'interrupt'>, stepIndex: number): boolean {
    return (stepIndex + 1) % this.every === 0 || stepIndex === pipeline.numTimesteps - 1 || pipeline.interrupt;
  }

  async onStepEnd(pipeline: CallbackPipeline, stepIndex: number, timestep: number, callbackKwargs: PreviewKwargs): Promise<void> {
    if (!this.shouldPreview(pipeline, stepIndex)) return;
    const denoised = this.source === 'denoised' ? callbackKwargs.predOriginalSample : undefined;
    const shown = denoised ?? callbackKwargs.latents;
    const images =
      this.method === 'vae' ? await pipeline.decodeLatents(shown) : latentsToRgb(shown, await this.factorsFor(pipeline, shown));
    await this.onPreview({ stepIndex, timestep, numTimesteps: pipeline.numTimesteps, images, source: denoised ? 'denoised' : 'latents' });
  }

  private factorsFor(pipeline: CallbackPipeline, shown: Tensor<'float32'>): LatentRgbFactors | Promise<LatentRgbFactors> {
    if (this.factors !== 'fit') return this.factors ?? latentRgbFactorsFor(pipeline.modelFamily);
    if (this.fit && (this.fit.modelFamily !== pipeline.modelFamily || this.fit.latentChannels !== pipeline.latentChannels)) {
      throw new InvalidArgumentError(
        `LatentPreviewCallback: these factors were fitted for a ${this.fit.latentChannels}-channel ${this.fit.modelFamily} model, ` +
          `not this ${pipeline.latentChannels}-channel ${pipeline.modelFamily} one; use one LatentPreviewCallback with factors: 'fit' per model.`,
      );
    }
    if (!this.fit) {
      // Shared by generations that reach their first preview together; forgotten on failure so a later one retries.
      const [, , height, width] = shown.shape;
      const factors = fitLatentRgbFactors(pipeline, { height, width }).then(
        (fitted) => (this.fitted = fitted),
        (error: unknown) => {
          this.fit = undefined;
          throw error;
        },
      );
      this.fit = { modelFamily: pipeline.modelFamily, latentChannels: pipeline.latentChannels, factors };
    }
    return this.fitted ?? this.fit.factors;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Writing previews

export interface SavePreviewsOptions {
  /**
   * The file name of one picture. Default: `step-007.png` when the batch holds one image, `image-1-step-007.png`
   * otherwise; steps padded to three digits (more for longer schedules) so names sort in step order.
   */
  fileName?: (preview: LatentPreview, imageIndex: number) => string;
}

export interface PreviewWriter {
  /** Pass as `onPreview`: queues the pictures and returns at once, so PNG encoding never holds up the loop. */
  readonly onPreview: (preview: LatentPreview) => void;
  /** Resolves once every queued picture is written (previews queued meanwhile too); rejects with the first write error. */
  done(): Promise<void>;
  /** The paths written so far, in writing order. */
  readonly written: readonly string[];
}

function defaultFileName(preview: LatentPreview, imageIndex: number): string {
  const step = String(preview.stepIndex).padStart(Math.max(3, String(preview.numTimesteps - 1).length), '0');
  return preview.images.length > 1 ? `image-${imageIndex}-step-${step}.png` : `step-${step}.png`;
}

let temporaryFiles = 0;

/** Encodes with sharp (loaded on first use) into a temporary name beside `path`, then renames: readers never see half a file. */
async function writePngAtomically(image: RgbImage, path: string): Promise<void> {
  const { default: sharp } = await import('sharp');
  const temporary = `${path}.${process.pid}-${temporaryFiles++}.tmp`;
  try {
    await sharp(image.data, { raw: { width: image.width, height: image.height, channels: image.channels } }).png().toFile(temporary);
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

/**
 * Writes every preview as PNG files under `dir` (created if missing), one write at a time in the order the previews
 * came, off the denoising loop. Every frame is written, the last included; after a failed write nothing more is
 * written and `done()` rejects with that error.
 */
export function savePreviews(dir: string, options: SavePreviewsOptions = {}): PreviewWriter {
  if (typeof dir !== 'string' || dir === '') throw new InvalidArgumentError('savePreviews needs the folder to write to, as a non-empty string.');
  const fileName = options.fileName ?? defaultFileName;
  if (typeof fileName !== 'function') throw new InvalidArgumentError('savePreviews: fileName must be a function (preview, imageIndex) => string.');
  const written: string[] = [];
  let failure: { error: unknown } | undefined;
  let madeDir = false;
  let queue = Promise.resolve();

  const write = async (preview: LatentPreview) => {
    if (failure) return;
    try {
      if (!madeDir) {
        await mkdir(dir, { recursive: true });
        madeDir = true;
      }
      for (const [index, image] of preview.images.entries()) {
        const path = join(dir, fileName(preview, index));
        await writePngAtomically(image, path);
        written.push(path);
      }
    } catch (error) {
      failure = { error };
    }
  };

  return {
    onPreview: (preview) => void (queue = queue.then(() => write(preview))),
    async done() {
      for (let pending = queue; ; pending = queue) {
        await pending;
        if (pending === queue) break;
      }
      if (failure) throw failure.error;
    },
    written,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Registry descriptor

const previewOptionsSchema = z.strictObject({
  every: z.int().min(1).default(1).describe('Preview after every this many steps; the last step is always previewed.'),
  method: z
    .enum(PREVIEW_METHODS as [PreviewMethod, ...PreviewMethod[]])
    .default('linear')
    .describe("'linear': latent-to-RGB factors at latent size, no model call; 'vae': the VAE decoder at full size (costly)."),
  source: z
    .enum(PREVIEW_SOURCES as [PreviewSource, ...PreviewSource[]])
    .default('denoised')
    .describe("'denoised': the scheduler's estimate of the clean picture (x0), falling back to the latents; 'latents': the noisy latents."),
});

/** Values the registry cannot carry in JSON. */
export interface PreviewRuntime {
  /** Receives each preview. Required. */
  onPreview: PreviewHandler;
}

/**
 * The registry descriptor: `registry.register(plugin)`, then
 * `createCallback('preview', { every: 5 }, { onPreview: savePreviews('out/preview').onPreview })`.
 */
export const plugin: CallbackPluginDescriptor<z.output<typeof previewOptionsSchema>, PreviewRuntime, z.input<typeof previewOptionsSchema>> = {
  specificationVersion: 'v1',
  name: 'preview',
  description: 'Shows the picture as it forms: an RGB preview per step from the latents (linear factors or the VAE).',
  options: previewOptionsSchema,
  optionsJsonSchema: z.toJSONSchema(previewOptionsSchema, { io: 'input' }) as JsonSchema,
  create(options, runtime) {
    if (typeof runtime?.onPreview !== 'function') {
      throw new InvalidArgumentError("The 'preview' callback needs onPreview at runtime: createCallback('preview', options, { onPreview }).");
    }
    return new LatentPreviewCallback({ ...options, onPreview: runtime.onPreview });
  },
};

declare module '@diff/core/contract' {
  interface CallbackPluginRegistry {
    preview: typeof plugin;
  }
}
