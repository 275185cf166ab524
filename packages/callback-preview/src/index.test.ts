import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  EulerDiscreteScheduler,
  Generator,
  PNDMScheduler,
  StableDiffusionPipeline,
  StableDiffusionXLPipeline,
  Tensor,
  type Scheduler,
  type StableDiffusionOptions,
  type StableDiffusionXLOptions,
} from '@diff/core';
import type { CallbackPipeline, RgbImage } from '@diff/core/contract';
import { CallbackRegistry, InvalidArgumentError } from '@diff/core/plugin';
import { createCallbackTestContext, writeToyPipeline } from '@diff/core/testing';
import { modelDir } from '@diff/model-tiny';
import sharp from 'sharp';
import {
  LatentPreviewCallback,
  SDXL_LATENT_RGB_FACTORS,
  SD_LATENT_RGB_FACTORS,
  fitLatentRgbFactors,
  latentsToRgb,
  plugin,
  savePreviews,
  type LatentPreview,
  type LatentPreviewCallbackOptions,
  type LatentRgbFactors,
} from './index.js';

const packageDir = join(dirname(fileURLToPath(import.meta.url)), '..');
const prompt = 'a large red circle in the center on a blue background';

let tiny: StableDiffusionPipeline;
let work: string;

beforeAll(async () => {
  tiny = await StableDiffusionPipeline.fromPretrained(modelDir);
  work = await mkdtemp(join(tmpdir(), 'diff-preview-'));
});

afterAll(async () => {
  await tiny.dispose();
  await rm(work, { recursive: true, force: true });
});

/** Runs the tiny model with a preview callback and returns its previews and the output latents. */
async function previewsOf(options: Partial<LatentPreviewCallbackOptions>, generate: Partial<StableDiffusionOptions> = {}) {
  const previews: LatentPreview[] = [];
  const callback = new LatentPreviewCallback({ onPreview: (preview) => void previews.push(preview), ...options });
  const output = await tiny.generate({ prompt, numInferenceSteps: 5, generator: new Generator().manualSeed(0), callbackOnStepEnd: callback, ...generate });
  return { previews, output, callback };
}

async function withScheduler<T>(scheduler: Scheduler, run: () => Promise<T>): Promise<T> {
  const own = tiny.scheduler;
  tiny.scheduler = scheduler;
  try {
    return await run();
  } finally {
    tiny.scheduler = own;
  }
}

const meanAbsoluteDifference = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i] - b[i]);
  return sum / a.length;
};

/** An independent average pool (the test's oracle for what a VAE decode looks like at latent size). */
function pooled(image: RgbImage, factor: number): Float64Array {
  const width = image.width / factor;
  const out = new Float64Array((image.height / factor) * width * 3);
  image.data.forEach((value, index) => {
    const pixel = Math.floor(index / 3);
    const [x, y] = [pixel % image.width, Math.floor(pixel / image.width)];
    out[3 * (Math.floor(y / factor) * width + Math.floor(x / factor)) + (index % 3)] += value / factor ** 2;
  });
  return out;
}

