// Toy diffusers-style ONNX pipeline folders for tests that need no real weights. They follow the layout, names,
// dtypes and ranks of the diffusers ONNX exports the pipelines load, with tiny widths and simple, documented graphs
// whose outputs depend on every input, so a test can tell when a wrong tensor was fed:
//
//   text_encoder    h0 = embedding[input_ids] + position; h_l = h_{l-1} + tanh(h_{l-1}·W_l) (3 layers);
//                   hidden_states.l = h_l; last_hidden_state = tanh(h_3); pooler_output = mean over tokens of it
//   text_encoder_2  the same, with text_embeds = pooler_output·P and no pooler_output (SDXL)
//   unet            out_sample = 0.1·sample + mean(encoder_hidden_states[b]) + 0.001·timestep[b]
//                     SDXL adds 0.01·mean(text_embeds[b]) + 0.0001·mean(time_ids[b]);
//                     inpaint (SD and SDXL): 0.1·sample replaced by 0.1·latents + 0.05·mask + 0.02·masked_image_latents
//                     ControlNet adds 0.1·(channel mean of residuals 0 and 1) + 0.1·(mean of residuals 2, 3, mid)[b]
//   controlnet      base = 0.1·channel mean(sample) + channel mean(8×8 average of controlnet_cond)
//                          + mean(encoder_hidden_states[b]) + 0.001·timestep[b];
//                     SDXL adds the UNet's text_embeds and time_ids terms;
//                   residual k = conditioning_scale · (k+1)/10 · base (2×2 average-pooled for residuals 2, 3, mid)
//   vae_encoder     latent_parameters = 1×1 conv (3→8, bias: logvar ≈ -4) of the 8×8 average of sample
//   vae_decoder     sample = nearest ×8 upsampling of tanh(1×1 conv (4→3) of latent_sample)
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GraphBuilder, toyWeights, type ElementType } from './onnx-graph.js';

export type ToyPipelineKind = 'sd' | 'sdxl' | 'sd-inpaint' | 'sdxl-inpaint' | 'sd-controlnet' | 'sdxl-controlnet';

/** The SDXL layouts: a second tokenizer and text encoder, and a UNet with the text-time conditioning. */
const isXL = (kind: ToyPipelineKind) => kind === 'sdxl' || kind === 'sdxl-inpaint' || kind === 'sdxl-controlnet';
/** The inpainting layouts: a UNet with 9 input channels (latents, mask, masked-picture latents). */
const isInpaint = (kind: ToyPipelineKind) => kind === 'sd-inpaint' || kind === 'sdxl-inpaint';
/** The ControlNet layouts: a `controlnet` folder, and a UNet that takes its residuals. */
const isControlNet = (kind: ToyPipelineKind) => kind === 'sd-controlnet' || kind === 'sdxl-controlnet';

export interface ToyPipelineOptions {
  /** Text encoder width; SDXL's UNet context is twice this. Default 8. */
  hiddenSize?: number;
  /** Declare float inputs and outputs as float16 (the graphs compute in float32 inside). */
  float16?: boolean;
  /** Element type of the text encoders' `input_ids`. Default int32, like the conformance exports. */
  inputIds?: 'int32' | 'int64';
  /** How the UNet (and ControlNet) take the timestep. Default: int64 scalar for SDXL, float32 [B] otherwise. */
  timestep?: 'float32' | 'int64' | 'int64-scalar';
  /** Store each model's float weights in this file next to its model.onnx instead of inside it. */
  externalWeights?: 'model.onnx_data' | 'weights.pb';
}

export const TOY_SEQUENCE_LENGTH = 77;
export const TOY_TEXT_LAYERS = 3;
/** Channels of ControlNet residuals down_block_res_sample_0…3 and mid_block_res_sample. */
export const TOY_CONTROLNET_CHANNELS = [8, 8, 8, 16, 16] as const;
/** Residuals 2, 3 and mid are at half the latent resolution, like a two-block ControlNet. */
const CONTROLNET_HALF_RESOLUTION = [false, false, true, true, true] as const;
const CONTROLNET_RESIDUAL_COUNT = 4;
const LATENT_CHANNELS = 4;
const VAE_SCALE = 8;
const TIME_IDS = 6;
const ADDITION_TIME_EMBED_DIM = 8;

