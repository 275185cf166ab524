import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
// Every fault class the soak benchmark (bench/soak.bench.mjs) measures at scale, small enough for CI: fuzzed options
// on every pipeline, corrupt model folders, non-finite tensors, bad callback results, hanging callbacks, the size
// limit, atomic saves and lazily loaded models that failed once.
import fc from 'fast-check';
import sharp from 'sharp';
import type { CallbackKwargs, CallbackPipeline } from './contract.js';
import { AbortError, InvalidArgumentError, ModelLoadError, NonFiniteError } from './errors.js';
import { saveImage } from './pipelines/images.js';
import { decodeLatents } from './pipelines/steps.js';
import type { OnnxModel } from './runtime/onnx-model.js';
import { Tensor } from './tensor.js';
import { memoizeSuccess } from './util/memoize.js';
import { StableDiffusionPipeline } from './pipelines/stable-diffusion.js';
import { StableDiffusionImg2ImgPipeline } from './pipelines/stable-diffusion-img2img.js';
import { StableDiffusionInpaintPipeline } from './pipelines/stable-diffusion-inpaint.js';
import { StableDiffusionControlNetPipeline } from './pipelines/stable-diffusion-controlnet.js';
import { StableDiffusionXLPipeline } from './pipelines/stable-diffusion-xl.js';
import { StableDiffusionXLImg2ImgPipeline } from './pipelines/stable-diffusion-xl-img2img.js';
import { StableDiffusionXLInpaintPipeline } from './pipelines/stable-diffusion-xl-inpaint.js';
import { StableDiffusionXLControlNetPipeline } from './pipelines/stable-diffusion-xl-controlnet.js';
import { writeToyPipeline } from './testing/toy-models.js';
import { CORRUPT_MODEL_CASES, describeFailure, faultCaseArbitrary, isFailure, runCorruptModelCase, runFaultCase, type FuzzTarget } from './testing/fault-cases.js';

let dir: string;
let targets: FuzzTarget[];
const disposers: Array<() => Promise<void>> = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diff-reliability-'));
  const folder = async (kind: Parameters<typeof writeToyPipeline>[1]) => {
    const path = join(dir, kind);
    await writeToyPipeline(path, kind);
    return path;
  };
  const [sdDir, controlDir, xlDir, xlControlDir] = await Promise.all([folder('sd'), folder('sd-controlnet'), folder('sdxl'), folder('sdxl-controlnet')]);
  const sd = await StableDiffusionPipeline.fromPretrained(sdDir);
  const control = await StableDiffusionControlNetPipeline.fromPretrained(controlDir);
  const xl = await StableDiffusionXLPipeline.fromPretrained(xlDir);
  const xlControl = await StableDiffusionXLControlNetPipeline.fromPretrained(xlControlDir);
  disposers.push(() => sd.dispose(), () => control.dispose(), () => xl.dispose(), () => xlControl.dispose());
  const target = (name: string, pipeline: unknown, family: FuzzTarget['family'], inputs: FuzzTarget['inputs']): FuzzTarget =>
    ({ name, pipeline: pipeline as FuzzTarget['pipeline'], family, inputs, side: 16, vaeScaleFactor: 8 });
  targets = [
    target('StableDiffusionPipeline', sd, 'sd', 'text'),
    target('StableDiffusionImg2ImgPipeline', StableDiffusionImg2ImgPipeline.fromPipe(sd), 'sd', 'image'),
    target('StableDiffusionInpaintPipeline', StableDiffusionInpaintPipeline.fromPipe(sd), 'sd', 'inpaint'),
    target('StableDiffusionControlNetPipeline', control, 'sd', 'control'),
    target('StableDiffusionXLPipeline', xl, 'sdxl', 'text'),
    target('StableDiffusionXLImg2ImgPipeline', StableDiffusionXLImg2ImgPipeline.fromPipe(xl), 'sdxl', 'image'),
    target('StableDiffusionXLInpaintPipeline', StableDiffusionXLInpaintPipeline.fromPipe(xl), 'sdxl', 'inpaint'),
    target('StableDiffusionXLControlNetPipeline', xlControl, 'sdxl', 'control'),
  ];
});

