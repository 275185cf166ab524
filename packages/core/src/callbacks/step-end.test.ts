import { CallbackError, InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import type { CallbackPipeline, StepEndCallback } from '../contract.js';
import { GenerationContext } from './context.js';
import { MultiPipelineCallbacks, PipelineCallback } from './pipeline-callback.js';
import { resolveStepEndCallbacks } from './step-end.js';

const allowed = ['latents', 'promptEmbeds', 'negativePromptEmbeds'] as const;
const settings = { allowed, pipelineName: 'StableDiffusionPipeline' };
const tensor = (value: number, rows = 1) => new Tensor(new Float32Array(rows * 2).fill(value), [rows, 2]);
const context = () =>
  new GenerationContext('StableDiffusionPipeline', allowed, { guidanceScale: 7.5, timesteps: [900, 500, 100], batchSize: 1, decodeLatents: async () => [] });

function plugin(name: string, tensorInputs: StepEndCallback<string>['tensorInputs'], extra: Partial<StepEndCallback<string>> = {}) {
  const calls: string[] = [];
  const callback: StepEndCallback<string> & { calls: string[] } = {
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
    expect(resolveStepEndCallbacks(() => undefined, settings).tensorInputs).toEqual(['latents']);
  });

  it('rejects tensor names the pipeline does not have, naming them and the allowed ones', () => {
    expect(() => resolveStepEndCallbacks(() => undefined, { ...settings, tensorInputs: ['mask', 'latents'] })).toThrow(
      /callbackOnStepEndTensorInputs asks for tensor inputs that StableDiffusionPipeline does not have: mask\. Allowed: latents, promptEmbeds, negativePromptEmbeds\./,
    );
    expect(() => resolveStepEndCallbacks(plugin('needs-mask', ['mask']), settings)).toThrow(InvalidArgumentError);
  });

  it('takes plugin inputs, de-duplicated, and optional inputs only where the pipeline has them', () => {
    const multi = new MultiPipelineCallbacks([
      plugin('a', ['promptEmbeds']),
      plugin('b', ['promptEmbeds', 'latents'], { optionalTensorInputs: ['mask'] }),
    ]);
    expect(multi.tensorInputs).toEqual(['promptEmbeds', 'latents']);
    expect(resolveStepEndCallbacks(multi, settings).tensorInputs).toEqual(['latents', 'promptEmbeds']);
  });

  it('refuses plugins written for another contract version', () => {
    const stranger = { ...plugin('future', []), specificationVersion: 'v2' } as unknown as StepEndCallback<string>;
    expect(() => resolveStepEndCallbacks(stranger, settings)).toThrow(/specification v2; this version of @diff\/core supports: v1/);
  });

  it('rejects entries that are neither functions nor plugins', () => {
    expect(() => resolveStepEndCallbacks([42], settings)).toThrow(/must be functions, step-end plugins/);
  });
});

describe('StepEndCallbacks.run', () => {
  it('skips falsy entries, flattens arrays and runs pre, normal, post in order', async () => {
    const post = plugin('post', [], { enforce: 'post' });
    const pre = plugin('pre', [], { enforce: 'pre' });
    const middle = plugin('middle', []);
    const order: string[] = [];
    for (const p of [post, pre, middle]) p.calls.push = (name: string) => order.push(name);
    const callbacks = resolveStepEndCallbacks([post, false, [null, middle], undefined, pre], settings);
    await callbacks.run(context(), 0, 900, { latents: tensor(1) });
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
      { ...settings, tensorInputs: ['latents', 'promptEmbeds'] },
    );
    const promptEmbeds = tensor(2);
    const replaced = await callbacks.run(context(), 1, 500, { latents: tensor(1), promptEmbeds });
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
      settings,
    );
    const failure = callbacks.run(context(), 2, 100, { latents: tensor(1) });
    await expect(failure).rejects.toThrow('Callback "exploder" failed in onStepEnd at step 2: boom');
    await expect(failure).rejects.toMatchObject({ callbackName: 'exploder', stepIndex: 2, hook: 'onStepEnd', cause: boom });
  });

  it('names a function callback by its function name and rejects returned names outside the allow-list', async () => {
    const callbacks = resolveStepEndCallbacks(function sneaky() {
      return { mask: tensor(1) };
    }, settings);
    await expect(callbacks.run(context(), 0, 900, { latents: tensor(1) })).rejects.toThrow(
      /Callback "sneaky" failed in onStepEnd at step 0: it returned "mask", which this pipeline does not accept/,
    );
  });

  it('rejects returned values that are not float32 tensors', async () => {
    const callbacks = resolveStepEndCallbacks(() => ({ latents: [1, 2] }), settings);
    await expect(callbacks.run(context(), 0, 900, { latents: tensor(1) })).rejects.toBeInstanceOf(CallbackError);
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