// A CLIP-like byte-level BPE vocabulary, renumbered small: the 256 byte symbols, the same with `</w>`, the merges'
// results, then <|startoftext|> and <|endoftext|> last (as 49406 and 49407 are last in CLIP's).
const MERGES = [
  'i n', 't h', 'a n', 'r e', 'o n', 'th e</w>', 'c a', 'ca t</w>', 'd o', 'do g</w>', 'p h', 'o t', 'ot o</w>',
  'ph oto</w>', 'o f</w>', 're d</w>', 'in g</w>',
];
const BYTE_SYMBOLS = byteSymbols();
const VOCAB_TOKENS = [
  ...BYTE_SYMBOLS,
  ...BYTE_SYMBOLS.map((symbol) => `${symbol}</w>`),
  ...MERGES.map((merge) => merge.replace(' ', '')),
  '<|startoftext|>',
  '<|endoftext|>',
];
export const TOY_VOCAB_SIZE = VOCAB_TOKENS.length;
export const TOY_BOS_TOKEN_ID = TOY_VOCAB_SIZE - 2;
export const TOY_EOS_TOKEN_ID = TOY_VOCAB_SIZE - 1;

interface Resolved {
  hiddenSize: number;
  float: ElementType;
  inputIds: ElementType;
  timestep: 'float32' | 'int64' | 'int64-scalar';
  externalWeights?: string;
}

/** Writes a complete toy pipeline folder for `kind` into `dir` and returns its component folder names. */
export async function writeToyPipeline(
  dir: string,
  kind: ToyPipelineKind,
  options: ToyPipelineOptions = {},
): Promise<string[]> {
  const resolved: Resolved = {
    hiddenSize: options.hiddenSize ?? 8,
    float: options.float16 ? 'float16' : 'float32',
    inputIds: options.inputIds ?? 'int32',
    timestep: options.timestep ?? (isXL(kind) ? 'int64-scalar' : 'float32'),
    externalWeights: options.externalWeights,
  };
  const models: Record<string, GraphBuilder> = {
    text_encoder: textEncoder(resolved, false),
    unet: unet(resolved, kind),
    vae_encoder: vaeEncoder(resolved),
    vae_decoder: vaeDecoder(resolved),
  };
  if (isXL(kind)) models.text_encoder_2 = textEncoder(resolved, true);
  if (isControlNet(kind)) models.controlnet = controlnet(resolved, kind);

  for (const [component, graph] of Object.entries(models)) {
    const folder = join(dir, component);
    await mkdir(folder, { recursive: true });
    const { model, externalWeights } = graph.serialize({ externalWeightsFile: resolved.externalWeights });
    await writeFile(join(folder, 'model.onnx'), model);
    if (externalWeights !== undefined && resolved.externalWeights) await writeFile(join(folder, resolved.externalWeights), externalWeights);
    await writeJson(join(folder, 'config.json'), componentConfig(component, kind, resolved));
  }
  await writeTokenizer(join(dir, 'tokenizer'), '<|endoftext|>');
  if (isXL(kind)) await writeTokenizer(join(dir, 'tokenizer_2'), '!');
  await writeJson(join(dir, 'scheduler', 'scheduler_config.json'), schedulerConfig(kind));

  const components = [...Object.keys(models), 'tokenizer', ...(isXL(kind) ? ['tokenizer_2'] : []), 'scheduler'];
  await writeJson(join(dir, 'model_index.json'), modelIndex(kind, components));
  return components.sort();
}

