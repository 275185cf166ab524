import { jest } from '@jest/globals';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DDIMScheduler,
  Generator,
  StableDiffusionControlNetPipeline,
  StableDiffusionInpaintPipeline,
  StableDiffusionPipeline,
  StableDiffusionXLPipeline,
  type OnnxModel,
  type RawImage,
  type StableDiffusionControlNetOptions,
  type StableDiffusionInpaintOptions,
  type StableDiffusionOptions,
  type StableDiffusionXLOptions,
} from '@diff/core';
import type { CallbackKwargs, CallbackOnStepBegin, CallbackOnStepEnd, CallbackPipeline } from '@diff/core/contract';
import { CallbackError, CallbackRegistry, createCallback, InvalidArgumentError, Tensor } from '@diff/core/plugin';
import { writeToyPipeline } from '@diff/core/testing';
import { modelDir } from '@diff/model-tiny';
import {
  CFGCutoffCallback,
  GuidanceIntervalCallback,
  guidanceIntervalPlugin,
  plugin,
  SDCFGCutoffCallback,
  SDXLCFGCutoffCallback,
  SDXLControlnetCFGCutoffCallback,
} from './index.js';

/** The callback options of any pipeline's `generate`, as these tests pass them. */
interface LoopOptions {
  callbackOnStepEnd?: unknown;
  callbackOnStepEndTensorInputs?: readonly string[];
  callbackOnStepBegin?: unknown;
  callbackOnStepBeginTensorInputs?: readonly string[];
  numImagesPerPrompt?: number;
  guidanceScale?: number;
}

/** A pipeline under test: a seeded run returning the final latents, and the models whose batch shows the guidance. */
interface PipelineCase {
  readonly title: string;
  readonly guidanceScale: number;
  /** The callback tensors that are CFG-doubled in this pipeline, which the hand-written equivalents rewrite. */
  readonly doubled: readonly string[];
  /** The diffusers-named cut-off class for this pipeline. */
  readonly diffusersCutoff: (cutoffStepRatio: number) => CFGCutoffCallback<string>;
  readonly models: () => readonly OnnxModel[];
  latents(options: LoopOptions): Promise<Tensor<'float32'>>;
}

// ---------------------------------------------------------------------------------------------------------------
// Hand-written equivalents, each tensor's layout spelled out by name as an app author would (diffusers' guide).

/**
 * The conditional rows of a doubled tensor: SDXL's time ids are a [negative, positive] pair per image (diffusers'
 * `repeat`); the rest are [negative × B; positive × B] or the same B rows twice.
 */
function conditionalRows(name: string, tensor: Tensor<'float32'>, batchSize: number): Tensor<'float32'> {
  if (name !== 'addTimeIds') return tensor.narrow(0, batchSize, batchSize);
  return Tensor.cat(Array.from({ length: batchSize }, (_, image) => tensor.narrow(0, 2 * image + 1, 1)));
}

/** diffusers' dynamic CFG by hand: at `cutoffStep`, guidance 0 and the conditional rows of each of `names`. */
function handCutoff(cutoffStep: number, names: readonly string[]): CallbackOnStepEnd<string> {
  return (pipeline, stepIndex, _timestep, kwargs) => {
    if (stepIndex !== cutoffStep) return kwargs;
    pipeline.guidanceScale = 0;
    return Object.fromEntries(names.map((name) => [name, conditionalRows(name, kwargs[name], pipeline.batchSize)]));
  };
}

/**
 * A guidance interval by hand, for SD 1.x pipelines (their negative embeddings are a callback tensor): outside
 * [first, end) keep the conditional rows; back inside, put the negative embeddings in front again and repeat the
 * duplicated tensors (mask, control image).
 */
function handInterval(first: number, end: number, guidanceScale: number, names: readonly string[]): CallbackOnStepBegin<string> {
  return (pipeline, stepIndex, _timestep, kwargs) => {
    const guided = first <= stepIndex && stepIndex < end;
    if (guided === pipeline.doClassifierFreeGuidance) return kwargs;
    pipeline.guidanceScale = guided ? guidanceScale : 0;
    const rewrite = (name: string, tensor: Tensor<'float32'>) => {
      if (!guided) return conditionalRows(name, tensor, pipeline.batchSize);
      return Tensor.cat([name === 'promptEmbeds' ? kwargs.negativePromptEmbeds : tensor, tensor]);
    };
    return Object.fromEntries(names.map((name) => [name, rewrite(name, kwargs[name])]));
  };
}