afterAll(async () => {
  await Promise.all(disposers.map((dispose) => dispose()));
  await rm(dir, { recursive: true, force: true });
});

describe('fuzzed generate options', () => {
  it('fail only with DiffErrors, never hang and never give a NaN picture', async () => {
    const cases = fc.sample(faultCaseArbitrary(targets.length), { numRuns: 200, seed: 20240514 });
    const failures: string[] = [];
    for (const spec of cases) {
      const outcome = await runFaultCase(targets[spec.target], spec, { scratchDir: dir, hangMs: 5000 });
      if (isFailure(outcome)) failures.push(describeFailure(targets[spec.target], spec, outcome));
    }
    expect(failures).toEqual([]);
  });
});

describe('corrupt model folders', () => {
  it.each(CORRUPT_MODEL_CASES.map((modelCase) => [modelCase.name, modelCase] as const))('%s: a DiffError naming the file', async (_name, modelCase) => {
    const problem = await runCorruptModelCase(modelCase, {
      prepare: (folder) => writeToyPipeline(folder, 'sd').then(() => undefined),
      load: (folder) => StableDiffusionPipeline.fromPretrained(folder),
      generateOptions: { prompt: 'a red circle', numInferenceSteps: 1, height: 16, width: 16, outputType: 'np' },
    });
    expect(problem).toBeUndefined();
  });
});

/** The toy SD text-to-image pipeline of the fuzz targets, and options for a 16×16 run. */
const sd = () => targets[0].pipeline as unknown as StableDiffusionPipeline;
const quick = { prompt: 'a red circle', numInferenceSteps: 3, height: 16, width: 16, outputType: 'latent' } as const;

describe('non-finite latents', () => {
  it('stop the run at the step, naming the tensor and the callback that wrote it', async () => {
    const run = sd().generate({
      ...quick,
      callbackOnStepEnd: function nanWriter(_state: CallbackPipeline, step: number, _t: number, kwargs: CallbackKwargs<'latents'>) {
        if (step === 1) return { latents: new Tensor(new Float32Array(kwargs.latents.size).fill(Number.NaN), kwargs.latents.shape) };
      },
    });
    await expect(run).rejects.toThrow(NonFiniteError);
    await expect(run).rejects.toMatchObject({
      code: 'NON_FINITE',
      tensorName: 'latents',
      stepIndex: 1,
      writtenBy: { callbackName: 'nanWriter', hook: 'onStepEnd', stepIndex: 1 },
      message: expect.stringMatching(/after step 1: they were last replaced by callback "nanWriter" in onStepEnd at step 1/),
    });
  });

  it('name the callbacks that could have edited them in place, and a non-finite tensor another callback wrote', async () => {
    const run = sd().generate({
      ...quick,
      callbackOnStepEndTensorInputs: ['latents', 'promptEmbeds'],
      callbackOnStepEnd: [
        function poisonsEmbeddings(_state: CallbackPipeline, step: number, _t: number, kwargs: CallbackKwargs<'latents' | 'promptEmbeds'>) {
          if (step === 0) return { ...kwargs, promptEmbeds: new Tensor(new Float32Array(kwargs.promptEmbeds.size).fill(Number.POSITIVE_INFINITY), kwargs.promptEmbeds.shape) };
        },
        function reader() {},
      ],
    });
    await expect(run).rejects.toThrow(
      /after step 1: no callback replaced them, so the UNet's prediction or the scheduler step made them \(or an in-place edit by "poisonsEmbeddings", "reader", which received them\)\. Not finite either: promptEmbeds \(last replaced by callback "poisonsEmbeddings" in onStepEnd at step 0\)/,
    );
  });

  it('written in place into the data are caught at the same step', async () => {
    const run = sd().generate({ ...quick, callbackOnStepEnd: (_state, step, _t, kwargs) => void (step === 0 && (kwargs.latents.data[3] = Number.NaN)) });
    await expect(run).rejects.toMatchObject({ stepIndex: 0, message: expect.stringMatching(/\(1 of 16 values\) after step 0/) });
  });

  it('made by a step-begin callback are caught even when the run is interrupted then', async () => {
    const run = sd().generate({
      ...quick,
      callbackOnStepBegin: function beginsBadly(state: CallbackPipeline, _step: number, _t: number, kwargs: CallbackKwargs<'latents'>) {
        state.interrupt = true;
        return { latents: new Tensor(new Float32Array(kwargs.latents.size).fill(Number.NaN), kwargs.latents.shape) };
      },
    });
    await expect(run).rejects.toMatchObject({ writtenBy: { callbackName: 'beginsBadly', hook: 'onStepBegin' } });
  });

  it('from a decoder are an error naming the VAE, not black pixels', async () => {
    const brokenVae = { path: '/models/vae_decoder/model.onnx', run: async () => ({ sample: new Tensor(new Float32Array([0, Number.NaN, 0]), [1, 3, 1, 1]) }) };
    await expect(decodeLatents(brokenVae as unknown as OnnxModel, Tensor.zeros([1, 4, 1, 1]), 0.18215)).rejects.toThrow(
      /\/models\/vae_decoder\/model\.onnx: the VAE decoder returned NaN or Infinity for finite latents/,
    );
  });

  it('a callback may not set a non-finite guidance scale', async () => {
    const run = sd().generate({ ...quick, callbackOnStepEnd: function nanScale(state) { state.guidanceScale = Number.NaN; } });
    await expect(run).rejects.toThrow(/Callback "nanScale" failed in onStepEnd at step 0: guidanceScale must be a finite number/);
  });
});