function textEncoder({ hiddenSize, float, inputIds }: Resolved, second: boolean): GraphBuilder {
  const g = new GraphBuilder(second ? 'toy_text_encoder_2' : 'toy_text_encoder');
  const seed = second ? 200 : 100;
  const ids = g.input('input_ids', inputIds, ['batch', TOY_SEQUENCE_LENGTH]);
  const tokenEmbedding = g.floats(toyWeights(TOY_VOCAB_SIZE * hiddenSize, seed, 1), [TOY_VOCAB_SIZE, hiddenSize]);
  const positionEmbedding = g.floats(toyWeights(TOY_SEQUENCE_LENGTH * hiddenSize, seed + 1, 0.2), [TOY_SEQUENCE_LENGTH, hiddenSize]);
  const hidden = [g.op('Add', [g.op('Gather', [tokenEmbedding, ids]), positionEmbedding])];
  for (let layer = 1; layer <= TOY_TEXT_LAYERS; layer++) {
    const weight = g.floats(toyWeights(hiddenSize * hiddenSize, seed + 1 + layer), [hiddenSize, hiddenSize]);
    const previous = hidden[layer - 1];
    hidden.push(g.op('Add', [previous, g.op('Tanh', [g.op('MatMul', [previous, weight])])]));
  }
  const last = g.op('Tanh', [hidden[TOY_TEXT_LAYERS]]);
  const pooled = g.op('ReduceMean', [last], { axes: [1], keepdims: 0 });
  const sequenceShape = ['batch', TOY_SEQUENCE_LENGTH, hiddenSize];

  if (second) {
    const projection = g.floats(toyWeights(hiddenSize * hiddenSize, seed + 9), [hiddenSize, hiddenSize]);
    g.output('text_embeds', float, ['batch', hiddenSize]);
    g.emit(g.op('MatMul', [pooled, projection]), 'text_embeds', float);
  }
  g.output('last_hidden_state', float, sequenceShape);
  g.emit(last, 'last_hidden_state', float);
  if (!second) {
    g.output('pooler_output', float, ['batch', hiddenSize]);
    g.emit(pooled, 'pooler_output', float);
  }
  hidden.forEach((state, layer) => {
    g.output(`hidden_states.${layer}`, float, sequenceShape);
    g.emit(state, `hidden_states.${layer}`, float);
  });
  return g;
}

/** Adds the `timestep` input and returns it as float32 shaped to broadcast against [B, C, h, w]. */
function timestepInput(g: GraphBuilder, { float, timestep }: Resolved): string {
  if (timestep === 'int64-scalar') return g.asFloat(g.input('timestep', 'int64', []), 'int64');
  const type = timestep === 'int64' ? 'int64' : float;
  return perBatch(g, g.asFloat(g.input('timestep', type, ['batch']), type));
}

/** Reshapes a [B] tensor to [B, 1, 1, 1]. */
function perBatch(g: GraphBuilder, value: string): string {
  return g.op('Reshape', [value, g.ints([-1, 1, 1, 1])]);
}

/** mean(x[b]) over every axis but the batch, as [B, 1, 1, 1]. */
function batchMean(g: GraphBuilder, value: string, rank: number): string {
  const axes = Array.from({ length: rank - 1 }, (_, i) => i + 1);
  return perBatch(g, g.op('ReduceMean', [value], { axes, keepdims: 0 }));
}

function floatInput(g: GraphBuilder, name: string, resolved: Resolved, shape: (number | string)[]): string {
  return g.asFloat(g.input(name, resolved.float, shape), resolved.float);
}

function contextWidth({ hiddenSize }: Resolved, kind: ToyPipelineKind): number {
  return isXL(kind) ? 2 * hiddenSize : hiddenSize;
}

