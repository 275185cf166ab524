/**
 * The steps the SDXL pipelines share (text-to-image and image-to-image): loading the second tokenizer and text
 * encoder, diffusers' SDXL `encode_prompt`, the micro-conditioning time ids, and the UNet call with its extra
 * conditioning. The generic steps (latents, guidance, decoding) stay in steps.ts.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { StableDiffusionXLTensorName } from '../contract.js';
import { InvalidArgumentError, ModelLoadError, UnsupportedError } from '../errors.js';
import type { OnnxModel } from '../runtime/onnx-model.js';
import { Tensor } from '../tensor.js';
import { CLIPTokenizer } from '../tokenizer/clip-tokenizer.js';
import type { DenoisingRun } from './denoise.js';
import { componentModel, loadCommonComponents, type PipelineLoadOptions } from './loading.js';
import { ipAdapterFeeds } from './ip-adapter.js';
import { checkBatch, checkConditioningWidth, repeatRows, runTextEncoder, timestepFeed } from './steps.js';

export interface StableDiffusionXLLoadOptions extends PipelineLoadOptions {
  /**
   * With no negative prompt, use all-zero negative embeddings instead of encoding "" (diffusers'
   * `force_zeros_for_empty_prompt`). Default: model_index.json's value, else true (diffusers' default).
   */
  forceZerosForEmptyPrompt?: boolean;
}

/** `(height, width)` in pixels, as diffusers' `original_size` / `target_size`. */
export type ImageSizeTuple = readonly [height: number, width: number];
/** `(top, left)` in pixels, as diffusers' `crops_coords_top_left`. */
export type CropCoordsTuple = readonly [top: number, left: number];

/** The common components plus SDXL's second tokenizer and text encoder (the one with the pooled projection). */
export async function loadStableDiffusionXLComponents(dir: string, options: StableDiffusionXLLoadOptions) {
  const firstEncoder = join(dir, 'text_encoder', 'model.onnx');
  if (!existsSync(firstEncoder) && existsSync(join(dir, 'text_encoder_2', 'model.onnx'))) {
    throw new UnsupportedError(
      `${firstEncoder} is missing: only the SDXL base layout (text_encoder and text_encoder_2) is supported, ` +
        'not refiner-style folders with text_encoder_2 alone.',
    );
  }
  const common = await loadCommonComponents(dir, options);
  const configured = common.modelIndex.force_zeros_for_empty_prompt;
  return {
    ...common,
    tokenizer2: await CLIPTokenizer.fromPretrained(join(dir, 'tokenizer_2')),
    textEncoder2: componentModel(dir, 'text_encoder_2', common.pool),
    forceZerosForEmptyPrompt: options.forceZerosForEmptyPrompt ?? (typeof configured === 'boolean' ? configured : true),
  };
}

export type StableDiffusionXLComponents = Awaited<ReturnType<typeof loadStableDiffusionXLComponents>>;

/** Prompt embeddings `[B, 77, D1+D2]` and the second encoder's pooled embeddings `[B, P]`. */
export interface PromptEmbeddingsXL {
  promptEmbeds: Tensor<'float32'>;
  pooledPromptEmbeds: Tensor<'float32'>;
}

/** The prompt embeddings repeated per image (`B·n` rows), with the negative ones under guidance. */
export interface EncodedPromptXL extends PromptEmbeddingsXL {
  negative?: PromptEmbeddingsXL;
}

export interface PromptXLSettings {
  prompt?: string | readonly string[];
  /** For the second tokenizer and encoder; defaults to `prompt`. */
  prompt2?: string | readonly string[];
  negativePrompt?: string | readonly string[];
  /** For the second tokenizer and encoder; defaults to `negativePrompt`. */
  negativePrompt2?: string | readonly string[];
  promptEmbeds?: Tensor<'float32'>;
  pooledPromptEmbeds?: Tensor<'float32'>;
  negativePromptEmbeds?: Tensor<'float32'>;
  negativePooledPromptEmbeds?: Tensor<'float32'>;
  numImagesPerPrompt: number;
  doClassifierFreeGuidance: boolean;
  forceZerosForEmptyPrompt: boolean;
}

/** A prompt option as one string per batch entry: a string applies to every entry, a list must have one each. */
function promptsForBatch(name: string, value: string | readonly string[], batchSize: number): string[] {
  const list = typeof value === 'string' ? Array<string>(batchSize).fill(value) : [...value];
  if (list.length !== batchSize || list.some((entry) => typeof entry !== 'string')) {
    throw new InvalidArgumentError(`${name} must be a string or ${batchSize} strings (one per prompt), got ${list.length} entries.`);
  }
  return list;
}

/** `hidden_states.{L-1}`: the penultimate of the L+1 hidden states, which SDXL conditions on. */
async function penultimateHiddenState(textEncoder: OnnxModel): Promise<string> {
  const layers = (await textEncoder.outputNames()).flatMap((name) => /^hidden_states\.(\d+)$/.exec(name)?.[1] ?? []).map(Number);
  if (layers.length < 2) {
    throw new ModelLoadError(textEncoder.path, 'has no hidden_states.N outputs; SDXL conditions on the penultimate hidden state (export with output_hidden_states).');
  }
  return `hidden_states.${Math.max(...layers) - 1}`;
}

