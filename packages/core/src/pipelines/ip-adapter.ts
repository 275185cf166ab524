/**
 * IP-Adapter (the original "proj" kind) for the SD 1.x and SDXL pipelines, on this project's ONNX convention: the
 * adapter's image projection and attention weights live inside the exported UNet, which takes `image_embeds`
 * `[B, 1, D]` and `ip_adapter_scale` `[1]` as inputs, so the scale can change from one step to the next. diffusers'
 * `encode_image` / `prepare_ip_adapter_image_embeds`, camelCased.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { checkIPAdapterScale, type CfgLayout } from '../callbacks/context.js';
import { InvalidArgumentError, ModelLoadError } from '../errors.js';
import type { OnnxModel, SessionPool } from '../runtime/onnx-model.js';
import { Tensor } from '../tensor.js';
import { CLIPImageProcessor } from './clip-image-processor.js';
import { decodeImage, type ImageInput } from './images.js';
import { componentModel } from './loading.js';
import { repeatRows } from './steps.js';
import { memoizeSuccess } from '../util/memoize.js';

/** The IP-Adapter options of every SD 1.x and SDXL pipeline's `generate`. */
export interface IPAdapterOptions {
  /** The picture the adapter conditions on: a path, an encoded image or raw pixels. */
  ipAdapterImage?: ImageInput;
  /**
   * Precomputed image embeddings in diffusers' layout, instead of `ipAdapterImage`: `[rows, 1, D]` with rows =
   * `[negative; positive]` (2) under classifier-free guidance, else 1 (positive) — for the whole batch, or times the
   * batch size, one per image.
   */
  ipAdapterImageEmbeds?: Tensor<'float32'>;
  /** How strongly the image conditions the UNet (default 1; 0 equals running without the adapter). */
  ipAdapterScale?: number;
}

/** The adapter's encoder side: `image_encoder/` (CLIP vision with projection) and `feature_extractor/`. */
export interface IPAdapterEncoder {
  readonly imageEncoder: OnnxModel;
  readonly featureExtractor: () => Promise<CLIPImageProcessor>;
}

/** The folder's image encoder, when it has one (the UNet's inputs decide whether the model has an adapter). */
export function loadIPAdapterEncoder(dir: string, pool: SessionPool): IPAdapterEncoder | undefined {
  if (!existsSync(join(dir, 'image_encoder', 'model.onnx'))) return undefined;
  return {
    imageEncoder: componentModel(dir, 'image_encoder', pool),
    featureExtractor: memoizeSuccess(() => CLIPImageProcessor.fromPretrained(join(dir, 'feature_extractor'))),
  };
}

const IMAGE_EMBEDS_INPUT = 'image_embeds';
const SCALE_INPUT = 'ip_adapter_scale';

/**
 * What a generation adds for the adapter: the callback tensor (CFG-doubled embeddings), its CFG layout and the scale
 * the generation starts with — all empty for a model without an adapter, so pipelines spread them unconditionally.
 */
export interface PreparedIPAdapter {
  readonly tensors: { ipAdapterImageEmbeds?: Tensor<'float32'> };
  readonly cfgLayout: CfgLayout;
  readonly ipAdapterScale: number;
  /** Whether a picture (or embeddings) conditions this generation; without one the UNet always gets scale 0. */
  readonly ipAdapterActive: boolean;
}

const NO_IP_ADAPTER: PreparedIPAdapter = { tensors: {}, cfgLayout: {}, ipAdapterScale: 0, ipAdapterActive: false };

function prepared(ipAdapterImageEmbeds: Tensor<'float32'>, ipAdapterScale: number, ipAdapterActive = true): PreparedIPAdapter {
  return { tensors: { ipAdapterImageEmbeds }, cfgLayout: { ipAdapterImageEmbeds: { kind: 'negativeFirst' } }, ipAdapterScale, ipAdapterActive };
}

/** Whether the model's UNet takes the adapter's inputs. */
export async function hasIPAdapter(unet: OnnxModel): Promise<boolean> {
  const names = new Set((await unet.inputs()).map((spec) => spec.name));
  return names.has(IMAGE_EMBEDS_INPUT) && names.has(SCALE_INPUT);
}

/**
 * diffusers' `prepare_ip_adapter_image_embeds` for one adapter: the image encoded (or the given embeddings checked),
 * one row per image of the batch, `[zeros; embeds]` under guidance. Nothing for a model without an adapter (and an
 * error if adapter options were given for it). A model with an adapter but no picture runs as without it
 * (scale 0), where diffusers fails.
 */
