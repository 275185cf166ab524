// Benchmark: what the CFG cut-off saves. The tiny SD model (@diff/model-tiny) generates the same picture with no
// callback and with the cut-off at 0.4; prints one JSON object with the median wall time of each (after a warm-up)
// and where the time goes. Usage: npm run bench [-- --steps N --runs N]
//
// `ideal` (0.70) is the ratio when the UNet is all the cost and a batch of one row costs half a batch of two: 40 % of
// the steps at full cost, 60 % at half. `idealForSteps` counts the steps exactly (the cut-off step itself is guided).
import { Generator, StableDiffusionPipeline } from '@diff/core';
import { DEFAULTS, modelDir } from '@diff/model-tiny';
import { CFGCutoffCallback } from '../dist/index.js';

const argument = (name, fallback) => {
  const index = process.argv.indexOf(`--${name}`);
  return Number(index >= 0 ? process.argv[index + 1] : fallback);
};
const numInferenceSteps = argument('steps', 25);
const runs = argument('runs', 9);
const cutoffStepRatio = 0.4;

const pipeline = await StableDiffusionPipeline.fromPretrained(modelDir);
const { pool, unet } = pipeline.components;

async function measure(callbackOnStepEnd) {
  const unetBefore = unet.runTimeMs;
  const ortBefore = pool.runTimeMs;
  const start = performance.now();
  await pipeline.generate({
    prompt: 'a large red circle at the top left on a blue background',
    numInferenceSteps,
    guidanceScale: DEFAULTS.guidanceScale,
    generator: new Generator().manualSeed(0),
    outputType: 'np',
    callbackOnStepEnd,
  });
  return { wallMs: performance.now() - start, unetMs: unet.runTimeMs - unetBefore, ortMs: pool.runTimeMs - ortBefore };
}

const variants = { none: () => undefined, cutoff04: () => new CFGCutoffCallback({ cutoffStepRatio }) };
for (const make of Object.values(variants)) await measure(make()); // warm-up: sessions and first-run allocations
// Interleaved, so that drifts in machine load hit both variants alike.
const samples = { none: [], cutoff04: [] };
for (let run = 0; run < runs; run++) {
  for (const [name, make] of Object.entries(variants)) samples[name].push(await measure(make()));
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const round = (value) => Math.round(value * 1000) / 1000;
const medians = (name) => ({
  wallMs: median(samples[name].map((sample) => sample.wallMs)),
  unetMs: median(samples[name].map((sample) => sample.unetMs)),
  otherMs: median(samples[name].map((sample) => sample.wallMs - sample.unetMs)),
});
const none = medians('none');
const cutoff = medians('cutoff04');
const guidedSteps = Math.trunc(numInferenceSteps * cutoffStepRatio) + 1;
// A UNet step on two rows (every step of the plain run), and on one row (the steps after the cut-off).
const unetMsTwoRows = none.unetMs / numInferenceSteps;
const unetMsOneRow = (cutoff.unetMs - guidedSteps * unetMsTwoRows) / (numInferenceSteps - guidedSteps);

console.log(
  JSON.stringify(
    {
      benchmark: 'cfg-cutoff',
      model: '@diff/model-tiny',
      numInferenceSteps,
      runs,
      executionProviders: pool.executionProviders,
      msNone: round(none.wallMs),
      msCutoff04: round(cutoff.wallMs),
      ratio: round(cutoff.wallMs / none.wallMs),
      ideal: 0.7,
      idealForSteps: round((2 * guidedSteps + (numInferenceSteps - guidedSteps)) / (2 * numInferenceSteps)),
      // The UNet alone: how much a one-row batch saves over a two-row batch on this model and machine.
      unetMsNone: round(none.unetMs),
      unetMsCutoff04: round(cutoff.unetMs),
      unetRatio: round(cutoff.unetMs / none.unetMs),
      unetMsPerStepTwoRows: round(unetMsTwoRows),
      unetMsPerStepOneRow: round(unetMsOneRow),
      // 0.5 where the UNet's cost is proportional to its batch; small models on CPU pay a fixed cost per call.
      oneRowCostOfTwoRows: round(unetMsOneRow / unetMsTwoRows),
      // Text encoder, VAE decoder and the pipeline's own work, which the cut-off does not touch.
      otherMsNone: round(none.otherMs),
      otherMsCutoff04: round(cutoff.otherMs),
    },
    null,
    2,
  ),
);
await pipeline.dispose();
