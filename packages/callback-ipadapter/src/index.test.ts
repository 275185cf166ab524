// The IP-Adapter scale callbacks: unit tests on a test context and the registry (always), the tiny model without an
// adapter (always), and diffusers' reference runs on the IP-Adapter fixtures in ../shared/conformance (where present).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  AutoPipelineForText2Image,
  Generator,
  StableDiffusionPipeline,
  type StableDiffusionOptions,
  type StableDiffusionXLOptions,
  type Text2ImagePipeline,
} from '@diff/core';
import type { CallbackPipeline, CallbackPlugin } from '@diff/core/contract';
import { CallbackError, CallbackRegistry, createCallback, InvalidArgumentError, type Tensor } from '@diff/core/plugin';
import { createCallbackTestContext } from '@diff/core/testing';
import { modelDir } from '@diff/model-tiny';
import {
  IPAdapterScaleCutoffCallback,
  IPAdapterScaleScheduleCallback,
  plugin,
  schedulePlugin,
  type IPAdapterScaleScheduleOptions,
} from './index.js';

const NO_KWARGS = {};

/** A test context whose generation starts at scale 1, as one with an IP-Adapter picture does. */
function contextAtFullScale(numTimesteps: number): CallbackPipeline {
  const context = createCallbackTestContext({ numTimesteps });
  context.ipAdapterScale = 1;
  return context;
}

/** The scale after each step's hooks, running `onStepBegin` then `onStepEnd` of `callback` over a whole run. */
function scalesOverRun(callback: CallbackPlugin<never>, numTimesteps: number, hook: 'onStepBegin' | 'onStepEnd'): number[] {
  const context = contextAtFullScale(numTimesteps);
  return context.timesteps.map((timestep, step) => {
    void callback[hook]?.(context, step, timestep, NO_KWARGS);
    return context.ipAdapterScale;
  });
}

