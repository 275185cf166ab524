/**
 * The steps the SDXL pipelines share (text-to-image and image-to-image): loading the second tokenizer and text
 * encoder, diffusers' SDXL `encode_prompt`, the micro-conditioning time ids, and the UNet call with its extra
 * conditioning. The generic steps (latents, guidance, decoding) stay in steps.ts.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { GenerationContext } from '../callbacks/context.js';
import type { StableDiffusionXLTensorName } from '../contract.js';
import { InvalidArgumentError, ModelLoadError, UnsupportedError } from '../errors.js';
import type { OnnxModel } from '../runtime/onnx-model.js';
import { Tensor } from '../tensor.js';
import { CLIPTokenizer } from '../tokenizer/clip-tokenizer.js';
import type { DenoisingRun } from './denoise.js';
import { componentModel, loadCommonComponents, type PipelineLoadOptions } from './loading.js';
import { checkBatch, repeatRows, runTextEncoder, timestepFeed } from './steps.js';

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
  if (existsSync(join(dir, 'model_index.json')) && !existsSync(firstEncoder)) {
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

/** Prompt embeddings `[B·n, 77, D1+D2]` and pooled embeddings `[B·n, P]`, with the negative pair under guidance. */
export interface EncodedPromptXL {
  promptEmbeds: Tensor<'float32'>;
  pooledPromptEmbeds: Tensor<'float32'>;
  negative?: { promptEmbeds: Tensor<'float32'>; pooledPromptEmbeds: Tensor<'float32'> };
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
 * Runs both text encoders: their penultimate hidden states concatenated on the last axis, and the second
 * encoder's projected pooled output (`text_embeds`).
 */
async function encodeWithBothEncoders(
  components: StableDiffusionXLComponents,
  prompts: readonly string[],
  prompts2: readonly string[],
): Promise<{ promptEmbeds: Tensor<'float32'>; pooledPromptEmbeds: Tensor<'float32'> }> {
  const { tokenizer, textEncoder, tokenizer2, textEncoder2 } = components;
  const [hidden1, hidden2] = await Promise.all([penultimateHiddenState(textEncoder), penultimateHiddenState(textEncoder2)]);
  const first = await runTextEncoder(tokenizer, textEncoder, prompts, [hidden1]);
  const second = await runTextEncoder(tokenizer2, textEncoder2, prompts2, [hidden2, 'text_embeds']);
  return { promptEmbeds: Tensor.cat([first[hidden1], second[hidden2]], -1), pooledPromptEmbeds: second.text_embeds };
}

/**
 * diffusers' SDXL `encode_prompt`: prompt embeddings from both encoders, repeated per image, and under guidance the
 * negative ones — zeros when no negative prompt is given and `forceZerosForEmptyPrompt` is on, else the encoded
 * negative prompts ("" by default). Given embeddings are used as they are.
 */
export async function encodePromptXL(components: StableDiffusionXLComponents, settings: PromptXLSettings): Promise<EncodedPromptXL> {
  checkPromptXLSettings(settings);
  let { promptEmbeds, pooledPromptEmbeds } = settings;
  if (!promptEmbeds) {
    const prompt = settings.prompt!;
    const batch = typeof prompt === 'string' ? 1 : prompt.length;
    const prompts = promptsForBatch('prompt', prompt, batch);
    const prompts2 = promptsForBatch('prompt2', settings.prompt2 ?? prompt, batch);
    ({ promptEmbeds, pooledPromptEmbeds } = await encodeWithBothEncoders(components, prompts, prompts2));
  }
  const batchSize = promptEmbeds.shape[0];
  const perImage = (tensor: Tensor<'float32'>) => repeatRows(tensor, settings.numImagesPerPrompt);
  const encoded: EncodedPromptXL = { promptEmbeds: perImage(promptEmbeds), pooledPromptEmbeds: perImage(pooledPromptEmbeds!) };
  if (!settings.doClassifierFreeGuidance) return encoded;

  let negativePromptEmbeds = settings.negativePromptEmbeds;
  let negativePooledPromptEmbeds = settings.negativePooledPromptEmbeds;
  if (!negativePromptEmbeds && settings.negativePrompt === undefined && settings.forceZerosForEmptyPrompt) {
    negativePromptEmbeds = Tensor.zeros(promptEmbeds.shape);
    negativePooledPromptEmbeds = Tensor.zeros(pooledPromptEmbeds!.shape);
  } else if (!negativePromptEmbeds) {
    const negativePrompt = settings.negativePrompt ?? '';
    const negatives = promptsForBatch('negativePrompt', negativePrompt, batchSize);
    const negatives2 = promptsForBatch('negativePrompt2', settings.negativePrompt2 ?? negativePrompt, batchSize);
    ({ promptEmbeds: negativePromptEmbeds, pooledPromptEmbeds: negativePooledPromptEmbeds } = await encodeWithBothEncoders(
      components,
      negatives,
      negatives2,
    ));
  }
  for (const [name, negative, positive] of [
    ['negativePromptEmbeds', negativePromptEmbeds, promptEmbeds],
    ['negativePooledPromptEmbeds', negativePooledPromptEmbeds!, pooledPromptEmbeds!],
  ] as const) {
    if (negative.shape.join() !== positive.shape.join()) {
      throw new InvalidArgumentError(
        `${name} [${negative.shape.join(', ')}] must have the shape of the positive embeddings [${positive.shape.join(', ')}].`,
      );
    }
  }
  encoded.negative = { promptEmbeds: perImage(negativePromptEmbeds), pooledPromptEmbeds: perImage(negativePooledPromptEmbeds!) };
  return encoded;
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
    const aestheticHint =
      Math.abs(expected - (perId * ids + pooledWidth)) === perId
        ? ` The UNet expects ${(expected - pooledWidth) / perId} time ids: set requires_aesthetics_score to match it (true for refiners: 5 ids).`
        : '';
    throw new InvalidArgumentError(
      `The UNet expects an added embedding of width ${expected} (projection_class_embeddings_input_dim), but ${ids} time ids ` +
        `× ${perId} + pooled width ${pooledWidth} give ${perId * ids + pooledWidth}.${aestheticHint}`,
    );
  }
  for (const row of rows) {
    if (row.some((value) => !Number.isFinite(value))) throw new InvalidArgumentError(`Time ids must be finite numbers, got [${row.join(', ')}].`);
  }
  return new Tensor(Float32Array.from(rows.flat()), [rows.length, ids]);
}