function unet(resolved: Resolved, kind: ToyPipelineKind): GraphBuilder {
  const g = new GraphBuilder(`toy_unet_${kind}`);
  const inChannels = isInpaint(kind) ? 9 : LATENT_CHANNELS;
  const sample = floatInput(g, 'sample', resolved, ['batch', inChannels, 'height', 'width']);
  const timestep = timestepInput(g, resolved);
  const context = floatInput(g, 'encoder_hidden_states', resolved, ['batch', 'sequence', contextWidth(resolved, kind)]);

  let out: string;
  if (isInpaint(kind)) {
    const [latents, mask, maskedImageLatents] = g.node('Split', [sample, g.ints([4, 1, 4])], { axis: 1 }, 3);
    out = g.op('Add', [
      g.op('Add', [g.op('Mul', [latents, g.scalar(0.1)]), g.op('Mul', [mask, g.scalar(0.05)])]),
      g.op('Mul', [maskedImageLatents, g.scalar(0.02)]),
    ]);
  } else {
    out = g.op('Mul', [sample, g.scalar(0.1)]);
  }
  out = g.op('Add', [out, batchMean(g, context, 3)]);
  out = g.op('Add', [out, g.op('Mul', [timestep, g.scalar(0.001)])]);

  if (isXL(kind)) out = addTextTimeTerms(g, out, resolved);
  if (isControlNet(kind)) {
    const residuals = TOY_CONTROLNET_CHANNELS.map((channels, k) => {
      const name = k < CONTROLNET_RESIDUAL_COUNT ? `down_block_additional_residual_${k}` : 'mid_block_additional_residual';
      return floatInput(g, name, resolved, ['batch', channels, `h${k}`, `w${k}`]);
    });
    const fullResolution = g.op('Add', [
      g.op('ReduceMean', [residuals[0]], { axes: [1], keepdims: 1 }),
      g.op('ReduceMean', [residuals[1]], { axes: [1], keepdims: 1 }),
    ]);
    const halfResolution = g.op('Add', [
      g.op('Add', [batchMean(g, residuals[2], 4), batchMean(g, residuals[3], 4)]),
      batchMean(g, residuals[4], 4),
    ]);
    out = g.op('Add', [out, g.op('Mul', [g.op('Add', [fullResolution, halfResolution]), g.scalar(0.1)])]);
  }
  g.output('out_sample', resolved.float, ['batch', LATENT_CHANNELS, 'height', 'width']);
  g.emit(out, 'out_sample', resolved.float);
  return g;
}

/** SDXL's added conditioning: `value + 0.01·mean(text_embeds[b]) + 0.0001·mean(time_ids[b])`, adding both inputs. */
function addTextTimeTerms(g: GraphBuilder, value: string, resolved: Resolved): string {
  const textEmbeds = floatInput(g, 'text_embeds', resolved, ['batch', resolved.hiddenSize]);
  const timeIds = floatInput(g, 'time_ids', resolved, ['batch', TIME_IDS]);
  const withText = g.op('Add', [value, g.op('Mul', [batchMean(g, textEmbeds, 2), g.scalar(0.01)])]);
  return g.op('Add', [withText, g.op('Mul', [batchMean(g, timeIds, 2), g.scalar(0.0001)])]);
}

function controlnet(resolved: Resolved, kind: ToyPipelineKind): GraphBuilder {
  const g = new GraphBuilder(`toy_controlnet_${kind}`);
  const sample = floatInput(g, 'sample', resolved, ['batch', LATENT_CHANNELS, 'height', 'width']);
  const timestep = timestepInput(g, resolved);
  const context = floatInput(g, 'encoder_hidden_states', resolved, ['batch', 'sequence', contextWidth(resolved, kind)]);
  const condition = floatInput(g, 'controlnet_cond', resolved, ['batch', 3, 'cond_height', 'cond_width']);
  const scale = floatInput(g, 'conditioning_scale', resolved, []);

  const pooledCondition = g.op('AveragePool', [condition], { kernel_shape: [VAE_SCALE, VAE_SCALE], strides: [VAE_SCALE, VAE_SCALE] });
  let base = g.op('Add', [
    g.op('Mul', [g.op('ReduceMean', [sample], { axes: [1], keepdims: 1 }), g.scalar(0.1)]),
    g.op('ReduceMean', [pooledCondition], { axes: [1], keepdims: 1 }),
  ]);
  base = g.op('Add', [base, batchMean(g, context, 3)]);
  base = g.op('Add', [base, g.op('Mul', [timestep, g.scalar(0.001)])]);
  if (isXL(kind)) base = addTextTimeTerms(g, base, resolved);
  const halfBase = g.op('AveragePool', [base], { kernel_shape: [2, 2], strides: [2, 2] });

  TOY_CONTROLNET_CHANNELS.forEach((channels, k) => {
    const name = k < CONTROLNET_RESIDUAL_COUNT ? `down_block_res_sample_${k}` : 'mid_block_res_sample';
    const channelFactors = g.floats(new Array<number>(channels).fill((k + 1) / 10), [1, channels, 1, 1]);
    const residual = g.op('Mul', [g.op('Mul', [CONTROLNET_HALF_RESOLUTION[k] ? halfBase : base, channelFactors]), scale]);
    g.output(name, resolved.float, ['batch', channels, `h${k}`, `w${k}`]);
    g.emit(residual, name, resolved.float);
  });
  return g;
}

