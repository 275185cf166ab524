// Shared pieces of the inpainting pipelines' tests (SD 1.x and SDXL): toy pipelines with a 9-channel and a
// 4-channel UNet, a picture and masks, and the references the tests compute the pipelines' draws against.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { maskOutImage, preprocessImage } from '../pipelines/image-latents.js';
import type { RawImage } from '../pipelines/images.js';
import { Generator, randn } from '../random/generator.js';
import type { OnnxModel } from '../runtime/onnx-model.js';
import { DDIMScheduler, type Scheduler } from '../schedulers/index.js';
import { Tensor } from '../tensor.js';
import { writeToyPipeline } from '../testing/toy-models.js';

/** What these helpers use of an inpainting pipeline. */
interface InpaintingPipeline {
  scheduler: Scheduler;
  readonly components: { readonly scheduler: Scheduler; readonly vaeEncoder: OnnxModel; readonly scalingFactor: number };
  dispose(): Promise<void>;
}

export interface InpaintingToys<Pipeline> {
  /** The folder that holds both toy exports: `<family>-inpaint` and `<family>`. */
  dir: string;
  /** The toy inpainting export: a UNet with 9 input channels. */
  inpaint9: Pipeline;
  /** The toy text-to-image export used for inpainting: a UNet with 4 input channels. */
  inpaint4: Pipeline;
  /** Disposes both pipelines and removes the folder. */
  dispose(): Promise<void>;
}

/** Writes the toy inpainting and text-to-image exports of `family` to a temporary folder and loads both, on DDIM. */
export async function loadInpaintingToys<Pipeline extends InpaintingPipeline>(
  pipelineClass: { fromPretrained(dir: string): Promise<Pipeline> },
  family: 'sd' | 'sdxl',
): Promise<InpaintingToys<Pipeline>> {
  const dir = await mkdtemp(join(tmpdir(), `diff-${family}-inpaint-`));
  await writeToyPipeline(join(dir, `${family}-inpaint`), `${family}-inpaint`);
  await writeToyPipeline(join(dir, family), family);
  const inpaint9 = await pipelineClass.fromPretrained(join(dir, `${family}-inpaint`));
  const inpaint4 = await pipelineClass.fromPretrained(join(dir, family));
  // DDIM: scaleModelInput is the identity and initNoiseSigma 1, so UNet feeds read as latents.
  for (const pipe of [inpaint9, inpaint4]) pipe.scheduler = DDIMScheduler.fromConfig(pipe.components.scheduler.config);
  return {
    dir,
    inpaint9,
    inpaint4,
    async dispose() {
      await Promise.all([inpaint9.dispose(), inpaint4.dispose()]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** An RGB picture of varied pixels. */
export function picture(width = 16, height = 16): RawImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37) % 256;
  return { data, width, height, channels: 3 };
}

/** An L mask, `value(x, y)` per pixel. */
export function mask(width: number, height: number, value: (x: number, y: number) => number): RawImage {
  const data = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data[y * width + x] = value(x, y);
  return { data, width, height, channels: 1 };
}

/** Repaint the left half of a 16×16 picture: on the 2×2 latent grid, column 0 is 1 and column 1 is 0. */
export const LEFT_HALF_MASK = mask(16, 16, (x) => (x < 8 ? 255 : 0));
export const LATENT_MASK = [1, 0, 1, 0];

/** `picture()` as the pipelines preprocess it at 16×16. */
export const preprocessedPicture = () => preprocessImage(picture(), { width: 16, height: 16 });

/** `preprocessedPicture()` with the left half masked out, as the pipelines encode it for a 9-channel UNet. */
export const maskedPicture = async () =>
  maskOutImage(await preprocessedPicture(), new Tensor(Float32Array.from({ length: 256 }, (_, i) => (i % 16 < 8 ? 1 : 0)), [1, 1, 16, 16]));

/** Channels [from, from + count) of a [B, C, h, w] tensor's first row, flattened. */
export function channels(tensor: Tensor, from: number, count: number): number[] {
  return Array.from(tensor.narrow(0, 0, 1).narrow(1, from, count).data);
}

/** scalingFactor · (mean + exp(logvar / 2)·ε) from the toy VAE encoder, ε the next draw of `generator`. */
export async function sampledLatents(pipe: InpaintingPipeline, image: Tensor, generator: Generator): Promise<Tensor<'float32'>> {
  const { latent_parameters: parameters } = await pipe.components.vaeEncoder.run({ sample: image });
  const [mean, logvar] = parameters.chunk(2, 1);
  const epsilon = randn(mean.shape, { generator });
  const { scalingFactor } = pipe.components;
  return new Tensor(Float32Array.from(mean.data, (m, i) => scalingFactor * (m + Math.exp(logvar.data[i] / 2) * epsilon.data[i])), mean.shape);
}

/**
 * What a run seeded `seed` draws when it needs the picture's latents (strength below 1, or a 4-channel UNet), in
 * diffusers' order: the picture's VAE sample, the noise, then the masked picture's VAE sample.
 */
export async function expectedDraws(pipe: InpaintingPipeline, seed: number): Promise<{ imageLatents: Tensor<'float32'>; noise: Tensor<'float32'>; maskedImageLatents: Tensor<'float32'> }> {
  const generator = new Generator().manualSeed(seed);
  const imageLatents = await sampledLatents(pipe, await preprocessedPicture(), generator);
  const noise = randn([1, 4, 2, 2], { generator });
  const maskedImageLatents = await sampledLatents(pipe, await maskedPicture(), generator);
  return { imageLatents, noise, maskedImageLatents };
}

/**
 * Expects what a 4-channel UNet's inpainting does after every step of `reference`'s timesteps: the region to keep
 * (`LATENT_MASK` 0) back at the picture's latents noised to the next timestep (un-noised after the last step), and
 * the region to repaint elsewhere.
 */
export function expectKnownRegionPutBack(latentsPerStep: readonly Tensor[], imageLatents: Tensor, noise: Tensor, reference: DDIMScheduler): void {
  const timesteps = Array.from(reference.timesteps);
  latentsPerStep.forEach((latents, step) => {
    const known = step < timesteps.length - 1 ? reference.addNoise(imageLatents, noise, timesteps[step + 1]) : imageLatents;
    latents.data.forEach((value, i) => {
      if (LATENT_MASK[i % 4] === 0) expect(value).toBeCloseTo(known.data[i], 6);
      else expect(Math.abs(value - known.data[i])).toBeGreaterThan(1e-4);
    });
  });
}

export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance = 1e-5): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) expect(Math.abs(actual[i] - expected[i])).toBeLessThanOrEqual(tolerance);
}

/** A DDIM scheduler of the pipeline's config, set to `steps` steps: the reference for noising a picture's latents. */
export function ddimAt(pipe: InpaintingPipeline, steps: number): DDIMScheduler {
  const scheduler = DDIMScheduler.fromConfig(pipe.components.scheduler.config);
  scheduler.setTimesteps(steps);
  return scheduler;
}
