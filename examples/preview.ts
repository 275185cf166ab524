// Showing the image after every step: a linear map from the 4 latent channels to RGB (the seed guide's SDXL
// factors), written as one small PNG per step. No VAE call, so it costs next to nothing.
import { mkdir } from 'node:fs/promises';
import { saveImage, StableDiffusionXLPipeline, type CallbackOnStepEnd, type Tensor } from '@diff/core';
import { modelDir, outputPath } from './models.js';

const WEIGHTS = [
  [60, -60, 25, -70],
  [60, -5, 15, -50],
  [60, 10, -5, -35],
];
const BIASES = [150, 140, 130];

function latentsToRgb(latents: Tensor) {
  const [, channels, height, width] = latents.shape;
  const plane = height * width;
  const data = new Uint8Array(plane * 3);
  for (let pixel = 0; pixel < plane; pixel++) {
    for (let rgb = 0; rgb < 3; rgb++) {
      let value = BIASES[rgb];
      for (let channel = 0; channel < channels; channel++) value += WEIGHTS[rgb][channel] * latents.data[channel * plane + pixel];
      data[pixel * 3 + rgb] = Math.min(255, Math.max(0, Math.trunc(value)));
    }
  }
  return { data, width, height, channels: 3 as const };
}

const decodeTensors: CallbackOnStepEnd<'latents'> = async (_pipeline, stepIndex, _timestep, callbackKwargs) => {
  await saveImage(latentsToRgb(callbackKwargs.latents), outputPath(`preview/${stepIndex}.png`));
  return callbackKwargs;
};

await mkdir(outputPath('preview'), { recursive: true });
const pipeline = await StableDiffusionXLPipeline.fromPretrained(modelDir('tiny-sdxl'));
await pipeline.generate({
  prompt: 'A croissant shaped like a cute bear.',
  negativePrompt: 'Deformed, ugly, bad anatomy',
  callbackOnStepEnd: decodeTensors,
  callbackOnStepEndTensorInputs: ['latents'],
});
console.log(`wrote one preview per step under ${outputPath('preview')}`);
await pipeline.dispose();
