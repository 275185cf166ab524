// Inpainting with the official CFG cut-off: repaint the white part of the mask, and drop classifier-free guidance
// halfway. diffusers' own SDCFGCutoffCallback crashes here (the doubled mask is never halved); this one halves it.
import { mkdir } from 'node:fs/promises';
import { AutoPipelineForInpainting, Generator, saveImage } from '@diff/core';
import { SDCFGCutoffCallback } from '@diff/callback-cfg-cutoff';
import { modelDir, outputPath } from './models.js';

const size = 64;
// A gradient picture and a mask whose white rectangle is repainted (any file path or Buffer works as well).
const picture = new Uint8Array(size * size * 3).map((_, i) => {
  const pixel = Math.floor(i / 3);
  const [x, y] = [pixel % size, Math.floor(pixel / size)];
  return [x * 4, y * 4, 128][i % 3];
});
const mask = new Uint8Array(size * size).map((_, pixel) => {
  const [x, y] = [pixel % size, Math.floor(pixel / size)];
  return x >= 16 && x < 48 && y >= 8 && y < 40 ? 255 : 0;
});

const pipeline = await AutoPipelineForInpainting.fromPretrained(modelDir('tiny-sd-inpaint'));
const { images } = await pipeline.generate({
  prompt: 'an image of a cat',
  image: { data: picture, width: size, height: size, channels: 3 },
  maskImage: { data: mask, width: size, height: size, channels: 1 },
  numInferenceSteps: 10,
  generator: new Generator().manualSeed(32),
  callbackOnStepEnd: new SDCFGCutoffCallback({ cutoffStepRatio: 0.5 }),
});
await mkdir(outputPath(''), { recursive: true });
await saveImage(images[0], outputPath('inpaint-cfg-cutoff.png'));
console.log(`wrote ${outputPath('inpaint-cfg-cutoff.png')}`);
await pipeline.dispose();
