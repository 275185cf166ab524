// Interrupting the diffusion process: stop after step 10 of 50 and decode what the latents hold by then.
import { mkdir } from 'node:fs/promises';
import { saveImage, StableDiffusionPipeline } from '@diff/core';
import { InterruptCallback } from '@diff/callback-interrupt';
import { modelDir, outputPath } from './models.js';

const pipeline = await StableDiffusionPipeline.fromPretrained(modelDir('tiny-sd'));
const { images, interruptedAtStep } = await pipeline.generate({
  prompt: 'a photo of a cat',
  numInferenceSteps: 50,
  callbackOnStepEnd: new InterruptCallback({ atStep: 10 }),
});
await mkdir(outputPath(''), { recursive: true });
await saveImage(images[0], outputPath('interrupt.png'));
console.log(`wrote ${outputPath('interrupt.png')} (interrupted after step ${interruptedAtStep})`);
await pipeline.dispose();
