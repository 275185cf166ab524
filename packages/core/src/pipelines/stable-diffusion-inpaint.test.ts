import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CallbackKwargs, CallbackPipeline, StableDiffusionInpaintTensorName } from '../contract.js';
import { InvalidArgumentError, ModelLoadError, UnsupportedError } from '../errors.js';
import { Generator, randn } from '../random/generator.js';
import type { ModelFeeds } from '../runtime/feeds.js';
import type { Tensor } from '../tensor.js';
import { StableDiffusionInpaintPipeline, type StableDiffusionInpaintOptions } from './stable-diffusion-inpaint.js';
import { StableDiffusionPipeline } from './stable-diffusion.js';
import {
  LATENT_MASK, LEFT_HALF_MASK, channels, ddimAt, expectClose, expectKnownRegionPutBack, expectedDraws, loadInpaintingToys, mask, maskedPicture,
  picture, sampledLatents, type InpaintingToys,
} from '../__fixtures__/inpainting.js';
import { recordRuns, restoreModelRuns } from '../__fixtures__/model-runs.js';

type Kwargs = CallbackKwargs<StableDiffusionInpaintTensorName>;
type Doubled = 'promptEmbeds' | 'mask' | 'maskedImageLatents';
const DOUBLED: Doubled[] = ['promptEmbeds', 'mask', 'maskedImageLatents'];

/** What SDCFGCutoffCallback does at `cutoffStep`: guidance off, and the conditional half of `halved` kept. */
function cfgCutoff(cutoffStep: number, halved: readonly Doubled[] = DOUBLED) {
  return (state: CallbackPipeline, step: number, _t: number, kwargs: CallbackKwargs<Doubled>) => {
    if (step !== cutoffStep) return kwargs;
    state.guidanceScale = 0;
    return Object.fromEntries(halved.map((name) => [name, kwargs[name].chunk(2)[1]]));
  };
}

let toys: InpaintingToys<StableDiffusionInpaintPipeline>;
let dir: string;
let inpaint9: StableDiffusionInpaintPipeline;
let inpaint4: StableDiffusionInpaintPipeline;

beforeAll(async () => {
  toys = await loadInpaintingToys(StableDiffusionInpaintPipeline, 'sd');
  ({ dir, inpaint9, inpaint4 } = toys);
});
afterAll(() => toys.dispose());
afterEach(restoreModelRuns);

const base = { prompt: 'a red cat', image: picture(), maskImage: LEFT_HALF_MASK, height: 16, width: 16, numInferenceSteps: 4 } as const;

async function unetFeeds(pipe: StableDiffusionInpaintPipeline, options: Partial<StableDiffusionInpaintOptions<StableDiffusionInpaintTensorName, 'latent'>>) {
  const calls = recordRuns(pipe.components.unet);
  await pipe.generate({ ...base, outputType: 'latent', ...options });
  return calls.map(({ feeds }) => feeds as ModelFeeds & { sample: Tensor });
}

