// Dynamic classifier-free guidance (the seed guide's custom callback): at 40 % of the steps, keep the conditional
// half of the prompt embeddings and set the guidance scale to 0 — the remaining steps run one UNet batch, not two.
import { mkdir } from 'node:fs/promises';
import { Generator, saveImage, StableDiffusionPipeline, type CallbackOnStepEnd } from '@diff/core';
import { modelDir, outputPath } from './models.js';

const callbackDynamicCfg: CallbackOnStepEnd<'promptEmbeds'> = (pipeline, stepIndex, _timestep, callbackKwargs) => {
  if (stepIndex === Math.trunc(pipeline.numTimesteps * 0.4)) {
    callbackKwargs.promptEmbeds = callbackKwargs.promptEmbeds.chunk(2)[1];
    pipeline.guidanceScale = 0;
  }
  return callbackKwargs;
};

const pipeline = await StableDiffusionPipeline.fromPretrained(modelDir('tiny-sd'));
const { images } = await pipeline.generate({
  prompt: 'a photo of an astronaut riding a horse on mars',
  generator: new Generator().manualSeed(1),
  callbackOnStepEnd: callbackDynamicCfg,
  callbackOnStepEndTensorInputs: ['promptEmbeds'],
});
await mkdir(outputPath(''), { recursive: true });
await saveImage(images[0], outputPath('dynamic-cfg.png'));
console.log(`wrote ${outputPath('dynamic-cfg.png')}`);
await pipeline.dispose();
