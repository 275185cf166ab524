import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ModelLoadError } from '../errors.js';
import { OnnxModel, SessionPool, type RuntimeOptions } from '../runtime/onnx-model.js';
import { loadSchedulerConfig, schedulerFromConfig, type Scheduler } from '../schedulers/index.js';
import { CLIPTokenizer } from '../tokenizer/clip-tokenizer.js';
import { readConfigFile } from '../util/config-file.js';
import { loadIPAdapterEncoder } from './ip-adapter.js';
import { generationLimits } from './validation.js';

export { readConfigFile };

/**
 * Options of `fromPretrained`: how to run the models, an optional scheduler to use instead of the folder's, and the
 * pipeline's size limit.
 */
export interface PipelineLoadOptions extends RuntimeOptions {
  scheduler?: Scheduler;
  /**
   * The most pixels one `generate` call may ask for: width × height × images. Larger requests fail with an
   * `InvalidArgumentError` before any tensor is allocated. Default 8 388 608 (1024×1024 × 8); `Infinity` lifts it.
   */
  maxPixels?: number;
}

/** A component's ONNX model: `<dir>/<component>/model.onnx`, loaded lazily through the pipeline's session pool. */
export function componentModel(dir: string, component: string, pool: SessionPool): OnnxModel {
  const path = join(dir, component, 'model.onnx');
  if (!existsSync(path)) throw new ModelLoadError(path, `is missing; the ${component} component needs an ONNX model there.`);
  return new OnnxModel(path, pool);
}

/** The parts every SD-family pipeline loads the same way. */
export async function loadCommonComponents(dir: string, options: PipelineLoadOptions) {
  const limits = generationLimits(options);
  const modelIndex = await readConfigFile(join(dir, 'model_index.json'), "a diffusers model_index.json with the pipeline's components");
  const pool = new SessionPool(options);
  const scheduler = options.scheduler ?? schedulerFromConfig(await loadSchedulerConfig(join(dir, 'scheduler', 'scheduler_config.json')));
  const vaeConfigPath = [join(dir, 'vae_decoder', 'config.json'), join(dir, 'vae', 'config.json')].find((path) => existsSync(path));
  const vaeConfig = vaeConfigPath ? await readConfigFile(vaeConfigPath, 'the VAE config') : {};
  const scalingFactor = vaeConfig.scaling_factor ?? 0.18215;
  if (typeof scalingFactor !== 'number' || !(Number.isFinite(scalingFactor) && scalingFactor > 0)) {
    throw new ModelLoadError(vaeConfigPath!, `scaling_factor must be a positive number (SD 1.x: 0.18215), got ${String(scalingFactor)}.`);
  }
  const blockOutChannels = Array.isArray(vaeConfig.block_out_channels) ? vaeConfig.block_out_channels.length : 4;
  const unetConfigPath = join(dir, 'unet', 'config.json');
  return {
    modelIndex,
    pool,
    limits,
    scheduler,
    scalingFactor,
    vaeScaleFactor: 2 ** (blockOutChannels - 1),
    tokenizer: await CLIPTokenizer.fromPretrained(join(dir, 'tokenizer')),
    textEncoder: componentModel(dir, 'text_encoder', pool),
    unet: componentModel(dir, 'unet', pool),
    vaeDecoder: componentModel(dir, 'vae_decoder', pool),
    vaeEncoder: existsSync(join(dir, 'vae_encoder', 'model.onnx')) ? componentModel(dir, 'vae_encoder', pool) : undefined,
    // Optional (the ONNX model says most of it), but a config that is there must be readable.
    unetConfig: existsSync(unetConfigPath) ? await readConfigFile(unetConfigPath, 'the UNet config') : {},
    /** The IP-Adapter's image encoder, where the folder has one. */
    ipAdapter: loadIPAdapterEncoder(dir, pool),
  };
}

export type CommonComponents = Awaited<ReturnType<typeof loadCommonComponents>>;