/** Records, per step, whether guidance is on when the model runs (plain step-begin functions run after plugins). */
function guidanceProbe() {
  const guided: boolean[] = [];
  const scales: number[] = [];
  const probe: CallbackOnStepBegin<'latents'> = (pipeline) => {
    guided.push(pipeline.doClassifierFreeGuidance);
    scales.push(pipeline.guidanceScale);
  };
  return { probe, guided, scales };
}

/** The batch rows of every run of `models` while `run` runs, per model. */
async function batchRows(models: readonly OnnxModel[], run: () => Promise<unknown>): Promise<number[][]> {
  const spies = models.map((model) => jest.spyOn(model, 'run'));
  try {
    await run();
    return spies.map((spy) => spy.mock.calls.map(([feeds]) => (feeds.sample as Tensor).shape[0]));
  } finally {
    spies.forEach((spy) => spy.mockRestore());
  }
}

const expectSameTensor = (actual: Tensor, expected: Tensor) => {
  expect(actual.shape).toEqual(expected.shape);
  expect(Array.from(actual.data)).toEqual(Array.from(expected.data));
};
const expectOtherTensor = (actual: Tensor, other: Tensor) => expect(Array.from(actual.data)).not.toEqual(Array.from(other.data));

// ---------------------------------------------------------------------------------------------------------------

let toyDir: string;
let tiny: StableDiffusionPipeline;
let sdxl: StableDiffusionXLPipeline;
let inpaint: StableDiffusionInpaintPipeline;
let controlnet: StableDiffusionControlNetPipeline;

beforeAll(async () => {
  toyDir = await mkdtemp(join(tmpdir(), 'diff-cfg-cutoff-'));
  await Promise.all((['sdxl', 'sd-inpaint', 'sd-controlnet'] as const).map((kind) => writeToyPipeline(join(toyDir, kind), kind)));
  [tiny, sdxl, inpaint, controlnet] = await Promise.all([
    StableDiffusionPipeline.fromPretrained(modelDir),
    StableDiffusionXLPipeline.fromPretrained(join(toyDir, 'sdxl')),
    StableDiffusionInpaintPipeline.fromPretrained(join(toyDir, 'sd-inpaint')),
    StableDiffusionControlNetPipeline.fromPretrained(join(toyDir, 'sd-controlnet')),
  ]);
  // The toys' PNDM runs N + 1 timesteps; DDIM runs N, which keeps the step counts below plain.
  for (const pipeline of [inpaint, controlnet]) pipeline.scheduler = DDIMScheduler.fromConfig(pipeline.scheduler.config);
});

afterAll(async () => {
  await Promise.all([tiny, sdxl, inpaint, controlnet].map((pipeline) => pipeline?.dispose()));
  await rm(toyDir, { recursive: true, force: true });
});

function picture(channels: 1 | 3, value: (x: number, y: number, c: number) => number): RawImage {
  const data = new Uint8Array(16 * 16 * channels);
  for (let i = 0; i < data.length; i++) data[i] = value(Math.floor(i / channels) % 16, Math.floor(i / channels / 16), i % channels);
  return { data, width: 16, height: 16, channels };
}

/** Latent output, the same seed every run. */
const withSeed = (options: LoopOptions) => ({ outputType: 'latent' as const, generator: new Generator().manualSeed(7), ...options });

const tinyCase: PipelineCase = {
  title: 'StableDiffusionPipeline (@diff/model-tiny)',
  guidanceScale: 7.5,
  doubled: ['promptEmbeds'],
  diffusersCutoff: (cutoffStepRatio) => new SDCFGCutoffCallback({ cutoffStepRatio }),
  models: () => [tiny.components.unet],
  latents: async (options) => {
    const settings = { prompt: 'a large red circle at the top left on a blue background', numInferenceSteps: 10, ...withSeed(options) };
    return (await tiny.generate(settings as StableDiffusionOptions<'latents', 'latent'>)).images;
  },
};