describe('latentsToRgb and the factor tables', () => {
  it('gives the seed guide’s SDXL picture (its R, G, B rows over the channels, biases 150, 140, 130)', () => {
    const latents = new Tensor(Float32Array.from({ length: 2 * 4 * 6 }, (_, i) => Math.sin(i) * 1.5), [2, 4, 2, 3]);
    const guide = [[60, -60, 25, -70], [60, -5, 15, -50], [60, 10, -5, -35]];
    const images = latentsToRgb(latents, SDXL_LATENT_RGB_FACTORS);
    expect(images.map(({ width, height, channels }) => [width, height, channels])).toEqual([[3, 2, 3], [3, 2, 3]]);
    images.forEach((image, b) => {
      for (let pixel = 0; pixel < 6; pixel++) {
        for (let rgb = 0; rgb < 3; rgb++) {
          let value = [150, 140, 130][rgb];
          for (let channel = 0; channel < 4; channel++) value += guide[rgb][channel] * latents.data[(b * 4 + channel) * 6 + pixel];
          expect(Math.abs(image.data[pixel * 3 + rgb] - Math.min(255, Math.max(0, value)))).toBeLessThanOrEqual(0.5);
        }
      }
    });
  });

  it('maps the SD table’s [−1, 1] onto 0–255, clamped', () => {
    // Channel 0 alone: R = 0.3512 · v. v = ±1/0.3512 gives R = ±1; ±10 saturates.
    const latents = new Tensor(new Float32Array([1 / 0.3512, -1 / 0.3512, 10, -10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), [1, 4, 1, 4]);
    const [image] = latentsToRgb(latents, SD_LATENT_RGB_FACTORS);
    expect([0, 1, 2, 3].map((pixel) => image.data[3 * pixel])).toEqual([255, 0, 255, 0]);
    expect(image.data[3 * 0 + 1]).toBe(Math.round(((0.2297 / 0.3512 + 1) / 2) * 255));
  });

  it('refuses latents whose channels do not match the table, and latents that are not 4-D', () => {
    expect(() => latentsToRgb(Tensor.zeros([1, 16, 2, 2]), SD_LATENT_RGB_FACTORS)).toThrow(/4 channel rows but the latents have 16 channels/);
    expect(() => latentsToRgb(Tensor.zeros([4, 2, 2]), SD_LATENT_RGB_FACTORS)).toThrow(InvalidArgumentError);
  });
});

describe('LatentPreviewCallback options', () => {
  const onPreview = () => undefined;
  it.each([
    [{}, /needs onPreview/],
    [{ onPreview, every: 0 }, /every must be a positive integer/],
    [{ onPreview, every: 1.5 }, /every must be a positive integer/],
    [{ onPreview, method: 'taesd' }, /method must be 'linear' or 'vae'/],
    [{ onPreview, source: 'noise' }, /source must be 'denoised' or 'latents'/],
    [{ onPreview, method: 'vae', factors: 'fit' }, /factors apply to method 'linear' only/],
    [{ onPreview, factors: { weights: [[1, 2]], bias: [0, 0, 0], range: [0, 1] } }, /factors.weights must hold one \[r, g, b\] row/],
    [{ onPreview, factors: { weights: [[1, 2, 3]], bias: [0, 0], range: [0, 1] } }, /factors.bias must be \[r, g, b\]/],
    [{ onPreview, factors: { weights: [[1, 2, 3]], bias: [0, 0, 0], range: [1, 1] } }, /factors.range must be \[lo, hi\] with lo < hi/],
  ])('rejects %p', (options, message) => {
    expect(() => new LatentPreviewCallback(options as LatentPreviewCallbackOptions)).toThrow(InvalidArgumentError);
    expect(() => new LatentPreviewCallback(options as LatentPreviewCallbackOptions)).toThrow(message);
  });

  it('asks for the x0 estimate only as an optional input, and runs after the other callbacks', () => {
    expect(new LatentPreviewCallback({ onPreview })).toMatchObject({ tensorInputs: ['latents'], optionalTensorInputs: ['predOriginalSample'], enforce: 'post' });
    expect(new LatentPreviewCallback({ onPreview, source: 'latents' }).optionalTensorInputs).toEqual([]);
  });
});

describe('LatentPreviewCallback on the tiny SD model', () => {
  it('previews every `every` steps and always the last, one latent-size picture per image', async () => {
    const { previews } = await previewsOf({ every: 2 }, { numImagesPerPrompt: 2 });
    expect(previews.map((preview) => preview.stepIndex)).toEqual([1, 3, 4]);
    expect(previews.every((preview) => preview.numTimesteps === 5 && preview.source === 'denoised')).toBe(true);
    for (const { images } of previews) expect(images.map(({ width, height, data }) => [width, height, data.length])).toEqual([[8, 8, 192], [8, 8, 192]]);
    expect((await previewsOf({})).previews.map((preview) => preview.stepIndex)).toEqual([0, 1, 2, 3, 4]);
  });

  it("'vae' decodes full-size pictures; the last preview of the latents is the output", async () => {
    const { previews, output } = await previewsOf({ method: 'vae', source: 'latents', every: 3 });
    expect(previews.map((preview) => preview.stepIndex)).toEqual([2, 4]);
    expect(previews[0].images.map(({ width, height }) => [width, height])).toEqual([[64, 64]]);
    expect(previews[1].images).toEqual(output.images);
  });

  it('previews the step after which another callback interrupts', async () => {
    const stopAtStep2 = (pipeline: CallbackPipeline, stepIndex: number) => void (pipeline.interrupt = stepIndex === 2);
    const previews: number[] = [];
    const preview = new LatentPreviewCallback({ every: 10, onPreview: ({ stepIndex }) => void previews.push(stepIndex) });
    const output = await tiny.generate({ prompt, numInferenceSteps: 5, callbackOnStepEnd: [preview, stopAtStep2] });
    expect([output.interruptedAtStep, previews]).toEqual([2, [2]]);
  });

  it.each([
    ['DDIM', () => tiny.components.scheduler],
    ['Euler', () => EulerDiscreteScheduler.fromConfig(tiny.components.scheduler.config)],
  ])('with %s, the early x0 preview is closer to the final picture than the latents preview', async (_name, scheduler) => {
    const denoised: LatentPreview[] = [];
    const latents: LatentPreview[] = [];
    await withScheduler(scheduler(), () =>
      tiny.generate({
        prompt,
        numInferenceSteps: 20,
        generator: new Generator().manualSeed(3),
        callbackOnStepEnd: [
          new LatentPreviewCallback({ onPreview: (preview) => void denoised.push(preview) }),
          new LatentPreviewCallback({ source: 'latents', onPreview: (preview) => void latents.push(preview) }),
        ],
      }),
    );
    const final = latents[19].images[0].data;
    const early = 4; // a fifth of the way: the ratio measured 0.43–0.54 (DDIM), 0.29–0.37 (Euler) over seeds 0–4
    const x0Error = meanAbsoluteDifference(denoised[early].images[0].data, final);
    const latentsError = meanAbsoluteDifference(latents[early].images[0].data, final);
    expect(denoised[early].source).toBe('denoised');
    expect(x0Error).toBeLessThan(0.7 * latentsError);
  });

  it('falls back to the latents where the scheduler computes no x0 (PNDM)', async () => {
    const { previews } = await withScheduler(PNDMScheduler.fromConfig(tiny.components.scheduler.config), () => previewsOf({}));
    expect(previews).toHaveLength(previews[0].numTimesteps); // PNDM's schedule has more timesteps than inference steps
    expect(new Set(previews.map((preview) => preview.source))).toEqual(new Set(['latents']));
  });
});

describe('fitLatentRgbFactors', () => {
  /** A VAE that is exactly linear: each latent pixel becomes a `factor × factor` square of one colour. */
  function linearVae(factors: LatentRgbFactors, factor = 4) {
    return {
      latentChannels: factors.weights.length,
      vaeScaleFactor: factor,
      decodeLatents: async (latents: Tensor<'float32'>) => {
        const [batch, , height, width] = latents.shape;
        const small = latentsToRgb(latents, factors);
        return Array.from({ length: batch }, (_, b) => {
          const data = new Uint8Array(height * width * factor * factor * 3);
          for (let y = 0; y < height * factor; y++) {
            for (let x = 0; x < width * factor; x++) {
              const from = 3 * (Math.floor(y / factor) * width + Math.floor(x / factor));
              data.set(small[b].data.subarray(from, from + 3), 3 * (y * width * factor + x));
            }
          }
          return { data, width: width * factor, height: height * factor, channels: 3 as const };
        });
      },
    };
  }

  it('recovers the factors of a linear decoder', async () => {
    const truth: LatentRgbFactors = { weights: [[20, -10, 5], [0, 30, -15], [-25, 5, 10]], bias: [120, 110, 130], range: [0, 255] };
    const fitted = await fitLatentRgbFactors(linearVae(truth), { height: 16, width: 16 });
    expect(fitted.range).toEqual([0, 255]);
    fitted.weights.flat().forEach((weight, i) => expect(weight).toBeCloseTo(truth.weights.flat()[i], 0));
    fitted.bias.forEach((bias, i) => expect(bias).toBeCloseTo(truth.bias[i], 0));
  });

  it('says what is wrong with its inputs', async () => {
    const vae = linearVae(SD_LATENT_RGB_FACTORS);
    await expect(fitLatentRgbFactors(vae, { latents: Tensor.zeros([1, 4, 8, 8]) })).rejects.toThrow(/do not vary enough/);
    await expect(fitLatentRgbFactors(vae, { samples: 0 })).rejects.toThrow(/samples must be a positive integer/);
    await expect(fitLatentRgbFactors({ ...vae, vaeScaleFactor: 8 })).rejects.toThrow(/expected vaeScaleFactor \(8\) times the latent size/);
    await expect(fitLatentRgbFactors({} as never)).rejects.toThrow(/needs \{ decodeLatents, latentChannels, vaeScaleFactor \}/);
  });

  it("fits the tiny model's VAE clearly better than the SD 1.x table, inside a preview with factors: 'fit'", async () => {
    let context: CallbackPipeline | undefined;
    const finals: Tensor[] = [];
    const scenes = ['a small yellow star on the left on a black background', 'a green square on a white background', 'a purple triangle at the top on a orange background', prompt];
    for (const [seed, scene] of scenes.entries()) {
      const { images } = await tiny.generate({
        prompt: scene, numInferenceSteps: 10, generator: new Generator().manualSeed(seed), outputType: 'latent',
        callbackOnStepEnd: (pipeline) => void (context = pipeline),
      });
      finals.push(images);
    }
    const { callback } = await previewsOf({ factors: 'fit' });
    const fitted = callback.fittedFactors as LatentRgbFactors;
    const errorOf = async (factors: LatentRgbFactors) => {
      let sum = 0;
      for (const latents of finals) {
        const [decoded] = await (context as CallbackPipeline).decodeLatents(latents);
        sum += meanAbsoluteDifference(latentsToRgb(latents, factors)[0].data, pooled(decoded, 8));
      }
      return sum / finals.length;
    };
    const [fittedError, tableError] = [await errorOf(fitted), await errorOf(SD_LATENT_RGB_FACTORS)];
    // Measured: fitted ≈ 40, SD table ≈ 80 (mean absolute error per channel, 0–255; a linear map's floor is ≈ 32).
    expect(fittedError).toBeLessThan(0.6 * tableError);
  });

  it("keeps its fit for the instance's lifetime and refuses another model family", async () => {
    const { callback } = await previewsOf({ factors: 'fit' });
    const fitted = callback.fittedFactors;
    await tiny.generate({ prompt, numInferenceSteps: 2, callbackOnStepEnd: callback });
    expect(callback.fittedFactors).toBe(fitted);
    const sdxl = createCallbackTestContext({ modelFamily: 'stable-diffusion-xl' });
    await expect(callback.onStepEnd(sdxl, 9, 1, { latents: Tensor.zeros([1, 4, 8, 8]) })).rejects.toThrow(/fitted for a 4-channel stable-diffusion model/);
  });
});

describe('on SDXL (toy pipeline)', () => {
  it('uses the SDXL table and the x0 estimate', async () => {
    const dir = join(work, 'sdxl');
    await writeToyPipeline(dir, 'sdxl');
    const pipeline = await StableDiffusionXLPipeline.fromPretrained(dir);
    try {
      const seen: Tensor[] = [];
      const previews: LatentPreview[] = [];
      await pipeline.generate({
        prompt: 'a red cat', numInferenceSteps: 3, height: 16, width: 16, numImagesPerPrompt: 2,
        callbackOnStepEndTensorInputs: ['predOriginalSample'],
        callbackOnStepEnd: [new LatentPreviewCallback({ onPreview: (preview) => void previews.push(preview) }), (_p, _s, _t, kwargs) => void seen.push(kwargs.predOriginalSample)],
      });
      expect(previews.map((preview) => [preview.stepIndex, preview.source, preview.images.length])).toEqual([[0, 'denoised', 2], [1, 'denoised', 2], [2, 'denoised', 2]]);
      previews.forEach((preview, step) => expect(preview.images).toEqual(latentsToRgb(seen[step], SDXL_LATENT_RGB_FACTORS)));
    } finally {
      await pipeline.dispose();
    }
  });
});

describe('savePreviews', () => {
  const listPngs = async (dir: string) => (await readdir(dir)).sort();

  it('writes the previews in step order, the last one included, atomically', async () => {
    const dir = join(work, 'single');
    const writer = savePreviews(dir);
    await previewsOf({ every: 2, onPreview: writer.onPreview });
    await writer.done();
    expect(await listPngs(dir)).toEqual(['step-001.png', 'step-003.png', 'step-004.png']);
    expect(writer.written).toEqual(['step-001.png', 'step-003.png', 'step-004.png'].map((name) => join(dir, name)));
    expect(await sharp(join(dir, 'step-004.png')).metadata()).toMatchObject({ format: 'png', width: 8, height: 8, channels: 3 });
  });

  it('names pictures per image for a batch, and keeps the order of a burst of previews', async () => {
    const dir = join(work, 'batch');
    const writer = savePreviews(dir);
    await previewsOf({ onPreview: writer.onPreview }, { numImagesPerPrompt: 2, numInferenceSteps: 2 });
    await writer.done();
    expect(await listPngs(dir)).toEqual(['image-0-step-000.png', 'image-0-step-001.png', 'image-1-step-000.png', 'image-1-step-001.png']);

    const burst = savePreviews(join(work, 'burst'), { fileName: ({ stepIndex }) => `${stepIndex}.png` });
    const image = { data: new Uint8Array(12), width: 2, height: 2, channels: 3 as const };
    for (let stepIndex = 0; stepIndex < 30; stepIndex++) burst.onPreview({ stepIndex, timestep: 0, numTimesteps: 30, images: [image], source: 'latents' });
    await burst.done();
    expect(burst.written.map((path) => Number(path.split('/').pop()?.replace('.png', '')))).toEqual(Array.from({ length: 30 }, (_, i) => i));
  });

  it('reports a failed write from done() and writes nothing after it', async () => {
    const file = join(work, 'not-a-folder');
    await writeFile(file, '');
    const writer = savePreviews(join(file, 'previews'));
    await previewsOf({ onPreview: writer.onPreview });
    await expect(writer.done()).rejects.toThrow(/ENOTDIR|EEXIST/);
    expect(writer.written).toEqual([]);
    expect(() => savePreviews('')).toThrow(InvalidArgumentError);
  });
});

describe('registry descriptor', () => {
  const registry = new CallbackRegistry([plugin]);

  it("creates the callback by name with JSON options, and onPreview from the runtime", () => {
    const onPreview = () => undefined;
    const callback = registry.create('preview', { every: 5, method: 'vae' }, { onPreview });
    expect(callback).toBeInstanceOf(LatentPreviewCallback);
    expect(callback).toMatchObject({ every: 5, method: 'vae', source: 'denoised' });
    expect(plugin.optionsJsonSchema.properties).toMatchObject({ every: { default: 1, minimum: 1 }, method: { default: 'linear', enum: ['linear', 'vae'] }, source: { default: 'denoised' } });
  });

  it('needs onPreview at runtime, and checks the options', () => {
    expect(() => registry.create('preview', {})).toThrow(/needs onPreview at runtime/);
    expect(() => registry.create('preview', { every: 0 }, { onPreview: () => undefined })).toThrow(/Invalid options for callback plugin "preview": every/);
    expect(() => registry.create('preview', { factors: 'fit' } as never, { onPreview: () => undefined })).toThrow(InvalidArgumentError);
  });
});

describe('the built package', () => {
  it('loads neither onnxruntime-node nor sharp on import', async () => {
    const script = [
      "import { createRequire } from 'node:module';",
      `await import(${JSON.stringify(join(packageDir, 'dist', 'index.js'))});`,
      'console.log(JSON.stringify(Object.keys(createRequire(import.meta.url).cache).filter((key) => /onnxruntime|sharp/.test(key))));',
    ].join('\n');
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script]);
    expect(JSON.parse(stdout)).toEqual([]);
  });
});

// Type-level checks: compiled by the test script's `tsc --noEmit`, never run.
export function typeChecks(): void {
  const sd: StableDiffusionOptions['callbackOnStepEnd'] = new LatentPreviewCallback({ onPreview: () => undefined });
  const sdxl: StableDiffusionXLOptions['callbackOnStepEnd'] = new LatentPreviewCallback({ onPreview: async () => undefined });
  void sd;
  void sdxl;
}
