// transformers 5's CLIPImageProcessor (its torchvision backend: what diffusers' IP-Adapter `feature_extractor` runs),
// reproducing its 8-bit resize and its float32 rounding exactly.
import { join } from 'node:path';
import { ConfigError, InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { readConfigFile } from '../util/config-file.js';
import type { RawImage } from './images.js';

/**
 * Which 8-bit antialiased bicubic to run. `'torch'`: torch's uint8 kernel (`interpolate(..., antialias=True)` on
 * uint8, what transformers 5 computes); `'pil'`: Pillow's `Image.resize` (transformers 4, `CLIPImageProcessorPil`).
 * They share the filter and differ only in the precision of the integer weights, so a few pixels differ by one level.
 */
export type ResampleBackend = 'torch' | 'pil';

export interface CLIPImageProcessorOptions {
  resampleBackend?: ResampleBackend;
}

/** The resolved preprocessor_config.json: every key given or defaulted as transformers' CLIPImageProcessor does. */
export interface CLIPImageProcessorSettings {
  readonly doResize: boolean;
  readonly size: { readonly shortestEdge: number } | { readonly height: number; readonly width: number };
  readonly doCenterCrop: boolean;
  readonly cropSize: { readonly height: number; readonly width: number };
  readonly doRescale: boolean;
  readonly rescaleFactor: number;
  readonly doNormalize: boolean;
  readonly imageMean: readonly number[];
  readonly imageStd: readonly number[];
  readonly doConvertRgb: boolean;
  readonly resampleBackend: ResampleBackend;
}

/** PIL's `Image.BICUBIC`, the only `resample` this port implements (CLIP's default and its configs' value). */
const BICUBIC = 3;
const OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711];
/** Pillow's fixed-point weights: 32-bit sums with 8 bits of result and 2 of headroom. */
const PIL_PRECISION_BITS = 22;

const f32 = Math.fround;

/**
 * transformers' `get_resize_output_image_size(default_to_square=False)`: the short edge becomes `shortestEdge`, the
 * long one `int(shortestEdge · long / short)` (a square counts its width as the short edge).
 */
export function shortestEdgeSize(width: number, height: number, shortestEdge: number): { width: number; height: number } {
  const [short, long] = width <= height ? [width, height] : [height, width];
  const newLong = Math.trunc((shortestEdge * long) / short);
  return width <= height ? { width: shortestEdge, height: newLong } : { width: newLong, height: shortestEdge };
}

/**
 * Resizes 8-bit pixels (any channel count, interleaved) with the antialiased bicubic of `backend`: the separable
 * algorithm Pillow and torch share (the cubic of a = −0.5, widened by the scale factor when shrinking), horizontal
 * pass first into an 8-bit image, then vertical; an axis whose size does not change is skipped. Pure.
 */
export function resizeBicubicAntialias(
  image: RawImage,
  width: number,
  height: number,
  backend: ResampleBackend = 'torch',
): RawImage {
  checkRawImage(image, 'image');
  for (const [name, value] of [['width', width], ['height', height]] as const) {
    if (!Number.isInteger(value) || value < 1) {
      throw new InvalidArgumentError(`The resize ${name} must be a positive integer, got ${String(value)}.`);
    }
  }
  checkBackend(backend);
  const { channels } = image;
  let data = image.data;
  let currentWidth = image.width;
  if (width !== image.width) {
    data = resampleAxis(data, image.height, image.width, channels, axisWeights(image.width, width, backend), 'horizontal');
    currentWidth = width;
  }
  if (height !== image.height) {
    data = resampleAxis(data, image.height, currentWidth, channels, axisWeights(image.height, height, backend), 'vertical');
  }
  return { data: data === image.data ? data.slice() : data, width, height, channels };
}

/** `resizeBicubicAntialias` to `shortestEdgeSize`: CLIPImageProcessor's resize for `size: {shortest_edge}`. */
export function resizeShortestEdge(image: RawImage, shortestEdge: number, backend: ResampleBackend = 'torch'): RawImage {
  checkRawImage(image, 'image');
  if (!Number.isInteger(shortestEdge) || shortestEdge < 1) {
    throw new InvalidArgumentError(`shortestEdge must be a positive integer, got ${String(shortestEdge)}.`);
  }
  const size = shortestEdgeSize(image.width, image.height, shortestEdge);
  return resizeBicubicAntialias(image, size.width, size.height, backend);
}

