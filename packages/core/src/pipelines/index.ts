export { StableDiffusionPipeline, type StableDiffusionOptions, type StableDiffusionBaseOptions } from './stable-diffusion.js';
export type { PipelineLoadOptions } from './loading.js';
export type { OutputType, PipelineOutput } from './steps.js';
export { saveImage, type ImageInput, type RawImage, type RgbImage } from './images.js';
export { StableDiffusionImg2ImgPipeline, type StableDiffusionImg2ImgOptions, type ImageToImageComponents } from './stable-diffusion-img2img.js';
export { StableDiffusionInpaintPipeline, type StableDiffusionInpaintOptions } from './stable-diffusion-inpaint.js';
export {
  AutoPipelineForImage2Image,
  AutoPipelineForInpainting,
  AutoPipelineForText2Image,
  type Image2ImagePipeline,
  type InpaintingPipeline,
  type SharedTensorName,
  type Text2ImagePipeline,
} from './auto-pipeline.js';
export { StableDiffusionXLPipeline, type StableDiffusionXLOptions, type StableDiffusionXLBaseOptions } from './stable-diffusion-xl.js';
export {
  StableDiffusionXLImg2ImgPipeline,
  type StableDiffusionXLImg2ImgOptions,
  type StableDiffusionXLImg2ImgLoadOptions,
  type StableDiffusionXLImg2ImgComponents,
} from './stable-diffusion-xl-img2img.js';
export { StableDiffusionXLInpaintPipeline, type StableDiffusionXLInpaintOptions } from './stable-diffusion-xl-inpaint.js';
export {
  encodePromptXL,
  type CropCoordsTuple,
  type EncodedPromptXL,
  type ImageSizeTuple,
  type PromptEmbeddingsXL,
  type StableDiffusionXLComponents,
  type StableDiffusionXLLoadOptions,
} from './stable-diffusion-xl-steps.js';
export {
  StableDiffusionControlNetPipeline,
  type ControlNet,
  type StableDiffusionControlNetComponents,
  type StableDiffusionControlNetLoadOptions,
  type StableDiffusionControlNetOptions,
  type ControlNetLoadOptions,
  type ControlNetOptions,
} from './stable-diffusion-controlnet.js';
export {
  StableDiffusionXLControlNetPipeline,
  type StableDiffusionXLControlNetComponents,
  type StableDiffusionXLControlNetLoadOptions,
  type StableDiffusionXLControlNetOptions,
} from './stable-diffusion-xl-controlnet.js';
export {
  CLIPImageProcessor,
  resizeBicubicAntialias,
  resizeShortestEdge,
  shortestEdgeSize,
  type CLIPImageProcessorOptions,
  type CLIPImageProcessorSettings,
  type ResampleBackend,
} from './clip-image-processor.js';
