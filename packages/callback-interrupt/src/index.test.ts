import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Generator,
  StableDiffusionPipeline,
  StableDiffusionXLPipeline,
  type StableDiffusionOptions,
  type StableDiffusionXLOptions,
} from '@diff/core';
import type { CallbackOnStepEnd } from '@diff/core/contract';
import { CallbackRegistry, createCallback, InvalidArgumentError, Tensor } from '@diff/core/plugin';
import { createCallbackTestContext, writeToyPipeline } from '@diff/core/testing';
import { modelDir } from '@diff/model-tiny';
import { InterruptCallback, InterruptController, plugin, type InterruptCallbackOptions, type InterruptPredicate } from './index.js';

const STEPS = 6;
let pipeline: StableDiffusionPipeline;

beforeAll(async () => {
  pipeline = await StableDiffusionPipeline.fromPretrained(modelDir);
});
afterAll(() => pipeline.dispose());

const generate = (options: Partial<StableDiffusionOptions> = {}) =>
  pipeline.generate({ prompt: 'a red circle on a blue background', numInferenceSteps: STEPS, generator: new Generator().manualSeed(7), ...options });

/** diffusers' seed-guide callback: a plain function that interrupts after `step`. */
const interruptAt = (step: number): CallbackOnStepEnd<'latents'> => (state, stepIndex) => {
  if (stepIndex === step) state.interrupt = true;
};

const interruptWith = (options: InterruptCallbackOptions) => generate({ callbackOnStepEnd: new InterruptCallback(options) });

describe('InterruptCallback', () => {
  it('stops after atStep and returns what a plain interrupting function returns', async () => {
    const interrupted = await interruptWith({ atStep: 2 });
    expect(interrupted.interruptedAtStep).toBe(2);
    expect(interrupted.images).toEqual((await generate({ callbackOnStepEnd: interruptAt(2) })).images);
    const full = await generate();
    expect(full.interruptedAtStep).toBeUndefined();
    expect(interrupted.images[0].data).not.toEqual(full.images[0].data);
  });

  it('stops after step floor(numTimesteps · atRatio); after the last step nothing is left to skip', async () => {
    expect((await interruptWith({ atRatio: 0.5 })).interruptedAtStep).toBe(3);
    expect((await interruptWith({ atRatio: 0 })).interruptedAtStep).toBe(0);
    expect((await interruptWith({ atRatio: 1 })).interruptedAtStep).toBeUndefined();
    expect((await interruptWith({ atStep: STEPS - 1 })).interruptedAtStep).toBeUndefined();
    expect(new InterruptCallback({ atStep: 8, atRatio: 0.4 }).stopStep({ numTimesteps: 25 })).toBe(8);
    expect(new InterruptCallback({ atStep: 12, atRatio: 0.4 }).stopStep({ numTimesteps: 25 })).toBe(10);
  });

  it('stops once afterMs have passed since the first step began (a fake clock: 100 ms per step)', async () => {
    let clock = 1000;
    const tick: CallbackOnStepEnd<'latents'> = () => void (clock += 100);
    const callback = new InterruptCallback({ afterMs: 250, now: () => clock });
    const first = await generate({ callbackOnStepEnd: [tick, callback] });
    expect(first.interruptedAtStep).toBe(2);
    // The same instance measures the next generation from that generation's own first step.
    expect((await generate({ callbackOnStepEnd: [tick, callback] })).interruptedAtStep).toBe(2);
  });

  it('keeps the start time per generation, so one instance can time concurrent generations', async () => {
    let clock = 0;
    const callback = new InterruptCallback({ afterMs: 250, now: () => clock });
    const [first, second] = [createCallbackTestContext(), createCallbackTestContext()];
    const latents = { latents: new Tensor(new Float32Array(4), [1, 4, 1, 1]) };
    callback.onStepBegin(first);
    clock = 200;
    callback.onStepBegin(second);
    clock = 300;
    await callback.onStepEnd(first, 0, 999, latents);
    await callback.onStepEnd(second, 0, 999, latents);
    expect([first.interrupt, second.interrupt]).toEqual([true, false]);
    clock = 450;
    await callback.onStepEnd(second, 1, 899, latents);
    expect(second.interrupt).toBe(true);
  });

  it('stops after afterMs on the real clock', async () => {
    expect((await interruptWith({ afterMs: 0 })).interruptedAtStep).toBe(0);
    expect((await interruptWith({ afterMs: 60_000 })).interruptedAtStep).toBeUndefined();
  });

  it('asks an async `when` after every step, with the step, its timestep and the latents', async () => {
    const seen: Array<[number, boolean, readonly number[]]> = [];
    const when: InterruptPredicate = async (state, stepIndex, timestep, { latents }) => {
      seen.push([stepIndex, timestep === state.timesteps[stepIndex], latents.shape]);
      return stepIndex === 1;
    };
    expect((await interruptWith({ when })).interruptedAtStep).toBe(1);
    expect(seen).toEqual([
      [0, true, [1, 4, 8, 8]],
      [1, true, [1, 4, 8, 8]],
    ]);
  });

  it('stops at whichever condition comes first', async () => {
    expect((await interruptWith({ atStep: 4, when: (_state, stepIndex) => stepIndex === 1 })).interruptedAtStep).toBe(1);
    expect((await interruptWith({ atStep: 1, afterMs: 60_000, when: () => false })).interruptedAtStep).toBe(1);
    expect((await interruptWith({ atRatio: 0.5, atStep: 4 })).interruptedAtStep).toBe(3);
  });

  it.each<[string, unknown, RegExp]>([
    ['no condition', {}, /at least one condition: atStep, atRatio, afterMs or when/],
    ['nothing', undefined, /at least one condition/],
    ['a negative atStep', { atStep: -1 }, /atStep must be a non-negative integer.*got -1/],
    ['a fractional atStep', { atStep: 2.5 }, /atStep must be a non-negative integer.*got 2\.5/],
    ['a string atStep', { atStep: 'ten' }, /atStep must be a non-negative integer.*got "ten"/],
    ['atRatio above 1', { atRatio: 1.5 }, /atRatio must be a number between 0 and 1, got 1\.5/],
    ['a NaN atRatio', { atRatio: NaN }, /atRatio must be a number between 0 and 1, got NaN/],
    ['a negative afterMs', { afterMs: -1 }, /afterMs must be a finite number of milliseconds ≥ 0, got -1/],
    ['an infinite afterMs', { afterMs: Infinity }, /afterMs must be a finite .* got Infinity/],
    ['a `when` that is no function', { when: true }, /when must be a function/],
    ['a `now` that is no function', { atStep: 1, now: 5 }, /now must be a function/],
  ])('rejects %s', (_case, options, message) => {
    expect(() => new InterruptCallback(options as InterruptCallbackOptions)).toThrow(InvalidArgumentError);
    expect(() => new InterruptCallback(options as InterruptCallbackOptions)).toThrow(message);
  });
});

