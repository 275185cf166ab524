// Runs with Node's own test runner (`node --import tsx --test`): every test file gets its own process, which is what
// onnxruntime-node's native addon needs, so a copy of this template needs no test-environment set-up.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { StableDiffusionPipeline } from '@diff/core';
import { CallbackError, CallbackRegistry, InvalidArgumentError, Tensor, createCallback, registerCallbackPlugin } from '@diff/core/plugin';
import { createCallbackTestContext } from '@diff/core/testing';
import { modelDir } from '@diff/model-tiny';
import { LatentStatsCallback, plugin, tensorStats, type LatentStats } from './index.js';

describe('tensorStats', () => {
  it('measures each image of the batch on its own', () => {
    const [first, second] = tensorStats(new Tensor(new Float32Array([1, 2, 3, 4, -2, -2, 2, 2]), [2, 1, 2, 2]));
    assert.deepEqual(first, { mean: 2.5, std: Math.sqrt(1.25), min: 1, max: 4, finite: true });
    assert.deepEqual(second, { mean: 0, std: 2, min: -2, max: 2, finite: true });
  });

  it('flags NaN and infinities', () => {
    assert.equal(tensorStats(new Tensor(new Float32Array([0, Number.NaN]), [1, 2]))[0].finite, false);
    assert.equal(tensorStats(new Tensor(new Float32Array([0, Infinity]), [1, 2]))[0].finite, false);
  });
});

describe('LatentStatsCallback', () => {
  it('reports every few steps, the last step and a step after which the run stops', async () => {
    const reported: number[] = [];
    const callback = new LatentStatsCallback({ every: 3, onStats: (stats) => void reported.push(stats.stepIndex) });
    const pipeline = createCallbackTestContext({ numTimesteps: 8 });
    const latents = Tensor.zeros([1, 4, 2, 2]);
    for (let step = 0; step < 5; step++) await callback.onStepEnd(pipeline, step, 999 - step, { latents });
    pipeline.interrupt = true;
    await callback.onStepEnd(pipeline, 5, 994, { latents });
    await callback.onStepEnd(createCallbackTestContext({ numTimesteps: 8 }), 7, 1, { latents });
    assert.deepEqual(reported, [2, 5, 7]);
  });

  it("measures x0 with source 'denoised', and the latents where the scheduler computes none", async () => {
    const seen: string[] = [];
    const callback = new LatentStatsCallback({ source: 'denoised', onStats: (stats) => void seen.push(`${stats.source} ${stats.images[0].mean}`) });
    assert.deepEqual(callback.optionalTensorInputs, ['predOriginalSample']);
    const pipeline = createCallbackTestContext();
    const latents = new Tensor(new Float32Array([1, 1]), [1, 2]);
    await callback.onStepEnd(pipeline, 0, 999, { latents, predOriginalSample: new Tensor(new Float32Array([3, 3]), [1, 2]) });
    await callback.onStepEnd(pipeline, 1, 899, { latents });
    assert.deepEqual(seen, ['denoised 3', 'latents 1']);
  });

  it('rejects bad options, naming the option and what is allowed', () => {
    const onStats = () => undefined;
    assert.throws(() => new LatentStatsCallback({ onStats, every: 0 }), { name: 'InvalidArgumentError', message: /every must be a positive integer.*got 0/ });
    assert.throws(() => new LatentStatsCallback({ onStats, source: 'x0' as never }), /source must be 'latents' or 'denoised'/);
    assert.throws(() => new LatentStatsCallback({} as never), InvalidArgumentError);
  });
});

describe('plugin (registry descriptor)', () => {
  const onStats = () => undefined;

  it('validates JSON options and takes onStats at runtime', () => {
    const registry = new CallbackRegistry([plugin]);
    const callback = registry.create('latent-stats', { every: 4 }, { onStats });
    assert.ok(callback instanceof LatentStatsCallback);
    assert.equal(callback.every, 4);
    assert.throws(() => registry.create('latent-stats', { every: 0 }, { onStats }), /Invalid options for callback plugin "latent-stats": every/);
    assert.throws(() => registry.create('latent-stats', { stride: 2 } as never, { onStats }), InvalidArgumentError);
    assert.throws(() => registry.create('latent-stats', {}), /needs onStats at runtime/);
  });

  it('describes its options in JSON Schema, with defaults and descriptions', () => {
    const [listed] = new CallbackRegistry([plugin]).list();
    assert.equal(listed.name, 'latent-stats');
    const { every, source } = plugin.optionsJsonSchema.properties ?? {};
    assert.deepEqual([every?.type, every?.minimum, every?.default], ['integer', 1, 1]);
    assert.deepEqual([source?.enum, source?.default], [['latents', 'denoised'], 'latents']);
    assert.ok(every?.description && source?.description);
  });
});

describe('with @diff/model-tiny', () => {
  let pipeline: StableDiffusionPipeline;
  before(async () => {
    pipeline = await StableDiffusionPipeline.fromPretrained(modelDir);
  });
  after(() => pipeline.dispose());

  it('watches a real generation, created by name from the default registry', async () => {
    registerCallbackPlugin(plugin);
    const reports: LatentStats[] = [];
    const { images, interruptedAtStep } = await pipeline.generate({
      prompt: 'a red circle on a blue background',
      numInferenceSteps: 6,
      callbackOnStepEnd: createCallback('latent-stats', { every: 2, source: 'denoised' }, { onStats: (stats) => void reports.push(stats) }),
    });
    assert.equal(images.length, 1);
    assert.equal(interruptedAtStep, undefined);
    assert.deepEqual(reports.map(({ stepIndex, source }) => `${stepIndex} ${source}`), ['1 denoised', '3 denoised', '5 denoised']);
    for (const { images: [stats] } of reports) {
      assert.ok(stats.finite);
      assert.ok(stats.min <= stats.mean && stats.mean <= stats.max);
    }
  });

  it('sees the noise the generation starts from', async () => {
    const stds: number[] = [];
    const callback = new LatentStatsCallback({ onStats: ({ images: [stats] }) => void stds.push(stats.std) });
    await pipeline.generate({ prompt: 'a green square', numInferenceSteps: 4, callbackOnStepEnd: callback });
    assert.equal(stds.length, 4);
    // After the first of four DDIM steps the latents are still mostly the unit-variance starting noise.
    assert.ok(stds[0] > 0.8 && stds[0] < 1.2, `std after step 0: ${stds[0]}`);
  });

  it('an error in onStats ends the generation with a CallbackError naming the callback, hook and step', async () => {
    const callback = new LatentStatsCallback({
      onStats: () => {
        throw new Error('disk full');
      },
    });
    await assert.rejects(pipeline.generate({ prompt: 'a blue star', numInferenceSteps: 2, callbackOnStepEnd: callback }), (error) => {
      assert.ok(error instanceof CallbackError);
      assert.deepEqual([error.callbackName, error.hook, error.stepIndex], ['LatentStatsCallback', 'onStepEnd', 0]);
      return true;
    });
  });
});

// Type-level checks: compiled by the test script's `tsc --noEmit`, never run.
export function typeChecks(): void {
  // @ts-expect-error the registry knows 'latent-stats' (declaration merging) and checks its options
  createCallback('latent-stats', { every: 'often' }, { onStats: () => undefined });
  // @ts-expect-error onStats is a runtime value, never a JSON option
  new LatentStatsCallback({ every: 2 });
}
