/**
 * The steps every pipeline shares (diffusers' `encode_prompt`, `prepare_latents`, guidance, decoding), as plain
 * functions over tensors, so each pipeline's loop stays one readable screen.
 */
import { InvalidArgumentError, ModelLoadError, ModelRunError } from '../errors.js';
import { randn, type Generator } from '../random/generator.js';
import type { OnnxModel } from '../runtime/onnx-model.js';
import { Tensor } from '../tensor.js';
import type { CLIPTokenizer } from '../tokenizer/clip-tokenizer.js';
import type { GenerationContext } from '../callbacks/context.js';
import { toChannelsLast, toRgbImages, type RgbImage } from './images.js';
import { ipAdapterFeeds } from './ip-adapter.js';

export type OutputType = 'image' | 'np' | 'latent';

/** What a pipeline returns: `images` are RGB pictures, NHWC floats in [0, 1] (`'np'`), or the latents. */
export interface PipelineOutput<Output extends OutputType = 'image'> {
  images: Output extends 'image' ? RgbImage[] : Tensor<'float32'>;
  /**
   * The step after which a callback interrupted the run (`pipeline.interrupt = true`); the images are the decoded
   * latents of that step (−1: interrupted before the first step). `undefined` when every step ran.
   */
  interruptedAtStep?: number;
}

/** torch's `repeat_interleave(times, dim=0)`: each row `times` times in a row. */
export function repeatRows(tensor: Tensor<'float32'>, times: number): Tensor<'float32'> {
  if (times === 1) return tensor;
  const rowSize = tensor.size / tensor.shape[0];
  const out = new Float32Array(tensor.size * times);
  for (let row = 0; row < tensor.shape[0]; row++) {
    const source = tensor.data.subarray(row * rowSize, (row + 1) * rowSize);
    for (let copy = 0; copy < times; copy++) out.set(source, (row * times + copy) * rowSize);
  }
  return new Tensor(out, [tensor.shape[0] * times, ...tensor.shape.slice(1)]);
}

export function scaleTensor(tensor: Tensor<'float32'>, factor: number): Tensor<'float32'> {
  if (factor === 1) return tensor;
  const out = new Float32Array(tensor.size);
  const factor32 = Math.fround(factor); // torch multiplies a float32 tensor by the scalar cast to float32
  for (let i = 0; i < out.length; i++) out[i] = tensor.data[i] * factor32;
  return new Tensor(out, tensor.shape);
}

/** Prompts as a list, and the negative prompts matched to them (diffusers' checks and messages). */
export function normalizePrompts(prompt: string | readonly string[] | undefined, negativePrompt: string | readonly string[] | undefined) {
  const prompts = typeof prompt === 'string' ? [prompt] : prompt ? [...prompt] : undefined;
  if (prompts !== undefined && (prompts.length === 0 || prompts.some((p) => typeof p !== 'string'))) {
    throw new InvalidArgumentError('prompt must be a string or a non-empty array of strings.');
  }
  const negatives = typeof negativePrompt === 'string' ? [negativePrompt] : negativePrompt ? [...negativePrompt] : undefined;
  if (prompts && negatives && negatives.length !== prompts.length && typeof negativePrompt !== 'string') {
    throw new InvalidArgumentError(
      `negativePrompt has ${negatives.length} entries but prompt has ${prompts.length}; give one per prompt or a single string.`,
    );
  }
  return { prompts, negatives };
}

/** Tokenizes and runs a CLIP text encoder; returns the requested outputs (all `[batch, …]`). */
export async function runTextEncoder(
  tokenizer: CLIPTokenizer,
  textEncoder: OnnxModel,
  prompts: readonly string[],
  outputNames: readonly string[] = ['last_hidden_state'],
): Promise<Record<string, Tensor<'float32'>>> {
  const { inputIds } = tokenizer.call(prompts, { padding: 'max_length', maxLength: tokenizer.modelMaxLength, truncation: true });
  const ids = new Int32Array(inputIds.flat());
  return textEncoder.run({ input_ids: { data: ids, shape: [inputIds.length, inputIds[0].length] } }, outputNames);
}

/**
 * diffusers' `encode_prompt` for SD 1.x: prompt embeddings repeated per image, and the negative ones when
 * classifier-free guidance is on (empty prompts when no negative prompt is given). Given embeddings are used as is.
 */