describe('InterruptController', () => {
  it('stops every generation it is attached to at the next step boundary, until reset', async () => {
    const controller = new InterruptController();
    expect(controller.interrupted).toBe(false);
    const pressStop: CallbackOnStepEnd<'latents'> = (_state, stepIndex) => {
      if (stepIndex === 1) controller.interrupt();
    };
    const [a, b] = await Promise.all([
      generate({ callbackOnStepEnd: [pressStop, controller.callback] }),
      generate({ callbackOnStepEnd: controller.callback, numInferenceSteps: 50 }),
    ]);
    expect(a.interruptedAtStep).toBe(1);
    expect(b.interruptedAtStep).toBeLessThan(49);
    expect(controller.interrupted).toBe(true);

    expect((await generate({ callbackOnStepEnd: controller.callback })).interruptedAtStep).toBe(-1);
    controller.reset();
    expect(controller.interrupted).toBe(false);
    const resumed = await generate({ callbackOnStepEnd: controller.callback });
    expect(resumed.interruptedAtStep).toBeUndefined();
    expect(resumed.images).toEqual((await generate()).images);
  });

  it('pressed before step 0, returns the decoded starting noise without a single step', async () => {
    const controller = new InterruptController();
    controller.interrupt();
    let stepsEnded = 0;
    const result = await generate({ callbackOnStepEnd: [controller.callback, () => void stepsEnded++] });
    expect(result.interruptedAtStep).toBe(-1);
    expect(stepsEnded).toBe(0);
    const stopAtBegin = await generate({ callbackOnStepBegin: (state) => void (state.interrupt = true) });
    expect(result.images).toEqual(stopAtBegin.images);
  });

  it('honours a Stop pressed between steps before the next model call, and one pressed during a step after it', async () => {
    const controller = new InterruptController();
    const stepsEnded: number[] = [];
    // Runs after the controller's step-end hook, so only its step-begin hook can see this Stop before step 2's model.
    const pressStopAfterStep1: CallbackOnStepEnd<'latents'> = (_state, stepIndex) => {
      stepsEnded.push(stepIndex);
      if (stepIndex === 1) controller.interrupt();
    };
    const betweenSteps = await generate({ callbackOnStepEnd: [controller.callback, pressStopAfterStep1] });
    expect(betweenSteps.interruptedAtStep).toBe(1);
    expect(stepsEnded).toEqual([0, 1]);

    controller.reset();
    // Step-begin functions run after the plugins' step-begin hooks: step 2 is under way when Stop is pressed.
    const duringStep = await generate({
      callbackOnStepEnd: controller.callback,
      callbackOnStepBegin: (_state, stepIndex) => {
        if (stepIndex === 2) controller.interrupt();
      },
    });
    expect(duringStep.interruptedAtStep).toBe(2);
  });
});