const CONDITIONING_INPUTS = { promptEmbeds: 'encoder_hidden_states', addTextEmbeds: 'text_embeds', addTimeIds: 'time_ids' } as const;

/** The SDXL UNet call for the shared denoising loop: each conditioning tensor checked against the batch first. */
export function predictNoiseXL(
  unet: OnnxModel,
  pipeline: GenerationContext<StableDiffusionXLTensorName>,
): DenoisingRun<StableDiffusionXLTensorName>['predictNoise'] {
  return async (latentModelInput, timestep, _stepIndex, tensors) => {
    const rows = latentModelInput.shape[0];
    const conditioning: Record<string, Tensor<'float32'>> = {};
    for (const [name, input] of Object.entries(CONDITIONING_INPUTS)) {
      const tensor = tensors[name as keyof typeof CONDITIONING_INPUTS] as Tensor<'float32'>;
      checkBatch(name, tensor, rows, pipeline.doClassifierFreeGuidance);
      conditioning[input] = tensor;
    }
    // The SDXL exports take the timestep as an int64 scalar; the runner adapts the [B] feed to that.
    const { out_sample } = await unet.run({ sample: latentModelInput, timestep: timestepFeed(timestep, rows), ...conditioning });
    return out_sample;
  };
}

/** Checks a `(a, b)` micro-conditioning pair. */
export function checkPair(name: string, pair: readonly number[]): void {
  if (!Array.isArray(pair) || pair.length !== 2 || pair.some((value) => !Number.isFinite(value))) {
    throw new InvalidArgumentError(`${name} must be a pair of finite numbers, got ${JSON.stringify(pair)}.`);
  }
}
