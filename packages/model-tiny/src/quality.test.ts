import { readFileSync } from 'node:fs';
import { Generator, StableDiffusionPipeline } from '@diff/core';
import { DEFAULTS, modelDir } from './index.js';
import { measureSceneAccuracy, type SceneCase } from './scene-colours.js';

const { cases } = JSON.parse(readFileSync(new URL('../bench/quality-cases.json', import.meta.url), 'utf8')) as { cases: SceneCase[] };

describe('the embedded model through StableDiffusionPipeline', () => {
  let pipeline: StableDiffusionPipeline;
  beforeAll(async () => {
    pipeline = await StableDiffusionPipeline.fromPretrained(modelDir);
  });
  afterAll(() => pipeline.dispose());

  /** Accuracy over the 48 cases; `promptOf` lets a run replace the prompt (the empty prompt: unconditional). */
  const accuracyAt = (guidanceScale: number, promptOf = (prompt: string) => prompt) =>
    measureSceneAccuracy(cases, async (prompt, seed) => {
      const { images } = await pipeline.generate({
        prompt: promptOf(prompt),
        guidanceScale,
        numInferenceSteps: DEFAULTS.numInferenceSteps,
        generator: new Generator().manualSeed(seed),
      });
      return images[0];
    });

  // The model was trained on captions whose colour words are sometimes wrong, so the conditional branch alone
  // (guidance 1) often draws another colour and only classifier-free guidance gets the colours right: a broken
  // guidance step in the pipeline shows here as a lost gap.
  it('draws the prompt’s shape and background colours in at least 90 % of 48 cases, clearly fewer without guidance', async () => {
    expect(cases).toHaveLength(48);
    const guided = await accuracyAt(DEFAULTS.guidanceScale);
    const unguided = await accuracyAt(1);
    expect(guided.accuracy).toBeGreaterThanOrEqual(0.9);
    expect(unguided.accuracy).toBeLessThanOrEqual(guided.accuracy - 0.2);
  }, 120_000);

  it('gets its colours from the prompt: the unconditional branch alone is near chance', async () => {
    const unconditional = await accuracyAt(1, () => '');
    expect(unconditional.accuracy).toBeLessThan(0.2);
  }, 120_000);

  it('takes prompts outside the grammar without complaint', async () => {
    const { images } = await pipeline.generate({ prompt: 'A cat, riding a Bike! Ünïcödé 42', numInferenceSteps: 4, generator: new Generator().manualSeed(0) });
    expect(images[0]).toMatchObject({ width: 64, height: 64, channels: 3 });
  });
});
