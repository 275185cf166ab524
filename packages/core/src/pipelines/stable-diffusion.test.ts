import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeToyPipeline } from '../testing/toy-models.js';
import type { CallbackKwargs, CallbackPipeline, StableDiffusionTensorName } from '../contract.js';
import { AbortError, CallbackError, InvalidArgumentError, ModelLoadError } from '../errors.js';
import { Generator } from '../random/generator.js';
import { DDIMScheduler } from '../schedulers/index.js';
import { Tensor } from '../tensor.js';
import { StableDiffusionPipeline, type StableDiffusionOptions } from './stable-diffusion.js';

let dir: string;
let pipeline: StableDiffusionPipeline;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diff-sd-'));
  await writeToyPipeline(dir, 'sd');
  pipeline = await StableDiffusionPipeline.fromPretrained(dir);
});

afterAll(async () => {
  await pipeline.dispose();
  await rm(dir, { recursive: true, force: true });
});

const base = { prompt: 'a red circle', numInferenceSteps: 4, height: 16, width: 16 } as const;
async function latentsOf<const Requested extends StableDiffusionTensorName = 'latents'>(
  options: Partial<StableDiffusionOptions<Requested, 'latent'>> = {},
  seed = 0,
): Promise<Tensor> {
  const output = await pipeline.generate<Requested, 'latent'>({ ...base, generator: new Generator().manualSeed(seed), outputType: 'latent', ...options });
  return output.images;
}

