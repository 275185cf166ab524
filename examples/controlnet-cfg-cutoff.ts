// ControlNet with the official CFG cut-off: a white disc as the control image, guidance dropped after 40 % of the
// steps. From then on both the ControlNet and the UNet run on the conditional half only (diffusers' crashes here).
import { mkdir } from 'node:fs/promises';
import { Generator, saveImage, StableDiffusionControlNetPipeline } from '@diff/core';
import { SDCFGCutoffCallback } from '@diff/callback-cfg-cutoff';
import { modelDir, outputPath } from './models.js';

const size = 64;
const disc = new Uint8Array(size * size * 3).map((_, i) => {
  const pixel = Math.floor(i / 3);
  const [x, y] = [pixel % size, Math.floor(pixel / size)];
  return (x - 32) ** 2 + (y - 28) ** 2 <= 18 ** 2 ? 255 : 0;
});

const pipeline = await StableDiffusionControlNetPipeline.fromPretrained(modelDir('tiny-sd-controlnet'));
const { images } = await pipeline.generate({
  prompt: 'a photo of an astronaut riding a horse on mars',
  image: { data: disc, width: size, height: size, channels: 3 },
  numInferenceSteps: 10,
  generator: new Generator().manualSeed(44),
  callbackOnStepEnd: new SDCFGCutoffCallback({ cutoffStepRatio: 0.4 }),
});
await mkdir(outputPath(''), { recursive: true });
await saveImage(images[0], outputPath('controlnet-cfg-cutoff.png'));
console.log(`wrote ${outputPath('controlnet-cfg-cutoff.png')}`);
await pipeline.dispose();
