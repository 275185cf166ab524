// Quality of the embedded model, measured through @diff/core's StableDiffusionPipeline: for 48 (prompt, seed)
// pairs, does the picture show the prompt's shape colour and background colour? With the default guidance, with
// guidance 1 (no classifier-free guidance) and with the empty prompt. Prints one JSON object.
import { readFileSync } from 'node:fs';
import { Generator, StableDiffusionPipeline } from '@diff/core';
import { DEFAULTS, modelDir } from '../dist/index.js';
import { measureSceneAccuracy } from '../dist/scene-colours.js';

const { cases } = JSON.parse(readFileSync(new URL('./quality-cases.json', import.meta.url), 'utf8'));
const pipeline = await StableDiffusionPipeline.fromPretrained(modelDir);
const result = { benchmark: 'model-tiny-quality', cases: cases.length, numInferenceSteps: DEFAULTS.numInferenceSteps };
// The empty prompt at guidance 1 is the unconditional branch alone: how much of the colour comes from the prompt.
const runs = [
  ['guidance7.5', DEFAULTS.guidanceScale, (prompt) => prompt],
  ['guidance1', 1, (prompt) => prompt],
  ['unconditional', 1, () => ''],
];
for (const [name, guidanceScale, promptOf] of runs) {
  const started = performance.now();
  const measured = await measureSceneAccuracy(cases, async (prompt, seed) => {
    const { images } = await pipeline.generate({
      prompt: promptOf(prompt),
      guidanceScale,
      numInferenceSteps: DEFAULTS.numInferenceSteps,
      generator: new Generator().manualSeed(seed),
    });
    return images[0];
  });
  result[name] = { ...measured, msPerImage: Math.round((performance.now() - started) / cases.length) };
}
console.log(JSON.stringify(result, null, 2));
await pipeline.dispose();
