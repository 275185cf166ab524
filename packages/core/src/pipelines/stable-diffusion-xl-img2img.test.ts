import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeToyPipeline } from '../testing/toy-models.js';
import type { StableDiffusionXLTensorName } from '../contract.js';
import { InvalidArgumentError, ModelLoadError } from '../errors.js';
import { Generator } from '../random/generator.js';
import type { ModelFeeds } from '../runtime/feeds.js';
import type { OnnxModel } from '../runtime/onnx-model.js';
import { Tensor } from '../tensor.js';
import { AutoPipelineForImage2Image } from './auto-pipeline.js';
import { prepareImageToImageLatents, preprocessImage, strengthTimesteps } from './image-latents.js';
import type { RawImage } from './images.js';
import { StableDiffusionXLImg2ImgPipeline, type StableDiffusionXLImg2ImgOptions } from './stable-diffusion-xl-img2img.js';
import { StableDiffusionXLPipeline } from './stable-diffusion-xl.js';

let dir: string;
let textToImage: StableDiffusionXLPipeline;
let pipeline: StableDiffusionXLImg2ImgPipeline;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diff-sdxl-img2img-'));
  await writeToyPipeline(dir, 'sdxl');
  textToImage = await StableDiffusionXLPipeline.fromPretrained(dir);
  pipeline = StableDiffusionXLImg2ImgPipeline.fromPipe(textToImage);
});

afterAll(async () => {
  await textToImage.dispose();
  await rm(dir, { recursive: true, force: true });
});

function picture(width: number, height: number, seed = 1): RawImage {
  const data = Uint8Array.from({ length: width * height * 3 }, (_, i) => (i * 37 * seed + 11) % 256);
  return { data, width, height, channels: 3 };
}

type LatentOptions = Partial<StableDiffusionXLImg2ImgOptions<StableDiffusionXLTensorName, 'latent'>>;
const base = { prompt: 'a red cat', image: picture(16, 16), numInferenceSteps: 10, strength: 0.5 } as const;
const generate = (target: StableDiffusionXLImg2ImgPipeline, options: LatentOptions = {}, seed = 0) =>
  target
    .generate({ ...base, generator: new Generator().manualSeed(seed), outputType: 'latent', ...options } as StableDiffusionXLImg2ImgOptions<StableDiffusionXLTensorName, 'latent'>)
    .then((out) => out.images);

/** A UNet stand-in that records its feeds and predicts zero noise (so Euler leaves the latents as they are). */
function recordingUnet(): { unet: OnnxModel; feeds: ModelFeeds[] } {
  const feeds: ModelFeeds[] = [];
  const unet = {
    inputs: async () => [], // the recording stands in for a UNet without an IP-Adapter
    path: join(dir, 'unet', 'model.onnx'),
    run: async (input: ModelFeeds) => {
      feeds.push(input);
      return { out_sample: Tensor.zeros((input.sample as Tensor).shape) };
    },
  } as unknown as OnnxModel;
  return { unet, feeds };
}

const rowsOf = (tensor: Tensor) => tensor.chunk(tensor.shape[0]).map((row) => Array.from(row.data));

