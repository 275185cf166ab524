/**
 * diffusers' `AutoPipelineFor*`: the pipeline class for a task, chosen from the folder's model_index.json.
 * A model family is named by its `_class_name` without the ONNX Runtime prefix (`Onnx…`, optimum's `ORT…`) and the
 * task infix (`Img2Img`, `Inpaint`): `ORTStableDiffusionInpaintPipeline` is the `StableDiffusion` family.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { CallbackTensorName } from '../contract.js';
import { ModelLoadError, UnsupportedError } from '../errors.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import type { ImageInput } from './images.js';
import { readConfigFile, type PipelineLoadOptions } from './loading.js';
import { StableDiffusionImg2ImgPipeline } from './stable-diffusion-img2img.js';
import { StableDiffusionInpaintPipeline } from './stable-diffusion-inpaint.js';
import { StableDiffusionControlNetPipeline } from './stable-diffusion-controlnet.js';
import { StableDiffusionXLControlNetPipeline } from './stable-diffusion-xl-controlnet.js';
import { StableDiffusionXLImg2ImgPipeline, type StableDiffusionXLImg2ImgLoadOptions } from './stable-diffusion-xl-img2img.js';
import { StableDiffusionXLInpaintPipeline } from './stable-diffusion-xl-inpaint.js';
import type { StableDiffusionXLLoadOptions } from './stable-diffusion-xl-steps.js';
import { StableDiffusionXLPipeline } from './stable-diffusion-xl.js';
import { StableDiffusionPipeline, type StableDiffusionBaseOptions } from './stable-diffusion.js';
import type { OutputType, PipelineOutput } from './steps.js';

/** The tensors every SD-family pipeline offers callbacks, SD 1.x and SDXL alike. */
export type SharedTensorName = 'latents' | 'promptEmbeds' | 'predOriginalSample' | 'ipAdapterImageEmbeds';

/**
 * What an auto-loaded text-to-image pipeline accepts whatever its family: the options SD 1.x and SDXL share.
 * (Narrow with `instanceof` for the family's own options; a ControlNet family also needs its `image`.)
 */
export interface Text2ImagePipeline {
  scheduler: Scheduler;
  readonly callbackTensorInputs: readonly CallbackTensorName[];
  generate<const Requested extends SharedTensorName = 'latents', Output extends OutputType = 'image', const BeginRequested extends SharedTensorName = 'latents'>(
    options: StableDiffusionBaseOptions<SharedTensorName, Requested, Output, BeginRequested> & { height?: number; width?: number },
  ): Promise<PipelineOutput<Output>>;
  dispose(): Promise<void>;
}

/** What an auto-loaded image-to-image pipeline accepts whatever its family. */
export interface Image2ImagePipeline {
  scheduler: Scheduler;
  readonly callbackTensorInputs: readonly CallbackTensorName[];
  generate<const Requested extends SharedTensorName = 'latents', Output extends OutputType = 'image', const BeginRequested extends SharedTensorName = 'latents'>(
    options: StableDiffusionBaseOptions<SharedTensorName, Requested, Output, BeginRequested> & { image: ImageInput; strength?: number },
  ): Promise<PipelineOutput<Output>>;
  dispose(): Promise<void>;
}

/** What an auto-loaded inpainting pipeline accepts whatever its family. */
export interface InpaintingPipeline {
  scheduler: Scheduler;
  readonly callbackTensorInputs: readonly CallbackTensorName[];
  generate<
    const Requested extends SharedTensorName | 'mask' | 'maskedImageLatents' = 'latents',
    Output extends OutputType = 'image',
    const BeginRequested extends SharedTensorName | 'mask' | 'maskedImageLatents' = 'latents',
  >(
    options: StableDiffusionBaseOptions<SharedTensorName | 'mask' | 'maskedImageLatents', Requested, Output, BeginRequested> & {
      image: ImageInput;
      maskImage: ImageInput;
      strength?: number;
      height?: number;
      width?: number;
    },
  ): Promise<PipelineOutput<Output>>;
  /** 9 for an inpainting UNet (latents, mask, masked-picture latents), 4 for a plain one. */
  unetInChannels(): Promise<4 | 9>;
  dispose(): Promise<void>;
}

/** The pipeline types each task may return. */
interface TaskPipelines {
  text2image: StableDiffusionPipeline | StableDiffusionXLPipeline | StableDiffusionControlNetPipeline | StableDiffusionXLControlNetPipeline;
  image2image: StableDiffusionImg2ImgPipeline | StableDiffusionXLImg2ImgPipeline;
  inpainting: StableDiffusionInpaintPipeline | StableDiffusionXLInpaintPipeline;
}
type Task = keyof TaskPipelines;

interface PipelineLoader<Pipeline> {
  fromPretrained(dir: string, options?: PipelineLoadOptions): Promise<Pipeline>;
}