function vaeEncoder(resolved: Resolved): GraphBuilder {
  const g = new GraphBuilder('toy_vae_encoder');
  const image = floatInput(g, 'sample', resolved, ['batch', 3, 'height', 'width']);
  const pooled = g.op('AveragePool', [image], { kernel_shape: [VAE_SCALE, VAE_SCALE], strides: [VAE_SCALE, VAE_SCALE] });
  const weight = g.floats(toyWeights(2 * LATENT_CHANNELS * 3, 300), [2 * LATENT_CHANNELS, 3, 1, 1]);
  const bias = g.floats([...toyWeights(LATENT_CHANNELS, 301), ...new Array<number>(LATENT_CHANNELS).fill(-4)], [2 * LATENT_CHANNELS]);
  g.output('latent_parameters', resolved.float, ['batch', 2 * LATENT_CHANNELS, 'height_latent', 'width_latent']);
  g.emit(g.op('Conv', [pooled, weight, bias]), 'latent_parameters', resolved.float);
  return g;
}

function vaeDecoder(resolved: Resolved): GraphBuilder {
  const g = new GraphBuilder('toy_vae_decoder');
  const latents = floatInput(g, 'latent_sample', resolved, ['batch', LATENT_CHANNELS, 'height_latent', 'width_latent']);
  const weight = g.floats(toyWeights(3 * LATENT_CHANNELS, 400), [3, LATENT_CHANNELS, 1, 1]);
  const bias = g.floats(toyWeights(3, 401, 0.1), [3]);
  const colours = g.op('Tanh', [g.op('Conv', [latents, weight, bias])]);
  const scales = g.floats([1, 1, VAE_SCALE, VAE_SCALE], [4]);
  const image = g.op('Resize', [colours, '', scales], { mode: 'nearest' });
  g.output('sample', resolved.float, ['batch', 3, 'height', 'width']);
  g.emit(image, 'sample', resolved.float);
  return g;
}

function componentConfig(component: string, kind: ToyPipelineKind, resolved: Resolved): object {
  const { hiddenSize } = resolved;
  switch (component) {
    case 'text_encoder':
    case 'text_encoder_2':
      return {
        architectures: [component === 'text_encoder' ? 'CLIPTextModel' : 'CLIPTextModelWithProjection'],
        model_type: 'clip_text_model',
        hidden_size: hiddenSize,
        num_hidden_layers: TOY_TEXT_LAYERS,
        max_position_embeddings: TOY_SEQUENCE_LENGTH,
        projection_dim: hiddenSize,
        vocab_size: TOY_VOCAB_SIZE,
        bos_token_id: TOY_BOS_TOKEN_ID,
        eos_token_id: TOY_EOS_TOKEN_ID,
        pad_token_id: TOY_EOS_TOKEN_ID,
      };
    case 'unet':
      return {
        _class_name: 'UNet2DConditionModel',
        in_channels: isInpaint(kind) ? 9 : LATENT_CHANNELS,
        out_channels: LATENT_CHANNELS,
        sample_size: 8,
        cross_attention_dim: contextWidth(resolved, kind),
        ...(isXL(kind) && {
          addition_embed_type: 'text_time',
          addition_time_embed_dim: ADDITION_TIME_EMBED_DIM,
          projection_class_embeddings_input_dim: TIME_IDS * ADDITION_TIME_EMBED_DIM + hiddenSize,
        }),
      };
    case 'controlnet':
      return {
        _class_name: 'ControlNetModel',
        in_channels: LATENT_CHANNELS,
        conditioning_channels: 3,
        cross_attention_dim: contextWidth(resolved, kind),
        controlnet_conditioning_channel_order: 'rgb',
        global_pool_conditions: false,
        ...(isXL(kind) && { addition_embed_type: 'text_time', addition_time_embed_dim: ADDITION_TIME_EMBED_DIM }),
      };
    default:
      return {
        _class_name: 'AutoencoderKL',
        in_channels: 3,
        out_channels: 3,
        latent_channels: LATENT_CHANNELS,
        // Four blocks: a VAE scale factor of 2^(4-1) = 8, as diffusers derives it.
        block_out_channels: [8, 8, 16, 16],
        sample_size: 64,
        scaling_factor: isXL(kind) ? 0.13025 : 0.18215,
      };
  }
}