// The toys run 4 steps on 16×16 pictures, two images per prompt (diffusers' cut-off callbacks crash there).
const TOY_STEPS = 4;
const toyCases: PipelineCase[] = [
  {
    title: 'StableDiffusionXLPipeline (toy)',
    guidanceScale: 5,
    doubled: ['promptEmbeds', 'addTextEmbeds', 'addTimeIds'],
    diffusersCutoff: (cutoffStepRatio) => new SDXLCFGCutoffCallback({ cutoffStepRatio }),
    models: () => [sdxl.components.unet],
    latents: async (options) => {
      // Negative micro-conditioning unlike the positive one, so that the [negative, positive] pairs of the time ids differ.
      const settings = {
        prompt: 'a red cat', negativePrompt: 'a dog', negativeOriginalSize: [8, 8] as const, negativeTargetSize: [24, 24] as const,
        height: 16, width: 16, numInferenceSteps: TOY_STEPS, guidanceScale: 5, numImagesPerPrompt: 2, ...withSeed(options),
      };
      return (await sdxl.generate(settings as StableDiffusionXLOptions<'latents', 'latent'>)).images;
    },
  },
  {
    title: 'StableDiffusionInpaintPipeline (toy)',
    guidanceScale: 7.5,
    doubled: ['promptEmbeds', 'mask', 'maskedImageLatents'],
    diffusersCutoff: (cutoffStepRatio) => new SDCFGCutoffCallback({ cutoffStepRatio }),
    models: () => [inpaint.components.unet],
    latents: async (options) => {
      const settings = {
        prompt: 'a red cat', image: picture(3, (x, y, c) => (x * 16 + y * 5 + c * 80) % 256), maskImage: picture(1, (x) => (x < 8 ? 255 : 0)),
        height: 16, width: 16, numInferenceSteps: TOY_STEPS, numImagesPerPrompt: 2, ...withSeed(options),
      };
      return (await inpaint.generate(settings as StableDiffusionInpaintOptions<'latents', 'latent'>)).images;
    },
  },
  {
    title: 'StableDiffusionControlNetPipeline (toy)',
    guidanceScale: 7.5,
    doubled: ['promptEmbeds', 'image'],
    diffusersCutoff: (cutoffStepRatio) => new SDCFGCutoffCallback({ cutoffStepRatio }),
    models: () => [controlnet.components.unet, controlnet.components.controlnets[0].model],
    latents: async (options) => {
      const settings = {
        prompt: 'a red circle', image: picture(3, (x, y) => ((x - 8) ** 2 + (y - 8) ** 2 <= 25 ? 255 : 0)),
        numInferenceSteps: TOY_STEPS, numImagesPerPrompt: 2, ...withSeed(options),
      };
      return (await controlnet.generate(settings as StableDiffusionControlNetOptions<'latents', 'latent'>)).images;
    },
  },
];

describe('CFG cut-off on the tiny SD model', () => {
  it('at 0.4 equals the guide’s dynamic CFG written by hand, and the UNet batch drops to 1 row after the cut-off', async () => {
    const callbackDynamicCfg: CallbackOnStepEnd<'promptEmbeds'> = (pipeline, stepIndex, _timestep, callbackKwargs) => {
      if (stepIndex === Math.trunc(pipeline.numTimesteps * 0.4)) {
        callbackKwargs.promptEmbeds = callbackKwargs.promptEmbeds.chunk(2)[1];
        pipeline.guidanceScale = 0;
      }
      return callbackKwargs;
    };
    const expected = await tinyCase.latents({ callbackOnStepEnd: callbackDynamicCfg, callbackOnStepEndTensorInputs: ['promptEmbeds'] });
    for (const callback of [new SDCFGCutoffCallback({ cutoffStepRatio: 0.4 }), new CFGCutoffCallback({ cutoffStepRatio: 0.4 })]) {
      let latents: Tensor | undefined;
      const [rows] = await batchRows(tinyCase.models(), async () => {
        latents = await tinyCase.latents({ callbackOnStepEnd: callback });
      });
      expect(rows).toEqual([2, 2, 2, 2, 2, 1, 1, 1, 1, 1]);
      expectSameTensor(latents!, expected);
    }
    expectOtherTensor(expected, await tinyCase.latents({}));
  });

  it('does nothing when the generation runs without guidance', async () => {
    const unguided = await tinyCase.latents({ guidanceScale: 1 });
    expectSameTensor(await tinyCase.latents({ guidanceScale: 1, callbackOnStepEnd: new CFGCutoffCallback({ cutoffStepIndex: 0 }) }), unguided);
  });
});