/** One axis of the resize: per output index, the first input index, the tap count and the integer weights. */
interface AxisWeights {
  readonly starts: Int32Array;
  readonly counts: Int32Array;
  /** `taps` weights per output index (unused ones 0). */
  readonly weights: Int32Array;
  readonly taps: number;
  /** Fraction bits of `weights`. */
  readonly precision: number;
}

/** Keys' cubic convolution kernel with a = −0.5 (Pillow's `bicubic_filter`, torch's `aa_filter` when antialiasing). */
function bicubic(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

/**
 * Pillow's `precompute_coeffs` / torch's `_compute_indices_min_size_weights_aa` (identical in float64), then the
 * fixed-point weights: Pillow always uses 22 fraction bits; torch (`_compute_index_ranges_int16_weights`) picks the
 * most bits for which the axis' largest weight still fits an int16 (its SIMD kernels multiply 16-bit values).
 */
function axisWeights(inSize: number, outSize: number, backend: ResampleBackend): AxisWeights {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 2 * filterScale;
  const taps = Math.ceil(support) * 2 + 1;
  const invScale = 1 / filterScale;
  const starts = new Int32Array(outSize);
  const counts = new Int32Array(outSize);
  const real = new Float64Array(outSize * taps);
  let maxWeight = 0;
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    const start = Math.max(Math.trunc(center - support + 0.5), 0);
    // torch clamps the count to the buffer: float rounding can make it one too large.
    const count = Math.min(Math.max(Math.min(Math.trunc(center + support + 0.5), inSize) - start, 0), taps);
    let total = 0;
    for (let j = 0; j < count; j++) {
      const w = bicubic((j + start - center + 0.5) * invScale);
      real[i * taps + j] = w;
      total += w;
    }
    if (total !== 0) {
      for (let j = 0; j < count; j++) {
        real[i * taps + j] /= total;
        maxWeight = Math.max(maxWeight, real[i * taps + j]);
      }
    }
    starts[i] = start;
    counts[i] = count;
  }

  let precision = PIL_PRECISION_BITS;
  if (backend === 'torch') {
    for (precision = 0; precision < PIL_PRECISION_BITS; precision++) {
      if (Math.trunc(0.5 + maxWeight * 2 ** (precision + 1)) >= 2 ** 15) break;
    }
  }
  const weights = new Int32Array(real.length);
  for (let k = 0; k < real.length; k++) {
    const v = real[k] * 2 ** precision;
    weights[k] = v < 0 ? Math.trunc(v - 0.5) : Math.trunc(v + 0.5);
  }
  return { starts, counts, weights, taps, precision };
}

/**
 * One pass over interleaved 8-bit pixels: each output sample is `clamp((2^(p−1) + Σ src·w) >> p, 0, 255)`, the
 * integer arithmetic both libraries use (sums stay within int32).
 */
function resampleAxis(
  src: Uint8Array,
  height: number,
  width: number,
  channels: number,
  axis: AxisWeights,
  direction: 'horizontal' | 'vertical',
): Uint8Array {
  const { starts, counts, weights, taps, precision } = axis;
  const outCount = starts.length;
  const [outHeight, outWidth] = direction === 'horizontal' ? [height, outCount] : [outCount, width];
  // Distance between neighbouring taps in `src`, and the offset of line `line` (a row or a column).
  const tapStride = direction === 'horizontal' ? channels : width * channels;
  const lineStride = direction === 'horizontal' ? width * channels : channels;
  const lines = direction === 'horizontal' ? height : width;
  const out = new Uint8Array(outHeight * outWidth * channels);
  const half = 1 << (precision - 1);
  for (let line = 0; line < lines; line++) {
    for (let o = 0; o < outCount; o++) {
      const base = line * lineStride + starts[o] * tapStride;
      const outBase = direction === 'horizontal' ? (line * outWidth + o) * channels : (o * outWidth + line) * channels;
      for (let c = 0; c < channels; c++) {
        let sum = half;
        for (let j = 0; j < counts[o]; j++) sum += src[base + j * tapStride + c] * weights[o * taps + j];
        out[outBase + c] = Math.min(Math.max(sum >> precision, 0), 255);
      }
    }
  }
  return out;
}

