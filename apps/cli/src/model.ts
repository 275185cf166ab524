/**
 * Which pipeline runs a command: the task follows from the options (--mask: inpainting, --init-image: image-to-image,
 * else text-to-image), diffusers' AutoPipelineFor* picks the class from the folder — and a command the model cannot
 * serve is refused before anything loads, saying what to give instead.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AutoPipelineForImage2Image,
  AutoPipelineForInpainting,
  AutoPipelineForText2Image,
  type ImageInput,
  type PipelineLoadOptions,
  type PipelineOutput,
  type SharedTensorName,
  type StableDiffusionBaseOptions,
} from '@diff/core';
import { UsageError } from './args.js';

/** What the CLI needs to know about a model folder before loading it. */
export interface ModelInfo {
  readonly dir: string;
  /** model_index.json's `_class_name`, e.g. `OnnxStableDiffusionPipeline`. */
  readonly className: string;
  readonly controlNet: boolean;
  /** Its UNet takes 9 input channels (latents, mask, masked picture): it runs only as inpainting. */
  readonly inpaintingUnet: boolean;
  /** It has the IP-Adapter's image encoder. */
  readonly ipAdapter: boolean;
}

async function readJson(path: string, what: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'is missing' : `cannot be read (${(error as Error).message})`;
    throw new Error(`${path} ${reason}; --model takes ${what}.`, { cause: error });
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (error) {
    throw new Error(`${path} is not valid JSON (${(error as Error).message}).`, { cause: error });
  }
}

export async function inspectModel(dir: string): Promise<ModelInfo> {
  const index = await readJson(join(dir, 'model_index.json'), "a diffusers ONNX pipeline folder, with a model_index.json naming the pipeline's _class_name");
  const className = typeof index._class_name === 'string' ? index._class_name : '(no _class_name)';
  const unetConfigPath = join(dir, 'unet', 'config.json');
  const unetConfig = existsSync(unetConfigPath) ? await readJson(unetConfigPath, 'a folder whose unet/config.json is JSON') : {};
  return {
    dir,
    className,
    controlNet: /ControlNet/.test(className),
    inpaintingUnet: unetConfig.in_channels === 9,
    ipAdapter: existsSync(join(dir, 'image_encoder', 'model.onnx')),
  };
}

export type Task = 'text2image' | 'image2image' | 'inpainting';

/** The inputs that decide the pipeline. */
export interface PipelineRequest {
  readonly initImage?: unknown;
  readonly mask?: unknown;
  readonly controlImage?: unknown;
  readonly ipAdapterImage?: unknown;
}

/** The task for these options on this model; a `UsageError` saying what to give where the model cannot do it. */
export function chooseTask(model: ModelInfo, request: PipelineRequest): Task {
  const { dir, className } = model;
  if (request.controlImage !== undefined && !model.controlNet) {
    throw new UsageError(
      `--control-image needs a model folder with a ControlNet (model_index.json's _class_name StableDiffusionControlNetPipeline or StableDiffusionXLControlNetPipeline, and a controlnet/ folder); ${dir} holds a ${className}.`,
    );
  }
  if (model.controlNet && request.controlImage === undefined) {
    throw new UsageError(`${dir} is a ControlNet pipeline (${className}): give its control picture with --control-image FILE.`);
  }
  if (model.controlNet && request.initImage !== undefined) {
    throw new UsageError(`${dir} is a ControlNet pipeline (${className}), which runs text-to-image only: drop --init-image and --mask.`);
  }
  if (model.inpaintingUnet && request.mask === undefined) {
    throw new UsageError(`${dir} is an inpainting model (its UNet takes 9 input channels): give --init-image FILE and --mask FILE.`);
  }
  if (request.ipAdapterImage !== undefined && !model.ipAdapter) {
    throw new UsageError(
      `--ip-adapter-image needs a model exported with an IP-Adapter (an image_encoder/ folder and a UNet with the adapter's inputs; tools/export makes one); ${dir} has none.`,
    );
  }
  return request.mask !== undefined ? 'inpainting' : request.initImage !== undefined ? 'image2image' : 'text2image';
}

/** The options every task's pipeline takes here, the task's inputs included (each pipeline reads its own). */
export type GenerateOptions = StableDiffusionBaseOptions<SharedTensorName, 'latents', 'image'> & {
  width?: number;
  height?: number;
  image?: ImageInput;
  maskImage?: ImageInput;
  strength?: number;
};

/** A loaded pipeline of any task and family, as the CLI drives it. */
export interface LoadedPipeline {
  generate(options: GenerateOptions): Promise<PipelineOutput<'image'>>;
  dispose(): Promise<void>;
}

const AUTO_PIPELINES: Readonly<Record<Task, { fromPretrained(dir: string, options?: PipelineLoadOptions): Promise<unknown> }>> = {
  text2image: AutoPipelineForText2Image,
  image2image: AutoPipelineForImage2Image,
  inpainting: AutoPipelineForInpainting,
};

/**
 * Loads the task's pipeline through diffusers' AutoPipelineFor*. The families' `generate` signatures differ only in
 * options the CLI passes to the task that reads them (a ControlNet's `image`, inpainting's `maskImage`), so one
 * structural type drives them all.
 */
export async function loadPipeline(task: Task, dir: string, options: PipelineLoadOptions): Promise<LoadedPipeline> {
  return (await AUTO_PIPELINES[task].fromPretrained(dir, options)) as LoadedPipeline;
}
