// Showing the image after every step, as the seed guide does: a linear map from the 4 SDXL latent channels to RGB
// (the guide's factors are LatentPreviewCallback's built-in SDXL table), one small PNG per step. No VAE call, and
// savePreviews encodes the PNGs off the denoising loop, so it costs next to nothing.
import { StableDiffusionXLPipeline } from '@diff/core';
import { LatentPreviewCallback, savePreviews } from '@diff/callback-preview';
import { modelDir, outputPath } from './models.js';

const previews = savePreviews(outputPath('preview'));
const pipeline = await StableDiffusionXLPipeline.fromPretrained(modelDir('tiny-sdxl'));
await pipeline.generate({
  prompt: 'A croissant shaped like a cute bear.',
  negativePrompt: 'Deformed, ugly, bad anatomy',
  // The guide shows the noisy latents; leave `source` out to show the scheduler's x0 estimate, which looks like the
  // final picture from the first steps on.
  callbackOnStepEnd: new LatentPreviewCallback({ source: 'latents', onPreview: previews.onPreview }),
});
await previews.done();
console.log(`wrote ${previews.written.length} previews under ${outputPath('preview')}`);
await pipeline.dispose();