describe('StableDiffusionPipeline', () => {
  it('returns RGB pictures, NHWC floats or latents', async () => {
    const images = await pipeline.generate({ ...base, generator: new Generator().manualSeed(0) });
    expect(images.images).toHaveLength(1);
    expect(images.images[0]).toMatchObject({ width: 16, height: 16, channels: 3 });
    expect(images.images[0].data).toHaveLength(16 * 16 * 3);
    const np = await pipeline.generate({ ...base, outputType: 'np', numImagesPerPrompt: 2 });
    expect(np.images.shape).toEqual([2, 16, 16, 3]);
    expect((await latentsOf()).shape).toEqual([1, 4, 2, 2]);
  });

  it('is deterministic for a seed and differs across seeds', async () => {
    expect((await latentsOf({}, 5)).data).toEqual((await latentsOf({}, 5)).data);
    expect((await latentsOf({}, 5)).data).not.toEqual((await latentsOf({}, 6)).data);
  });

  it('gives a callback the requested tensors at every step, CFG-doubled embeddings included', async () => {
    const seen: Array<{ step: number; timestep: number; rows: number; latents: readonly number[] }> = [];
    await latentsOf({
      callbackOnStepEnd: (state, step, timestep, kwargs) => {
        seen.push({ step, timestep, rows: kwargs.promptEmbeds.shape[0], latents: kwargs.latents.shape });
        expect(state.numTimesteps).toBe(5); // PNDM repeats one timestep: N steps, N + 1 UNet calls
      },
      callbackOnStepEndTensorInputs: ['latents', 'promptEmbeds'],
    });
    expect(seen.map((entry) => entry.step)).toEqual([0, 1, 2, 3, 4]);
    expect(seen.every((entry) => entry.rows === 2 && entry.latents.join() === '1,4,2,2')).toBe(true);
  });

  it('writes returned latents back into the loop', async () => {
    const plain = await latentsOf({}, 1);
    const constant = await latentsOf(
      { callbackOnStepEnd: (_state, step, _t, kwargs) => (step === 4 ? { latents: new Tensor(new Float32Array(kwargs.latents.size).fill(0.25), kwargs.latents.shape) } : kwargs) },
      1,
    );
    expect(Array.from(constant.data)).toEqual(Array(16).fill(0.25));
    const halvedMidway = await latentsOf(
      { callbackOnStepEnd: (_state, step, _t, kwargs) => (step === 2 ? { latents: new Tensor(kwargs.latents.data.map((value) => value / 2), kwargs.latents.shape) } : kwargs) },
      1,
    );
    expect(halvedMidway.data).not.toEqual(plain.data);
  });

  it('turns guidance off when a callback sets guidanceScale 0 and halves the embeddings', async () => {
    const rows: number[] = [];
    await latentsOf({
      callbackOnStepEnd: [
        (state: CallbackPipeline, step: number, _t: number, kwargs: CallbackKwargs<'latents' | 'promptEmbeds'>) => {
          if (step !== 1) return kwargs;
          state.guidanceScale = 0;
          return { ...kwargs, promptEmbeds: kwargs.promptEmbeds.chunk(2)[1] };
        },
        (_state: CallbackPipeline, _step: number, _t: number, kwargs: CallbackKwargs<'latents' | 'promptEmbeds'>) => {
          rows.push(kwargs.promptEmbeds.shape[0]);
        },
      ],
      callbackOnStepEndTensorInputs: ['latents', 'promptEmbeds'],
    });
    expect(rows).toEqual([2, 1, 1, 1, 1]);
  });

  it('explains the fix when guidance is turned off without halving the embeddings', async () => {
    await expect(latentsOf({ callbackOnStepEnd: (state) => void (state.guidanceScale = 0) })).rejects.toThrow(
      /promptEmbeds has 2 rows but the next step needs 1: classifier-free guidance is off, so keep only the conditional half/,
    );
  });

  it('interrupt skips the remaining steps and decodes the current latents', async () => {
    const steps: number[] = [];
    const interrupted = await latentsOf({
      callbackOnStepEnd: (state, step) => {
        steps.push(step);
        if (step === 1) state.interrupt = true;
      },
    });
    expect(steps).toEqual([0, 1]);
    let atStepOne: Tensor | undefined;
    await latentsOf({ callbackOnStepEnd: (_s, step, _t, kwargs) => void (step === 1 && (atStepOne = kwargs.latents)) });
    expect(interrupted.data).toEqual(atStepOne?.data);
  });

  it('lets a callback decode the current latents for a preview', async () => {
    const previews: Array<{ width: number; height: number }> = [];
    await latentsOf({
      callbackOnStepEnd: async (state, _step, _t, kwargs) => {
        const [preview] = await state.decodeLatents(kwargs.latents);
        previews.push({ width: preview.width, height: preview.height });
      },
    });
    expect(previews).toEqual(Array(5).fill({ width: 16, height: 16 }));
  });

  it('aborts through an AbortSignal', async () => {
    const controller = new AbortController();
    const run = latentsOf({ signal: controller.signal, callbackOnStepEnd: (_s, step) => void (step === 1 && controller.abort()) });
    await expect(run).rejects.toBeInstanceOf(AbortError);
    const aborted = new AbortController();
    aborted.abort();
    await expect(latentsOf({ signal: aborted.signal })).rejects.toBeInstanceOf(AbortError);
  });

  it('reports a throwing callback with its name and step, and keeps working afterwards', async () => {
    const run = latentsOf({
      callbackOnStepEnd: function brokenPreview(_state, step) {
        if (step === 2) throw new TypeError('disk full');
      },
    });
    await expect(run).rejects.toThrow(CallbackError);
    await expect(run).rejects.toThrow('Callback "brokenPreview" failed in onStepEnd at step 2: disk full');
    expect((await latentsOf()).shape).toEqual([1, 4, 2, 2]);
  });

  it('rejects tensor names the pipeline does not have before running', async () => {
    const options = { callbackOnStepEnd: () => undefined, callbackOnStepEndTensorInputs: ['mask'] } as unknown as Partial<StableDiffusionOptions<'latents', 'latent'>>;
    await expect(latentsOf(options)).rejects.toThrow(
      'callbackOnStepEndTensorInputs asks for tensor inputs that StableDiffusionPipeline does not have: mask. Allowed: latents, promptEmbeds, negativePromptEmbeds, predOriginalSample, ipAdapterImageEmbeds.',
    );
  });

  it('runs two interleaved generations exactly as their sequential results', async () => {
    // Each callback changes its own generation's state; shared state would leak one run's change into the other.
    const lowersGuidance = (state: CallbackPipeline, step: number) => void (step === 1 && (state.guidanceScale = 2));
    const stopsEarly = (state: CallbackPipeline, step: number) => {
      if (state.guidanceScale !== 3) throw new Error(`saw guidance scale ${state.guidanceScale}`);
      if (step === 2) state.interrupt = true;
    };
    const runA = () => latentsOf({ guidanceScale: 7.5, callbackOnStepEnd: lowersGuidance }, 11);
    const runB = () => pipeline.generate({ ...base, guidanceScale: 3, callbackOnStepEnd: stopsEarly, generator: new Generator().manualSeed(12), outputType: 'latent' });
    const [sequentialA, sequentialB] = [await runA(), await runB()];
    expect(sequentialA.data).not.toEqual((await latentsOf({ guidanceScale: 7.5 }, 11)).data);
    expect(sequentialB.interruptedAtStep).toBe(2);
    const [concurrentA, concurrentB] = await Promise.all([runA(), runB()]);
    expect(concurrentA.data).toEqual(sequentialA.data);
    expect(concurrentB.images.data).toEqual(sequentialB.images.data);
    expect(concurrentB.interruptedAtStep).toBe(2);
  });

  it('keeps one generation’s interrupt and guidance away from another running at the same time', async () => {
    const expectedFull = await latentsOf({}, 3);
    const [interrupted, full] = await Promise.all([
      latentsOf({ callbackOnStepEnd: (state) => void (state.interrupt = true) }, 3),
      latentsOf({ callbackOnStepEnd: (state) => expect(state.interrupt).toBe(false) }, 3),
    ]);
    expect(full.data).toEqual(expectedFull.data);
    expect(interrupted.data).not.toEqual(expectedFull.data);
  });

  it('swaps schedulers through fromConfig, as in diffusers', async () => {
    const original = pipeline.scheduler;
    try {
      pipeline.scheduler = DDIMScheduler.fromConfig(original.config);
      const seen: number[] = [];
      await latentsOf({ callbackOnStepEnd: (state, step) => void (step === 0 && seen.push(state.numTimesteps)) });
      expect(seen).toEqual([4]);
    } finally {
      pipeline.scheduler = original;
    }
  });

  it('validates options with clear errors', async () => {
    await expect(latentsOf({ height: 20 } as never)).rejects.toThrow(/height and width must be positive multiples of 8, got 20×16/);
    await expect(latentsOf({ numInferenceSteps: 0 })).rejects.toThrow(InvalidArgumentError);
    await expect(latentsOf({ prompt: undefined })).rejects.toThrow(/Give either prompt or promptEmbeds/);
    await expect(latentsOf({ negativePrompt: ['a', 'b'] })).rejects.toThrow(/negativePrompt has 2 entries but prompt has 1/);
  });
});

