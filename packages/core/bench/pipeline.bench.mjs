// Benchmark: where a generation's time goes. Prints one JSON object.
// Usage: npm run bench [-- --model DIR --steps N --runs N]
// Wall time of `generate`, the time spent inside ONNX Runtime's `run` (all models), and the difference — the
// pipeline's own overhead (tokenizing, scheduler math, guidance, tensor copies, callbacks).
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Generator, StableDiffusionPipeline } from '@diff/core';

const here = dirname(fileURLToPath(import.meta.url));
const argument = (name, fallback) => {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? process.argv[index + 1] : fallback;
};
const modelDir = resolve(argument('model', join(here, '..', '..', '..', '..', 'shared', 'conformance', 'tiny-sd')));
const numInferenceSteps = Number(argument('steps', '25'));
const runs = Number(argument('runs', '5'));

if (!existsSync(join(modelDir, 'model_index.json'))) {
  console.log(JSON.stringify({ benchmark: 'sd-text2img', skipped: `no pipeline at ${modelDir} (pass --model DIR)` }));
  process.exit(0);
}

const pipeline = await StableDiffusionPipeline.fromPretrained(modelDir);
const { pool } = pipeline.components;
const options = { prompt: 'a photo of an astronaut riding a horse on mars', numInferenceSteps, guidanceScale: 7.5, outputType: 'np' };

async function measure() {
  let numTimesteps = 0;
  const ortBefore = pool.runTimeMs;
  const heapBefore = process.memoryUsage().heapUsed;
  const start = performance.now();
  await pipeline.generate({
    ...options,
    generator: new Generator().manualSeed(0),
    callbackOnStepEnd: (state) => void (numTimesteps = state.numTimesteps),
  });
  const wallMs = performance.now() - start;
  return { wallMs, ortMs: pool.runTimeMs - ortBefore, numTimesteps, heapDeltaBytes: process.memoryUsage().heapUsed - heapBefore };
}

await measure(); // warm-up: session creation and first-run allocations
const samples = [];
for (let run = 0; run < runs; run++) samples.push(await measure());
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const wallMs = median(samples.map((s) => s.wallMs));
const ortMs = median(samples.map((s) => s.ortMs));
const numTimesteps = samples[0].numTimesteps;
console.log(
  JSON.stringify(
    {
      benchmark: 'sd-text2img',
      model: modelDir,
      numInferenceSteps,
      unetCallsPerRun: numTimesteps,
      guidanceScale: options.guidanceScale,
      runs,
      executionProviders: pool.executionProviders,
      wallMsPerRun: round(wallMs),
      wallMsPerStep: round(wallMs / numTimesteps),
      onnxRuntimeMsPerStep: round(ortMs / numTimesteps),
      overheadMsPerStep: round((wallMs - ortMs) / numTimesteps),
      overheadPercent: round((100 * (wallMs - ortMs)) / wallMs),
      medianHeapDeltaBytesPerRun: median(samples.map((s) => s.heapDeltaBytes)),
    },
    null,
    2,
  ),
);
await pipeline.dispose();

function round(value) {
  return Math.round(value * 1000) / 1000;
}
