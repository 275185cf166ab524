import { CallbackError, InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import type { CallbackPipeline, CallbackPlugin } from '../contract.js';

import { GenerationContext, type GenerationContextSettings } from './context.js';
import { MultiPipelineCallbacks, PipelineCallback } from './pipeline-callback.js';
import { resolveCallbacks } from './resolve.js';
import { SDXL_CFG_LAYOUT, SD_CFG_LAYOUT } from '../pipelines/cfg-layouts.js';

const allowed = ['latents', 'promptEmbeds', 'negativePromptEmbeds', 'predOriginalSample'] as const;
const settings = { allowed, pipelineName: 'StableDiffusionPipeline' };
/** The old single-option form: a `callbackOnStepEnd` value (and its tensor inputs). */
const resolveStepEndCallbacks = (option: unknown, extra: { tensorInputs?: readonly string[]; unavailable?: Record<string, string> } = {}) =>
  resolveCallbacks({ callbackOnStepEnd: option, callbackOnStepEndTensorInputs: extra.tensorInputs }, { ...settings, unavailable: extra.unavailable });
const tensor = (value: number, rows = 1) => new Tensor(new Float32Array(rows * 2).fill(value), [rows, 2]);
const context = (overrides: Partial<GenerationContextSettings> = {}) =>
  new GenerationContext({
    pipelineName: 'StableDiffusionPipeline', modelFamily: 'stable-diffusion', callbackTensorInputs: allowed, cfgLayout: SD_CFG_LAYOUT,
    guidanceScale: 7.5, timesteps: [900, 500, 100], batchSize: 1, latentChannels: 4, vaeScaleFactor: 8, decodeLatents: async () => [],
    ...overrides,
  });

function plugin(name: string, tensorInputs: CallbackPlugin<string>['tensorInputs'], extra: Partial<CallbackPlugin<string>> = {}) {
  const calls: string[] = [];
  const callback: CallbackPlugin<string> & { calls: string[] } = {
    specificationVersion: 'v1',
    name,
    tensorInputs,
    calls,
    onStepEnd: (_pipeline, _step, _timestep, kwargs) => {
      calls.push(name);
      return kwargs;
    },
    ...extra,
  };
  return callback;
}

describe('resolveStepEndCallbacks', () => {
  it('defaults plain functions to the latents', () => {
    expect(resolveStepEndCallbacks(() => undefined).tensorInputs).toEqual({ onStepBegin: [], onStepEnd: ['latents'] });
  });

  it('rejects tensor names the pipeline does not have, naming them and the allowed ones', () => {
    expect(() => resolveStepEndCallbacks(() => undefined, { tensorInputs: ['mask', 'latents'] })).toThrow(
      /callbackOnStepEndTensorInputs asks for tensor inputs that StableDiffusionPipeline does not have: mask\. Allowed: latents, promptEmbeds, negativePromptEmbeds, predOriginalSample\./,
    );
    expect(() => resolveStepEndCallbacks(plugin('needs-mask', ['mask']))).toThrow(InvalidArgumentError);
  });

  it('takes plugin inputs, de-duplicated, and optional inputs only where the pipeline has them', () => {
    const multi = new MultiPipelineCallbacks([
      plugin('a', ['promptEmbeds']),
      plugin('b', ['promptEmbeds', 'latents'], { optionalTensorInputs: ['mask'] }),
    ]);
    expect(multi.tensorInputs).toEqual(['promptEmbeds', 'latents']);
    expect(resolveStepEndCallbacks(multi).tensorInputs.onStepEnd).toEqual(['latents', 'promptEmbeds']);
  });

  it('refuses plugins written for another contract version', () => {
    const stranger = { ...plugin('future', []), specificationVersion: 'v2' } as unknown as CallbackPlugin<string>;
    expect(() => resolveStepEndCallbacks(stranger)).toThrow(/specification v2; this version of @diff\/core supports: v1/);
  });

  it('rejects entries that are neither functions nor plugins', () => {
    expect(() => resolveStepEndCallbacks([42])).toThrow(/must be functions, plugins/);
  });
});

describe('GenerationCallbacks.run', () => {
  it('skips falsy entries, flattens arrays and runs pre, normal, post in order', async () => {
    const post = plugin('post', [], { enforce: 'post' });
    const pre = plugin('pre', [], { enforce: 'pre' });
    const middle = plugin('middle', []);
    const order: string[] = [];
    for (const p of [post, pre, middle]) p.calls.push = (name: string) => order.push(name);
    const callbacks = resolveStepEndCallbacks([post, false, [null, middle], undefined, pre]);
    await callbacks.run('onStepEnd', context(), 0, 900, { latents: tensor(1) });
    expect(order).toEqual(['pre', 'middle', 'post']);
  });

  it('writes back what callbacks return, keeps what they leave out and chains the kwargs', async () => {
    const replacement = tensor(5);
    const seen: unknown[] = [];
    const callbacks = resolveStepEndCallbacks(
      [
        (_p: CallbackPipeline, _i: number, _t: number, kwargs: Record<string, Tensor>) => ({ ...kwargs, latents: replacement }),
        (_p: CallbackPipeline, _i: number, _t: number, kwargs: Record<string, Tensor>) => {
          seen.push(kwargs.latents);
        },
      ],
      { tensorInputs: ['latents', 'promptEmbeds'] },
    );
    const promptEmbeds = tensor(2);
    const replaced = await callbacks.run('onStepEnd', context(), 1, 500, { latents: tensor(1), promptEmbeds });
    expect(seen).toEqual([replacement]);
    expect(replaced).toEqual({ latents: replacement });
  });

  it('wraps a throwing callback in a CallbackError naming it, the hook and the step', async () => {
    const boom = new Error('boom');
    const callbacks = resolveStepEndCallbacks(
      plugin('exploder', ['latents'], {
        onStepEnd: () => {
          throw boom;
        },
      }),
    );
    const failure = callbacks.run('onStepEnd', context(), 2, 100, { latents: tensor(1) });
    await expect(failure).rejects.toThrow('Callback "exploder" failed in onStepEnd at step 2: boom');
    await expect(failure).rejects.toMatchObject({ callbackName: 'exploder', stepIndex: 2, hook: 'onStepEnd', cause: boom });
  });

  it('names a function callback by its function name and rejects returned names outside the allow-list', async () => {
    const callbacks = resolveStepEndCallbacks(function sneaky() {
      return { mask: tensor(1) };
    });
    await expect(callbacks.run('onStepEnd', context(), 0, 900, { latents: tensor(1) })).rejects.toThrow(
      /Callback "sneaky" failed in onStepEnd at step 0: it returned "mask", which this pipeline does not accept/,
    );
  });

  it('rejects returned values that are not float32 tensors', async () => {
    const callbacks = resolveStepEndCallbacks(() => ({ latents: [1, 2] }));
    await expect(callbacks.run('onStepEnd', context(), 0, 900, { latents: tensor(1) })).rejects.toBeInstanceOf(CallbackError);
  });
});

describe('step-begin hooks', () => {
  it('runs plugin onStepBegin hooks and plain callbackOnStepBegin functions in the enforce order, each with its own inputs', async () => {
    const order: string[] = [];
    const both: CallbackPlugin<'latents'> = {
      specificationVersion: 'v1', name: 'both', tensorInputs: ['latents'], enforce: 'post',
      onStepBegin: () => void order.push('both:begin'),
      onStepEnd: () => void order.push('both:end'),
    };
    const seen: string[][] = [];
    const callbacks = resolveCallbacks(
      {
        callbackOnStepEnd: both,
        callbackOnStepBegin: [false, function early(_p: CallbackPipeline, _i: number, _t: number, kwargs: object) { order.push('early'); seen.push(Object.keys(kwargs)); }],
        callbackOnStepBeginTensorInputs: ['promptEmbeds'],
      },
      settings,
    );
    expect(callbacks.tensorInputs).toEqual({ onStepBegin: ['latents', 'promptEmbeds'], onStepEnd: ['latents'] });
    await callbacks.run('onStepBegin', context(), 0, 900, { latents: tensor(1), promptEmbeds: tensor(2, 2) });
    await callbacks.run('onStepEnd', context(), 0, 900, { latents: tensor(1) });
    expect(order).toEqual(['early', 'both:begin', 'both:end']);
    expect(seen).toEqual([['latents', 'promptEmbeds']]);
  });

  it('names the hook in errors and refuses plugins in callbackOnStepBegin', async () => {
    const callbacks = resolveCallbacks({ callbackOnStepBegin: function broken() { throw new Error('no'); } }, settings);
    await expect(callbacks.run('onStepBegin', context(), 1, 500, { latents: tensor(1) })).rejects.toThrow(
      'Callback "broken" failed in onStepBegin at step 1: no',
    );
    expect(() => resolveCallbacks({ callbackOnStepBegin: plugin('p', []) }, settings)).toThrow(/plugins go in callbackOnStepEnd/);
    expect(() => resolveCallbacks({ callbackOnStepEnd: { specificationVersion: 'v1', name: 'hookless', tensorInputs: [] } }, settings)).toThrow(
      /objects with onStepBegin and\/or onStepEnd/,
    );
  });
});

describe('what callbacks write', () => {
  it('checks names written into the kwargs in place like returned ones', async () => {
    const callbacks = resolveStepEndCallbacks(function inPlace(_p: CallbackPipeline, _i: number, _t: number, kwargs: Record<string, unknown>) {
      kwargs.mask = tensor(1);
    });
    await expect(callbacks.run('onStepEnd', context(), 0, 900, { latents: tensor(1) })).rejects.toThrow(
      /Callback "inPlace" failed in onStepEnd at step 0: it returned "mask", which this pipeline does not accept/,
    );
  });

  it('lets callbacks read predOriginalSample but not replace it, and refuses it where the scheduler has none', async () => {
    const x0 = tensor(3);
    const reader = resolveStepEndCallbacks(() => undefined, { tensorInputs: ['predOriginalSample'] });
    await expect(reader.run('onStepEnd', context(), 0, 900, { latents: tensor(1), predOriginalSample: x0 })).resolves.toEqual({});
    const writer = resolveStepEndCallbacks(function writer() { return { predOriginalSample: tensor(4) }; }, { tensorInputs: ['predOriginalSample'] });
    await expect(writer.run('onStepEnd', context(), 0, 900, { latents: tensor(1), predOriginalSample: x0 })).rejects.toThrow(
      /it replaced "predOriginalSample", which callbacks may read but not replace/,
    );
    const unavailable = { predOriginalSample: 'PNDMScheduler computes no predicted clean sample' };
    expect(() => resolveStepEndCallbacks(() => undefined, { tensorInputs: ['predOriginalSample'], unavailable })).toThrow(
      'callbackOnStepEndTensorInputs asks for predOriginalSample (PNDMScheduler computes no predicted clean sample).',
    );
    const optional = plugin('x0-preview', ['latents'], { optionalTensorInputs: ['predOriginalSample'] });
    expect(resolveStepEndCallbacks(optional, { unavailable }).tensorInputs.onStepEnd).toEqual(['latents']);
  });

  it('rejects tensor input options that are not arrays of names', () => {
    expect(() => resolveStepEndCallbacks(() => undefined, { tensorInputs: 'latents' as never })).toThrow(
      /callbackOnStepEndTensorInputs must be an array of tensor names/,
    );
  });
});

describe('disableGuidance / enableGuidance', () => {
  const rows = (values: number[], width = 2) => new Tensor(Float32Array.from(values.flatMap((v) => Array(width).fill(v))), [values.length, width]);
  const firstColumn = (t: Tensor | undefined) => (t ? t.chunk(t.shape[0]).map((row) => row.data[0]) : undefined);

  it('halves the SD prompt embeddings in the kwargs and in the loop state, and rebuilds them from negativePromptEmbeds', () => {
    const state = context({ batchSize: 2 });
    const loop: Record<string, Tensor> = { latents: rows([0, 0]), promptEmbeds: rows([-1, -2, 1, 2]), negativePromptEmbeds: rows([-1, -2]) };
    state.attachLoopTensors(loop);
    const kwargs: Record<string, Tensor> = { promptEmbeds: loop.promptEmbeds };
    expect(state.disableGuidance(kwargs)).toBe(kwargs);
    expect(state.guidanceScale).toBe(0);
    expect(firstColumn(kwargs.promptEmbeds)).toEqual([1, 2]);
    expect(firstColumn(loop.promptEmbeds)).toEqual([1, 2]);
    expect(state.disableGuidance(kwargs)).toBe(kwargs);

    const later: Record<string, Tensor> = {};
    state.enableGuidance(later);
    expect(state.guidanceScale).toBe(7.5);
    expect(firstColumn(loop.promptEmbeds)).toEqual([-1, -2, 1, 2]);
    expect(later).toEqual({});
  });

  it('keeps the conditional rows of SDXL tensors, the time ids tiled per image as diffusers does', () => {
    const state = context({ batchSize: 2, cfgLayout: SDXL_CFG_LAYOUT, modelFamily: 'stable-diffusion-xl' });
    const loop: Record<string, Tensor> = {
      latents: rows([0, 0]), promptEmbeds: rows([-1, -2, 1, 2]), addTextEmbeds: rows([-3, -4, 3, 4]), addTimeIds: rows([-5, 5, -6, 6]),
    };
    state.attachLoopTensors(loop);
    const kwargs = state.disableGuidance({ addTimeIds: loop.addTimeIds });
    expect(firstColumn(kwargs.addTimeIds)).toEqual([5, 6]);
    expect(firstColumn(loop.promptEmbeds)).toEqual([1, 2]);
    expect(firstColumn(loop.addTextEmbeds)).toEqual([3, 4]);
    state.enableGuidance(kwargs, 4);
    expect(state.guidanceScale).toBe(4);
    expect(firstColumn(kwargs.addTimeIds)).toEqual([-5, 5, -6, 6]);
    expect(firstColumn(loop.addTextEmbeds)).toEqual([-3, -4, 3, 4]);
  });

  it('duplicates the inpainting conditioning back, and refuses to enable guidance that never existed', () => {
    const state = context({ cfgLayout: { mask: { kind: 'duplicated' } } });
    const loop: Record<string, Tensor> = { latents: rows([0]), mask: rows([7, 7]) };
    state.attachLoopTensors(loop);
    state.disableGuidance({});
    expect(firstColumn(loop.mask)).toEqual([7]);
    state.enableGuidance({});
    expect(firstColumn(loop.mask)).toEqual([7, 7]);

    const unguided = context({ guidanceScale: 1 });
    expect(() => unguided.enableGuidance({})).toThrow(/started with guidanceScale 1 \(≤ 1\), so no negative conditioning was computed/);
    expect(() => state.enableGuidance({}, Number.NaN)).toThrow(/greater than 1, got NaN/);
  });
});

describe('PipelineCallback', () => {
  class Probe extends PipelineCallback<'latents'> {
    readonly tensorInputs = ['latents'] as const;
    callbackFn() {}
  }

  it('validates the cut-off options as diffusers does', () => {
    expect(new Probe().config).toEqual({ cutoffStepRatio: 1, cutoffStepIndex: null });
    expect(new Probe({ cutoffStepIndex: 10 }).config).toEqual({ cutoffStepRatio: null, cutoffStepIndex: 10 });
    expect(() => new Probe({ cutoffStepRatio: 0.4, cutoffStepIndex: 3 })).toThrow(
      'Either cutoffStepRatio or cutoffStepIndex should be provided, not both or none.',
    );
    expect(() => new Probe({ cutoffStepRatio: null })).toThrow(/not both or none/);
    expect(() => new Probe({ cutoffStepRatio: 1.5 })).toThrow(/between 0.0 and 1.0/);
    expect(() => new Probe({ cutoffStepRatio: null, cutoffStepIndex: -1 })).toThrow(/non-negative integer/);
  });

  it('computes the cut-off step as int(numTimesteps · ratio)', () => {
    expect(new Probe({ cutoffStepRatio: 0.4 }).cutoffStep({ numTimesteps: 11 })).toBe(4);
    expect(new Probe({ cutoffStepRatio: 0.4 }).cutoffStep({ numTimesteps: 25 })).toBe(10);
    expect(new Probe({ cutoffStepIndex: 7 }).cutoffStep({ numTimesteps: 25 })).toBe(7);
    expect(new Probe().name).toBe('Probe');
  });
});

describe('GenerationContext', () => {
  it('keeps guidance and interrupt per generation', () => {
    const first = context();
    const second = context();
    first.guidanceScale = 0;
    first.interrupt = true;
    expect(second.guidanceScale).toBe(7.5);
    expect(second.interrupt).toBe(false);
    expect(first.doClassifierFreeGuidance).toBe(false);
    expect(first.numTimesteps).toBe(3);
  });
});