describe('callback results', () => {
  it('of the wrong shape name the callback, whether returned or assigned in place', async () => {
    const flat = (kwargs: CallbackKwargs<'latents'>) => kwargs.latents.reshape([kwargs.latents.size]);
    await expect(sd().generate({ ...quick, callbackOnStepEnd: function returnsFlat(_s, _i, _t, kwargs) { return { latents: flat(kwargs) }; } })).rejects.toThrow(
      /Callback "returnsFlat" failed in onStepEnd at step 0: it returned "latents" of shape \[16\] for one of shape \[1, 4, 2, 2\]: the latents must keep their shape/,
    );
    await expect(sd().generate({ ...quick, callbackOnStepEnd: function assignsFlat(_s, _i, _t, kwargs) { kwargs.latents = flat(kwargs); } })).rejects.toThrow(
      /Callback "assignsFlat" failed/,
    );
  });

  it('may change the rows of other tensors but nothing else', async () => {
    const run = sd().generate({
      ...quick,
      callbackOnStepEndTensorInputs: ['latents', 'promptEmbeds'],
      callbackOnStepEnd: function widens(_s, _i, _t, kwargs) {
        return { ...kwargs, promptEmbeds: Tensor.cat([kwargs.promptEmbeds, kwargs.promptEmbeds], -1) };
      },
    });
    await expect(run).rejects.toThrow(/"widens" failed in onStepEnd at step 0: it returned "promptEmbeds" of shape \[2, 77, 16\] for one of shape \[2, 77, 8\]: only the first axis \(rows\) may change/);
  });

  it('that never settle end with an AbortError once the signal fires', async () => {
    const controller = new AbortController();
    const started = Date.now();
    const run = sd().generate({
      ...quick,
      signal: controller.signal,
      callbackOnStepEnd: () => {
        setTimeout(() => controller.abort(), 5);
        return new Promise<never>(() => undefined);
      },
    });
    await expect(run).rejects.toThrow(AbortError);
    expect(Date.now() - started).toBeLessThan(2000);
  });
});