/**
 * transformers 5's `CLIPImageProcessor`: convert to RGB, resize (shortest edge or fixed size), centre crop, rescale
 * and normalise, CHW float32 — `pixel_values` for a CLIP vision encoder.
 */
export class CLIPImageProcessor {
  readonly settings: CLIPImageProcessorSettings;

  /**
   * `config`: preprocessor_config.json's object (snake_case keys: do_resize, size, resample, do_center_crop,
   * crop_size, do_rescale, rescale_factor, do_normalize, image_mean, image_std, do_convert_rgb). Missing or null
   * keys take CLIPImageProcessor's defaults; other keys are ignored. A bad value throws `ConfigError` naming the key.
   */
  constructor(config: Readonly<Record<string, unknown>> = {}, options: CLIPImageProcessorOptions = {}) {
    if (typeof config !== 'object' || config === null || Array.isArray(config)) {
      throw new ConfigError(`A CLIPImageProcessor config must be an object of preprocessor_config.json keys, got ${describe(config)}.`);
    }
    const resampleBackend = options.resampleBackend ?? 'torch';
    checkBackend(resampleBackend);
    const resample = config.resample ?? BICUBIC;
    if (resample !== BICUBIC) {
      throw new ConfigError(`CLIPImageProcessor config: resample = ${describe(resample)} is not supported; only 3 (bicubic) is.`);
    }
    const doRescale = flag(config, 'do_rescale');
    const doNormalize = flag(config, 'do_normalize');
    this.settings = {
      doResize: flag(config, 'do_resize'),
      size: resizeSize(config.size),
      doCenterCrop: flag(config, 'do_center_crop'),
      cropSize: cropSize(config.crop_size),
      doRescale,
      rescaleFactor: rescaleFactor(config.rescale_factor),
      doNormalize,
      imageMean: channelValues(config, 'image_mean', OPENAI_CLIP_MEAN),
      imageStd: channelValues(config, 'image_std', OPENAI_CLIP_STD),
      doConvertRgb: flag(config, 'do_convert_rgb'),
      resampleBackend,
    };
  }

  /** Reads `featureExtractorDir/preprocessor_config.json` (a missing or malformed file is a `ModelLoadError`). */
  static async fromPretrained(featureExtractorDir: string, options: CLIPImageProcessorOptions = {}): Promise<CLIPImageProcessor> {
    if (typeof featureExtractorDir !== 'string' || featureExtractorDir === '') {
      throw new InvalidArgumentError('featureExtractorDir must be a non-empty folder path.');
    }
    const config = await readConfigFile(
      join(featureExtractorDir, 'preprocessor_config.json'),
      "a transformers CLIPImageProcessor config (size, crop_size, image_mean, image_std, …)",
    );
    return new CLIPImageProcessor(config, options);
  }

  /** `pixel_values` [B, 3, H, W] float32. All images must come out the same size (they do with centre cropping). */
  preprocess(images: RawImage | readonly RawImage[]): Tensor<'float32'> {
    const list: readonly RawImage[] = Array.isArray(images) ? images : [images as RawImage];
    if (list.length === 0) throw new InvalidArgumentError('preprocess() needs at least one image.');
    list.forEach((image, index) => checkRawImage(image, `images[${index}]`));
    const processed = list.map((image, index) => this.processPixels(image, index));
    const { width, height } = processed[0];
    const mismatch = processed.findIndex((image) => image.width !== width || image.height !== height);
    if (mismatch >= 0) {
      throw new InvalidArgumentError(
        `images[${mismatch}] comes out ${processed[mismatch].width}×${processed[mismatch].height} but images[0] ` +
          `${width}×${height}; a batch needs one size (enable do_center_crop, or preprocess them one at a time).`,
      );
    }
    const planeSize = width * height;
    const out = new Float32Array(list.length * 3 * planeSize);
    const toFloat = this.floatTransform();
    processed.forEach((image, b) => {
      for (let c = 0; c < 3; c++) {
        const plane = (b * 3 + c) * planeSize;
        for (let pixel = 0; pixel < planeSize; pixel++) out[plane + pixel] = toFloat(image.data[pixel * 3 + c], c);
      }
    });
    return new Tensor(out, [list.length, 3, height, width]);
  }