export async function prepareIPAdapter(
  model: { readonly unet: OnnxModel; readonly ipAdapter?: IPAdapterEncoder },
  options: IPAdapterOptions,
  batch: { batchSize: number; doClassifierFreeGuidance: boolean },
): Promise<PreparedIPAdapter> {
  const { ipAdapterImage, ipAdapterImageEmbeds, ipAdapterScale } = options;
  if (ipAdapterScale !== undefined) checkIPAdapterScale(ipAdapterScale);
  if (Array.isArray(ipAdapterImage) || Array.isArray(ipAdapterImageEmbeds)) {
    throw new InvalidArgumentError('One IP-Adapter per model is supported: give one ipAdapterImage (or one ipAdapterImageEmbeds tensor), not a list.');
  }
  if (ipAdapterImage !== undefined && ipAdapterImageEmbeds !== undefined) {
    throw new InvalidArgumentError('Give either ipAdapterImage or ipAdapterImageEmbeds, not both.');
  }
  if (ipAdapterScale !== undefined && ipAdapterImage === undefined && ipAdapterImageEmbeds === undefined) {
    throw new InvalidArgumentError('ipAdapterScale needs ipAdapterImage or ipAdapterImageEmbeds to scale.');
  }
  const inputs = await model.unet.inputs();
  const embedsSpec = inputs.find((spec) => spec.name === IMAGE_EMBEDS_INPUT);
  if (!embedsSpec || !inputs.some((spec) => spec.name === SCALE_INPUT)) {
    if (ipAdapterImage !== undefined || ipAdapterImageEmbeds !== undefined || ipAdapterScale !== undefined) {
      throw new InvalidArgumentError(
        `This model has no IP-Adapter: its UNet (${model.unet.path}) takes no ${IMAGE_EMBEDS_INPUT} and ${SCALE_INPUT} inputs. ` +
          'Use a folder exported with the adapter built in (tools/export).',
      );
    }
    return NO_IP_ADAPTER;
  }
  const width = embedsSpec.shape[2];
  const { batchSize, doClassifierFreeGuidance } = batch;
  const halves = doClassifierFreeGuidance ? 2 : 1;

  if (ipAdapterImageEmbeds !== undefined) {
    const { shape } = ipAdapterImageEmbeds;
    const rowsOk = shape[0] === halves || shape[0] === halves * batchSize;
    if (!(ipAdapterImageEmbeds instanceof Tensor) || shape.length !== 3 || shape[1] !== 1 || !rowsOk || (typeof width === 'number' && shape[2] !== width)) {
      throw new InvalidArgumentError(
        `ipAdapterImageEmbeds must be a float32 Tensor [rows, 1, ${typeof width === 'number' ? width : 'D'}] with rows = ${halves} ` +
          `${doClassifierFreeGuidance ? '([negative; positive], guidance is on) ' : ''}or ${halves * batchSize} (one per image); got ` +
          `${ipAdapterImageEmbeds instanceof Tensor ? `[${shape.join(', ')}]` : typeof ipAdapterImageEmbeds}.`,
      );
    }
    const perImage = shape[0] / halves;
    const [negative, positive] = doClassifierFreeGuidance ? ipAdapterImageEmbeds.chunk(2) : [undefined, ipAdapterImageEmbeds];
    const spread = (tensor: Tensor<'float32'>) => (perImage === 1 ? repeatRows(tensor, batchSize) : tensor);
    return prepared(negative ? Tensor.cat([spread(negative), spread(positive)]) : spread(positive), ipAdapterScale ?? 1);
  }

  let positive: Tensor<'float32'>;
  if (ipAdapterImage !== undefined) {
    if (!model.ipAdapter) {
      throw new ModelLoadError(
        model.unet.path,
        'takes IP-Adapter inputs, but the folder has no image_encoder/model.onnx to encode ipAdapterImage; give ipAdapterImageEmbeds instead.',
      );
    }
    const processor = await model.ipAdapter.featureExtractor();
    const pixelValues = processor.preprocess(await decodeImage(ipAdapterImage));
    const { image_embeds: imageEmbeds } = await model.ipAdapter.imageEncoder.run({ pixel_values: pixelValues }, ['image_embeds']);
    positive = repeatRows(imageEmbeds.reshape([1, 1, imageEmbeds.shape[1]]), batchSize);
  } else {
    if (typeof width !== 'number') {
      throw new ModelLoadError(model.unet.path, `declares no fixed width for ${IMAGE_EMBEDS_INPUT}; give ipAdapterImage or ipAdapterImageEmbeds.`);
    }
    positive = Tensor.zeros([batchSize, 1, width]);
  }
  // diffusers' unconditional image embeddings are zeros of the same shape.
  const embeds = doClassifierFreeGuidance ? Tensor.cat([Tensor.zeros(positive.shape), positive]) : positive;
  return ipAdapterImage === undefined ? prepared(embeds, 0, false) : prepared(embeds, ipAdapterScale ?? 1);
}

/** The UNet feeds for the adapter at one step: the embeddings (checked against the batch) and the current scale. */
export function ipAdapterFeeds(embeds: Tensor<'float32'> | undefined, scale: number, rows: number): Record<string, Tensor<'float32'>> {
  if (!embeds) return {};
  if (embeds.shape[0] !== rows) {
    throw new InvalidArgumentError(
      `ipAdapterImageEmbeds has ${embeds.shape[0]} rows but the next UNet call has ${rows}: turn guidance off with ` +
        'pipeline.disableGuidance(kwargs), which halves it with the other CFG-doubled tensors.',
    );
  }
  return { [IMAGE_EMBEDS_INPUT]: embeds, [SCALE_INPUT]: new Tensor(Float32Array.of(checkIPAdapterScale(scale)), [1]) };
}
