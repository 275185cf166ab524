// IP-Adapter: diffusers' reference runs (shared refs.json, where present), the scale that belongs to one generation
// (diffusers leaks it), the embeddings through the CFG cut-off, and bad input.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describedImage } from '@diff/test-fixtures';
import { referenceScheduler, toleranceExcess } from '../__fixtures__/conformance-runs.js';
import { SHARED_CONFORMANCE_DIR, readSharedRefs } from '../__fixtures__/shared-conformance.js';
import type { CallbackPipeline, CallbackPlugin } from '../contract.js';
import { CallbackError, InvalidArgumentError } from '../errors.js';
import { Generator } from '../random/generator.js';
import { Tensor } from '../tensor.js';
import { writeToyPipeline } from '../testing/toy-models.js';
import { AutoPipelineForText2Image } from './auto-pipeline.js';
import { StableDiffusionPipeline } from './stable-diffusion.js';

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

const refs = readSharedRefs<{ ipadapter_runs?: IPAdapterRun[]; sdxl_ipadapter_runs?: IPAdapterRun[] }>();
const runs = [...(refs?.ipadapter_runs ?? []), ...(refs?.sdxl_ipadapter_runs ?? [])];

/** The callbacks refs.json names, as this project writes them: the scale and the guidance through the context. */
function referenceCallback(run: IPAdapterRun): CallbackPlugin<never> | undefined {
  if (!run.callback) return undefined;
  const { cutoff_step_ratio: ratio, cutoff_step_index: index } = run.callback_args ?? {};
  const cutoffStep = (pipeline: CallbackPipeline) => index ?? Math.trunc(pipeline.numTimesteps * (ratio ?? 1));
  const act: Record<string, (pipeline: CallbackPipeline, kwargs: object) => object | void> = {
    IPAdapterScaleCutoffCallback: (pipeline) => void (pipeline.ipAdapterScale = 0),
    SDCFGCutoffCallback: (pipeline, kwargs) => pipeline.disableGuidance(kwargs),
    SDXLCFGCutoffCallback: (pipeline, kwargs) => pipeline.disableGuidance(kwargs),
  };
  const fn = act[run.callback];
  if (!fn) throw new Error(`refs.json names an unknown callback "${run.callback}".`);
  return {
    specificationVersion: 'v1', name: run.callback, tensorInputs: [],
    onStepEnd: (pipeline, step, _t, kwargs) => (step === cutoffStep(pipeline) ? fn(pipeline, kwargs) : kwargs) as never,
  };
}

const loadReferencePipeline = (model: string) => AutoPipelineForText2Image.fromPretrained(join(SHARED_CONFORMANCE_DIR, model));

(runs.length > 0 ? describe : describe.skip)('diffusers conformance (shared refs.json ipadapter_runs, sdxl_ipadapter_runs)', () => {
  test.each(runs.map((run) => [run.id, run] as const))('%s', async (_id, run) => {
    const pipeline = await loadReferencePipeline(run.model);
    pipeline.scheduler = referenceScheduler(run);
    try {
      const steps: Array<{ latents: Tensor; scale: number }> = [];
      const record: CallbackPlugin<'latents'> = {
        specificationVersion: 'v1', name: 'record', tensorInputs: ['latents'], enforce: 'post',
        onStepEnd: (state, _i, _t, kwargs) => void steps.push({ latents: kwargs.latents, scale: state.ipAdapterScale }),
      };
      const { images } = await pipeline.generate({
        prompt: run.kwargs.prompt, numInferenceSteps: run.kwargs.num_inference_steps, guidanceScale: run.kwargs.guidance_scale,
        generator: new Generator().manualSeed(run.seed), outputType: 'np',
        ipAdapterImage: describedImage(run.ip_adapter_image), ipAdapterScale: run.ip_adapter_scale,
        callbackOnStepEnd: [referenceCallback(run), record],
      });
      expect(steps).toHaveLength(run.steps.length);
      let worst = 0;
      run.steps.forEach((ref, k) => {
        expect(steps[k].scale).toBe(ref.ip_adapter_scale_after);
        const { excess, maxAbsDiff } = toleranceExcess(steps[k].latents.data, ref.latents, 5e-4, 5e-4);
        expect(excess).toBeLessThanOrEqual(0);
        worst = Math.max(worst, maxAbsDiff);
      });
      const image = toleranceExcess(images.data, run.image.data, 1e-3, 0);
      expect(image.excess).toBeLessThanOrEqual(0);
      console.info(`${run.id}: latents max abs diff ${worst.toExponential(2)}, image ${image.maxAbsDiff.toExponential(2)}`);
    } finally {
      await pipeline.dispose();
    }
  });
});

