import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeToyPipeline } from '../testing/toy-models.js';
import { InvalidArgumentError } from '../errors.js';
import { Generator, randn } from '../random/generator.js';
import { OnnxModel, SessionPool } from '../runtime/onnx-model.js';
import { DDIMScheduler, PNDMScheduler } from '../schedulers/index.js';
import { Tensor } from '../tensor.js';
import {
  blendKnownRegion,
  defaultImageSize,
  encodeImageLatents,
  maskOutImage,
  preprocessImage,
  preprocessMask,
  resizeNearest,
  strengthTimesteps,
} from './image-latents.js';
import type { RawImage } from './images.js';

const SCHEDULER_CONFIG = { beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', set_alpha_to_one: false, steps_offset: 1, skip_prk_steps: true };

function gray(width: number, height: number, value: (x: number, y: number) => number): RawImage {
  const data = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data[y * width + x] = value(x, y);
  return { data, width, height, channels: 1 };
}

function rgb(width: number, height: number, colour: (x: number, y: number) => [number, number, number]): RawImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data.set(colour(x, y), (y * width + x) * 3);
  return { data, width, height, channels: 3 };
}

describe('image preprocessing', () => {
  it('defaults to the picture size rounded down to a multiple of the VAE factor, and refuses pictures under it', async () => {
    expect(await defaultImageSize(rgb(21, 17, () => [0, 0, 0]), 8)).toEqual({ width: 16, height: 16 });
    await expect(defaultImageSize(rgb(7, 16, () => [0, 0, 0]), 8)).rejects.toThrow(new InvalidArgumentError('The image is 7×16; each side needs at least 8 pixels (the VAE factor).'));
  });

  it('gives NCHW pixels in [-1, 1], resized only when the size differs', async () => {
    const picture = rgb(2, 1, (x) => (x === 0 ? [0, 255, 51] : [255, 0, 102]));
    const image = await preprocessImage(picture, { width: 2, height: 1 });
    expect(image.shape).toEqual([1, 3, 1, 2]);
    // float32 as numpy: x = byte / 255, then 2x − 1.
    const expected = [0, 255, 255, 0, 51, 102].map((byte) => Math.fround(2 * Math.fround(byte / 255) - 1));
    expect(Array.from(image.data)).toEqual(expected);
    expect((await preprocessImage(rgb(16, 16, () => [9, 9, 9]), { width: 8, height: 24 })).shape).toEqual([1, 3, 24, 8]);
  });

  it('binarises the mask at 0.5 (127 keeps, 128 repaints)', async () => {
    const mask = await preprocessMask(gray(4, 1, (x) => [0, 127, 128, 255][x]), { width: 4, height: 1 });
    expect(mask.shape).toEqual([1, 1, 1, 4]);
    expect(Array.from(mask.data)).toEqual([0, 0, 1, 1]);
  });

  it("converts a colour mask to grayscale with PIL's luma weights", async () => {
    // L = (19595 R + 38470 G + 7471 B + 2^15) >> 16: green 150, red 76, blue 29, grey (128, 128, 128) 128.
    const colours: [number, number, number][] = [[0, 255, 0], [255, 0, 0], [0, 0, 255], [128, 128, 128]];
    const mask = await preprocessMask(rgb(4, 1, (x) => colours[x]), { width: 4, height: 1 });
    expect(Array.from(mask.data)).toEqual([1, 0, 0, 1]);
  });

  it('blanks the region to repaint in the picture', () => {
    const image = new Tensor(Float32Array.from([0.5, -0.5, 0.25, -0.25]), [1, 2, 1, 2]);
    const mask = new Tensor(Float32Array.from([1, 0]), [1, 1, 1, 2]);
    expect(Array.from(maskOutImage(image, mask).data)).toEqual([0, -0.5, 0, -0.25]);
    expect(() => maskOutImage(image, new Tensor(new Float32Array(4), [1, 1, 2, 2]))).toThrow(InvalidArgumentError);
  });
});

describe('resizeNearest (torch interpolate, mode "nearest")', () => {
  const ramp = (width: number, height: number) => new Tensor(Float32Array.from({ length: width * height }, (_, i) => i), [1, 1, height, width]);

  it('reads every factor-th pixel when shrinking by an integer factor', () => {
    expect(Array.from(resizeNearest(ramp(16, 16), { width: 2, height: 2 }).data)).toEqual([0, 8, 128, 136]);
  });

  it('uses floor(d · in/out) in float32 for other ratios, per plane', () => {
    // 5 → 3: scale 1.6666666 → source columns 0, 1, 3.
    const twoPlanes = Tensor.cat([ramp(5, 1), ramp(5, 1)], 1);
    expect(Array.from(resizeNearest(twoPlanes, { width: 3, height: 1 }).data)).toEqual([0, 1, 3, 0, 1, 3]);
    expect(Array.from(resizeNearest(ramp(2, 1), { width: 4, height: 1 }).data)).toEqual([0, 0, 1, 1]);
  });
});