/** Each family's pipeline per task (diffusers' `AUTO_*_PIPELINES_MAPPING`): one line per family. */
const PIPELINES_BY_FAMILY: Readonly<Record<string, { readonly [T in Task]?: PipelineLoader<TaskPipelines[T]> }>> = {
  StableDiffusion: { text2image: StableDiffusionPipeline, image2image: StableDiffusionImg2ImgPipeline, inpainting: StableDiffusionInpaintPipeline },
  StableDiffusionXL: { text2image: StableDiffusionXLPipeline, image2image: StableDiffusionXLImg2ImgPipeline, inpainting: StableDiffusionXLInpaintPipeline },
  StableDiffusionControlNet: { text2image: StableDiffusionControlNetPipeline },
  StableDiffusionXLControlNet: { text2image: StableDiffusionXLControlNetPipeline },
};

const TASK_NAMES: Readonly<Record<Task, { auto: string; infix: string }>> = {
  text2image: { auto: 'AutoPipelineForText2Image', infix: '' },
  image2image: { auto: 'AutoPipelineForImage2Image', infix: 'Img2Img' },
  inpainting: { auto: 'AutoPipelineForInpainting', infix: 'Inpaint' },
};

/** The model family of a `_class_name`, for any task and runtime prefix; undefined when it matches none. */
function familyOf(className: string): string | undefined {
  const family = /^(?:Onnx|ORT)?(\w+?)(?:Img2Img|Inpaint)?Pipeline$/.exec(className)?.[1];
  return family !== undefined && Object.hasOwn(PIPELINES_BY_FAMILY, family) ? family : undefined;
}

function supportedClassNames(task: Task): string {
  return Object.entries(PIPELINES_BY_FAMILY)
    .filter(([, pipelines]) => pipelines[task])
    .map(([family]) => `${[...new Set([`${family}Pipeline`, `${family}${TASK_NAMES[task].infix}Pipeline`])].join(', ')} (or any task of that family)`)
    .join('; ');
}

async function loadForTask<T extends Task>(task: T, dir: string, options: PipelineLoadOptions): Promise<TaskPipelines[T]> {
  const indexPath = join(dir, 'model_index.json');
  const className = (await readConfigFile(indexPath, "a diffusers model_index.json naming the pipeline's _class_name"))._class_name;
  const supported = `supported: ${supportedClassNames(task)}, each also with an Onnx or ORT prefix`;
  if (typeof className !== 'string') throw new ModelLoadError(indexPath, `has no _class_name string; ${TASK_NAMES[task].auto} needs one (${supported}).`);
  const family = familyOf(className);
  const loader = family === undefined ? undefined : PIPELINES_BY_FAMILY[family][task];
  if (!loader) throw new UnsupportedError(`${TASK_NAMES[task].auto} cannot load ${className} (${indexPath}); ${supported}.`);
  return loader.fromPretrained(dir, options);
}

/** A UNet config's `in_channels`, when the folder has one. */
async function configuredUnetInChannels(dir: string): Promise<unknown> {
  const path = join(dir, 'unet', 'config.json');
  return existsSync(path) ? (await readConfigFile(path, 'the UNet config')).in_channels : undefined;
}

/** An inpainting model (a UNet with 9 input channels) needs the mask: only `AutoPipelineForInpainting` loads it. */
async function refuseInpaintingModel(dir: string): Promise<void> {
  if ((await configuredUnetInChannels(dir)) === 9) {
    throw new UnsupportedError(`${dir} is an inpainting model (its UNet takes 9 input channels); load it with AutoPipelineForInpainting.`);
  }
}

export class AutoPipelineForText2Image {
  /**
   * The text-to-image pipeline of the folder's model family (any of its `_class_name`s): `StableDiffusionPipeline`
   * or `StableDiffusionXLPipeline` (whose load options it takes too), or `StableDiffusionControlNetPipeline` or
   * `StableDiffusionXLControlNetPipeline`. Inpainting models are refused. A ControlNet pipeline also needs its `image` option: without it, `generate`
   * throws an InvalidArgumentError saying so (the shared type cannot require it).
   */
  static async fromPretrained(dir: string, options: StableDiffusionXLLoadOptions = {}): Promise<Text2ImagePipeline> {
    await refuseInpaintingModel(dir);
    return (await loadForTask('text2image', dir, options)) as Text2ImagePipeline;
  }
}

export class AutoPipelineForImage2Image {
  /** The image-to-image pipeline of the folder's model family (any of its `_class_name`s). Inpainting models are refused. */
  static async fromPretrained(dir: string, options: PipelineLoadOptions = {}): Promise<Image2ImagePipeline> {
    await refuseInpaintingModel(dir);
    return loadForTask('image2image', dir, options);
  }
}

export class AutoPipelineForInpainting {
  /**
   * The inpainting pipeline of the folder's model family (`StableDiffusionInpaintPipeline` or
   * `StableDiffusionXLInpaintPipeline`, whose load options it takes too): inpainting exports (9-channel UNets) and
   * plain ones alike.
   */
  static async fromPretrained(dir: string, options: StableDiffusionXLImg2ImgLoadOptions = {}): Promise<InpaintingPipeline> {
    return loadForTask('inpainting', dir, options);
  }
}