describe.each(toyCases)('CFG cut-off on $title with numImagesPerPrompt 2', (pipelineCase) => {
  it('equals the hand-written cut-off, with the generic and the diffusers-named class alike', async () => {
    const cutoffStep = TOY_STEPS / 2;
    const expected = await pipelineCase.latents({
      callbackOnStepEnd: handCutoff(cutoffStep, pipelineCase.doubled),
      callbackOnStepEndTensorInputs: pipelineCase.doubled,
    });
    for (const callback of [new CFGCutoffCallback({ cutoffStepRatio: 0.5 }), pipelineCase.diffusersCutoff(0.5)]) {
      let latents: Tensor | undefined;
      const rows = await batchRows(pipelineCase.models(), async () => {
        latents = await pipelineCase.latents({ callbackOnStepEnd: callback });
      });
      for (const modelRows of rows) expect(modelRows).toEqual([4, 4, 4, 2]);
      expectSameTensor(latents!, expected);
    }
  });
});

describe('GuidanceIntervalCallback', () => {
  it('guides only the steps in [floor(N·start), floor(N·end)), as a hand-written interval does', async () => {
    const { probe, guided, scales } = guidanceProbe();
    let latents: Tensor | undefined;
    const [rows] = await batchRows(tinyCase.models(), async () => {
      latents = await tinyCase.latents({ callbackOnStepEnd: new GuidanceIntervalCallback({ start: 0.2, end: 0.7 }), callbackOnStepBegin: probe });
    });
    expect(guided).toEqual([false, false, true, true, true, true, true, false, false, false]);
    expect(scales).toEqual([0, 0, 7.5, 7.5, 7.5, 7.5, 7.5, 0, 0, 0]);
    expect(rows).toEqual([1, 1, 2, 2, 2, 2, 2, 1, 1, 1]);
    const expected = await tinyCase.latents({
      callbackOnStepBegin: handInterval(2, 7, 7.5, ['promptEmbeds']),
      callbackOnStepBeginTensorInputs: ['promptEmbeds', 'negativePromptEmbeds'],
    });
    expectSameTensor(latents!, expected);
    expectOtherTensor(expected, await tinyCase.latents({}));
  });

  it('with start 0 and end 1 changes nothing', async () => {
    for (const pipelineCase of [tinyCase, ...toyCases]) {
      expectSameTensor(await pipelineCase.latents({ callbackOnStepEnd: new GuidanceIntervalCallback({ start: 0, end: 1 }) }), await pipelineCase.latents({}));
    }
  });

  it.each(toyCases)('turns guidance off and on again on $title with numImagesPerPrompt 2', async (pipelineCase) => {
    const interval = new GuidanceIntervalCallback({ start: 0.25, end: 0.75 });
    const { probe, guided } = guidanceProbe();
    let latents: Tensor | undefined;
    const rows = await batchRows(pipelineCase.models(), async () => {
      latents = await pipelineCase.latents({ callbackOnStepEnd: interval, callbackOnStepBegin: probe });
    });
    expect(guided).toEqual([false, true, true, false]);
    for (const modelRows of rows) expect(modelRows).toEqual([2, 4, 4, 2]);
    if (pipelineCase.doubled.includes('addTextEmbeds')) {
      // SDXL's negative pooled embeddings are no callback tensor: compare with a cut-off instead, which an interval
      // [0, end) is (guided steps 0, 1, 2 either way).
      const cutoff = await pipelineCase.latents({ callbackOnStepEnd: new CFGCutoffCallback({ cutoffStepIndex: 2 }) });
      expectSameTensor(await pipelineCase.latents({ callbackOnStepEnd: new GuidanceIntervalCallback({ end: 0.75 }) }), cutoff);
      return;
    }
    const expected = await pipelineCase.latents({
      callbackOnStepBegin: handInterval(1, 3, pipelineCase.guidanceScale, pipelineCase.doubled),
      callbackOnStepBeginTensorInputs: [...pipelineCase.doubled, 'negativePromptEmbeds'],
    });
    expectSameTensor(latents!, expected);
  });

  it('needs guidance on at the start: enableGuidance has no negative conditioning otherwise', async () => {
    const failure = await tinyCase.latents({ guidanceScale: 1, callbackOnStepEnd: new GuidanceIntervalCallback({ start: 0.5 }) }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(CallbackError);
    expect(failure).toMatchObject({ callbackName: 'GuidanceIntervalCallback', hook: 'onStepBegin', stepIndex: 5 });
    expect((failure as Error).message).toMatch(/started with guidanceScale 1/);
  });

  it('rejects intervals outside 0 ≤ start < end ≤ 1', () => {
    for (const options of [{ start: 0.5, end: 0.5 }, { start: 0.6, end: 0.4 }, { start: -0.1 }, { end: 1.5 }, { start: Number.NaN }, { start: '0.2' as never }]) {
      expect(() => new GuidanceIntervalCallback(options)).toThrow(InvalidArgumentError);
    }
    expect(() => new GuidanceIntervalCallback({ start: 1 })).toThrow(/0 ≤ start < end ≤ 1, got start 1 and end 1/);
    expect(new GuidanceIntervalCallback().config).toEqual({ start: 0, end: 1 });
  });

  it('reads no tensors and runs before other plugins', () => {
    const interval = new GuidanceIntervalCallback({ start: 0.2 });
    expect(interval.tensorInputs).toEqual([]);
    expect(interval.enforce).toBe('pre');
    expect(interval.name).toBe('GuidanceIntervalCallback');
  });
});

describe('the cut-off classes', () => {
  it('declare the tensors diffusers declares; the generic one needs none', () => {
    expect(new CFGCutoffCallback().tensorInputs).toEqual([]);
    expect(new SDCFGCutoffCallback().tensorInputs).toEqual(['promptEmbeds']);
    expect(new SDXLCFGCutoffCallback().tensorInputs).toEqual(['promptEmbeds', 'addTextEmbeds', 'addTimeIds']);
    expect(new SDXLControlnetCFGCutoffCallback().tensorInputs).toEqual(['promptEmbeds', 'addTextEmbeds', 'addTimeIds', 'image']);
    expect(new SDCFGCutoffCallback().name).toBe('SDCFGCutoffCallback');
  });

  it('take cutoffStepRatio or cutoffStepIndex with diffusers’ rules', () => {
    expect(new SDXLCFGCutoffCallback({ cutoffStepRatio: null, cutoffStepIndex: 10 }).config).toEqual({ cutoffStepRatio: null, cutoffStepIndex: 10 });
    expect(new SDXLCFGCutoffCallback({ cutoffStepIndex: 10 }).cutoffStep({ numTimesteps: 25 })).toBe(10);
    expect(new SDXLCFGCutoffCallback({ cutoffStepRatio: 0.4 }).cutoffStep({ numTimesteps: 25 })).toBe(10);
    expect(new CFGCutoffCallback().config).toEqual({ cutoffStepRatio: 1, cutoffStepIndex: null });
    for (const options of [{ cutoffStepRatio: 0.4, cutoffStepIndex: 3 }, { cutoffStepRatio: null }, { cutoffStepRatio: 1.5 }, { cutoffStepIndex: -1 }]) {
      expect(() => new CFGCutoffCallback(options)).toThrow(InvalidArgumentError);
    }
  });

  it('only disable guidance at the cut-off step', () => {
    const calls: number[] = [];
    const pipeline = { numTimesteps: 10, disableGuidance: (kwargs: object) => (calls.push(1), kwargs) } as unknown as CallbackPipeline;
    const callback = new CFGCutoffCallback({ cutoffStepRatio: 0.4 });
    for (let step = 0; step < 10; step++) void callback.onStepEnd(pipeline, step, 0, {} as CallbackKwargs<never>);
    expect(calls).toEqual([1]);
  });
});

describe('registry descriptors', () => {
  const registry = new CallbackRegistry([plugin, guidanceIntervalPlugin]);

  it('are listed as cfg-cutoff and guidance-interval, with their options’ JSON Schema', () => {
    expect(registry.list().map(({ name }) => name)).toEqual(['cfg-cutoff', 'guidance-interval']);
    expect(plugin.optionsJsonSchema).toMatchObject({
      type: 'object',
      additionalProperties: false,
      properties: { cutoffStepRatio: { description: expect.any(String) }, cutoffStepIndex: { description: expect.any(String) } },
    });
    expect(guidanceIntervalPlugin.optionsJsonSchema).toMatchObject({
      properties: { start: { type: 'number', default: 0, minimum: 0, maximum: 1 }, end: { type: 'number', default: 1, minimum: 0, maximum: 1 } },
    });
  });

  it('create the callbacks, with the classes’ defaults', () => {
    const cutoff = registry.create('cfg-cutoff', { cutoffStepRatio: 0.4 });
    expect(cutoff).toBeInstanceOf(CFGCutoffCallback);
    expect((cutoff as CFGCutoffCallback).config).toEqual({ cutoffStepRatio: 0.4, cutoffStepIndex: null });
    expect((registry.create('cfg-cutoff', { cutoffStepIndex: 3 }) as CFGCutoffCallback).config).toEqual({ cutoffStepRatio: null, cutoffStepIndex: 3 });
    expect((registry.create('cfg-cutoff') as CFGCutoffCallback).config).toEqual({ cutoffStepRatio: 1, cutoffStepIndex: null });
    const interval = registry.create('guidance-interval', { start: 0.2 });
    expect(interval).toBeInstanceOf(GuidanceIntervalCallback);
    expect((interval as GuidanceIntervalCallback).config).toEqual({ start: 0.2, end: 1 });
  });

  it('reject what the constructors reject, and unknown options', () => {
    const invalid: Array<[string, unknown, RegExp]> = [
      ['cfg-cutoff', { cutoffStepRatio: 0.4, cutoffStepIndex: 3 }, /not both or none/],
      ['cfg-cutoff', { cutoffStepRatio: 'half' }, /cutoffStepRatio must be a number between 0.0 and 1.0, got half/],
      ['cfg-cutoff', { cutoffStepIndex: 1.5 }, /cutoffStepIndex/],
      ['cfg-cutoff', { cutoffStepRaito: 0.4 }, /cutoffStepRaito/],
      ['guidance-interval', { start: 0.6, end: 0.4 }, /0 ≤ start < end ≤ 1/],
      ['guidance-interval', { end: 2 }, /end/],
    ];
    for (const [name, options, message] of invalid) {
      expect(() => registry.create(name as never, options as never)).toThrow(InvalidArgumentError);
      expect(() => registry.create(name as never, options as never)).toThrow(message);
    }
  });

  it('make a cut-off that runs as the class does', async () => {
    const expected = await tinyCase.latents({ callbackOnStepEnd: new SDCFGCutoffCallback({ cutoffStepRatio: 0.4 }) });
    expectSameTensor(await tinyCase.latents({ callbackOnStepEnd: registry.create('cfg-cutoff', { cutoffStepRatio: 0.4 }) }), expected);
  });
});

// Type-level checks: compiled by the test script's `tsc --noEmit`, never run.
export function typeChecks(): void {
  const sdOption: StableDiffusionOptions['callbackOnStepEnd'] = new SDCFGCutoffCallback();
  const genericOption: StableDiffusionXLOptions['callbackOnStepEnd'] = [new CFGCutoffCallback(), new GuidanceIntervalCallback({ start: 0.2 })];
  // @ts-expect-error SDXL's callback needs addTextEmbeds and addTimeIds, which SD 1.x pipelines do not have.
  const wrongPipeline: StableDiffusionOptions['callbackOnStepEnd'] = new SDXLCFGCutoffCallback();
  // @ts-expect-error the registry knows cfg-cutoff's options: the ratio is a number.
  createCallback('cfg-cutoff', { cutoffStepRatio: 'half' });
  createCallback('guidance-interval', { start: 0.2, end: 0.9 });
  void [sdOption, genericOption, wrongPipeline];
}