function schedulerConfig(kind: ToyPipelineKind): object {
  const common = {
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: 'scaled_linear',
    num_train_timesteps: 1000,
    set_alpha_to_one: false,
    skip_prk_steps: true,
    steps_offset: 1,
    clip_sample: false,
    prediction_type: 'epsilon',
    trained_betas: null,
  };
  // Like the conformance folders: SDXL ships an Euler config, the SD 1.5 layouts PNDM.
  if (isXL(kind)) {
    return { _class_name: 'EulerDiscreteScheduler', ...common, interpolation_type: 'linear', timestep_spacing: 'leading', use_karras_sigmas: false };
  }
  return { _class_name: 'PNDMScheduler', ...common };
}

function modelIndex(kind: ToyPipelineKind, components: readonly string[]): object {
  const className = {
    sd: 'ORTStableDiffusionPipeline',
    sdxl: 'ORTStableDiffusionXLPipeline',
    'sd-inpaint': 'OnnxStableDiffusionInpaintPipeline',
    'sdxl-inpaint': 'ORTStableDiffusionXLInpaintPipeline',
    'sd-controlnet': 'OnnxStableDiffusionControlNetPipeline',
    'sdxl-controlnet': 'ORTStableDiffusionXLControlNetPipeline',
  }[kind];
  const index: Record<string, unknown> = { _class_name: className };
  for (const component of components) {
    if (component.startsWith('tokenizer')) index[component] = ['transformers', 'CLIPTokenizer'];
    else if (component === 'scheduler') index[component] = ['diffusers', isXL(kind) ? 'EulerDiscreteScheduler' : 'PNDMScheduler'];
    else index[component] = ['diffusers', 'OnnxRuntimeModel'];
  }
  if (isXL(kind)) index.force_zeros_for_empty_prompt = true;
  return index;
}

async function writeTokenizer(folder: string, padToken: string): Promise<void> {
  await mkdir(folder, { recursive: true });
  const vocab = Object.fromEntries(VOCAB_TOKENS.map((token, id) => [token, id]));
  await writeJson(join(folder, 'vocab.json'), vocab);
  await writeFile(join(folder, 'merges.txt'), `#version: 0.2\n${MERGES.join('\n')}\n`);
  const special = (content: string) => ({ __type: 'AddedToken', content, lstrip: false, normalized: true, rstrip: false, single_word: false });
  // Special tokens both as AddedToken objects and as plain strings, as in the real SD repositories.
  const pad = padToken === '<|endoftext|>' ? padToken : special(padToken);
  const tokens = { bos_token: special('<|startoftext|>'), eos_token: special('<|endoftext|>'), pad_token: pad, unk_token: special('<|endoftext|>') };
  await writeJson(join(folder, 'special_tokens_map.json'), { ...tokens, pad_token: padToken });
  await writeJson(join(folder, 'tokenizer_config.json'), {
    add_prefix_space: false,
    ...tokens,
    do_lower_case: true,
    errors: 'replace',
    model_max_length: TOY_SEQUENCE_LENGTH,
    special_tokens_map_file: './special_tokens_map.json',
    tokenizer_class: 'CLIPTokenizer',
  });
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** GPT-2/CLIP's reversible byte → printable-character table, in its byte order. */
function byteSymbols(): string[] {
  const printable: number[] = [];
  const add = (from: string, to: string) => {
    for (let code = from.charCodeAt(0); code <= to.charCodeAt(0); code++) printable.push(code);
  };
  add('!', '~');
  add('¡', '¬');
  add('®', 'ÿ');
  const codes = [...printable];
  let extra = 0;
  for (let byte = 0; byte < 256; byte++) {
    if (!printable.includes(byte)) {
      printable.push(byte);
      codes.push(256 + extra++);
    }
  }
  return codes.map((code) => String.fromCharCode(code));
}
