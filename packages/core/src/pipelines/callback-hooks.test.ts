// The loop's callback features through a real pipeline (toy SD models): step-begin hooks, interrupts and
// `interruptedAtStep`, the read-only x0 estimate, guidance turned off and on through the context, and two
// generations at once on one pipeline.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CallbackPipeline, CallbackPlugin, StableDiffusionTensorName } from '../contract.js';
import { InvalidArgumentError } from '../errors.js';
import { Generator } from '../random/generator.js';
import { DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, SCHEDULER_NAMES } from '../schedulers/index.js';
import { Tensor } from '../tensor.js';
import { CallbackRegistry } from '../plugins/registry.js';
import { writeToyPipeline } from '../testing/toy-models.js';
import { StableDiffusionPipeline, type StableDiffusionOptions } from './stable-diffusion.js';

let dir: string;
let pipeline: StableDiffusionPipeline;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diff-hooks-'));
  await writeToyPipeline(dir, 'sd');
  pipeline = await StableDiffusionPipeline.fromPretrained(dir);
  // DDIM computes x0; with alpha → 1 at the end its last step returns x0 itself, which the tests below use.
  pipeline.scheduler = DDIMScheduler.fromConfig(pipeline.scheduler.config, { setAlphaToOne: true });
});

afterAll(async () => {
  await pipeline.dispose();
  await rm(dir, { recursive: true, force: true });
});

type AnyName = StableDiffusionTensorName;
const generate = (options: Partial<StableDiffusionOptions<AnyName, 'latent', AnyName>> = {}, seed = 0) =>
  pipeline.generate<AnyName, 'latent', AnyName>({
    prompt: 'a red circle', numInferenceSteps: 5, height: 16, width: 16, outputType: 'latent',
    generator: new Generator().manualSeed(seed), ...options,
  });

describe('step-begin hooks', () => {
  it('run before the model with the same context, and a tensor they replace feeds that step', async () => {
    const order: string[] = [];
    const baseline = await generate();
    const zeroed = await generate({
      callbackOnStepBegin: (_state: CallbackPipeline, step: number, _t: number, kwargs: { latents: Tensor }) => {
        order.push(`begin ${step}`);
        if (step === 0) return { latents: Tensor.zeros(kwargs.latents.shape) };
      },
      callbackOnStepEnd: (_state: CallbackPipeline, step: number) => void order.push(`end ${step}`),
    });
    expect(order.slice(0, 4)).toEqual(['begin 0', 'end 0', 'begin 1', 'end 1']);
    expect(zeroed.images.data).not.toEqual(baseline.images.data);
  });
});

describe('interrupts', () => {
  it('stop after the step whose callback set the flag, decode those latents and say which step', async () => {
    let atStep1: Tensor | undefined;
    const stopped = await generate({
      callbackOnStepEnd: (state: CallbackPipeline, step: number, _t: number, kwargs: { latents: Tensor }) => {
        if (step === 1) [atStep1, state.interrupt] = [kwargs.latents, true];
      },
    });
    expect(stopped.interruptedAtStep).toBe(1);
    expect(stopped.images.data).toEqual(atStep1?.data);
    const full = await generate();
    expect(full.interruptedAtStep).toBeUndefined();
    expect(Object.keys(full)).toEqual(['images']);
  });

  it('before the first model call gives step −1 and the initial noise; a flag set after the last step skips nothing', async () => {
    const initial = await generate({ callbackOnStepBegin: (state: CallbackPipeline) => void (state.interrupt = true) });
    expect(initial.interruptedAtStep).toBe(-1);
    const noise = await generate({ numInferenceSteps: 1, callbackOnStepBegin: (state: CallbackPipeline) => void (state.interrupt = true) });
    expect(initial.images.data).toEqual(noise.images.data);
    const last = await generate({ callbackOnStepEnd: (state: CallbackPipeline, step: number) => void (state.interrupt = step === 4) });
    expect(last.interruptedAtStep).toBeUndefined();
    expect(last.images.data).toEqual((await generate()).images.data);
  });
});