  /** The 8-bit steps: RGB conversion, resize, centre crop. */
  private processPixels(image: RawImage, index: number): RawImage {
    const { doResize, size, doCenterCrop, cropSize, doConvertRgb, resampleBackend } = this.settings;
    let rgb: RawImage;
    if (doConvertRgb) {
      rgb = toRgb(image);
    } else if (image.channels === 3) {
      rgb = image;
    } else {
      throw new InvalidArgumentError(
        `images[${index}] has ${image.channels} channel(s); with do_convert_rgb false only RGB (3 channels) is allowed.`,
      );
    }
    if (doResize) {
      rgb =
        'shortestEdge' in size
          ? resizeShortestEdge(rgb, size.shortestEdge, resampleBackend)
          : resizeBicubicAntialias(rgb, size.width, size.height, resampleBackend);
    }
    return doCenterCrop ? centerCrop(rgb, cropSize.width, cropSize.height) : rgb;
  }

  /**
   * The float steps as transformers 5 computes them in float32: with both rescale and normalize it folds the rescale
   * into the statistics (`mean / rescale_factor`, `std / rescale_factor` as float32 tensors times the float32 of
   * `1 / rescale_factor`), then `(x − mean′) / std′`; rescale alone is `x · float32(rescale_factor)`.
   */
  private floatTransform(): (value: number, channel: number) => number {
    const { doRescale, rescaleFactor, doNormalize, imageMean, imageStd } = this.settings;
    if (doNormalize) {
      const fold = doRescale ? f32(1 / rescaleFactor) : 1;
      const mean = imageMean.map((m) => f32(f32(m) * fold));
      const std = imageStd.map((s) => f32(f32(s) * fold));
      return (value, channel) => f32(f32(value - mean[channel]) / std[channel]);
    }
    if (doRescale) {
      const factor = f32(rescaleFactor);
      return (value) => f32(value * factor);
    }
    return (value) => value;
  }
}

/** PIL's `convert("RGB")`: grey is repeated on three channels, alpha is dropped (not composited). */
function toRgb(image: RawImage): RawImage {
  const { data, width, height, channels } = image;
  if (channels === 3) return image;
  const rgb = new Uint8Array(width * height * 3);
  for (let pixel = 0; pixel < width * height; pixel++) {
    for (let c = 0; c < 3; c++) rgb[pixel * 3 + c] = data[pixel * channels + (channels === 1 ? 0 : c)];
  }
  return { data: rgb, width, height, channels: 3 };
}

/**
 * transformers' torchvision `center_crop`: top = int((h − crop_h) / 2), left likewise; an edge shorter than the crop
 * is first padded with zeros, (crop − size) // 2 before and the rest after.
 */
function centerCrop(image: RawImage, cropWidth: number, cropHeight: number): RawImage {
  const offset = (size: number, crop: number) => (size >= crop ? (size - crop) >> 1 : -((crop - size) >> 1));
  const top = offset(image.height, cropHeight);
  const left = offset(image.width, cropWidth);
  const { channels } = image;
  const out = new Uint8Array(cropWidth * cropHeight * channels);
  for (let y = 0; y < cropHeight; y++) {
    const sy = y + top;
    if (sy < 0 || sy >= image.height) continue;
    for (let x = 0; x < cropWidth; x++) {
      const sx = x + left;
      if (sx < 0 || sx >= image.width) continue;
      out.set(image.data.subarray((sy * image.width + sx) * channels, (sy * image.width + sx + 1) * channels), (y * cropWidth + x) * channels);
    }
  }
  return { data: out, width: cropWidth, height: cropHeight, channels };
}

