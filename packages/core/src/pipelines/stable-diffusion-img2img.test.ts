import { jest } from '@jest/globals';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeToyPipeline } from '../testing/toy-models.js';
import { InvalidArgumentError, ModelLoadError } from '../errors.js';
import { Generator, randn } from '../random/generator.js';
import type { ModelFeeds } from '../runtime/feeds.js';
import { DDIMScheduler } from '../schedulers/index.js';
import { Tensor } from '../tensor.js';
import { preprocessImage } from './image-latents.js';
import type { RawImage } from './images.js';
import { StableDiffusionImg2ImgPipeline, type StableDiffusionImg2ImgOptions } from './stable-diffusion-img2img.js';
import { StableDiffusionPipeline } from './stable-diffusion.js';

let dir: string;
let pipe: StableDiffusionImg2ImgPipeline;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diff-img2img-'));
  await writeToyPipeline(join(dir, 'sd'), 'sd');
  pipe = await StableDiffusionImg2ImgPipeline.fromPretrained(join(dir, 'sd'));
});

afterAll(async () => {
  await pipe.dispose();
  await rm(dir, { recursive: true, force: true });
});

function picture(width = 16, height = 16): RawImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37) % 256;
  return { data, width, height, channels: 3 };
}

const base = { prompt: 'a red cat', image: picture(), numInferenceSteps: 10 } as const;

async function timestepsOf(options: Partial<StableDiffusionImg2ImgOptions>): Promise<number[]> {
  let timesteps: readonly number[] = [];
  await pipe.generate({ ...base, outputType: 'latent', ...options, callbackOnStepEnd: (state) => void (timesteps = state.timesteps) });
  return [...timesteps];
}

/** The UNet feeds of every call while `run` goes. */
async function unetFeeds(target: StableDiffusionImg2ImgPipeline, run: () => Promise<unknown>): Promise<ModelFeeds[]> {
  const spy = jest.spyOn(target.components.unet, 'run');
  try {
    await run();
    return spy.mock.calls.map(([feeds]) => feeds);
  } finally {
    spy.mockRestore();
  }
}

/** scalingFactor · (mean + exp(logvar / 2)·ε) from the toy VAE encoder, ε the next draw of `generator`. */
async function sampledImageLatents(image: Tensor, generator: Generator): Promise<Tensor> {
  const { latent_parameters: parameters } = await pipe.components.vaeEncoder.run({ sample: image });
  const [mean, logvar] = parameters.chunk(2, 1);
  const epsilon = randn(mean.shape, { generator });
  return new Tensor(mean.data.map((m, i) => 0.18215 * (m + Math.exp(logvar.data[i] / 2) * epsilon.data[i])), mean.shape);
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance = 1e-5): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) expect(Math.abs(actual[i] - expected[i])).toBeLessThanOrEqual(tolerance);
}

