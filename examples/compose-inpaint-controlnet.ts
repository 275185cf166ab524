// Several callbacks on one generation, on the inpainting and ControlNet pipelines: classifier-free guidance for part
// of the steps (a guidance interval for inpainting, the official cut-off for ControlNet — not both at once, as the
// interval would turn guidance back on after the cut-off), a step logger, latent previews written as PNG files, and
// a time budget. Each callback receives the tensors it declares; the pipeline halves (and rebuilds) the CFG-doubled
// mask, masked-image latents and control image itself.
import { mkdir } from 'node:fs/promises';
import {
  Generator,
  saveImage,
  StableDiffusionControlNetPipeline,
  StableDiffusionInpaintPipeline,
  type CallbackOnStepEnd,
  type CallbackPlugin,
  type RgbImage,
} from '@diff/core';
import { GuidanceIntervalCallback, SDCFGCutoffCallback } from '@diff/callback-cfg-cutoff';
import { LatentPreviewCallback, savePreviews, type PreviewWriter } from '@diff/callback-preview';
import { InterruptCallback } from '@diff/callback-interrupt';
import { modelDir, outputPath } from './models.js';

const size = 64;
const numInferenceSteps = 10;
/** RGB pixels of a `size`×`size` picture, `rgb(x, y)` each. */
const pixels = (rgb: (x: number, y: number) => readonly number[]) =>
  new Uint8Array(size * size * 3).map((_, i) => rgb(Math.floor(i / 3) % size, Math.floor(i / 3 / size))[i % 3]);

// First in each list: it reports the guidance the step ran with, before a cut-off turns it off for the next one.
const logStep: CallbackOnStepEnd<'latents'> = (pipeline, stepIndex, timestep) => {
  const guidance = pipeline.doClassifierFreeGuidance ? `guidance ${pipeline.guidanceScale}` : 'no guidance';
  console.log(`${pipeline.pipelineName}: step ${stepIndex + 1}/${pipeline.numTimesteps} (t=${timestep}) ran with ${guidance}`);
};

/** The callbacks both generations share after the guidance one, and the writer of their previews. */
function sharedCallbacks(name: string) {
  const previews = savePreviews(outputPath(`${name}-preview`));
  const callbacks: CallbackPlugin<'latents'>[] = [
    new LatentPreviewCallback({ onPreview: previews.onPreview, every: 2 }),
    // A time budget: past it, the generation stops after the current step and decodes what it has.
    new InterruptCallback({ afterMs: 60_000 }),
  ];
  return { callbacks, previews };
}

async function save(name: string, output: { images: RgbImage[]; interruptedAtStep?: number }, previews: PreviewWriter) {
  await previews.done();
  await saveImage(output.images[0], outputPath(`${name}.png`));
  const stopped = output.interruptedAtStep === undefined ? '' : ` (stopped after step ${output.interruptedAtStep})`;
  console.log(`wrote ${outputPath(`${name}.png`)}${stopped} and ${previews.written.length} previews`);
}

await mkdir(outputPath(''), { recursive: true });

// Inpainting: repaint the white rectangle of the mask, guided only for the steps floor(N·0.1) ≤ i < floor(N·0.7).
const mask = new Uint8Array(size * size).map((_, pixel) => {
  const [x, y] = [pixel % size, Math.floor(pixel / size)];
  return x >= 16 && x < 48 && y >= 8 && y < 40 ? 255 : 0;
});
const inpaint = await StableDiffusionInpaintPipeline.fromPretrained(modelDir('tiny-sd-inpaint'));
const inpaintRun = sharedCallbacks('compose-inpaint');
const inpainted = await inpaint.generate({
  prompt: 'an image of a cat',
  image: { data: pixels((x, y) => [x * 4, y * 4, 128]), width: size, height: size, channels: 3 },
  maskImage: { data: mask, width: size, height: size, channels: 1 },
  numInferenceSteps,
  generator: new Generator().manualSeed(32),
  callbackOnStepEnd: [logStep, new GuidanceIntervalCallback({ start: 0.1, end: 0.7 }), ...inpaintRun.callbacks],
});
await save('compose-inpaint', inpainted, inpaintRun.previews);
await inpaint.dispose();

// ControlNet: a white disc as the control image, guidance cut off after 40 % of the steps.
const controlnet = await StableDiffusionControlNetPipeline.fromPretrained(modelDir('tiny-sd-controlnet'));
const controlnetRun = sharedCallbacks('compose-controlnet');
const controlled = await controlnet.generate({
  prompt: 'a photo of an astronaut riding a horse on mars',
  image: { data: pixels((x, y) => Array(3).fill((x - 32) ** 2 + (y - 28) ** 2 <= 18 ** 2 ? 255 : 0)), width: size, height: size, channels: 3 },
  numInferenceSteps,
  generator: new Generator().manualSeed(44),
  callbackOnStepEnd: [logStep, new SDCFGCutoffCallback({ cutoffStepRatio: 0.4 }), ...controlnetRun.callbacks],
});
await save('compose-controlnet', controlled, controlnetRun.previews);
await controlnet.dispose();