export async function encodePrompt(
  encoder: { tokenizer: CLIPTokenizer; textEncoder: OnnxModel },
  settings: {
    prompts: readonly string[] | undefined;
    negatives: readonly string[] | undefined;
    numImagesPerPrompt: number;
    doClassifierFreeGuidance: boolean;
    promptEmbeds?: Tensor<'float32'>;
    negativePromptEmbeds?: Tensor<'float32'>;
  },
): Promise<{ promptEmbeds: Tensor<'float32'>; negativePromptEmbeds?: Tensor<'float32'> }> {
  const { tokenizer, textEncoder } = encoder;
  let promptEmbeds = settings.promptEmbeds;
  if (!promptEmbeds) {
    if (!settings.prompts) throw new InvalidArgumentError('Give either prompt or promptEmbeds.');
    promptEmbeds = (await runTextEncoder(tokenizer, textEncoder, settings.prompts)).last_hidden_state;
  }
  const batchSize = promptEmbeds.shape[0];
  let negativePromptEmbeds = settings.negativePromptEmbeds;
  if (settings.doClassifierFreeGuidance && !negativePromptEmbeds) {
    const negatives = settings.negatives
      ? settings.negatives.length === 1 && batchSize > 1 ? Array(batchSize).fill(settings.negatives[0]) : settings.negatives
      : Array<string>(batchSize).fill('');
    negativePromptEmbeds = (await runTextEncoder(tokenizer, textEncoder, negatives)).last_hidden_state;
  }
  if (negativePromptEmbeds && negativePromptEmbeds.shape.join() !== promptEmbeds.shape.join()) {
    throw new InvalidArgumentError(
      `negativePromptEmbeds [${negativePromptEmbeds.shape.join(', ')}] must have the shape of promptEmbeds [${promptEmbeds.shape.join(', ')}].`,
    );
  }
  return {
    promptEmbeds: repeatRows(promptEmbeds, settings.numImagesPerPrompt),
    negativePromptEmbeds: negativePromptEmbeds && repeatRows(negativePromptEmbeds, settings.numImagesPerPrompt),
  };
}

/** diffusers' `prepare_latents` for text-to-image (one draw for the whole batch, as `randn_tensor`): noise (or the given latents) times the scheduler's `initNoiseSigma`. */
export function prepareLatents(
  shape: readonly number[],
  initNoiseSigma: number,
  generator: Generator | undefined,
  latents?: Tensor<'float32'>,
): Tensor<'float32'> {
  if (latents && latents.shape.join() !== shape.join()) {
    throw new InvalidArgumentError(`latents have shape [${latents.shape.join(', ')}]; expected [${shape.join(', ')}].`);
  }
  return scaleTensor(latents ?? (randn(shape, { generator }) as Tensor<'float32'>), initNoiseSigma);
}

/**
 * Classifier-free guidance on a `[uncond; text]` batch: `uncond + scale·(text − uncond)`, each operation rounded
 * to float32 as torch does. Returns the guided prediction and the text half (for `guidanceRescale`).
 */
export function applyGuidance(noisePred: Tensor<'float32'>, guidanceScale: number): { guided: Tensor<'float32'>; text: Tensor<'float32'> } {
  const half = noisePred.size / 2;
  const rowShape = [noisePred.shape[0] / 2, ...noisePred.shape.slice(1)];
  const { data } = noisePred;
  const guided = new Float32Array(half);
  const scale = Math.fround(guidanceScale);
  for (let i = 0; i < half; i++) {
    const uncond = data[i];
    guided[i] = uncond + Math.fround(scale * Math.fround(data[half + i] - uncond));
  }
  // The text half as a view: no copy on the hot path.
  return { guided: new Tensor(guided, rowShape), text: new Tensor(data.subarray(half), rowShape) };
}

/** diffusers' `rescale_noise_cfg` (Lin et al. 2023, §3.4): per-image std of the guided prediction matched to the text one. */
export function rescaleNoiseCfg(noiseCfg: Tensor<'float32'>, noisePredText: Tensor<'float32'>, guidanceRescale: number): Tensor<'float32'> {
  const rows = noiseCfg.shape[0];
  const rowSize = noiseCfg.size / rows;
  const out = new Float32Array(noiseCfg.size);
  const std = (data: Float32Array, offset: number) => {
    let mean = 0;
    for (let i = 0; i < rowSize; i++) mean += data[offset + i];
    mean /= rowSize;
    let sum = 0;
    for (let i = 0; i < rowSize; i++) sum += (data[offset + i] - mean) ** 2;
    return Math.sqrt(sum / (rowSize - 1));
  };
  for (let row = 0; row < rows; row++) {
    const offset = row * rowSize;
    const ratio = std(noisePredText.data, offset) / std(noiseCfg.data, offset);
    for (let i = 0; i < rowSize; i++) {
      const value = noiseCfg.data[offset + i];
      out[offset + i] = guidanceRescale * (value * ratio) + (1 - guidanceRescale) * value;
    }
  }
  return new Tensor(out, noiseCfg.shape);
}