describe('predOriginalSample', () => {
  it("is the scheduler's x0 estimate: DDIM's last step returns it as the latents", async () => {
    const seen: Tensor[] = [];
    const { images } = await generate({
      callbackOnStepEnd: (_s: CallbackPipeline, _i: number, _t: number, kwargs: { predOriginalSample: Tensor }) => void seen.push(kwargs.predOriginalSample),
      callbackOnStepEndTensorInputs: ['predOriginalSample'],
    });
    expect(seen).toHaveLength(5);
    const last = seen[4];
    expect(Math.max(...last.data.map((value, i) => Math.abs(value - images.data[i])))).toBeLessThan(1e-5);
  });

  it('is refused by name where the scheduler computes none (PNDM), and skipped as an optional input', async () => {
    const pndm = await StableDiffusionPipeline.fromPretrained(dir);
    try {
      const options = { prompt: 'x', numInferenceSteps: 2, height: 16, width: 16 };
      await expect(pndm.generate({ ...options, callbackOnStepEnd: () => undefined, callbackOnStepEndTensorInputs: ['predOriginalSample'] })).rejects.toThrow(
        new InvalidArgumentError('callbackOnStepEndTensorInputs asks for predOriginalSample (PNDMScheduler computes no predicted clean sample; use optionalTensorInputs for it).'),
      );
      const names: string[][] = [];
      const optional: CallbackPlugin<'latents'> = {
        specificationVersion: 'v1', name: 'x0-or-latents', tensorInputs: ['latents'], optionalTensorInputs: ['predOriginalSample'],
        onStepEnd: (_s, _i, _t, kwargs) => void names.push(Object.keys(kwargs)),
      };
      await pndm.generate({ ...options, outputType: 'latent', callbackOnStepEnd: optional });
      expect(names.every((keys) => keys.join() === 'latents')).toBe(true);
    } finally {
      await pndm.dispose();
    }
  });
});

describe('guidance through the context', () => {
  /** Records the prompt-embedding rows each model call gets, turning guidance off for steps 1–2 and on again. */
  const interval = (rows: number[]) => (state: CallbackPipeline, step: number, _t: number, kwargs: { promptEmbeds: Tensor }) => {
    if (step === 1) state.disableGuidance(kwargs);
    if (step === 3) state.enableGuidance(kwargs);
    rows.push(kwargs.promptEmbeds.shape[0]);
  };

  it('disableGuidance and enableGuidance switch the batch between steps, back to the original scale', async () => {
    const rows: number[] = [];
    const scales: number[] = [];
    const switched = await generate({
      callbackOnStepBegin: interval(rows),
      callbackOnStepBeginTensorInputs: ['promptEmbeds'],
      callbackOnStepEnd: (state: CallbackPipeline) => void scales.push(state.guidanceScale),
    });
    expect(rows).toEqual([2, 1, 1, 2, 2]);
    expect(scales).toEqual([7.5, 0, 0, 7.5, 7.5]);
    expect(switched.images.data).not.toEqual((await generate()).images.data);
  });

  it('keeps each generation to itself when two run at once on one pipeline', async () => {
    const cutoff: CallbackPlugin<'promptEmbeds'> = {
      specificationVersion: 'v1', name: 'cutoff', tensorInputs: ['promptEmbeds'],
      onStepEnd: (state, step, _t, kwargs) => (step === 1 ? state.disableGuidance(kwargs) : kwargs),
    };
    const [cut, plain] = await Promise.all([generate({ callbackOnStepEnd: cutoff }, 3), generate({}, 4)]);
    expect(cut.images.data).toEqual((await generate({ callbackOnStepEnd: cutoff }, 3)).images.data);
    expect(plain.images.data).toEqual((await generate({}, 4)).images.data);
  });
});

describe('registry-made callbacks', () => {
  it('are accepted by any pipeline statically and checked against its tensors when a generation starts', async () => {
    const registry = new CallbackRegistry([{
      specificationVersion: 'v1', name: 'needs-mask', description: 'Reads the inpainting mask.',
      options: { '~standard': { version: 1, vendor: 'test', validate: (value: unknown) => ({ value }) } },
      optionsJsonSchema: { type: 'object' },
      create: () => ({ specificationVersion: 'v1', name: 'NeedsMask', tensorInputs: ['mask'], onStepEnd: () => undefined }),
    }]);
    await expect(generate({ callbackOnStepEnd: registry.create('needs-mask') })).rejects.toThrow(
      /Callback "NeedsMask" asks for tensor inputs that StableDiffusionPipeline does not have: mask\./,
    );
  });
});

describe('the per-call scheduler option', () => {
  it('builds a named scheduler from the model config for one call, leaving the pipeline’s template alone', async () => {
    const template = pipeline.scheduler;
    const [euler, dpm] = await Promise.all([generate({ scheduler: 'euler' }, 2), generate({ scheduler: 'dpmpp-2m-karras' }, 2)]);
    expect(pipeline.scheduler).toBe(template);
    pipeline.scheduler = EulerDiscreteScheduler.fromConfig(template.config, { useKarrasSigmas: false });
    try {
      expect(euler.images.data).toEqual((await generate({}, 2)).images.data);
    } finally {
      pipeline.scheduler = template;
    }
    expect(dpm.images.data).toEqual((await generate({ scheduler: DPMSolverMultistepScheduler.fromConfig(template.config, { useKarrasSigmas: true }) }, 2)).images.data);
    expect(dpm.images.data).not.toEqual(euler.images.data);
  });

  it('names the known schedulers when given another', async () => {
    await expect(generate({ scheduler: 'heun' as never })).rejects.toThrow(
      new InvalidArgumentError(`Unknown scheduler "heun". Known: ${SCHEDULER_NAMES.join(', ')} (or a Scheduler instance).`),
    );
  });
});
