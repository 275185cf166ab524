export { StableDiffusionPipeline, type StableDiffusionOptions, type StableDiffusionBaseOptions } from './stable-diffusion.js';
export type { PipelineLoadOptions } from './loading.js';
export type { OutputType, PipelineOutput } from './steps.js';
export { saveImage, type ImageInput, type RawImage, type RgbImage } from './images.js';
