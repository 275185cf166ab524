// Runs one SD pipeline on each execution provider named on the command line and compares them: the same seed must
// give the same picture (within float round-off) on CPU and CUDA. Prints one JSON object.
// Usage: node bench/execution-providers.bench.mjs --model DIR [--providers cpu,cuda] [--steps N] [--runs N]
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Generator, StableDiffusionPipeline } from '@diff/core';

const argument = (name, fallback) => {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? process.argv[index + 1] : fallback;
};
const modelDir = resolve(argument('model', '../../../shared/conformance/tiny-sd'));
const providers = argument('providers', 'cpu,cuda').split(',');
const numInferenceSteps = Number(argument('steps', '25'));
const runs = Number(argument('runs', '5'));
if (!existsSync(join(modelDir, 'model_index.json'))) {
  console.log(JSON.stringify({ benchmark: 'execution-providers', skipped: `no pipeline at ${modelDir}` }));
  process.exit(0);
}

const results = {};
const images = {};
for (const provider of providers) {
  const notices = [];
  const pipeline = await StableDiffusionPipeline.fromPretrained(modelDir, {
    executionProviders: [provider],
    strictExecutionProviders: true,
    onNotice: (message) => notices.push(message),
  });
  const generate = () =>
    pipeline.generate({ prompt: 'a photo of an astronaut riding a horse on mars', numInferenceSteps, outputType: 'np', generator: new Generator().manualSeed(0) });
  try {
    images[provider] = (await generate()).images.data; // also the warm-up
    const wall = [];
    const ortBefore = pipeline.components.pool.runTimeMs;
    for (let run = 0; run < runs; run++) {
      const start = performance.now();
      await generate();
      wall.push(performance.now() - start);
    }
    wall.sort((a, b) => a - b);
    results[provider] = {
      executionProviders: pipeline.components.pool.executionProviders,
      medianWallMsPerRun: wall[Math.floor(runs / 2)],
      meanOnnxRuntimeMsPerRun: (pipeline.components.pool.runTimeMs - ortBefore) / runs,
      notices,
    };
  } catch (error) {
    results[provider] = { error: `${error.name}: ${error.message}`, notices };
  }
  await pipeline.dispose();
}
const [first, ...others] = providers.filter((provider) => images[provider]);
const maxAbsDiffFromFirst = Object.fromEntries(
  others.map((provider) => [provider, images[first].reduce((max, value, i) => Math.max(max, Math.abs(value - images[provider][i])), 0)]),
);
console.log(JSON.stringify({ benchmark: 'execution-providers', model: modelDir, numInferenceSteps, runs, results, maxAbsDiffFromFirst, reference: first }, null, 2));
