import type { RunRef } from '../refs.js';
import { checkPipelineRun, checkPipelineSection, runPipelineCase, type PipelineRunOutput } from './pipelines.js';

const reference: RunRef = {
  id: 'toy',
  model: 'tiny-sd',
  pipeline: 'text2img',
  scheduler: 'ddim',
  scheduler_config: {},
  seed: 0,
  kwargs: { prompt: 'a cat', num_inference_steps: 2 },
  callback: null,
  callback_args: null,
  steps: [
    { step: 0, timestep: 501, guidance_scale: 7.5, latents: [0, 1, -2] },
    { step: 1, timestep: 1, guidance_scale: 7.5, latents: [0.5, 10, -1] },
  ],
  image: { shape: [1, 1, 1, 3], data: [0, 0.5, 1] },
};

function output(step1: number[], image?: number[]): PipelineRunOutput {
  return {
    steps: [new Float32Array([0, 1, -2]), new Float32Array(step1)],
    image: image && new Float32Array(image),
  };
}

describe('checkPipelineRun', () => {
  it('passes latents within 5e-4 + 5e-4·|ref| and an image within 1e-3', () => {
    // bounds: 7.5e-4 at 0.5, 5.5e-3 at 10
    const result = checkPipelineRun(reference, output([0.5007, 10.005, -1], [0.0009, 0.5, 1]));
    expect(result.ok).toBe(true);
    expect(result.detail).toBe("2 steps' latents and the image within tolerance");
    expect(result.maxAbsDiff).toBeCloseTo(0.005, 5);
  });

  it('fails latents just outside their bound', () => {
    const result = checkPipelineRun(reference, output([0.5008, 10, -1], [0, 0.5, 1]));
    expect(result.ok).toBe(false);
    expect(result.detail).toMatch(/^latents@1\[0\] = 0\.500\d+, want 0\.5 \(1 of 3 off\)$/);
  });

  it('fails an image off by more than 1e-3, or missing', () => {
    expect(checkPipelineRun(reference, output([0.5, 10, -1], [0, 0.5011, 1]))).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/^image\[1\]/),
    });
    expect(checkPipelineRun(reference, output([0.5, 10, -1]))).toMatchObject({
      ok: false,
      detail: 'image (none returned): 0 values, want 3',
    });
  });

  it('fails a run with another number of steps (an interrupt that did not stop it, say)', () => {
    const result = checkPipelineRun(reference, { steps: [new Float32Array([0, 1, -2])], image: new Float32Array([0, 0.5, 1]) });
    expect(result).toMatchObject({ ok: false, detail: 'step count = 1, want 2' });
  });

  it('passes a case diffusers crashed on once it runs to the end', () => {
    const crashed: RunRef = { ...reference, steps: undefined, image: undefined, diffusers_error: 'RuntimeError: sizes' };
    expect(checkPipelineRun(crashed, { steps: [new Float32Array(3)], image: new Float32Array(3) })).toEqual({
      ok: true,
      maxAbsDiff: null,
      detail: 'ran to the end (steps: 1); no reference: diffusers failed with RuntimeError: sizes',
    });
  });
});

describe('checkPipelineSection', () => {
  it('reports a pipeline kind it does not know as unsupported, and a missing model as a failure', async () => {
    const unknownKind = { ...reference, pipeline: 'text2video' };
    await expect(runPipelineCase(unknownKind, '/models')).resolves.toBe('unsupported');
    await expect(checkPipelineSection('sd_runs', [unknownKind], '/models')).resolves.toEqual([
      { section: 'sd_runs', id: 'toy', ok: null, maxAbsDiff: null, detail: expect.stringMatching(/pipeline kind "text2video" is not supported/) },
    ]);
    const [missing] = await checkPipelineSection('sd_runs', [reference], '/models');
    expect(missing).toMatchObject({ ok: false, detail: expect.stringMatching(/model_index\.json: cannot be read/) });
  });

  it('compares what a runner returns and fails a run that throws', async () => {
    const [passed] = await checkPipelineSection('sd_runs', [reference], '/models', async () => output([0.5, 10, -1], [0, 0.5, 1]));
    expect(passed).toMatchObject({ ok: true, maxAbsDiff: 0 });
    const [crashed] = await checkPipelineSection('inpaint_runs', [reference], '/models', async () => {
      throw new Error('unet input missing');
    });
    expect(crashed).toEqual({ section: 'inpaint_runs', id: 'toy', ok: false, maxAbsDiff: null, detail: 'Error: unet input missing' });
  });
});
