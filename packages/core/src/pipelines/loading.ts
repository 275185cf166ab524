import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ModelLoadError } from '../errors.js';
import { OnnxModel, SessionPool, type RuntimeOptions } from '../runtime/onnx-model.js';
import { loadSchedulerConfig, schedulerFromConfig, type Scheduler } from '../schedulers/index.js';
import { CLIPTokenizer } from '../tokenizer/clip-tokenizer.js';
import { readConfigFile } from '../util/config-file.js';
import { loadIPAdapterEncoder } from './ip-adapter.js';

export { readConfigFile };

/** Options of `fromPretrained`: how to run the models, and an optional scheduler to use instead of the folder's. */
export interface PipelineLoadOptions extends RuntimeOptions {
  scheduler?: Scheduler;
}

/** A component's ONNX model: `<dir>/<component>/model.onnx`, loaded lazily through the pipeline's session pool. */
export function componentModel(dir: string, component: string, pool: SessionPool): OnnxModel {
  const path = join(dir, component, 'model.onnx');
  if (!existsSync(path)) throw new ModelLoadError(path, `is missing; the ${component} component needs an ONNX model there.`);
  return new OnnxModel(path, pool);
}

/** The parts every SD-family pipeline loads the same way. */
export async function loadCommonComponents(dir: string, options: PipelineLoadOptions) {
  const modelIndex = await readConfigFile(join(dir, 'model_index.json'), "a diffusers model_index.json with the pipeline's components");
  const pool = new SessionPool(options);
  const scheduler = options.scheduler ?? schedulerFromConfig(await loadSchedulerConfig(join(dir, 'scheduler', 'scheduler_config.json')));
  const vaeConfigPath = [join(dir, 'vae_decoder', 'config.json'), join(dir, 'vae', 'config.json')].find((path) => existsSync(path));
  const vaeConfig = vaeConfigPath ? await readConfigFile(vaeConfigPath, 'the VAE config') : {};
  const scalingFactor = typeof vaeConfig.scaling_factor === 'number' ? vaeConfig.scaling_factor : 0.18215;
  const blockOutChannels = Array.isArray(vaeConfig.block_out_channels) ? vaeConfig.block_out_channels.length : 4;
  return {
    modelIndex,
    pool,
    scheduler,
    scalingFactor,
    vaeScaleFactor: 2 ** (blockOutChannels - 1),
    tokenizer: await CLIPTokenizer.fromPretrained(join(dir, 'tokenizer')),
    textEncoder: componentModel(dir, 'text_encoder', pool),
    unet: componentModel(dir, 'unet', pool),
    vaeDecoder: componentModel(dir, 'vae_decoder', pool),
    vaeEncoder: existsSync(join(dir, 'vae_encoder', 'model.onnx')) ? componentModel(dir, 'vae_encoder', pool) : undefined,
    unetConfig: await readConfigFile(join(dir, 'unet', 'config.json'), 'the UNet config').catch(() => ({}) as Record<string, unknown>),
    /** The IP-Adapter's image encoder, where the folder has one. */
    ipAdapter: loadIPAdapterEncoder(dir, pool),
  };
}

export type CommonComponents = Awaited<ReturnType<typeof loadCommonComponents>>;