describe('IPAdapterScaleCutoffCallback', () => {
  it('sets the scale to 0 at the end of step floor(numTimesteps · cutoffStepRatio), for the steps after it', () => {
    const callback = new IPAdapterScaleCutoffCallback({ cutoffStepRatio: 0.4 });
    expect(callback.tensorInputs).toEqual([]);
    expect('onStepBegin' in callback).toBe(false);
    expect(scalesOverRun(callback, 11, 'onStepEnd')).toEqual([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
    expect(scalesOverRun(callback, 10, 'onStepEnd')).toEqual([1, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
  });

  it('takes cutoffStepIndex instead, and never acts at ratio 1 (the default)', () => {
    expect(scalesOverRun(new IPAdapterScaleCutoffCallback({ cutoffStepIndex: 2 }), 5, 'onStepEnd')).toEqual([1, 1, 0, 0, 0]);
    expect(scalesOverRun(new IPAdapterScaleCutoffCallback({ cutoffStepRatio: null, cutoffStepIndex: 0 }), 3, 'onStepEnd')).toEqual([0, 0, 0]);
    expect(scalesOverRun(new IPAdapterScaleCutoffCallback(), 5, 'onStepEnd')).toEqual([1, 1, 1, 1, 1]);
    expect(new IPAdapterScaleCutoffCallback().name).toBe('IPAdapterScaleCutoffCallback');
  });

  it.each<[string, unknown, RegExp]>([
    ['both a ratio and an index', { cutoffStepRatio: 0.4, cutoffStepIndex: 3 }, /Either cutoffStepRatio or cutoffStepIndex should be provided, not both or none/],
    ['a ratio above 1', { cutoffStepRatio: 1.5 }, /cutoffStepRatio must be a number between 0\.0 and 1\.0, got 1\.5/],
    ['a fractional index', { cutoffStepIndex: 2.5 }, /cutoffStepIndex must be a non-negative integer, got 2\.5/],
  ])('rejects %s', (_case, options, message) => {
    expect(() => new IPAdapterScaleCutoffCallback(options as never)).toThrow(InvalidArgumentError);
    expect(() => new IPAdapterScaleCutoffCallback(options as never)).toThrow(message);
  });
});

describe('IPAdapterScaleScheduleCallback', () => {
  const scales = (options: IPAdapterScaleScheduleOptions, numTimesteps: number) => {
    const schedule = new IPAdapterScaleScheduleCallback(options);
    return Array.from({ length: numTimesteps }, (_, step) => schedule.scaleAt(step, numTimesteps));
  };

  it('ramps linearly from 1 at step 0 to 0 at the last step by default', () => {
    expect(scales({ schedule: 'linear' }, 5)).toEqual([1, 0.75, 0.5, 0.25, 0]);
    expect(scales({ schedule: 'linear', from: 0.2, to: 1 }, 3)).toEqual([0.2, 0.6, 1]);
  });

  it('holds `from` up to start and `to` from end on, moving in between', () => {
    expect(scales({ schedule: 'linear', start: 0.25, end: 0.75 }, 5)).toEqual([1, 1, 0.5, 0, 0]);
    const cosine = scales({ schedule: 'cosine' }, 5);
    [1, (1 + Math.SQRT1_2) / 2, 0.5, (1 - Math.SQRT1_2) / 2, 0].forEach((expected, step) => expect(cosine[step]).toBeCloseTo(expected, 12));
    expect([cosine[0], cosine[4]]).toEqual([1, 0]);
  });

  it("'step' holds `from` until the progress reaches end, then jumps to `to`", () => {
    expect(scales({ schedule: 'step', end: 0.5 }, 5)).toEqual([1, 1, 0, 0, 0]);
    expect(scales({ schedule: 'step', from: 0, to: 0.8, end: 0.6 }, 5)).toEqual([0, 0, 0, 0.8, 0.8]);
    expect(scales({ schedule: 'step' }, 4)).toEqual([1, 1, 1, 0]);
  });

  it('gives a one-step run the scale of progress 0', () => {
    expect(scales({ schedule: 'linear' }, 1)).toEqual([1]);
  });

  it('calls a custom scaleAt with the step and the number of steps, and checks what it returns', () => {
    expect(scales({ scaleAt: (step, n) => (step < n / 2 ? 0.9 : 0.3) }, 4)).toEqual([0.9, 0.9, 0.3, 0.3]);
    const broken = new IPAdapterScaleScheduleCallback({ scaleAt: (step) => (step === 2 ? NaN : 1) });
    expect(() => broken.scaleAt(2, 5)).toThrow(new InvalidArgumentError('IPAdapterScaleScheduleCallback: scaleAt(2, 5) returned NaN; it must return a finite number.'));
    expect(new IPAdapterScaleScheduleCallback({ scaleAt: () => 1 }).config).toBeUndefined();
  });

  it('sets pipeline.ipAdapterScale at step begin, before other plugins, so that the step runs with it', () => {
    const schedule = new IPAdapterScaleScheduleCallback({ schedule: 'linear' });
    expect(schedule.enforce).toBe('pre');
    expect(schedule.tensorInputs).toEqual([]);
    expect('onStepEnd' in schedule).toBe(false);
    expect(schedule.config).toEqual({ schedule: 'linear', from: 1, to: 0, start: 0, end: 1 });
    expect(scalesOverRun(schedule, 5, 'onStepBegin')).toEqual([1, 0.75, 0.5, 0.25, 0]);
    // The context checks what is set: a custom schedule's bad value is refused before it reaches the model.
    const context = createCallbackTestContext();
    expect(() => new IPAdapterScaleScheduleCallback({ scaleAt: () => Infinity }).onStepBegin(context, 0, 999, NO_KWARGS)).toThrow(/returned Infinity/);
  });

  it.each<[string, unknown, RegExp]>([
    ['nothing', undefined, /needs schedule \('linear', 'cosine', 'step'\) or a scaleAt function/],
    ['no schedule', { from: 1 }, /needs schedule/],
    ['an unknown schedule', { schedule: 'exponential' }, /schedule must be one of 'linear', 'cosine', 'step', got "exponential"/],
    ['a NaN from', { schedule: 'linear', from: NaN }, /from must be a finite number .* got NaN/],
    ['a string to', { schedule: 'linear', to: '0' }, /to must be a finite number .* got "0"/],
    ['an infinite to', { schedule: 'cosine', to: -Infinity }, /to must be a finite number .* got -Infinity/],
    ['start after end', { schedule: 'linear', start: 0.6, end: 0.4 }, /0 ≤ start < end ≤ 1 .* got start 0\.6 and end 0\.4/],
    ['start equal to end', { schedule: 'cosine', start: 0.5, end: 0.5 }, /0 ≤ start < end ≤ 1/],
    ['end above 1', { schedule: 'linear', end: 1.5 }, /got start 0 and end 1\.5/],
    ['a negative start', { schedule: 'linear', start: -0.1 }, /got start -0\.1 and end 1/],
    ["a start for 'step'", { schedule: 'step', start: 0.2, end: 0.6 }, /start has no meaning for the 'step' schedule.*got 0\.2/],
    ['a scaleAt that is no function', { scaleAt: 0.5 }, /scaleAt must be a function \(stepIndex, numTimesteps\) => scale, got number/],
    ['both a schedule and scaleAt', { schedule: 'linear', scaleAt: () => 1 }, /either schedule \(with from, to, start, end\) or scaleAt, not both; got scaleAt with schedule/],
    ['scaleAt with shape options', { scaleAt: () => 1, from: 1, end: 0.5 }, /got scaleAt with from, end/],
  ])('rejects %s', (_case, options, message) => {
    expect(() => new IPAdapterScaleScheduleCallback(options as IPAdapterScaleScheduleOptions)).toThrow(InvalidArgumentError);
    expect(() => new IPAdapterScaleScheduleCallback(options as IPAdapterScaleScheduleOptions)).toThrow(message);
  });
});

describe('the registry descriptors', () => {
  const registry = new CallbackRegistry([plugin, schedulePlugin]);

  it('are listed as "ipadapter" and "ipadapter-schedule" with their options described', () => {
    const [cutoff, schedule] = registry.list();
    expect(cutoff.name).toBe('ipadapter');
    expect(cutoff.optionsJsonSchema).toMatchObject({
      type: 'object',
      additionalProperties: false,
      properties: { cutoffStepRatio: { description: expect.any(String) }, cutoffStepIndex: { description: expect.any(String) } },
    });
    expect(schedule.name).toBe('ipadapter-schedule');
    expect(schedule.optionsJsonSchema).toMatchObject({
      type: 'object',
      additionalProperties: false,
      properties: {
        schedule: { type: 'string', enum: ['linear', 'cosine', 'step'], description: expect.any(String) },
        from: { type: 'number', default: 1, description: expect.any(String) },
        to: { type: 'number', default: 0, description: expect.any(String) },
        start: { type: 'number', minimum: 0, maximum: 1, default: 0, description: expect.any(String) },
        end: { type: 'number', minimum: 0, maximum: 1, default: 1, description: expect.any(String) },
      },
    });
    expect(schedule.optionsJsonSchema.required).toBeUndefined();
  });

  it('create the callbacks from JSON options, the custom schedule from the runtime', () => {
    const cutoff = registry.create('ipadapter', { cutoffStepRatio: 0.4 }) as IPAdapterScaleCutoffCallback;
    expect(cutoff).toBeInstanceOf(IPAdapterScaleCutoffCallback);
    expect(scalesOverRun(cutoff, 10, 'onStepEnd')).toEqual([1, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
    const ramp = registry.create('ipadapter-schedule', { schedule: 'linear', from: 0.8, to: 0.2 }) as IPAdapterScaleScheduleCallback;
    expect(ramp.config).toEqual({ schedule: 'linear', from: 0.8, to: 0.2, start: 0, end: 1 });
    const custom = registry.create('ipadapter-schedule', {}, { scaleAt: (step) => (step === 0 ? 1 : 0.5) }) as IPAdapterScaleScheduleCallback;
    expect(scalesOverRun(custom, 3, 'onStepBegin')).toEqual([1, 0.5, 0.5]);
  });

  it.each<[string, 'ipadapter' | 'ipadapter-schedule', unknown, RegExp]>([
    ['a cut-off ratio and index', 'ipadapter', { cutoffStepRatio: 0.4, cutoffStepIndex: 2 }, /Invalid options for callback plugin "ipadapter": Either cutoffStepRatio or cutoffStepIndex/],
    ['a cut-off ratio out of range', 'ipadapter', { cutoffStepRatio: 2 }, /cutoffStepRatio must be a number between 0.0 and 1.0, got 2/],
    ['an unknown cut-off option', 'ipadapter', { scale: 0 }, /scale: Unknown option scale; allowed: cutoffStepRatio, cutoffStepIndex/],
    ['an unknown schedule', 'ipadapter-schedule', { schedule: 'exp' }, /Invalid options for callback plugin "ipadapter-schedule": schedule: /],
    ['start after end', 'ipadapter-schedule', { schedule: 'linear', start: 0.8, end: 0.2 }, /0 ≤ start < end ≤ 1/],
    ['an infinite from', 'ipadapter-schedule', { schedule: 'linear', from: Infinity }, /from: /],
    ['no schedule and no scaleAt', 'ipadapter-schedule', {}, /needs schedule \('linear', 'cosine', 'step'\) or a scaleAt function/],
    ['scaleAt inside the JSON options', 'ipadapter-schedule', { scaleAt: 'x => 1' }, /Unrecognized key: "scaleAt"/],
  ])('rejects %s', (_case, name, options, message) => {
    expect(() => registry.create(name, options as never)).toThrow(InvalidArgumentError);
    expect(() => registry.create(name, options as never)).toThrow(message);
  });

  it('rejects a JSON schedule together with a runtime scaleAt', () => {
    const both = () => registry.create('ipadapter-schedule', { schedule: 'linear', to: 0.5 }, { scaleAt: () => 1 });
    expect(both).toThrow(/either schedule \(with from, to, start, end\) or scaleAt, not both; got scaleAt with schedule, to/);
  });
});

describe('on a model without an IP-Adapter (the tiny model)', () => {
  it('the scale the callbacks set changes nothing', async () => {
    const pipeline = await StableDiffusionPipeline.fromPretrained(modelDir);
    try {
      const generate = (options: Pick<StableDiffusionOptions, 'callbackOnStepEnd'> = {}) =>
        pipeline.generate({ prompt: 'a red circle', numInferenceSteps: 4, generator: new Generator().manualSeed(5), outputType: 'latent', ...options });
      const plain = await generate();
      const withCallbacks = await generate({
        callbackOnStepEnd: [new IPAdapterScaleCutoffCallback({ cutoffStepIndex: 1 }), new IPAdapterScaleScheduleCallback({ schedule: 'cosine', from: 0.3, to: 2 })],
      });
      expect(withCallbacks.images.data).toEqual(plain.images.data);
      const failure = generate({ callbackOnStepEnd: new IPAdapterScaleScheduleCallback({ scaleAt: () => NaN }) });
      await expect(failure).rejects.toBeInstanceOf(CallbackError);
      await expect(failure).rejects.toThrow(/Callback "IPAdapterScaleScheduleCallback" failed in onStepBegin at step 0: .*scaleAt\(0, 4\) returned NaN/);
    } finally {
      await pipeline.dispose();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// diffusers' reference runs: the IP-Adapter fixtures exist only in ../shared/conformance beside the repository.

const SHARED_CONFORMANCE_DIR = fileURLToPath(new URL('../../../../shared/conformance', import.meta.url));

interface IPAdapterRun {
  id: string;
  model: string;
  scheduler: string;
  scheduler_config: Record<string, unknown>;
  seed: number;
  kwargs: { prompt: string; num_inference_steps: number; guidance_scale: number };
  callback: string | null;
  callback_args: { cutoff_step_ratio?: number; cutoff_step_index?: number } | null;
  ip_adapter_scale: number;
  ip_adapter_image: string;
  steps: Array<{ step: number; latents: number[]; ip_adapter_scale_after: number }>;
  image: { shape: number[]; data: number[] };
}

const refsPath = join(SHARED_CONFORMANCE_DIR, 'refs.json');
const refs = existsSync(refsPath) ? (JSON.parse(readFileSync(refsPath, 'utf8')) as { ipadapter_runs?: IPAdapterRun[]; sdxl_ipadapter_runs?: IPAdapterRun[] }) : undefined;
const cutoffRun = refs?.ipadapter_runs?.find((run) => run.id === 'ip-pndm-cutoff');
const fixturesPresent = cutoffRun !== undefined && existsSync(join(SHARED_CONFORMANCE_DIR, cutoffRun.model, 'model_index.json'));
// diffusers' cut-off runs on SDXL too, where refs.json and the folder have them.
const sdxlCutoffRun = refs?.sdxl_ipadapter_runs?.find(
  (run) => run.callback === 'IPAdapterScaleCutoffCallback' && existsSync(join(SHARED_CONFORMANCE_DIR, run.model, 'model_index.json')),
);

/** Python's round(): halves go to the even neighbour. */
function roundHalfEven(value: number): number {
  const floor = Math.floor(value);
  const fraction = value - floor;
  return fraction > 0.5 || (fraction === 0.5 && floor % 2 !== 0) ? floor + 1 : floor;
}

/** refs.json's IP-Adapter picture: "RGB 64x64: r = 255 if (x//8 + y//8) even else 40; g = round(255*y/63); b = round(255*(63-x)/63)". */
function referenceAdapterImage() {
  const size = 64;
  const data = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const pixel = 3 * (y * size + x);
      data[pixel] = (Math.floor(x / 8) + Math.floor(y / 8)) % 2 === 0 ? 255 : 40;
      data[pixel + 1] = roundHalfEven((255 * y) / 63);
      data[pixel + 2] = roundHalfEven((255 * (63 - x)) / 63);
    }
  }
  return { data, width: size, height: size, channels: 3 as const };
}

/** The largest amount by which `actual` exceeds `|actual − expected| ≤ atol + rtol·|expected|` (≤ 0: within). */
function toleranceExcess(actual: ArrayLike<number>, expected: readonly number[], atol: number, rtol: number): number {
  expect(actual.length).toBe(expected.length);
  let excess = -Infinity;
  for (let i = 0; i < expected.length; i++) excess = Math.max(excess, Math.abs(actual[i] - expected[i]) - (atol + rtol * Math.abs(expected[i])));
  return excess;
}

/** Records, per step, the scale a step's model call ran with (seen at step begin, after every other hook) and after it. */
function scaleRecorder() {
  const atBegin: number[] = [];
  const atEnd: Array<{ scale: number; latents: Tensor<'float32'> }> = [];
  const recorder: CallbackPlugin<'latents'> = {
    specificationVersion: 'v1',
    name: 'scaleRecorder',
    tensorInputs: ['latents'],
    enforce: 'post',
    onStepBegin: (pipeline) => void atBegin.push(pipeline.ipAdapterScale),
    onStepEnd: (pipeline, _step, _timestep, { latents }) => void atEnd.push({ scale: pipeline.ipAdapterScale, latents }),
  };
  return { recorder, atBegin, atEnd };
}

/** A reference run's generate options (the picture built from its recipe). */
const referenceOptions = (run: IPAdapterRun) => ({
  prompt: run.kwargs.prompt,
  numInferenceSteps: run.kwargs.num_inference_steps,
  guidanceScale: run.kwargs.guidance_scale,
  generator: new Generator().manualSeed(run.seed),
  outputType: 'np' as const,
  ipAdapterImage: referenceAdapterImage(),
  ipAdapterScale: run.ip_adapter_scale,
});

const SCHEDULER_CLASSES: Record<string, string> = { pndm: 'PNDMScheduler', euler: 'EulerDiscreteScheduler' };

const fixtureSuiteTitle = fixturesPresent
  ? `with the IP-Adapter fixtures in ${SHARED_CONFORMANCE_DIR} (tiny-sd-ipadapter, refs.json ip-pndm-cutoff; SDXL where present)`
  : `skipped: no IP-Adapter fixtures in ${SHARED_CONFORMANCE_DIR} (tiny-sd-ipadapter and refs.json ip-pndm-cutoff, beside the repository)`;

(fixturesPresent ? describe : describe.skip)(fixtureSuiteTitle, () => {
  const run = cutoffRun as IPAdapterRun;
  let pipeline: Text2ImagePipeline;
  beforeAll(async () => {
    pipeline = await AutoPipelineForText2Image.fromPretrained(join(SHARED_CONFORMANCE_DIR, run.model));
  });
  afterAll(() => pipeline?.dispose());

  // (describe.skip still runs this body: without the fixtures the list is empty.)
  const conformanceRuns = [cutoffRun, sdxlCutoffRun].flatMap((reference) => (reference ? [[reference.id, reference] as const] : []));
  test.each(conformanceRuns)("%s: the cut-off reproduces diffusers' IPAdapterScaleCutoffCallback run, step by step", async (_id, reference) => {
    expect(reference.callback).toBe('IPAdapterScaleCutoffCallback');
    // The reference ran the model folder's own scheduler.
    const folderConfig = JSON.parse(readFileSync(join(SHARED_CONFORMANCE_DIR, reference.model, 'scheduler', 'scheduler_config.json'), 'utf8')) as Record<string, unknown>;
    expect(folderConfig._class_name).toBe(SCHEDULER_CLASSES[reference.scheduler]);
    for (const [key, value] of Object.entries(folderConfig)) if (!key.startsWith('_')) expect([key, reference.scheduler_config[key]]).toEqual([key, value]);

    const referencePipeline = reference === run ? pipeline : await AutoPipelineForText2Image.fromPretrained(join(SHARED_CONFORMANCE_DIR, reference.model));
    try {
      const { cutoff_step_ratio: cutoffStepRatio, cutoff_step_index: cutoffStepIndex } = reference.callback_args ?? {};
      const { recorder, atEnd } = scaleRecorder();
      const { images } = await referencePipeline.generate({
        ...referenceOptions(reference),
        callbackOnStepEnd: [new IPAdapterScaleCutoffCallback({ cutoffStepRatio, cutoffStepIndex }), recorder],
      });
      expect(atEnd.map(({ scale }) => scale)).toEqual(reference.steps.map((step) => step.ip_adapter_scale_after));
      const stepsOutOfTolerance = reference.steps.filter((step, k) => toleranceExcess(atEnd[k].latents.data, step.latents, 5e-4, 5e-4) > 0);
      expect(stepsOutOfTolerance.map(({ step }) => step)).toEqual([]);
      expect(toleranceExcess(images.data, reference.image.data, 1e-3, 0)).toBeLessThanOrEqual(0);
    } finally {
      if (referencePipeline !== pipeline) await referencePipeline.dispose();
    }
  });

  /** A few steps of the reference run, for the comparisons between this project's own runs. */
  const shortRun = (options: { callbackOnStepEnd?: CallbackPlugin<never> | CallbackPlugin<'latents'>[]; ipAdapterScale?: number } = {}) =>
    pipeline.generate({ ...referenceOptions(run), numInferenceSteps: 4, outputType: 'latent' as const, ...options });

  it('leaves the next generation on the same pipeline at full scale (diffusers leaks the 0)', async () => {
    const plain = async () => {
      const { recorder, atBegin } = scaleRecorder();
      const { images } = await shortRun({ callbackOnStepEnd: [recorder] });
      return { images, atBegin };
    };
    const before = await plain();
    await shortRun({ callbackOnStepEnd: new IPAdapterScaleCutoffCallback({ cutoffStepIndex: 0 }) });
    const after = await plain();
    expect(after.atBegin.every((scale) => scale === 1)).toBe(true);
    expect(after.images.data).toEqual(before.images.data);
    // What diffusers' next call computes instead: the adapter off.
    expect((await shortRun({ ipAdapterScale: 0 })).images.data).not.toEqual(before.images.data);
  });

  describe('IPAdapterScaleScheduleCallback', () => {
    it('runs each step with the scale of its schedule, from 1 at the first step to 0 at the last', async () => {
      const { recorder, atBegin, atEnd } = scaleRecorder();
      await shortRun({ callbackOnStepEnd: [recorder, new IPAdapterScaleScheduleCallback({ schedule: 'linear' })] });
      expect(atBegin).toHaveLength(5); // PNDM (skip_prk_steps) runs numInferenceSteps + 1 timesteps
      expect(atBegin).toEqual([1, 0.75, 0.5, 0.25, 0]);
      expect(atEnd.map(({ scale }) => scale)).toEqual(atBegin);
    });

    it('changes the picture against a constant scale', async () => {
      const ramp = await shortRun({ callbackOnStepEnd: new IPAdapterScaleScheduleCallback({ schedule: 'cosine', to: 0.2 }) });
      expect(ramp.images.data).not.toEqual((await shortRun()).images.data);
    });

    it('from 1 to 1 equals no callback; from 0 to 0 equals ipAdapterScale 0', async () => {
      const constant = (scale: number) => new IPAdapterScaleScheduleCallback({ schedule: 'linear', from: scale, to: scale });
      expect((await shortRun({ callbackOnStepEnd: constant(1) })).images.data).toEqual((await shortRun()).images.data);
      expect((await shortRun({ callbackOnStepEnd: constant(0) })).images.data).toEqual((await shortRun({ ipAdapterScale: 0 })).images.data);
    });
  });
});

// Type-level checks: compiled by the test script's `tsc --noEmit`, never run.
export function typeChecks(): void {
  createCallback('ipadapter', { cutoffStepRatio: 0.4 });
  createCallback('ipadapter-schedule', { schedule: 'cosine', from: 0.8, end: 0.6 });
  createCallback('ipadapter-schedule', {}, { scaleAt: (step, numTimesteps) => 1 - step / numTimesteps });
  // @ts-expect-error the cut-off ratio is a number
  createCallback('ipadapter', { cutoffStepRatio: '0.4' });
  // @ts-expect-error no such schedule
  createCallback('ipadapter-schedule', { schedule: 'exponential' });
  // @ts-expect-error scaleAt is a runtime value, never a JSON option
  createCallback('ipadapter-schedule', { scaleAt: () => 1 });
  // @ts-expect-error a schedule or scaleAt, not both
  new IPAdapterScaleScheduleCallback({ schedule: 'linear', scaleAt: () => 1 });
  // @ts-expect-error the shape options belong to the built-in schedules
  new IPAdapterScaleScheduleCallback({ scaleAt: () => 1, from: 0.5 });
  // @ts-expect-error the built-in schedules are named
  new IPAdapterScaleScheduleCallback({ schedule: 'exponential' });
  // @ts-expect-error a schedule needs a name or a function
  new IPAdapterScaleScheduleCallback({});
  const sdOption: StableDiffusionOptions['callbackOnStepEnd'] = [new IPAdapterScaleCutoffCallback({ cutoffStepIndex: 5 }), new IPAdapterScaleScheduleCallback({ schedule: 'linear' })];
  const sdxlOption: StableDiffusionXLOptions['callbackOnStepEnd'] = [new IPAdapterScaleCutoffCallback({ cutoffStepRatio: 0.4 }), new IPAdapterScaleScheduleCallback({ scaleAt: () => 0.5 })];
  void [sdOption, sdxlOption];
}