/**
 * Runs both text encoders on `batchSize` prompts (`texts2`, default `texts`, for the second): their penultimate
 * hidden states concatenated on the last axis, and the second encoder's projected pooled output (`text_embeds`).
 */
async function encodeTexts(
  components: StableDiffusionXLComponents,
  names: readonly [string, string],
  texts: string | readonly string[],
  texts2: string | readonly string[] | undefined,
  batchSize: number,
): Promise<PromptEmbeddingsXL> {
  const { tokenizer, textEncoder, tokenizer2, textEncoder2 } = components;
  const [hidden1, hidden2] = await Promise.all([penultimateHiddenState(textEncoder), penultimateHiddenState(textEncoder2)]);
  const first = await runTextEncoder(tokenizer, textEncoder, promptsForBatch(names[0], texts, batchSize), [hidden1]);
  const second = await runTextEncoder(tokenizer2, textEncoder2, promptsForBatch(names[1], texts2 ?? texts, batchSize), [hidden2, 'text_embeds']);
  return { promptEmbeds: Tensor.cat([first[hidden1], second[hidden2]], -1), pooledPromptEmbeds: second.text_embeds };
}

/**
 * diffusers' SDXL `encode_prompt`: prompt embeddings from both encoders, repeated per image, and under guidance the
 * negative ones — zeros when no negative prompt is given and `forceZerosForEmptyPrompt` is on, else the encoded
 * negative prompts ("" by default). Given embeddings are used as they are.
 */
export async function encodePromptXL(components: StableDiffusionXLComponents, settings: PromptXLSettings): Promise<EncodedPromptXL> {
  checkPromptXLSettings(settings);
  const { prompt, promptEmbeds, pooledPromptEmbeds } = settings;
  const positive: PromptEmbeddingsXL = promptEmbeds
    ? { promptEmbeds, pooledPromptEmbeds: pooledPromptEmbeds! }
    : await encodeTexts(components, ['prompt', 'prompt2'], prompt!, settings.prompt2, typeof prompt === 'string' ? 1 : prompt!.length);
  const perImage = ({ promptEmbeds, pooledPromptEmbeds }: PromptEmbeddingsXL): PromptEmbeddingsXL => ({
    promptEmbeds: repeatRows(promptEmbeds, settings.numImagesPerPrompt),
    pooledPromptEmbeds: repeatRows(pooledPromptEmbeds, settings.numImagesPerPrompt),
  });
  await checkConditioningWidth(components.unet, positive.promptEmbeds, promptEmbeds ? [] : [components.textEncoder, components.textEncoder2]);
  if (!settings.doClassifierFreeGuidance) return perImage(positive);

  let negative: PromptEmbeddingsXL;
  if (settings.negativePromptEmbeds) {
    negative = { promptEmbeds: settings.negativePromptEmbeds, pooledPromptEmbeds: settings.negativePooledPromptEmbeds! };
  } else if (settings.negativePrompt === undefined && settings.forceZerosForEmptyPrompt) {
    negative = { promptEmbeds: Tensor.zeros(positive.promptEmbeds.shape), pooledPromptEmbeds: Tensor.zeros(positive.pooledPromptEmbeds.shape) };
  } else {
    const batchSize = positive.promptEmbeds.shape[0];
    negative = await encodeTexts(components, ['negativePrompt', 'negativePrompt2'], settings.negativePrompt ?? '', settings.negativePrompt2, batchSize);
  }
  for (const key of ['promptEmbeds', 'pooledPromptEmbeds'] as const) {
    if (negative[key].shape.join() !== positive[key].shape.join()) {
      throw new InvalidArgumentError(
        `The negative ${key} [${negative[key].shape.join(', ')}] must have the shape of the positive ones [${positive[key].shape.join(', ')}].`,
      );
    }
  }
  return { ...perImage(positive), negative: perImage(negative) };
}

/** diffusers' `check_inputs` for the prompt options: text or embeddings (with their pooled partner), never both. */
function checkPromptXLSettings(settings: PromptXLSettings): void {
  const both = (text: string, embeds: string) => new InvalidArgumentError(`Give either ${text} or ${embeds}, not both.`);
  if (settings.promptEmbeds) {
    if (settings.prompt !== undefined) throw both('prompt', 'promptEmbeds');
    if (settings.prompt2 !== undefined) throw both('prompt2', 'promptEmbeds');
    if (!settings.pooledPromptEmbeds) {
      throw new InvalidArgumentError('promptEmbeds need pooledPromptEmbeds from the same text encoder (text_encoder_2 text_embeds).');
    }
  } else if (settings.prompt === undefined) {
    throw new InvalidArgumentError('Give either prompt or promptEmbeds.');
  }
  if (settings.negativePromptEmbeds) {
    if (settings.negativePrompt !== undefined) throw both('negativePrompt', 'negativePromptEmbeds');
    if (settings.negativePrompt2 !== undefined) throw both('negativePrompt2', 'negativePromptEmbeds');
    if (!settings.negativePooledPromptEmbeds) {
      throw new InvalidArgumentError('negativePromptEmbeds need negativePooledPromptEmbeds from the same text encoder.');
    }
  }
}