describe('StableDiffusionXLImg2ImgPipeline', () => {
  it('keeps the picture size (rounded down to the VAE factor) and uses the SDXL VAE scaling factor', async () => {
    expect(pipeline.components.scalingFactor).toBe(0.13025);
    const out = await pipeline.generate({ ...base, image: picture(21, 18), outputType: 'np', numImagesPerPrompt: 2 });
    expect(out.images.shape).toEqual([2, 16, 16, 3]);
    expect((await generate(pipeline)).shape).toEqual([1, 4, 2, 2]);
  });

  it('shares the sessions of the pipeline it was made from', () => {
    expect(pipeline.components.unet).toBe(textToImage.components.unet);
    expect(pipeline.scheduler).toBe(textToImage.scheduler);
  });

  it('runs the last int(steps · strength) steps, 0.3 by default', async () => {
    const counts: number[] = [];
    const count = (state: { numTimesteps: number }, step: number) => void (step === 0 && counts.push(state.numTimesteps));
    await generate(pipeline, { callbackOnStepEnd: count });
    await generate(pipeline, { strength: undefined, callbackOnStepEnd: count });
    expect(counts).toEqual([5, 3]);
    await expect(generate(pipeline, { strength: 0.05 })).rejects.toThrow(InvalidArgumentError);
  });

  it('starts from the picture’s VAE sample noised to the first timestep, drawn from the one generator', async () => {
    const { unet } = recordingUnet();
    const still = new StableDiffusionXLImg2ImgPipeline({ ...pipeline.components, unet });
    const result = await generate(still, {}, 7);

    const scheduler = pipeline.scheduler.clone();
    const timesteps = strengthTimesteps(scheduler, base.numInferenceSteps, base.strength);
    const { latents } = await prepareImageToImageLatents({
      vae: pipeline.components, scheduler, image: await preprocessImage(base.image, { width: 16, height: 16 }),
      timestep: timesteps[0], batchSize: 1, generator: new Generator().manualSeed(7),
    });
    expect(Array.from(result.data)).toEqual(Array.from(latents.data));
    expect((await generate(pipeline, {}, 7)).data).toEqual((await generate(pipeline, {}, 7)).data);
    expect((await generate(pipeline, { image: picture(16, 16, 3) }, 7)).data).not.toEqual((await generate(pipeline, {}, 7)).data);
  });

  it('stacks the time ids as every negative row, then every positive row, with the positive crop in the negative row', async () => {
    const { unet, feeds } = recordingUnet();
    const still = new StableDiffusionXLImg2ImgPipeline({ ...pipeline.components, unet });
    await generate(still, {
      prompt: ['a', 'b'], originalSize: [32, 24], cropsCoordsTopLeft: [4, 2], negativeOriginalSize: [8, 8], negativeCropsCoordsTopLeft: [9, 9],
    });
    const timeIds = feeds[0].time_ids as Tensor;
    const negative = [8, 8, 4, 2, 16, 16];
    const positive = [32, 24, 4, 2, 16, 16];
    expect(rowsOf(timeIds)).toEqual([negative, negative, positive, positive]);
    expect((feeds[0].timestep as { shape: readonly number[] }).shape).toEqual([4]);
    expect((feeds[0].text_embeds as Tensor).shape[0]).toBe(4);
  });

  it('keeps the positive time-id rows when a callback turns guidance off', async () => {
    const { unet, feeds } = recordingUnet();
    const still = new StableDiffusionXLImg2ImgPipeline({ ...pipeline.components, unet });
    await generate(still, {
      prompt: ['a', 'b'], originalSize: [32, 24], negativeOriginalSize: [8, 8],
      callbackOnStepEnd: (state, _step, _timestep, kwargs) => state.disableGuidance(kwargs),
    });
    const positive = [32, 24, 0, 0, 16, 16];
    expect(rowsOf(feeds[1].time_ids as Tensor)).toEqual([positive, positive]);
  });

  it('conditions on aesthetic scores when requiresAestheticsScore is set', async () => {
    const { unet, feeds } = recordingUnet();
    const { unetConfig } = pipeline.components;
    // A UNet trained on 5 time ids (original size, crop corner, aesthetic score), like the refiner's.
    const fiveIds = { ...unetConfig, projection_class_embeddings_input_dim: (unetConfig.projection_class_embeddings_input_dim as number) - 8 };
    const aesthetic = new StableDiffusionXLImg2ImgPipeline({ ...pipeline.components, unet, unetConfig: fiveIds }, { requiresAestheticsScore: true });
    await generate(aesthetic, { negativeCropsCoordsTopLeft: [1, 2], aestheticScore: 7, negativeAestheticScore: 2 });
    expect(rowsOf(feeds[0].time_ids as Tensor)).toEqual([[16, 16, 1, 2, 2], [16, 16, 0, 0, 7]]);
    await generate(aesthetic, { guidanceScale: 1 });
    expect(rowsOf(feeds.at(-1)!.time_ids as Tensor)).toEqual([[16, 16, 0, 0, 6]]);
  });

  it('explains a time-id count the UNet was not trained with', async () => {
    const mismatched = StableDiffusionXLImg2ImgPipeline.fromPipe(textToImage, { requiresAestheticsScore: true });
    await expect(generate(mismatched)).rejects.toThrow(/but 5 time ids .* The UNet takes 6 time ids \(original size, crop corner, target size\): turn requiresAestheticsScore off/);
  });
});

describe('StableDiffusionXLImg2ImgPipeline.fromPretrained', () => {
  it('reads requires_aesthetics_score and needs the VAE encoder', async () => {
    const loaded = await StableDiffusionXLImg2ImgPipeline.fromPretrained(dir);
    try {
      expect(loaded.requiresAestheticsScore).toBe(false);
      expect((await StableDiffusionXLImg2ImgPipeline.fromPretrained(dir, { requiresAestheticsScore: true })).requiresAestheticsScore).toBe(true);
    } finally {
      await loaded.dispose();
    }
    expect(() => new StableDiffusionXLImg2ImgPipeline({ ...textToImage.components, vaeEncoder: undefined })).toThrow(ModelLoadError);
  });
});

describe('AutoPipelineForImage2Image with SDXL', () => {
  it('loads StableDiffusionXLImg2ImgPipeline for an SDXL folder', async () => {
    const auto = await AutoPipelineForImage2Image.fromPretrained(dir);
    expect(auto).toBeInstanceOf(StableDiffusionXLImg2ImgPipeline);
    await auto.dispose();
  });
});

// Type-level checks (compiled by `tsc --noEmit` in the test script, never run).
export function typeChecks(): void {
  void pipeline.generate({ image: base.image, prompt: 'x', callbackOnStepEndTensorInputs: ['addTimeIds', 'addTextEmbeds'] });
  // @ts-expect-error `negativePromptEmbeds` is an SD 1.x tensor; SDXL keeps the negatives inside the CFG batch.
  void pipeline.generate({ image: base.image, prompt: 'x', callbackOnStepEndTensorInputs: ['negativePromptEmbeds'] });
  // @ts-expect-error image-to-image needs the starting picture.
  void pipeline.generate({ prompt: 'x' });
}
