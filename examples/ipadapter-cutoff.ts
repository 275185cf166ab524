// IP-Adapter with the official scale cut-off (diffusers' IPAdapterScaleCutoffCallback): the picture conditions the
// first half of the steps, which lay out the composition; the prompt alone finishes it. Then the same with the scale
// ramped down step by step instead. The scale a callback sets belongs to that generation: the pipeline's next call
// starts at its own scale again (diffusers leaves the adapter off).
import { mkdir } from 'node:fs/promises';
import { AutoPipelineForText2Image, Generator, saveImage } from '@diff/core';
import { IPAdapterScaleCutoffCallback, IPAdapterScaleScheduleCallback } from '@diff/callback-ipadapter';
import { modelDir, outputPath } from './models.js';

// The adapter's picture: a red checkerboard over green and blue gradients (pass a path or an encoded image as well).
const size = 64;
const reference = new Uint8Array(size * size * 3).map((_, i) => {
  const [pixel, channel] = [Math.floor(i / 3), i % 3];
  const [x, y] = [pixel % size, Math.floor(pixel / size)];
  if (channel === 0) return (Math.floor(x / 8) + Math.floor(y / 8)) % 2 === 0 ? 255 : 40;
  return Math.round((255 * (channel === 1 ? y : 63 - x)) / 63);
});

const pipeline = await AutoPipelineForText2Image.fromPretrained(modelDir('tiny-sd-ipadapter'));
const generate = (callback: IPAdapterScaleCutoffCallback | IPAdapterScaleScheduleCallback) =>
  pipeline.generate({
    prompt: 'a tiger sitting in a chair drinking orange juice',
    negativePrompt: 'deformed, ugly, wrong proportion, low res, bad anatomy, worst quality, low quality',
    ipAdapterImage: { data: reference, width: size, height: size, channels: 3 },
    ipAdapterScale: 0.6,
    numInferenceSteps: 10,
    generator: new Generator().manualSeed(0),
    callbackOnStepEnd: callback,
  });

await mkdir(outputPath(''), { recursive: true });
const runs = [
  ['ipadapter-cutoff.png', new IPAdapterScaleCutoffCallback({ cutoffStepRatio: null, cutoffStepIndex: 5 })],
  ['ipadapter-schedule.png', new IPAdapterScaleScheduleCallback({ schedule: 'linear', from: 0.6, to: 0 })],
] as const;
for (const [file, callback] of runs) {
  const { images } = await generate(callback);
  await saveImage(images[0], outputPath(file));
  console.log(`wrote ${outputPath(file)}`);
}
await pipeline.dispose();
