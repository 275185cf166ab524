/**
 * The steps of the pipelines that start from a picture (image-to-image, inpainting; SD and SDXL alike): diffusers'
 * `VaeImageProcessor` preprocessing, VAE encoding with a seeded sample, strength → timesteps, the noised starting
 * latents and the inpainting mask. The VAE, its scaling factor and the scheduler are always passed in.
 */
import { dirname, join } from 'node:path';
import { InvalidArgumentError, ModelLoadError } from '../errors.js';
import { randn, type Generator } from '../random/generator.js';
import type { OnnxModel } from '../runtime/onnx-model.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import { Tensor } from '../tensor.js';
import { imageSize, readImage, type ImageInput } from './images.js';
import { repeatRows } from './steps.js';

export interface ImageSize {
  width: number;
  height: number;
}

/** The VAE as the image steps use it: the encoder (mean ++ logvar export) and the latent scaling factor. */
export interface VaeEncoding {
  vaeEncoder: OnnxModel;
  scalingFactor: number;
}

const f32 = Math.fround;

/**
 * The VAE encoder a pipeline that starts from a picture needs, or a `ModelLoadError` naming where it should be.
 * Components load it only when the folder has one (text-to-image does without).
 */
export function requireVaeEncoder(components: { vaeEncoder?: OnnxModel; unet: OnnxModel }, pipelineName: string): OnnxModel {
  if (components.vaeEncoder) return components.vaeEncoder;
  const expected = join(dirname(dirname(components.unet.path)), 'vae_encoder', 'model.onnx');
  throw new ModelLoadError(expected, `is missing; ${pipelineName} encodes the input picture with the VAE encoder, so the model folder needs a vae_encoder component.`);
}

/** diffusers' default size for an input picture: its own, each side rounded down to a multiple of the VAE factor. */
export async function defaultImageSize(input: ImageInput, vaeScaleFactor: number): Promise<ImageSize> {
  const { width, height } = await imageSize(input);
  const size = { width: width - (width % vaeScaleFactor), height: height - (height % vaeScaleFactor) };
  if (size.width === 0 || size.height === 0) {
    throw new InvalidArgumentError(`The image is ${width}×${height}; each side needs at least ${vaeScaleFactor} pixels (the VAE factor).`);
  }
  return size;
}

/** Reads a picture, Lanczos-resized to `size` unless it already has that size (PIL's `resize` is then a copy). */
async function readImageAtSize(input: ImageInput, mode: 'rgb' | 'gray', size: ImageSize): Promise<Tensor<'float32'>> {
  const own = await imageSize(input);
  return readImage(input, mode, own.width === size.width && own.height === size.height ? undefined : size);
}

/** `VaeImageProcessor.preprocess` for a picture: RGB at `size`, scaled from [0, 1] to [-1, 1]; NCHW, batch 1. */
export async function preprocessImage(input: ImageInput, size: ImageSize): Promise<Tensor<'float32'>> {
  const pixels = await readImageAtSize(input, 'rgb', size);
  return new Tensor(pixels.data.map((value) => 2 * value - 1), pixels.shape);
}

/** PIL's `convert("L")`: luma `(19595·R + 38470·G + 7471·B + 2^15) >> 16` of the 8-bit pixels (alpha ignored). */
async function toPilGrayscale(input: ImageInput) {
  const rgb = await readImage(input, 'rgb');
  const [, , height, width] = rgb.shape;
  const plane = width * height;
  const byte = (index: number) => Math.round(rgb.data[index] * 255);
  const data = new Uint8Array(plane);
  for (let pixel = 0; pixel < plane; pixel++) {
    data[pixel] = (19595 * byte(pixel) + 38470 * byte(plane + pixel) + 7471 * byte(2 * plane + pixel) + 0x8000) >> 16;
  }
  return { data, width, height, channels: 1 as const };
}

/**
 * diffusers' inpainting mask processor (`do_convert_grayscale`, `do_binarize`, no normalisation): the mask as PIL
 * "L", resized to `size`, then 1 where it is ≥ 0.5 (white: repaint) and 0 elsewhere (keep). `[1, 1, H, W]`.
 */