describe('size limit', () => {
  it('refuses a request over maxPixels before any model runs, saying how to raise it', async () => {
    const { pool } = sd().components;
    const runs = pool.runCount;
    await expect(sd().generate({ ...quick, height: 800_000, width: 800_000 })).rejects.toThrow(
      /800000×800000 × 1 image\(s\) is 640000000000 pixels, over this pipeline's limit of 8388608 \(maxPixels; .*fromPretrained\(dir, \{ maxPixels \}\)/,
    );
    await expect(sd().generate({ ...quick, height: 1024, width: 1024, numImagesPerPrompt: 9 })).rejects.toThrow(InvalidArgumentError);
    expect(pool.runCount).toBe(runs);
  });

  it('is set per pipeline through the load options, counting every image of the batch', async () => {
    const small = await StableDiffusionPipeline.fromPretrained(join(dir, 'sd'), { maxPixels: 16 * 16 * 2 });
    try {
      await expect(small.generate({ ...quick, numImagesPerPrompt: 2 })).resolves.toBeDefined();
      await expect(small.generate({ ...quick, prompt: ['a', 'b'], numImagesPerPrompt: 2 })).rejects.toThrow(/16×16 × 4 image\(s\) is 1024 pixels, over this pipeline's limit of 512/);
    } finally {
      await small.dispose();
    }
    await expect(StableDiffusionPipeline.fromPretrained(join(dir, 'sd'), { maxPixels: Number.NaN })).rejects.toThrow(/maxPixels must be a number ≥ 64/);
  });
});

describe('option kinds', () => {
  it.each([
    ['prompt', { prompt: 42 }, /prompt must be a string or a non-empty array of strings, got 42/],
    ['negativePrompt', { negativePrompt: { text: 'x' } }, /negativePrompt must be a string or a non-empty array of strings, got \[object Object\]/],
    ['callbackOnStepEndTensorInputs', { callbackOnStepEnd: () => undefined, callbackOnStepEndTensorInputs: 'latents' }, /callbackOnStepEndTensorInputs must be an array of tensor names/],
    ['generator', { generator: {} }, /generator must be a Generator/],
    ['latents', { latents: new Tensor(new Float32Array(16).fill(Number.NaN), [1, 4, 2, 2]) }, /latents holds NaN or Infinity/],
  ])('%s of the wrong kind is an InvalidArgumentError', async (_name, options, message) => {
    await expect(sd().generate({ ...quick, ...(options as object) })).rejects.toThrow(message);
    await expect(sd().generate({ ...quick, ...(options as object) })).rejects.toThrow(InvalidArgumentError);
  });
});

describe('saveImage', () => {
  const picture = { data: new Uint8Array(4 * 4 * 3).fill(200), width: 4, height: 4, channels: 3 } as const;

  it('writes through a temporary file in the same folder and leaves nothing else behind', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'diff-save-'));
    try {
      await saveImage(picture, join(folder, 'out.png'));
      await saveImage({ ...picture, data: new Uint8Array(48).fill(10) }, join(folder, 'out.png'));
      expect(await readdir(folder)).toEqual(['out.png']);
      expect((await sharp(join(folder, 'out.png')).raw().toBuffer())[0]).toBe(10);
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });

  it('keeps the previous file and removes the temporary one when the write fails', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'diff-save-'));
    try {
      await writeFile(join(folder, 'out.xyz'), 'previous');
      await expect(saveImage(picture, join(folder, 'out.xyz'))).rejects.toThrow(InvalidArgumentError);
      await mkdir(join(folder, 'taken.png'));
      await expect(saveImage(picture, join(folder, 'taken.png'))).rejects.toThrow();
      expect((await readdir(folder)).sort()).toEqual(['out.xyz', 'taken.png']);
      expect(await readFile(join(folder, 'out.xyz'), 'utf8')).toBe('previous');
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });
});

describe('lazily loaded models', () => {
  it('are loaded again after a failed load instead of failing forever', async () => {
    const folder = join(dir, 'sd-controlnet');
    const unetFile = join(folder, 'unet', 'model.onnx');
    const control = await StableDiffusionControlNetPipeline.fromPretrained(folder);
    try {
      await rename(unetFile, `${unetFile}.away`);
      await expect(control.residualNames()).rejects.toThrow(ModelLoadError);
      await rename(`${unetFile}.away`, unetFile);
      await expect(control.residualNames()).resolves.toMatchObject({ inputs: expect.arrayContaining(['mid_block_additional_residual']) });
    } finally {
      await control.dispose();
    }
  });

  it('share one load while it succeeds', async () => {
    let calls = 0;
    const load = memoizeSuccess(async () => {
      calls += 1;
      if (calls === 1) throw new Error('disk busy');
      return calls;
    });
    await expect(load()).rejects.toThrow('disk busy');
    const [first, second] = await Promise.all([load(), load()]);
    expect([first, second, await load(), calls]).toEqual([2, 2, 2, 2]);
  });
});