/** The UNet's conditioning, each `[negative; positive]` under guidance: what callbacks see and may replace. */
export function conditioningXL(encoded: EncodedPromptXL, addTimeIds: Tensor<'float32'>) {
  const { negative } = encoded;
  return {
    promptEmbeds: negative ? Tensor.cat([negative.promptEmbeds, encoded.promptEmbeds]) : encoded.promptEmbeds,
    addTextEmbeds: negative ? Tensor.cat([negative.pooledPromptEmbeds, encoded.pooledPromptEmbeds]) : encoded.pooledPromptEmbeds,
    addTimeIds,
  };
}

/**
 * Time-id rows as a `[rows, ids]` tensor, after checking the id count against the UNet's added-embedding width
 * (`addition_time_embed_dim · ids + pooled width` must equal `projection_class_embeddings_input_dim`).
 */
export function timeIdsTensor(
  rows: readonly (readonly number[])[],
  unetConfig: Readonly<Record<string, unknown>>,
  pooledWidth: number,
): Tensor<'float32'> {
  const ids = rows[0].length;
  const { addition_time_embed_dim: perId, projection_class_embeddings_input_dim: expected } = unetConfig;
  if (typeof perId === 'number' && typeof expected === 'number' && perId * ids + pooledWidth !== expected) {
    const trainedIds = (expected - pooledWidth) / perId;
    const aestheticHint =
      trainedIds === 5
        ? ' The UNet takes 5 time ids (original size, crop corner, aesthetic score): use image-to-image with requiresAestheticsScore.'
        : trainedIds === 6 && ids === 5
          ? ' The UNet takes 6 time ids (original size, crop corner, target size): turn requiresAestheticsScore off.'
          : '';
    throw new InvalidArgumentError(
      `The UNet expects an added embedding of width ${expected} (projection_class_embeddings_input_dim), but ${ids} time ids ` +
        `× ${perId} + pooled width ${pooledWidth} give ${perId * ids + pooledWidth}.${aestheticHint}`,
    );
  }
  return new Tensor(Float32Array.from(rows.flat()), [rows.length, ids]);
}

/** The SDXL conditioning tensors and the UNet (and SDXL ControlNet) inputs that take them. */
export const CONDITIONING_INPUTS = { promptEmbeds: 'encoder_hidden_states', addTextEmbeds: 'text_embeds', addTimeIds: 'time_ids' } as const;

/**
 * The SDXL UNet call for the shared denoising loop: each conditioning tensor checked against the batch first.
 * `extraFeeds` adds the inputs some UNets take besides (the ControlNet residuals), computed after those checks.
 */
export function predictNoiseXL(
  unet: OnnxModel,
  pipeline: DenoisingRun<StableDiffusionXLTensorName>['pipeline'],
  extraFeeds?: (
    step: { latentModelInput: Tensor<'float32'>; timestep: number; stepIndex: number },
    tensors: Readonly<Record<string, Tensor<'float32'> | undefined>>,
  ) => Promise<Readonly<Record<string, Tensor<'float32'>>>>,
): DenoisingRun<StableDiffusionXLTensorName>['predictNoise'] {
  return async (latentModelInput, timestep, stepIndex, tensors) => {
    const rows = latentModelInput.shape[0];
    const conditioning: Record<string, Tensor<'float32'>> = {};
    for (const [name, input] of Object.entries(CONDITIONING_INPUTS)) {
      const tensor = tensors[name as keyof typeof CONDITIONING_INPUTS] as Tensor<'float32'>;
      checkBatch(name, tensor, rows, pipeline.doClassifierFreeGuidance);
      conditioning[input] = tensor;
    }
    const extra = extraFeeds ? await extraFeeds({ latentModelInput, timestep, stepIndex }, tensors) : {};
    // The SDXL exports take the timestep as an int64 scalar; the runner adapts the [B] feed to that.
    const ipAdapter = ipAdapterFeeds(tensors.ipAdapterImageEmbeds, pipeline.ipAdapterFeedScale, rows);
    const { out_sample } = await unet.run({ sample: latentModelInput, timestep: timestepFeed(timestep, rows), ...conditioning, ...ipAdapter, ...extra });
    return out_sample;
  };
}

/** Checks the micro-conditioning options given: each a `(height, width)` or `(top, left)` pair of finite numbers. */
export function checkMicroConditioning(pairs: Readonly<Record<string, readonly number[] | undefined>>): void {
  for (const [name, pair] of Object.entries(pairs)) {
    if (pair !== undefined && (!Array.isArray(pair) || pair.length !== 2 || pair.some((value) => !Number.isFinite(value)))) {
      throw new InvalidArgumentError(`${name} must be a pair of finite numbers, got ${JSON.stringify(pair)}.`);
    }
  }
}