describe('the registry descriptor', () => {
  const registry = new CallbackRegistry([plugin]);

  it('is listed as "interrupt" with its options described', () => {
    const [info] = registry.list();
    expect(info.name).toBe('interrupt');
    expect(info.optionsJsonSchema).toMatchObject({
      type: 'object',
      additionalProperties: false,
      properties: {
        atStep: { type: 'integer', minimum: 0, description: expect.any(String) },
        atRatio: { type: 'number', minimum: 0, maximum: 1, description: expect.any(String) },
        afterMs: { type: 'number', minimum: 0, description: expect.any(String) },
      },
    });
  });

  it('creates an InterruptCallback from JSON options, and takes `when` at runtime', async () => {
    // What the registry creates goes into any pipeline as is: its tensor names are checked when a generation starts.
    const byStep = registry.create('interrupt', { atStep: 2 });
    expect(byStep).toBeInstanceOf(InterruptCallback);
    expect((await generate({ callbackOnStepEnd: byStep })).interruptedAtStep).toBe(2);
    const byPredicate = registry.create('interrupt', {}, { when: (_state, stepIndex) => stepIndex === 3 });
    expect((await generate({ callbackOnStepEnd: byPredicate })).interruptedAtStep).toBe(3);
  });

  it.each<[string, unknown, RegExp]>([
    ['a wrongly typed option', { atStep: 'ten' }, /Invalid options for callback plugin "interrupt": atStep: /],
    ['an out-of-range option', { atRatio: 2 }, /atRatio: /],
    ['an infinite afterMs', { afterMs: Infinity }, /afterMs: /],
    ['an unknown option', { steps: 3 }, /Unrecognized key: "steps"/],
    ['`when` inside the JSON options', { when: 'true' }, /Unrecognized key: "when"/],
    ['no condition at all', {}, /at least one condition/],
  ])('rejects %s', (_case, options, message) => {
    expect(() => registry.create('interrupt', options as never)).toThrow(InvalidArgumentError);
    expect(() => registry.create('interrupt', options as never)).toThrow(message);
  });
});

it('stops an SDXL pipeline too (toy SDXL pipeline)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'diff-interrupt-sdxl-'));
  try {
    await writeToyPipeline(dir, 'sdxl');
    const xl = await StableDiffusionXLPipeline.fromPretrained(dir);
    const run = (options: Partial<StableDiffusionXLOptions>) =>
      xl.generate({ prompt: 'a red cat', numInferenceSteps: 4, height: 16, width: 16, generator: new Generator().manualSeed(1), ...options });
    const interrupted = await run({ callbackOnStepEnd: new InterruptCallback({ atRatio: 0.5 }) });
    expect(interrupted.interruptedAtStep).toBe(2);
    expect(interrupted.images).toEqual((await run({ callbackOnStepEnd: interruptAt(2) })).images);
    const controller = new InterruptController();
    controller.interrupt();
    expect((await run({ callbackOnStepEnd: controller.callback })).interruptedAtStep).toBe(-1);
    await xl.dispose();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// Type-level checks: compiled by the test script's `tsc --noEmit`, never run.
export function typeChecks(): void {
  createCallback('interrupt', { atStep: 10 }, { when: () => true });
  // @ts-expect-error atStep is a number: the package's registry augmentation types the options.
  createCallback('interrupt', { atStep: 'ten' });
  // @ts-expect-error `when` is a runtime value, never a JSON option.
  createCallback('interrupt', { when: () => true });
  const sdOption: StableDiffusionOptions['callbackOnStepEnd'] = [new InterruptCallback({ atStep: 10 }), new InterruptController().callback];
  const sdxlOption: StableDiffusionXLOptions['callbackOnStepEnd'] = [new InterruptCallback({ atStep: 10 }), new InterruptController().callback];
  void [sdOption, sdxlOption];
}