describe('StableDiffusionInpaintPipeline with a 9-channel UNet', () => {
  it('detects the UNet kind from its config, or from the ONNX input when the config is missing', async () => {
    expect(await inpaint9.unetInChannels()).toBe(9);
    expect(await inpaint4.unetInChannels()).toBe(4);
    const folder = join(dir, 'no-unet-config');
    await cp(join(dir, 'sd-inpaint'), folder, { recursive: true });
    await rm(join(folder, 'unet', 'config.json'));
    const pipe = await StableDiffusionInpaintPipeline.fromPretrained(folder);
    expect(await pipe.unetInChannels()).toBe(9);
    await pipe.dispose();
  });

  it('feeds the UNet concat(latents, mask, masked-picture latents), all CFG-doubled, and shows the same tensors to callbacks', async () => {
    const seen: Kwargs[] = [];
    const feeds = await unetFeeds(inpaint9, {
      generator: new Generator().manualSeed(1),
      callbackOnStepEnd: (_state, _step, _t, kwargs) => void seen.push(kwargs),
      callbackOnStepEndTensorInputs: ['latents', 'mask', 'maskedImageLatents', 'promptEmbeds'],
    });
    expect(feeds).toHaveLength(4);
    const { sample } = feeds[0];
    expect(sample.shape).toEqual([2, 9, 2, 2]);
    expect(seen[0].mask.shape).toEqual([2, 1, 2, 2]);
    expect(seen[0].maskedImageLatents.shape).toEqual([2, 4, 2, 2]);
    expect(Array.from(seen[0].mask.data)).toEqual([...LATENT_MASK, ...LATENT_MASK]);
    for (const row of [0, 1]) {
      const fed = sample.narrow(0, row, 1);
      expect(Array.from(fed.narrow(1, 4, 1).data)).toEqual(LATENT_MASK);
      expect(Array.from(fed.narrow(1, 5, 4).data)).toEqual(Array.from(seen[0].maskedImageLatents.narrow(0, row, 1).data));
    }
  });

  it('at strength 1 starts from noise (the first draw) and samples the masked picture next', async () => {
    const feeds = await unetFeeds(inpaint9, { generator: new Generator().manualSeed(5), guidanceScale: 1 });
    expect(feeds[0].sample.shape).toEqual([1, 9, 2, 2]);
    const generator = new Generator().manualSeed(5);
    const noise = randn([1, 4, 2, 2], { generator });
    expect(channels(feeds[0].sample, 0, 4)).toEqual(Array.from(noise.data));
    expectClose(channels(feeds[0].sample, 5, 4), (await sampledLatents(inpaint9, await maskedPicture(), generator)).data);
  });

  it('below strength 1 draws the picture sample, the noise, then the masked picture sample, and skips the first steps', async () => {
    const feeds = await unetFeeds(inpaint9, { generator: new Generator().manualSeed(6), guidanceScale: 1, strength: 0.5 });
    expect(feeds).toHaveLength(2);
    const { imageLatents, noise, maskedImageLatents } = await expectedDraws(inpaint9, 6);
    expectClose(channels(feeds[0].sample, 0, 4), ddimAt(inpaint9, 4).addNoise(imageLatents, noise, 251).data);
    expectClose(channels(feeds[0].sample, 5, 4), maskedImageLatents.data);
  });

  it('binarises the mask: mid-grey 127 keeps everything, 128 repaints everything', async () => {
    const maskOf = async (level: number) => {
      const feeds = await unetFeeds(inpaint9, { guidanceScale: 1, numInferenceSteps: 1, maskImage: mask(16, 16, () => level) });
      return channels(feeds[0].sample, 4, 1);
    };
    expect(await maskOf(127)).toEqual([0, 0, 0, 0]);
    expect(await maskOf(128)).toEqual([1, 1, 1, 1]);
  });

  it('resizes picture and mask to height × width (default: the UNet sample size × 8)', async () => {
    const { images } = await inpaint9.generate({ ...base, height: undefined, width: undefined, numInferenceSteps: 1 });
    expect(images[0]).toMatchObject({ width: 64, height: 64 });
    const feeds = await unetFeeds(inpaint9, { height: 32, width: 24, numInferenceSteps: 1 });
    expect(feeds[0].sample.shape).toEqual([2, 9, 4, 3]);
  });

  it('refuses a mask of another size than the picture, naming both sizes, and strengths outside [0, 1]', async () => {
    await expect(inpaint9.generate({ ...base, maskImage: mask(8, 16, () => 255) })).rejects.toThrow(
      new InvalidArgumentError("maskImage is 8×16 but image is 16×16; give a mask of the picture's size."),
    );
    await expect(inpaint9.generate({ ...base, strength: -0.5 })).rejects.toThrow(new InvalidArgumentError('strength must be between 0 and 1, got -0.5.'));
    await expect(inpaint9.generate({ ...base, strength: 0.1 })).rejects.toThrow(/leaves no denoising step out of 4/);
  });

  it('runs on when a callback turns guidance off and halves the doubled tensors (as SDCFGCutoffCallback does)', async () => {
    const rows: number[][] = [];
    const recordRows = (_state: CallbackPipeline, _step: number, _t: number, kwargs: CallbackKwargs<Doubled>) => {
      rows.push(DOUBLED.map((name) => kwargs[name].shape[0]));
    };
    const feeds = await unetFeeds(inpaint9, { callbackOnStepEnd: [recordRows, cfgCutoff(1)], callbackOnStepEndTensorInputs: DOUBLED });
    expect(rows).toEqual([[2, 2, 2], [2, 2, 2], [1, 1, 1], [1, 1, 1]]);
    expect(feeds.map((feed) => feed.sample.shape[0])).toEqual([2, 2, 1, 1]);
  });

  it('says which tensor a callback left doubled when it turned guidance off', async () => {
    await expect(
      inpaint9.generate({ ...base, callbackOnStepEnd: cfgCutoff(0, ['promptEmbeds']), callbackOnStepEndTensorInputs: DOUBLED }),
    ).rejects.toThrow(
      new InvalidArgumentError(
        'mask has 2 rows but the next step needs 1: classifier-free guidance is off, so keep only the conditional half (e.g. chunk(2)[1]) when turning it off.',
      ),
    );
  });
});