/** Feeds for a UNet-like model: the timestep as a `[batch]` vector (the runner adapts it to the model's rank/type). */
export function timestepFeed(timestep: number, batch: number) {
  return { data: new Float32Array(batch).fill(timestep), shape: [batch] };
}

/** The VAE decoder on `latents / scalingFactor`, then `clamp(x / 2 + 0.5, 0, 1)`: NCHW images in [0, 1]. */
export async function decodeLatents(vaeDecoder: OnnxModel, latents: Tensor<'float32'>, scalingFactor: number): Promise<Tensor<'float32'>> {
  const scaled = new Float32Array(latents.size);
  const divisor = Math.fround(scalingFactor);
  for (let i = 0; i < scaled.length; i++) scaled[i] = latents.data[i] / divisor;
  const { sample } = await vaeDecoder.run({ latent_sample: new Tensor(scaled, latents.shape) }, ['sample']);
  const images = new Float32Array(sample.size);
  let finite = true;
  for (let i = 0; i < images.length; i++) {
    const value = sample.data[i];
    finite &&= value - value === 0;
    images[i] = Math.min(1, Math.max(0, value / 2 + 0.5));
  }
  if (!finite) {
    // Clamping would turn NaN into black pixels: a silently wrong picture.
    throw new ModelRunError(
      vaeDecoder.path,
      'the VAE decoder returned NaN or Infinity for finite latents, typically a float16 VAE overflowing (SDXL\'s ' +
        'original VAE does): use a float32 export or a float16-safe VAE (e.g. madebyollin/sdxl-vae-fp16-fix).',
    );
  }
  return new Tensor(images, sample.shape);
}

/** What a generation's callbacks use to preview latents: the VAE decoder, as RGB pictures. */
export function latentDecoder(vae: { vaeDecoder: OnnxModel; scalingFactor: number }) {
  return async (latents: Tensor<'float32'>): Promise<RgbImage[]> => toRgbImages(await decodeLatents(vae.vaeDecoder, latents, vae.scalingFactor));
}

/** Decodes (unless `'latent'`) and formats the result as asked. */
export async function finishOutput<Output extends OutputType>(
  outputType: Output,
  { latents, interruptedAtStep }: { latents: Tensor<'float32'>; interruptedAtStep?: number },
  vae: { vaeDecoder: OnnxModel; scalingFactor: number },
): Promise<PipelineOutput<Output>> {
  const interrupted = interruptedAtStep === undefined ? {} : { interruptedAtStep };
  if (outputType === 'latent') return { images: latents, ...interrupted } as PipelineOutput<Output>;
  const images = await decodeLatents(vae.vaeDecoder, latents, vae.scalingFactor);
  return { images: outputType === 'np' ? toChannelsLast(images) : toRgbImages(images), ...interrupted } as PipelineOutput<Output>;
}

/**
 * Checks that a tensor a callback may have replaced still fits the batch of the next UNet call, with a message
 * that says how to fix the callback (the usual mistake: guidance turned off without halving the embeddings).
 */
export function checkBatch(name: string, tensor: Tensor<'float32'>, expectedRows: number, doClassifierFreeGuidance: boolean): void {
  if (tensor.shape[0] === expectedRows) return;
  const hint = doClassifierFreeGuidance
    ? 'classifier-free guidance is on, so it needs the [negative; positive] rows'
    : 'classifier-free guidance is off, so keep only the conditional half (e.g. chunk(2)[1]) when turning it off';
  throw new InvalidArgumentError(`${name} has ${tensor.shape[0]} rows but the next step needs ${expectedRows}: ${hint}.`);
}

/** The static width of a model's `[batch, sequence, width]` `encoder_hidden_states` input, when the export declares one. */
export async function contextWidth(model: OnnxModel): Promise<number | undefined> {
  const width = (await model.inputs()).find((spec) => spec.name === 'encoder_hidden_states')?.shape[2];
  return typeof width === 'number' ? width : undefined;
}