export async function preprocessMask(input: ImageInput, size: ImageSize): Promise<Tensor<'float32'>> {
  const gray = await readImageAtSize(await toPilGrayscale(input), 'gray', size);
  return new Tensor(gray.data.map((value) => (value < 0.5 ? 0 : 1)), gray.shape);
}

/** The picture with the region to repaint blanked (0, mid-grey in [-1, 1]): diffusers' `image * (mask < 0.5)`. */
export function maskOutImage(image: Tensor<'float32'>, mask: Tensor<'float32'>): Tensor<'float32'> {
  const [batch, channels, height, width] = image.shape;
  const plane = height * width;
  if (mask.shape.join() !== [batch, 1, height, width].join()) {
    throw new InvalidArgumentError(`The mask [${mask.shape.join(', ')}] must be [${batch}, 1, ${height}, ${width}] to mask the image [${image.shape.join(', ')}].`);
  }
  const out = new Float32Array(image.size);
  for (let i = 0; i < out.length; i++) {
    const pixel = Math.floor(i / (channels * plane)) * plane + (i % plane);
    out[i] = mask.data[pixel] < 0.5 ? image.data[i] : 0;
  }
  return new Tensor(out, image.shape);
}

/**
 * torch's `interpolate(mode="nearest")` of an NCHW tensor to `size`: output pixel d reads input pixel
 * `min(floor(d · scale), in − 1)` with `scale = in / out` in float32.
 */
export function resizeNearest(tensor: Tensor<'float32'>, size: ImageSize): Tensor<'float32'> {
  const [batch, channels, inHeight, inWidth] = tensor.shape;
  const sourceIndex = (to: number, from: number, index: number) => {
    if (to === from) return index;
    return Math.min(Math.floor(f32(index * f32(from / to))), from - 1);
  };
  const rows = Array.from({ length: size.height }, (_, y) => sourceIndex(size.height, inHeight, y));
  const columns = Array.from({ length: size.width }, (_, x) => sourceIndex(size.width, inWidth, x));
  const out = new Float32Array(batch * channels * size.height * size.width);
  let offset = 0;
  for (let plane = 0; plane < batch * channels; plane++) {
    const base = plane * inHeight * inWidth;
    for (const row of rows) for (const column of columns) out[offset++] = tensor.data[base + row * inWidth + column];
  }
  return new Tensor(out, [batch, channels, size.height, size.width]);
}

/**
 * `scalingFactor · retrieve_latents(vae.encode(image), generator)` in sample mode. The export returns the Gaussian's
 * parameters (mean ++ logvar on channels), so the sample is drawn here as `DiagonalGaussianDistribution.sample`
 * does: one randn of the mean's shape, `mean + exp(0.5 · clamp(logvar, −30, 20)) · ε`, in float32.
 */
export async function encodeImageLatents(vae: VaeEncoding, image: Tensor<'float32'>, generator: Generator | undefined): Promise<Tensor<'float32'>> {
  const { latent_parameters: parameters } = await vae.vaeEncoder.run({ sample: image }, ['latent_parameters']);
  const [batch, parameterChannels, height, width] = parameters.shape;
  const shape = [batch, parameterChannels / 2, height, width];
  const epsilon = randn(shape, { generator });
  const perImage = epsilon.size / batch;
  const scale = f32(vae.scalingFactor);
  const out = new Float32Array(epsilon.size);
  for (let i = 0; i < out.length; i++) {
    const meanIndex = Math.floor(i / perImage) * 2 * perImage + (i % perImage);
    const logvar = Math.min(20, Math.max(-30, parameters.data[meanIndex + perImage]));
    const std = f32(Math.exp(f32(0.5 * logvar)));
    out[i] = scale * f32(parameters.data[meanIndex] + f32(std * epsilon.data[i]));
  }
  return new Tensor(out, shape);
}

/**
 * diffusers' `get_timesteps` after `set_timesteps`: sets the schedule for `numInferenceSteps`, keeps its last
 * `int(numInferenceSteps · strength)` steps and tells the scheduler where the run begins. Returns the timesteps
 * to visit. `strength` must be in [0, 1] and leave at least one step (diffusers fails obscurely when none is left).
 */
