import { randomBytes } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import sharp from 'sharp';
import { InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import type { RawImage, RgbImage } from '../image-types.js';

export type { RawImage, RgbImage } from '../image-types.js';

/** An input picture: a file path, an encoded image (PNG, JPEG, WebP…) in a Buffer, or raw pixels. */
export type ImageInput = string | Buffer | RawImage;

function isRawImage(input: unknown): input is RawImage {
  return typeof input === 'object' && input !== null && 'data' in input && 'width' in input && 'height' in input;
}

function toSharp(input: ImageInput): sharp.Sharp {
  if ((typeof input === 'string' && input !== '') || Buffer.isBuffer(input)) return sharp(input);
  if (isRawImage(input)) {
    const { data, width, height, channels } = input;
    const positive = (side: unknown) => Number.isInteger(side) && (side as number) > 0;
    if (!(data instanceof Uint8Array) || !positive(width) || !positive(height) || ![1, 3, 4].includes(channels) || data.length !== width * height * channels) {
      throw new InvalidArgumentError(
        `A raw image needs a Uint8Array of width·height·channels bytes with 1, 3 or 4 channels; got ${data instanceof Uint8Array ? `${data.length} bytes` : typeof data} for ` +
          `${String(width)}×${String(height)}×${String(channels)}.`,
      );
    }
    return sharp(data, { raw: { width, height, channels } });
  }
  throw new InvalidArgumentError('An image must be a file path, a Buffer with an encoded image, or { data, width, height, channels }.');
}

/**
 * Reads a picture as float pixels in [0, 1], NCHW with batch 1, resized (Lanczos, as diffusers' image processor)
 * to `size` when given. `'rgb'` drops alpha; `'gray'` gives one channel (PIL's "L").
 */
export async function readImage(
  input: ImageInput,
  mode: 'rgb' | 'gray',
  size?: { width: number; height: number },
): Promise<Tensor<'float32'>> {
  let pipeline = toSharp(input);
  pipeline = mode === 'gray' ? pipeline.toColourspace('b-w') : pipeline.removeAlpha().toColourspace('srgb');
  if (size) pipeline = pipeline.resize(size.width, size.height, { fit: 'fill', kernel: 'lanczos3' });
  let decoded: { data: Buffer; info: sharp.OutputInfo };
  try {
    decoded = await pipeline.raw().toBuffer({ resolveWithObject: true });
  } catch (error) {
    throw new InvalidArgumentError(`Could not read the image: ${(error as Error).message}`, { cause: error });
  }
  const { width, height, channels } = decoded.info;
  const wanted = mode === 'gray' ? 1 : 3;
  const planeSize = width * height;
  const out = new Float32Array(wanted * planeSize);
  for (let pixel = 0; pixel < planeSize; pixel++) {
    for (let channel = 0; channel < wanted; channel++) {
      out[channel * planeSize + pixel] = decoded.data[pixel * channels + channel] / 255;
    }
  }
  return new Tensor(out, [1, wanted, height, width]);
}

/** A picture's own 8-bit pixels (no resize, channels as stored), e.g. for an image processor with its own resize. */
export async function decodeImage(input: ImageInput): Promise<RawImage> {
  if (isRawImage(input)) {
    toSharp(input); // checks the raw layout
    return input;
  }
  try {
    const { data, info } = await toSharp(input).raw().toBuffer({ resolveWithObject: true });
    const channels = info.channels === 2 ? 4 : info.channels;
    if (info.channels === 2) return { data: expandGreyAlpha(data), width: info.width, height: info.height, channels: 4 };
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: channels as 1 | 3 | 4 };
  } catch (error) {
    throw new InvalidArgumentError(`Could not read the image: ${(error as Error).message}`, { cause: error });
  }
}

/** Grey + alpha → RGBA (RawImage has no two-channel form). */
function expandGreyAlpha(data: Uint8Array): Uint8Array {
  const out = new Uint8Array((data.length / 2) * 4);
  for (let pixel = 0; pixel < data.length / 2; pixel++) {
    const grey = data[2 * pixel];
    out.set([grey, grey, grey, data[2 * pixel + 1]], 4 * pixel);
  }
  return out;
}

/** The size of a picture without decoding all of it. */
export async function imageSize(input: ImageInput): Promise<{ width: number; height: number }> {
  const image = toSharp(input); // checks a raw image's layout
  if (isRawImage(input)) return { width: input.width, height: input.height };
  let metadata: sharp.Metadata;
  try {
    metadata = await image.metadata();
  } catch (error) {
    throw new InvalidArgumentError(`Could not read the image: ${(error as Error).message}`, { cause: error });
  }
  if (!metadata.width || !metadata.height) throw new InvalidArgumentError('Could not read the image size.');
  return { width: metadata.width, height: metadata.height };
}

/** NCHW floats in [0, 1] → 8-bit RGB pictures, rounding as diffusers' `numpy_to_pil` (`round(x · 255)`). */
export function toRgbImages(images: Tensor<'float32'>): RgbImage[] {
  const [batch, channels, height, width] = images.shape;
  const planeSize = height * width;
  const result: RgbImage[] = [];
  for (let b = 0; b < batch; b++) {
    const data = new Uint8Array(planeSize * 3);
    const base = b * channels * planeSize;
    for (let pixel = 0; pixel < planeSize; pixel++) {
      for (let channel = 0; channel < 3; channel++) {
        data[pixel * 3 + channel] = Math.round(images.data[base + channel * planeSize + pixel] * 255);
      }
    }
    result.push({ data, width, height, channels: 3 });
  }
  return result;
}

/** NCHW → NHWC, diffusers' `output_type="np"` layout. */
export function toChannelsLast(images: Tensor<'float32'>): Tensor<'float32'> {
  const [batch, channels, height, width] = images.shape;
  const planeSize = height * width;
  const out = new Float32Array(images.size);
  for (let b = 0; b < batch; b++) {
    for (let channel = 0; channel < channels; channel++) {
      for (let pixel = 0; pixel < planeSize; pixel++) {
        out[(b * planeSize + pixel) * channels + channel] = images.data[(b * channels + channel) * planeSize + pixel];
      }
    }
  }
  return new Tensor(out, [batch, height, width, channels]);
}

/**
 * Writes a generated picture; the format follows the file extension (png, jpg, webp, …). Atomic: the picture is
 * written to a temporary file in the same folder, then renamed over `path`, so readers never see half a file and a
 * failed write leaves whatever was there before.
 */
export async function saveImage(image: RawImage, path: string): Promise<void> {
  const encoder = toSharp(image);
  // Same folder (a rename cannot cross file systems), same extension (sharp picks the format from it), hidden name.
  const temporary = join(dirname(path), `.${basename(path, extname(path))}.${randomBytes(6).toString('hex')}.tmp${extname(path)}`);
  try {
    await encoder.toFile(temporary);
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    if (error instanceof Error && /unsupported output format/i.test(error.message)) {
      throw new InvalidArgumentError(`Cannot save ${path}: the extension ${JSON.stringify(extname(path))} names no image format sharp writes (png, jpg, webp, avif, tiff, gif).`, { cause: error });
    }
    throw error;
  }
}