describe('strengthTimesteps (diffusers get_timesteps)', () => {
  const ddim = () => DDIMScheduler.fromConfig(SCHEDULER_CONFIG);

  it('keeps the whole schedule at strength 1 and its last int(N · strength) steps below', () => {
    const full = ddim();
    expect(Array.from(strengthTimesteps(full, 10, 1))).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    expect(full.beginIndex).toBe(0);
    const partial = ddim();
    expect(Array.from(strengthTimesteps(partial, 10, 0.6))).toEqual([501, 401, 301, 201, 101, 1]);
    expect(partial.beginIndex).toBe(4);
    expect(strengthTimesteps(ddim(), 10, 0.15)).toHaveLength(1);
  });

  it("cuts PNDM's schedule (one timestep repeated) from the same start", () => {
    const pndm = PNDMScheduler.fromConfig(SCHEDULER_CONFIG);
    const timesteps = strengthTimesteps(pndm, 10, 0.6);
    expect(timesteps).toHaveLength(7);
    expect(timesteps[0]).toBe(pndm.timesteps[4]);
  });

  it('refuses strengths outside [0, 1] and strengths that leave no step', () => {
    for (const strength of [-0.1, 1.1, Number.NaN]) {
      expect(() => strengthTimesteps(ddim(), 10, strength)).toThrow(new InvalidArgumentError(`strength must be between 0 and 1, got ${strength}.`));
    }
    for (const strength of [0, 0.05]) {
      expect(() => strengthTimesteps(ddim(), 10, strength)).toThrow(
        new InvalidArgumentError(`strength ${strength} leaves no denoising step out of 10 (int(numInferenceSteps · strength) = 0); use strength ≥ 0.1 or more steps.`),
      );
    }
  });
});

describe('encodeImageLatents', () => {
  let dir: string;
  let vaeEncoder: OnnxModel;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'diff-image-latents-'));
    await writeToyPipeline(dir, 'sd');
    vaeEncoder = new OnnxModel(join(dir, 'vae_encoder', 'model.onnx'), new SessionPool());
  });
  afterAll(async () => {
    await vaeEncoder.pool.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it('samples mean + exp(logvar / 2)·ε with one draw of the mean’s shape, then scales', async () => {
    const image = await preprocessImage(rgb(16, 16, (x, y) => [x * 16, y * 16, 128]), { width: 16, height: 16 });
    const generator = new Generator().manualSeed(7);
    const latents = await encodeImageLatents({ vaeEncoder, scalingFactor: 0.18215 }, image, generator);

    const { latent_parameters: parameters } = await vaeEncoder.run({ sample: image });
    const [mean, logvar] = parameters.chunk(2, 1);
    const expectedDraws = new Generator().manualSeed(7);
    const epsilon = randn([1, 4, 2, 2], { generator: expectedDraws });
    expect(latents.shape).toEqual([1, 4, 2, 2]);
    latents.data.forEach((value, i) => {
      expect(value).toBeCloseTo(0.18215 * (mean.data[i] + Math.exp(logvar.data[i] / 2) * epsilon.data[i]), 6);
    });
    // The generator moved on by exactly that draw.
    expect(randn([16], { generator }).data).toEqual(randn([16], { generator: expectedDraws }).data);
  });
});

describe('blendKnownRegion', () => {
  it('keeps the latents where the mask is 1 and the known latents where it is 0, on every channel', () => {
    const latents = new Tensor(Float32Array.from([1, 2, 3, 4]), [1, 2, 1, 2]);
    const known = new Tensor(Float32Array.from([-1, -2, -3, -4]), [1, 2, 1, 2]);
    const mask = new Tensor(Float32Array.from([0, 1]), [1, 1, 1, 2]);
    expect(Array.from(blendKnownRegion(latents, known, mask).data)).toEqual([-1, 2, -3, 4]);
    expect(() => blendKnownRegion(latents, known, Tensor.cat([mask, mask]))).toThrow(InvalidArgumentError);
  });
});
