import { Tensor, type StableDiffusionOptions } from '@diff/core';
import type { CallbackKwargs, CallbackPipeline } from '@diff/core/contract';
import { SDCFGCutoffCallback, SDXLCFGCutoffCallback, SDXLControlnetCFGCutoffCallback } from './index.js';

function rows(count: number, width = 3): Tensor {
  const data = new Float32Array(count * width).map((_, i) => Math.floor(i / width));
  return new Tensor(data, [count, width]);
}

function pipelineState(numTimesteps: number, batchSize: number): CallbackPipeline {
  return {
    pipelineName: 'StableDiffusionPipeline',
    numTimesteps,
    timesteps: Array.from({ length: numTimesteps }, (_, i) => 1000 - i),
    batchSize,
    guidanceScale: 7.5,
    get doClassifierFreeGuidance() {
      return this.guidanceScale > 1;
    },
    interrupt: false,
    callbackTensorInputs: [],
    signal: new AbortController().signal,
    decodeLatents: async () => [],
  };
}

describe('SDCFGCutoffCallback', () => {
  it('does nothing before the cut-off step', async () => {
    const callback = new SDCFGCutoffCallback({ cutoffStepRatio: 0.4 });
    const pipeline = pipelineState(11, 1);
    const kwargs = { promptEmbeds: rows(2) };
    expect(await callback.onStepEnd(pipeline, 3, 700, kwargs)).toBe(kwargs);
    expect(pipeline.guidanceScale).toBe(7.5);
  });

  it('at int(numTimesteps · ratio) turns guidance off and keeps the conditional half of every image', async () => {
    const callback = new SDCFGCutoffCallback({ cutoffStepRatio: 0.4 });
    const pipeline = pipelineState(11, 2);
    const result = (await callback.onStepEnd(pipeline, 4, 600, { promptEmbeds: rows(4) })) as CallbackKwargs<'promptEmbeds'>;
    expect(pipeline.guidanceScale).toBe(0);
    expect(result.promptEmbeds.shape).toEqual([2, 3]);
    expect(Array.from(result.promptEmbeds.data)).toEqual([2, 2, 2, 3, 3, 3]);
  });

  it('halves the inpainting and ControlNet extras it asked for, and leaves undoubled tensors alone', async () => {
    const callback = new SDCFGCutoffCallback({ cutoffStepIndex: 0 });
    expect(callback.optionalTensorInputs).toEqual(['mask', 'maskedImageLatents', 'image']);
    const kwargs = { promptEmbeds: rows(2), mask: rows(2), maskedImageLatents: rows(2), image: rows(1), latents: rows(1) };
    const result = (await callback.onStepEnd(pipelineState(10, 1), 0, 900, kwargs)) as Record<string, Tensor>;
    for (const name of ['promptEmbeds', 'mask', 'maskedImageLatents']) expect(result[name].shape[0]).toBe(1);
    expect(result.image).toBe(kwargs.image);
    expect(result.latents).toBe(kwargs.latents);
  });

  it('accepts cutoffStepIndex alone, as the seed guide writes it', () => {
    expect(new SDXLCFGCutoffCallback({ cutoffStepRatio: null, cutoffStepIndex: 10 }).config.cutoffStepIndex).toBe(10);
    expect(new SDXLCFGCutoffCallback({ cutoffStepIndex: 10 }).cutoffStep({ numTimesteps: 25 })).toBe(10);
    expect(new SDXLCFGCutoffCallback({ cutoffStepRatio: 0.4 }).cutoffStep({ numTimesteps: 25 })).toBe(10);
  });

  it('declares the tensors diffusers declares', () => {
    expect(new SDCFGCutoffCallback().tensorInputs).toEqual(['promptEmbeds']);
    expect(new SDXLCFGCutoffCallback().tensorInputs).toEqual(['promptEmbeds', 'addTextEmbeds', 'addTimeIds']);
    expect(new SDXLControlnetCFGCutoffCallback().tensorInputs).toEqual(['promptEmbeds', 'addTextEmbeds', 'addTimeIds', 'image']);
    expect(new SDCFGCutoffCallback().name).toBe('SDCFGCutoffCallback');
  });
});

describe('SDXLCFGCutoffCallback', () => {
  it('halves prompt embeddings, pooled embeddings and time ids together', async () => {
    const callback = new SDXLCFGCutoffCallback({ cutoffStepRatio: 0.5 });
    const pipeline = pipelineState(8, 1);
    const kwargs = { promptEmbeds: rows(2), addTextEmbeds: rows(2), addTimeIds: rows(2, 6) };
    const result = (await callback.onStepEnd(pipeline, 4, 500, kwargs)) as Record<string, Tensor>;
    expect(Object.values(result).map((tensor) => tensor.shape[0])).toEqual([1, 1, 1]);
    expect(pipeline.guidanceScale).toBe(0);
  });
});

// Type-level checks: compiled by the test script's `tsc --noEmit`, never run.
export function typeChecks(): void {
  const sdOption: StableDiffusionOptions['callbackOnStepEnd'] = new SDCFGCutoffCallback();
  // @ts-expect-error SDXL's callback needs addTextEmbeds and addTimeIds, which SD 1.x pipelines do not have.
  const wrongPipeline: StableDiffusionOptions['callbackOnStepEnd'] = new SDXLCFGCutoffCallback();
  void sdOption;
  void wrongPipeline;
}