export function strengthTimesteps(scheduler: Scheduler, numInferenceSteps: number, strength: number): Float64Array {
  if (!(strength >= 0 && strength <= 1)) throw new InvalidArgumentError(`strength must be between 0 and 1, got ${strength}.`);
  scheduler.setTimesteps(numInferenceSteps);
  const initTimestep = Math.min(Math.floor(numInferenceSteps * strength), numInferenceSteps);
  if (initTimestep < 1) {
    throw new InvalidArgumentError(
      `strength ${strength} leaves no denoising step out of ${numInferenceSteps} (int(numInferenceSteps · strength) = 0); ` +
        `use strength ≥ ${1 / numInferenceSteps} or more steps.`,
    );
  }
  const beginIndex = (numInferenceSteps - initTimestep) * scheduler.order;
  scheduler.setBeginIndex(beginIndex);
  return scheduler.timesteps.subarray(beginIndex);
}

/** The image latents noised to `timestep` with a fresh draw of their shape; the noise is returned too. */
export function noiseImageLatents(scheduler: Scheduler, imageLatents: Tensor<'float32'>, timestep: number, generator: Generator | undefined) {
  const noise = randn(imageLatents.shape, { generator });
  return { latents: scheduler.addNoise(imageLatents, noise, timestep), noise };
}

/**
 * diffusers' image-to-image `prepare_latents`: the picture's latents (the VAE sample is the first draw), repeated
 * for the `batchSize` images of the batch, noised to the first timestep (the second draw).
 */
export async function prepareImageToImageLatents(settings: {
  vae: VaeEncoding;
  scheduler: Scheduler;
  image: Tensor<'float32'>;
  timestep: number;
  batchSize: number;
  generator: Generator | undefined;
}) {
  const { vae, scheduler, image, timestep, batchSize, generator } = settings;
  const imageLatents = repeatRows(await encodeImageLatents(vae, image, generator), batchSize);
  return { imageLatents, ...noiseImageLatents(scheduler, imageLatents, timestep, generator) };
}

/**
 * diffusers' inpainting `prepare_mask_latents`: the mask nearest-resized to the latent grid, the masked picture
 * VAE-encoded (a draw), both repeated for the batch and doubled (`[x; x]`) under classifier-free guidance.
 */
export async function prepareMaskLatents(settings: {
  vae: VaeEncoding;
  mask: Tensor<'float32'>;
  maskedImage: Tensor<'float32'>;
  vaeScaleFactor: number;
  batchSize: number;
  doClassifierFreeGuidance: boolean;
  generator: Generator | undefined;
}) {
  const { vae, mask, maskedImage, vaeScaleFactor, batchSize, doClassifierFreeGuidance, generator } = settings;
  const [, , height, width] = maskedImage.shape;
  const latentMask = resizeNearest(mask, { height: height / vaeScaleFactor, width: width / vaeScaleFactor });
  const maskedImageLatents = await encodeImageLatents(vae, maskedImage, generator);
  const forBatch = (tensor: Tensor<'float32'>) => repeatRows(tensor, (doClassifierFreeGuidance ? 2 : 1) * batchSize);
  return { mask: forBatch(latentMask), maskedImageLatents: forBatch(maskedImageLatents) };
}

/**
 * Inpainting with a plain (4-channel) UNet: after each step, the region to keep is put back from the picture's
 * latents noised to the next timestep (clean after the last one), `(1 − mask) · known + mask · latents` in float32.
 * `mask` is `[B, 1, h, w]` and covers every latent channel.
 */
export function blendKnownRegion(latents: Tensor<'float32'>, known: Tensor<'float32'>, mask: Tensor<'float32'>): Tensor<'float32'> {
  const [batch, channels, height, width] = latents.shape;
  const plane = height * width;
  if (mask.shape.join() !== [batch, 1, height, width].join()) {
    throw new InvalidArgumentError(`The mask [${mask.shape.join(', ')}] must be [${batch}, 1, ${height}, ${width}] for latents [${latents.shape.join(', ')}].`);
  }
  const out = new Float32Array(latents.size);
  for (let i = 0; i < out.length; i++) {
    const m = mask.data[Math.floor(i / (channels * plane)) * plane + (i % plane)];
    out[i] = f32(f32(1 - m) * known.data[i]) + f32(m * latents.data[i]);
  }
  return new Tensor(out, latents.shape);
}
