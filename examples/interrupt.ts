// Interrupting the diffusion process: stop after step 10 of 50 and decode what the latents hold by then.
import { mkdir } from 'node:fs/promises';
import { saveImage, StableDiffusionPipeline } from '@diff/core';
import { modelDir, outputPath } from './models.js';

const pipeline = await StableDiffusionPipeline.fromPretrained(modelDir('tiny-sd'));
const { images } = await pipeline.generate({
  prompt: 'a photo of a cat',
  numInferenceSteps: 50,
  callbackOnStepEnd: (pipelineState, stepIndex) => {
    if (stepIndex === 10) pipelineState.interrupt = true;
  },
});
await mkdir(outputPath(''), { recursive: true });
await saveImage(images[0], outputPath('interrupt.png'));
console.log(`wrote ${outputPath('interrupt.png')} (interrupted after step 10)`);
await pipeline.dispose();
