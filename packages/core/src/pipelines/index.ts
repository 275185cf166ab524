export { StableDiffusionPipeline, type StableDiffusionOptions, type StableDiffusionBaseOptions } from './stable-diffusion.js';
export type { PipelineLoadOptions } from './loading.js';
export type { OutputType, PipelineOutput } from './steps.js';
export { saveImage, type ImageInput, type RawImage, type RgbImage } from './images.js';
export { StableDiffusionImg2ImgPipeline, type StableDiffusionImg2ImgOptions, type ImageToImageComponents } from './stable-diffusion-img2img.js';
export { StableDiffusionInpaintPipeline, type StableDiffusionInpaintOptions } from './stable-diffusion-inpaint.js';
export { AutoPipelineForImage2Image, AutoPipelineForInpainting } from './auto-pipeline.js';