describe('StableDiffusionInpaintPipeline with a 4-channel UNet', () => {
  it('feeds the latents alone and puts the known region back after every step, noised to the next timestep', async () => {
    const latentsPerStep: Tensor[] = [];
    const seen: Kwargs[] = [];
    const feeds = await unetFeeds(inpaint4, {
      generator: new Generator().manualSeed(9), guidanceScale: 1,
      callbackOnStepEnd: (_state, _step, _t, kwargs) => {
        latentsPerStep.push(kwargs.latents);
        seen.push(kwargs);
      },
      callbackOnStepEndTensorInputs: ['latents', 'maskedImageLatents'],
    });
    expect(feeds[0].sample.shape).toEqual([1, 4, 2, 2]);

    // Even at strength 1 the picture's VAE sample is drawn: the blending needs it.
    const { imageLatents, noise, maskedImageLatents } = await expectedDraws(inpaint4, 9);
    expectClose(seen[0].maskedImageLatents.data, maskedImageLatents.data);
    expect(Array.from(feeds[0].sample.data)).toEqual(Array.from(noise.data)); // strength 1: pure noise
    expectKnownRegionPutBack(latentsPerStep, imageLatents, noise, ddimAt(inpaint4, 4));
  });

  it('blends with the conditional half of the mask under guidance, and with the halved mask after a cut-off', async () => {
    const generator = new Generator().manualSeed(2);
    const { images } = await inpaint4.generate({
      ...base, generator, outputType: 'latent',
      callbackOnStepEnd: cfgCutoff(1), callbackOnStepEndTensorInputs: DOUBLED,
    });
    const { imageLatents } = await expectedDraws(inpaint4, 2);
    images.data.forEach((value, i) => {
      if (LATENT_MASK[i % 4] === 0) expect(value).toBeCloseTo(imageLatents.data[i], 6);
    });
  });
});

describe('StableDiffusionInpaintPipeline loading', () => {
  it('is built from a loaded pipeline without reloading its sessions', async () => {
    const text2img = await StableDiffusionPipeline.fromPretrained(join(dir, 'sd-inpaint'));
    const pipe = StableDiffusionInpaintPipeline.fromPipe(text2img);
    expect(pipe.components.pool).toBe(text2img.components.pool);
    expect(pipe.scheduler).toBe(text2img.scheduler);
    await text2img.dispose();
  });

  it('refuses UNets with neither 4 nor 9 input channels, and folders without a VAE encoder', async () => {
    const folder = join(dir, 'odd-unet');
    await cp(join(dir, 'sd'), folder, { recursive: true });
    const configPath = join(folder, 'unet', 'config.json');
    await writeFile(configPath, JSON.stringify({ ...JSON.parse(await readFile(configPath, 'utf8')), in_channels: 5 }));
    const pipe = await StableDiffusionInpaintPipeline.fromPretrained(folder);
    await expect(pipe.generate(base)).rejects.toThrow(UnsupportedError);
    await expect(pipe.generate(base)).rejects.toThrow(/takes 5 input channels; inpainting needs 9 \(an inpainting UNet\) or 4/);
    await rm(join(folder, 'vae_encoder'), { recursive: true });
    await expect(StableDiffusionInpaintPipeline.fromPretrained(folder)).rejects.toThrow(ModelLoadError);
  });
});