/**
 * Checks the prompt embeddings against the width the UNet declares, so that a UNet from another model than the
 * folder's text encoder(s) — or embeddings made for another model — fail here with both named, not inside ONNX
 * Runtime. `textEncoders`: the models that made the embeddings (none: the caller gave them).
 */
export async function checkConditioningWidth(unet: OnnxModel, promptEmbeds: Tensor<'float32'>, textEncoders: readonly OnnxModel[]): Promise<void> {
  const expected = await contextWidth(unet);
  const width = promptEmbeds.shape.at(-1);
  if (expected === undefined || width === expected) return;
  if (textEncoders.length === 0) {
    throw new InvalidArgumentError(`promptEmbeds are ${width} wide, but the UNet (${unet.path}) takes ${expected}-wide text embeddings.`);
  }
  throw new ModelLoadError(
    unet.path,
    `takes ${expected}-wide text embeddings (encoder_hidden_states), but ${textEncoders.map((encoder) => encoder.path).join(' + ')} ` +
      `give${textEncoders.length === 1 ? 's' : ''} ${width}: the UNet and the text encoder come from different models.`,
  );
}

/**
 * The prompt steps of an SD 1.x generation: `normalizePrompts`, `encodePrompt`, and the embeddings as the UNet takes
 * them — `[negative; positive]` under classifier-free guidance (diffusers' `torch.cat([negative, prompt])`).
 * `batchSize` is the number of images in the latent batch (prompts × numImagesPerPrompt).
 */
export async function encodeGuidedPrompt(
  encoder: { tokenizer: CLIPTokenizer; textEncoder: OnnxModel; unet: OnnxModel },
  options: {
    prompt?: string | readonly string[];
    negativePrompt?: string | readonly string[];
    promptEmbeds?: Tensor<'float32'>;
    negativePromptEmbeds?: Tensor<'float32'>;
  },
  numImagesPerPrompt: number,
  doClassifierFreeGuidance: boolean,
): Promise<{ promptEmbeds: Tensor<'float32'>; negativePromptEmbeds?: Tensor<'float32'>; batchSize: number }> {
  const { prompts, negatives } = normalizePrompts(options.prompt, options.negativePrompt);
  const encoded = await encodePrompt(encoder, {
    prompts, negatives, numImagesPerPrompt, doClassifierFreeGuidance,
    promptEmbeds: options.promptEmbeds, negativePromptEmbeds: options.negativePromptEmbeds,
  });
  const { negativePromptEmbeds } = encoded;
  await checkConditioningWidth(encoder.unet, encoded.promptEmbeds, options.promptEmbeds ? [] : [encoder.textEncoder]);
  return {
    promptEmbeds: doClassifierFreeGuidance && negativePromptEmbeds ? Tensor.cat([negativePromptEmbeds, encoded.promptEmbeds]) : encoded.promptEmbeds,
    negativePromptEmbeds,
    batchSize: encoded.promptEmbeds.shape[0],
  };
}

/**
 * One SD 1.x UNet call of the denoising loop. `sample` is the scaled latent batch, with any extra conditioning
 * channels already concatenated (inpainting); the prompt embeddings are checked against its rows first, since a
 * callback may have replaced them. The IP-Adapter's inputs are fed where the generation has them.
 */
export async function predictNoiseWithUnet(
  unet: OnnxModel,
  sample: Tensor<'float32'>,
  timestep: number,
  tensors: { promptEmbeds?: Tensor<'float32'>; ipAdapterImageEmbeds?: Tensor<'float32'> },
  pipeline: Pick<GenerationContext, 'doClassifierFreeGuidance' | 'ipAdapterFeedScale'>,
): Promise<Tensor<'float32'>> {
  const { promptEmbeds } = tensors;
  if (!promptEmbeds) throw new InvalidArgumentError('promptEmbeds is missing: a callback must not remove it.');
  checkBatch('promptEmbeds', promptEmbeds, sample.shape[0], pipeline.doClassifierFreeGuidance);
  const { out_sample } = await unet.run({
    sample,
    timestep: timestepFeed(timestep, sample.shape[0]),
    encoder_hidden_states: promptEmbeds,
    ...ipAdapterFeeds(tensors.ipAdapterImageEmbeds, pipeline.ipAdapterFeedScale, sample.shape[0]),
  });
  return out_sample;
}