const plainRun = runs.find((run) => run.id === 'ip-ddim-scale1');
const cutoffRun = runs.find((run) => run.model === plainRun?.model && run.callback === 'IPAdapterScaleCutoffCallback');

(plainRun && cutoffRun ? describe : describe.skip)('IP-Adapter scale per generation (diffusers_ip_scale_leak)', () => {
  it('a scale a callback set is gone in the next generation on the same pipeline', async () => {
    const run = plainRun as IPAdapterRun;
    const pipeline = await loadReferencePipeline(run.model);
    try {
      const options = (scheduled: IPAdapterRun) => ({
        prompt: scheduled.kwargs.prompt, numInferenceSteps: scheduled.kwargs.num_inference_steps, guidanceScale: scheduled.kwargs.guidance_scale,
        generator: new Generator().manualSeed(scheduled.seed), outputType: 'np' as const, ipAdapterImage: describedImage(scheduled.ip_adapter_image),
      });
      pipeline.scheduler = referenceScheduler(cutoffRun as IPAdapterRun);
      await pipeline.generate({ ...options(cutoffRun as IPAdapterRun), callbackOnStepEnd: referenceCallback(cutoffRun as IPAdapterRun) });
      pipeline.scheduler = referenceScheduler(run);
      const { images } = await pipeline.generate(options(run));
      expect(toleranceExcess(images.data, run.image.data, 1e-3, 0).excess).toBeLessThanOrEqual(0);
    } finally {
      await pipeline.dispose();
    }
  });

  it('precomputed embeddings give what the picture gives, and the CFG cut-off halves them', async () => {
    const run = plainRun as IPAdapterRun;
    const pipeline = await loadReferencePipeline(run.model);
    try {
      const base = { prompt: 'a cat', numInferenceSteps: 4, generator: new Generator().manualSeed(3), outputType: 'latent' as const };
      let embeds: Tensor | undefined;
      const rows: number[] = [];
      const fromImage = await pipeline.generate({
        ...base, ipAdapterImage: describedImage(run.ip_adapter_image),
        callbackOnStepEnd: (state, step, _t, kwargs) => {
          embeds ??= kwargs.ipAdapterImageEmbeds;
          rows.push(kwargs.ipAdapterImageEmbeds.shape[0]);
          if (step === 1) return state.disableGuidance(kwargs);
        },
        callbackOnStepEndTensorInputs: ['ipAdapterImageEmbeds'],
      });
      expect(rows).toEqual([2, 2, 1, 1, 1]);
      expect(embeds?.shape).toEqual([2, 1, 16]);
      expect(embeds?.chunk(2)[0].data.every((value) => value === 0)).toBe(true);
      const fromEmbeds = await pipeline.generate({
        ...base, generator: new Generator().manualSeed(3), ipAdapterImageEmbeds: embeds,
        callbackOnStepEnd: (state, step, _t, kwargs) => (step === 1 ? state.disableGuidance(kwargs) : kwargs),
      });
      expect(fromEmbeds.images.data).toEqual(fromImage.images.data);
    } finally {
      await pipeline.dispose();
    }
  });

  it('runs a model with an adapter but no picture as without it, whatever scale a callback sets', async () => {
    const pipeline = await loadReferencePipeline((plainRun as IPAdapterRun).model);
    try {
      const base = { prompt: 'a cat', numInferenceSteps: 3, outputType: 'latent' as const };
      const plain = await pipeline.generate({ ...base, generator: new Generator().manualSeed(5) });
      const scaled = await pipeline.generate({
        ...base, generator: new Generator().manualSeed(5),
        callbackOnStepBegin: (state: CallbackPipeline) => void (state.ipAdapterScale = 1),
      });
      expect(scaled.images.data).toEqual(plain.images.data);
      await expect(pipeline.generate({ ...base, ipAdapterScale: 0.5 })).rejects.toThrow('ipAdapterScale needs ipAdapterImage or ipAdapterImageEmbeds to scale.');
    } finally {
      await pipeline.dispose();
    }
  });

  it('checks the embeddings, the scale and what callbacks set', async () => {
    const run = plainRun as IPAdapterRun;
    const pipeline = await loadReferencePipeline(run.model);
    try {
      const base = { prompt: 'a cat', numInferenceSteps: 2 };
      const image = describedImage(run.ip_adapter_image);
      await expect(pipeline.generate({ ...base, ipAdapterImage: image, ipAdapterImageEmbeds: Tensor.zeros([2, 1, 16]) })).rejects.toThrow(
        new InvalidArgumentError('Give either ipAdapterImage or ipAdapterImageEmbeds, not both.'),
      );
      await expect(pipeline.generate({ ...base, ipAdapterImageEmbeds: Tensor.zeros([3, 1, 16]) })).rejects.toThrow(
        /ipAdapterImageEmbeds must be a float32 Tensor \[rows, 1, 16\] with rows = 2 \(\[negative; positive\], guidance is on\) or 2 \(one per image\); got \[3, 1, 16\]/,
      );
      await expect(pipeline.generate({ ...base, ipAdapterImageEmbeds: Tensor.zeros([2, 1, 8]) })).rejects.toThrow(InvalidArgumentError);
      await expect(pipeline.generate({ ...base, ipAdapterImage: image, ipAdapterScale: Number.NaN })).rejects.toThrow(
        new InvalidArgumentError('ipAdapterScale must be a finite number (0 = adapter off, 1 = full strength), got NaN.'),
      );
      await expect(pipeline.generate({ ...base, ipAdapterImage: [image] as never })).rejects.toThrow(/One IP-Adapter per model is supported/);
      const failure = pipeline.generate({
        ...base, ipAdapterImage: image,
        callbackOnStepEnd: function scaleToInfinity(state: CallbackPipeline) { state.ipAdapterScale = Infinity; },
      });
      await expect(failure).rejects.toBeInstanceOf(CallbackError);
      await expect(failure).rejects.toThrow(/Callback "scaleToInfinity" failed in onStepEnd at step 0: ipAdapterScale must be a finite number/);
    } finally {
      await pipeline.dispose();
    }
  });
});