describe('StableDiffusionPipeline.fromPretrained', () => {
  it('names the missing or malformed file', async () => {
    const broken = await mkdtemp(join(tmpdir(), 'diff-sd-broken-'));
    try {
      await writeToyPipeline(broken, 'sd');
      await unlink(join(broken, 'unet', 'model.onnx'));
      await expect(StableDiffusionPipeline.fromPretrained(broken)).rejects.toThrow(ModelLoadError);
      await expect(StableDiffusionPipeline.fromPretrained(broken)).rejects.toThrow(/unet[/\\]model\.onnx: is missing/);
      await writeFile(join(broken, 'model_index.json'), '{ not json');
      await expect(StableDiffusionPipeline.fromPretrained(broken)).rejects.toThrow(/model_index\.json: is not valid JSON/);
      await expect(StableDiffusionPipeline.fromPretrained(join(broken, 'nowhere'))).rejects.toThrow(/model_index\.json: cannot be read/);
    } finally {
      await rm(broken, { recursive: true, force: true });
    }
  });
});

// Type-level checks (compiled by `tsc --noEmit` in the test script, never run).
export function typeChecks(): void {
  void pipeline.generate({
    prompt: 'x',
    callbackOnStepEndTensorInputs: ['promptEmbeds'],
    callbackOnStepEnd: (_state, _step, _t, kwargs) => ({ promptEmbeds: kwargs.promptEmbeds }),
  });
  // @ts-expect-error `mask` is an inpainting tensor; text-to-image does not have it.
  void pipeline.generate({ prompt: 'x', callbackOnStepEndTensorInputs: ['mask'] });
  // @ts-expect-error SDXL's pooled embeddings do not exist in SD 1.x.
  void pipeline.generate({ prompt: 'x', callbackOnStepEndTensorInputs: ['addTextEmbeds'] });
  void pipeline.generate({
    prompt: 'x',
    // @ts-expect-error only `latents` was requested (the default), so `promptEmbeds` is not in the kwargs.
    callbackOnStepEnd: (_state, _step, _t, kwargs) => kwargs.promptEmbeds,
  });
}