function checkRawImage(image: RawImage, name: string): void {
  if (typeof image !== 'object' || image === null || !(image.data instanceof Uint8Array)) {
    throw new InvalidArgumentError(`${name} must be a raw image { data: Uint8Array, width, height, channels }, got ${describe(image)}.`);
  }
  const { data, width, height, channels } = image;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new InvalidArgumentError(`${name} needs positive integer width and height, got ${String(width)}×${String(height)}.`);
  }
  if (![1, 3, 4].includes(channels) || data.length !== width * height * channels) {
    throw new InvalidArgumentError(
      `${name} needs width·height·channels bytes with 1 (grey), 3 (RGB) or 4 (RGBA) channels; got ${data.length} bytes ` +
        `for ${width}×${height}×${String(channels)}.`,
    );
  }
}

function checkBackend(backend: unknown): asserts backend is ResampleBackend {
  if (backend !== 'torch' && backend !== 'pil') {
    throw new InvalidArgumentError(`resampleBackend must be 'torch' or 'pil', got ${describe(backend)}.`);
  }
}

function describe(value: unknown): string {
  if (value === undefined) return 'undefined';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function isPositiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value > 0;
}

/** A boolean key; every CLIPImageProcessor flag defaults to true. */
function flag(config: Readonly<Record<string, unknown>>, key: string): boolean {
  const value = config[key] ?? true;
  if (typeof value !== 'boolean') throw new ConfigError(`CLIPImageProcessor config: ${key} = ${describe(value)} must be true or false.`);
  return value;
}

/** `size`: an integer or {shortest_edge} (transformers' `get_size_dict(default_to_square=False)`), or {height, width}. */
function resizeSize(value: unknown): CLIPImageProcessorSettings['size'] {
  const size = value ?? { shortest_edge: 224 };
  if (isPositiveInteger(size)) return { shortestEdge: size };
  if (typeof size === 'object' && size !== null && !Array.isArray(size)) {
    const keys = Object.keys(size).sort().join(',');
    const entries = size as Record<string, unknown>;
    if (keys === 'shortest_edge' && isPositiveInteger(entries.shortest_edge)) return { shortestEdge: entries.shortest_edge };
    if (keys === 'height,width' && isPositiveInteger(entries.height) && isPositiveInteger(entries.width)) {
      return { height: entries.height, width: entries.width };
    }
  }
  throw new ConfigError(
    `CLIPImageProcessor config: size = ${describe(size)} is not allowed; expected a positive integer, ` +
      '{"shortest_edge": n} or {"height": h, "width": w}.',
  );
}

/** `crop_size`: an integer (a square) or {height, width}. */
function cropSize(value: unknown): CLIPImageProcessorSettings['cropSize'] {
  const size = value ?? { height: 224, width: 224 };
  if (isPositiveInteger(size)) return { height: size, width: size };
  if (typeof size === 'object' && size !== null && !Array.isArray(size)) {
    const { height, width } = size as Record<string, unknown>;
    if (isPositiveInteger(height) && isPositiveInteger(width)) return { height, width };
  }
  throw new ConfigError(
    `CLIPImageProcessor config: crop_size = ${describe(size)} is not allowed; expected a positive integer or {"height": h, "width": w}.`,
  );
}

function rescaleFactor(value: unknown): number {
  const factor = value ?? 1 / 255;
  if (typeof factor !== 'number' || !Number.isFinite(factor) || factor <= 0) {
    throw new ConfigError(`CLIPImageProcessor config: rescale_factor = ${describe(factor)} must be a positive finite number.`);
  }
  return factor;
}

/** image_mean / image_std: one number for all channels or one per RGB channel; a std must not be 0. */
function channelValues(config: Readonly<Record<string, unknown>>, key: 'image_mean' | 'image_std', fallback: number[]): number[] {
  const value = config[key] ?? fallback;
  const values = typeof value === 'number' ? [value, value, value] : value;
  const valid =
    Array.isArray(values) &&
    values.length === 3 &&
    values.every((v) => typeof v === 'number' && Number.isFinite(v) && (key === 'image_mean' || v !== 0));
  if (!valid) {
    throw new ConfigError(
      `CLIPImageProcessor config: ${key} = ${describe(value)} is not allowed; expected a finite ` +
        `${key === 'image_std' ? 'non-zero ' : ''}number or a list of 3 (R, G, B).`,
    );
  }
  return values as number[];
}
