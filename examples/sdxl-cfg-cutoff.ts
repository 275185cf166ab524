// The official SDXL CFG cut-off callback with DPM-Solver++ and Karras sigmas, as in the seed guide.
import { mkdir } from 'node:fs/promises';
import { DPMSolverMultistepScheduler, Generator, saveImage, StableDiffusionXLPipeline } from '@diff/core';
import { SDXLCFGCutoffCallback } from '@diff/callback-cfg-cutoff';
import { modelDir, outputPath } from './models.js';

const callback = new SDXLCFGCutoffCallback({ cutoffStepRatio: 0.4 });
// or new SDXLCFGCutoffCallback({ cutoffStepRatio: null, cutoffStepIndex: 10 })

const pipeline = await StableDiffusionXLPipeline.fromPretrained(modelDir('tiny-sdxl'));
pipeline.scheduler = DPMSolverMultistepScheduler.fromConfig(pipeline.scheduler.config, { useKarrasSigmas: true });

const { images } = await pipeline.generate({
  prompt: 'a sports car on the road, best quality, high quality, high detail, 8k resolution',
  negativePrompt: '',
  guidanceScale: 6.5,
  numInferenceSteps: 25,
  generator: new Generator().manualSeed(2628670641),
  callbackOnStepEnd: callback,
});
await mkdir(outputPath(''), { recursive: true });
await saveImage(images[0], outputPath('official_callback.png'));
console.log(`wrote ${outputPath('official_callback.png')}`);
await pipeline.dispose();