describe('IP-Adapter options on a model without an adapter', () => {
  let dir: string;
  let pipeline: StableDiffusionPipeline;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'diff-noadapter-'));
    await writeToyPipeline(dir, 'sd');
    pipeline = await StableDiffusionPipeline.fromPretrained(dir);
  });
  afterAll(async () => {
    await pipeline.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  it('are refused, naming the UNet; the embeddings tensor by name too, and skipped as an optional input', async () => {
    const base = { prompt: 'a cat', numInferenceSteps: 2, height: 16, width: 16 };
    await expect(pipeline.generate({ ...base, ipAdapterImage: { data: new Uint8Array(12), width: 2, height: 2, channels: 3 } })).rejects.toThrow(
      /This model has no IP-Adapter: its UNet \(.*unet[/\\]model\.onnx\) takes no image_embeds and ip_adapter_scale inputs/,
    );
    await expect(pipeline.generate({ ...base, callbackOnStepEnd: () => undefined, callbackOnStepEndTensorInputs: ['ipAdapterImageEmbeds'] })).rejects.toThrow(
      'callbackOnStepEndTensorInputs asks for ipAdapterImageEmbeds (this model has no IP-Adapter; use optionalTensorInputs for it).',
    );
    const seen: string[][] = [];
    await pipeline.generate({
      ...base,
      callbackOnStepEnd: { specificationVersion: 'v1', name: 'maybe', tensorInputs: ['latents'], optionalTensorInputs: ['ipAdapterImageEmbeds'], onStepEnd: (_s, _i, _t, kwargs) => void seen.push(Object.keys(kwargs)) },
    });
    expect(seen[0]).toEqual(['latents']);
  });
});
