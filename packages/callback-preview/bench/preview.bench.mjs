// Benchmark: what a linear preview costs per denoising step on the tiny SD model (@diff/model-tiny). Prints one JSON
// object. Usage: npm run bench [-- --steps N --runs N]
// Runs without a callback, with a plugin that does nothing (what any step-end plugin costs: the loop hands it the
// latents and the x0 estimate), with LatentPreviewCallback (linear, x0, a no-op onPreview) and with savePreviews
// writing every step's PNG, interleaved so that drift affects all alike; reports medians, and the overhead between
// the fastest runs too (on a busy machine the medians carry other processes' noise). Also times latentsToRgb alone at
// SD (64×64) and SDXL (128×128) latent sizes.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Generator, StableDiffusionPipeline, Tensor } from '@diff/core';
import { modelDir } from '@diff/model-tiny';
import { LatentPreviewCallback, SDXL_LATENT_RGB_FACTORS, SD_LATENT_RGB_FACTORS, latentsToRgb, savePreviews } from '@diff/callback-preview';

const argument = (name, fallback) => {
  const index = process.argv.indexOf(`--${name}`);
  return Number(index >= 0 ? process.argv[index + 1] : fallback);
};
const numInferenceSteps = argument('steps', 20);
const runs = argument('runs', 25);
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const round = (value, digits = 3) => Number(value.toFixed(digits));

const pipeline = await StableDiffusionPipeline.fromPretrained(modelDir);
const previewDir = await mkdtemp(join(tmpdir(), 'diff-preview-bench-'));
const doNothing = { specificationVersion: 'v1', name: 'DoNothing', tensorInputs: ['latents'], optionalTensorInputs: ['predOriginalSample'], onStepEnd: async () => undefined };
// The time spent inside the preview's own hook: its cost without the machine's noise between steps.
let msInPreview = 0;
const timed = (callback) =>
  Object.assign(Object.create(callback), {
    async onStepEnd(...args) {
      const start = performance.now();
      await callback.onStepEnd(...args);
      msInPreview += performance.now() - start;
    },
  });
const variants = {
  without: () => ({ callback: undefined, done: async () => undefined }),
  doNothingPlugin: () => ({ callback: doNothing, done: async () => undefined }),
  with: () => ({ callback: timed(new LatentPreviewCallback({ onPreview: () => undefined })), done: async () => undefined }),
  withSaving: () => {
    const writer = savePreviews(previewDir);
    return { callback: new LatentPreviewCallback({ onPreview: writer.onPreview }), done: writer.done };
  },
};

async function msPerStep(variant) {
  const { callback, done } = variants[variant]();
  const start = performance.now();
  await pipeline.generate({
    prompt: 'a large red circle in the center on a blue background',
    numInferenceSteps,
    generator: new Generator().manualSeed(0),
    outputType: 'latent',
    callbackOnStepEnd: callback,
  });
  const loopMs = performance.now() - start;
  await done(); // outside the timing: the writes run off the loop; waiting here keeps runs from overlapping
  return loopMs / numInferenceSteps;
}

const samples = Object.fromEntries(Object.keys(variants).map((variant) => [variant, []]));
for (const variant of Object.keys(variants)) await msPerStep(variant); // warm-up: sessions, sharp, JIT
msInPreview = 0;
for (let run = 0; run < runs; run++) for (const variant of Object.keys(variants)) samples[variant].push(await msPerStep(variant));
const previewMsPerStep = msInPreview / (runs * numInferenceSteps);
await pipeline.dispose();
await rm(previewDir, { recursive: true, force: true });

function linearMs(factors, size) {
  const latents = new Tensor(Float32Array.from({ length: 4 * size * size }, (_, i) => Math.sin(i)), [1, 4, size, size]);
  for (let i = 0; i < 20; i++) latentsToRgb(latents, factors);
  const times = [];
  for (let i = 0; i < 100; i++) {
    const start = performance.now();
    latentsToRgb(latents, factors);
    times.push(performance.now() - start);
  }
  return round(median(times), 4);
}

const msPerStepWithout = median(samples.without);
const msPerStepWithDoNothingPlugin = median(samples.doNothingPlugin);
const msPerStepWith = median(samples.with);
const msPerStepWithSaving = median(samples.withSaving);
console.log(
  JSON.stringify(
    {
      benchmark: 'callback-preview',
      model: '@diff/model-tiny',
      numInferenceSteps,
      runs,
      msPerStepWithout: round(msPerStepWithout),
      msPerStepWith: round(msPerStepWith),
      overheadPercent: round((100 * (msPerStepWith - msPerStepWithout)) / msPerStepWithout, 2),
      overheadPercentFastestRuns: round((100 * (Math.min(...samples.with) - Math.min(...samples.without))) / Math.min(...samples.without), 2),
      previewMsPerStep: round(previewMsPerStep, 4),
      previewPercentOfStep: round((100 * previewMsPerStep) / msPerStepWithout, 2),
      msPerStepWithDoNothingPlugin: round(msPerStepWithDoNothingPlugin),
      overheadPercentOverDoNothingPlugin: round((100 * (msPerStepWith - msPerStepWithDoNothingPlugin)) / msPerStepWithDoNothingPlugin, 2),
      msPerStepWithSaving: round(msPerStepWithSaving),
      savingOverheadPercent: round((100 * (msPerStepWithSaving - msPerStepWithout)) / msPerStepWithout, 2),
      linearMsPerPreview: { sd64x64: linearMs(SD_LATENT_RGB_FACTORS, 64), sdxl128x128: linearMs(SDXL_LATENT_RGB_FACTORS, 128) },
    },
    null,
    2,
  ),
);