describe('StableDiffusionImg2ImgPipeline', () => {
  it('works at the picture size rounded down to a multiple of 8', async () => {
    const { images } = await pipe.generate({ ...base, image: picture(20, 27), generator: new Generator().manualSeed(0) });
    expect(images).toHaveLength(1);
    expect(images[0]).toMatchObject({ width: 16, height: 24, channels: 3 });
    const latents = await pipe.generate({ ...base, outputType: 'latent', numImagesPerPrompt: 2 });
    expect(latents.images.shape).toEqual([2, 4, 2, 2]);
  });

  it('runs the last int(N · strength) steps of the schedule; strength 1 runs all of it', async () => {
    // The toy folder's PNDM: N steps are N + 1 UNet calls, the cut starts at the same place.
    expect(await timestepsOf({ strength: 0.6 })).toHaveLength(7);
    expect(await timestepsOf({ strength: 1 })).toHaveLength(11);
    expect(await timestepsOf({})).toHaveLength(9); // default strength 0.8
    pipe.scheduler = DDIMScheduler.fromConfig(pipe.components.scheduler.config);
    try {
      expect(await timestepsOf({ strength: 1 })).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
      expect(await timestepsOf({ strength: 0.3 })).toEqual([201, 101, 1]);
    } finally {
      pipe.scheduler = pipe.components.scheduler;
    }
  });

  it('refuses a strength outside [0, 1] or one that leaves no step (strength 0)', async () => {
    await expect(pipe.generate({ ...base, strength: 1.5 })).rejects.toThrow(new InvalidArgumentError('strength must be between 0 and 1, got 1.5.'));
    await expect(pipe.generate({ ...base, strength: 0 })).rejects.toThrow(/strength 0 leaves no denoising step out of 10/);
    await expect(pipe.generate({ ...base, strength: 0.05 })).rejects.toThrow(InvalidArgumentError);
  });

  it('draws the VAE sample first, then the noise, and starts from the picture noised to the first timestep', async () => {
    const scheduler = DDIMScheduler.fromConfig(pipe.components.scheduler.config); // scaleModelInput is the identity
    const img2img = StableDiffusionImg2ImgPipeline.fromPipe({ components: pipe.components, scheduler });
    const feeds = await unetFeeds(img2img, () =>
      img2img.generate({ ...base, strength: 0.5, guidanceScale: 1, numImagesPerPrompt: 2, generator: new Generator().manualSeed(42), outputType: 'latent' }),
    );
    expect(feeds).toHaveLength(5);
    expect(Array.from((feeds[0].timestep as { data: Float32Array }).data)).toEqual([401, 401]); // timesteps[5:]

    const generator = new Generator().manualSeed(42);
    const imageLatents = await sampledImageLatents(await preprocessImage(base.image, { width: 16, height: 16 }), generator);
    const noise = randn([2, 4, 2, 2], { generator }); // one draw for the whole batch, after the VAE sample
    const reference = DDIMScheduler.fromConfig(pipe.components.scheduler.config);
    reference.setTimesteps(10);
    const expected = reference.addNoise(Tensor.cat([imageLatents, imageLatents]), noise, 401);
    expectClose((feeds[0].sample as Tensor).data, expected.data);
  });

  it('gives callbacks the CFG-doubled prompt embeddings and refuses tensors it does not have', async () => {
    const rows: number[] = [];
    await pipe.generate({
      ...base, outputType: 'latent',
      callbackOnStepEnd: (_state, _step, _t, kwargs) => void rows.push(kwargs.promptEmbeds.shape[0]),
      callbackOnStepEndTensorInputs: ['promptEmbeds'],
    });
    expect(rows).toEqual(Array(9).fill(2));
    // @ts-expect-error image-to-image has no mask
    await expect(pipe.generate({ ...base, callbackOnStepEnd: () => undefined, callbackOnStepEndTensorInputs: ['mask'] })).rejects.toThrow(/mask/);
  });

  it('is built from a loaded pipeline without reloading: same sessions, same scheduler', async () => {
    const text2img = await StableDiffusionPipeline.fromPretrained(join(dir, 'sd'));
    const img2img = StableDiffusionImg2ImgPipeline.fromPipe(text2img);
    expect(img2img.components.pool).toBe(text2img.components.pool);
    expect(img2img.components.unet).toBe(text2img.components.unet);
    expect(img2img.scheduler).toBe(text2img.scheduler);
    await text2img.generate({ prompt: 'a cat', numInferenceSteps: 2, height: 16, width: 16, outputType: 'latent' });
    const loaded = text2img.components.pool.loadedModels.length;
    const seeded = (seed: number) => ({ ...base, outputType: 'latent' as const, generator: new Generator().manualSeed(seed) });
    const shared = await img2img.generate(seeded(3));
    expect(text2img.components.pool.loadedModels).toHaveLength(loaded + 1); // only the VAE encoder is new
    expect(shared.images.data).toEqual((await pipe.generate(seeded(3))).images.data);
    await text2img.dispose();
  });

  it('needs a VAE encoder, and says where it is missing', async () => {
    const folder = join(dir, 'no-encoder');
    await cp(join(dir, 'sd'), folder, { recursive: true });
    await rm(join(folder, 'vae_encoder'), { recursive: true });
    const expected = join(folder, 'vae_encoder', 'model.onnx');
    await expect(StableDiffusionImg2ImgPipeline.fromPretrained(folder)).rejects.toThrow(ModelLoadError);
    await expect(StableDiffusionImg2ImgPipeline.fromPretrained(folder)).rejects.toThrow(`${expected}: is missing; StableDiffusionImg2ImgPipeline encodes`);
    const text2img = await StableDiffusionPipeline.fromPretrained(folder);
    expect(() => StableDiffusionImg2ImgPipeline.fromPipe(text2img)).toThrow(ModelLoadError);
  });
});
