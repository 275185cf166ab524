import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toyWeights } from '../testing/onnx-graph.js';
import {
  TOY_BOS_TOKEN_ID,
  TOY_CONTROLNET_CHANNELS,
  TOY_EOS_TOKEN_ID,
  TOY_VOCAB_SIZE,
  writeToyPipeline,
  type ToyPipelineKind,
  type ToyPipelineOptions,
} from '../testing/toy-models.js';
import { Tensor } from '../tensor.js';
import type { FeedValue, ValueSpec } from './feeds.js';
import { SessionPool } from './onnx-model.js';

const KINDS: ToyPipelineKind[] = ['sd', 'sdxl', 'sd-inpaint', 'sd-controlnet'];
const VARIANTS: [string, ToyPipelineOptions][] = [
  ['defaults', {}],
  ['float16, int64 ids, external weights', { float16: true, inputIds: 'int64', externalWeights: 'model.onnx_data' }],
];
const H = 8;
const BATCH = 2;
/** Sizes of the symbolic dimensions for a 64×64 image (8×8 latents); image-sized inputs use their own names. */
const LATENT_DIMS: Record<string, number> = {
  batch: BATCH, sequence: 77, height: 8, width: 8, height_latent: 8, width_latent: 8, cond_height: 64, cond_width: 64,
  h0: 8, w0: 8, h1: 8, w1: 8, h2: 4, w2: 4, h3: 4, w3: 4, h4: 4, w4: 4,
};
const IMAGE_DIMS: Record<string, number> = { ...LATENT_DIMS, height: 64, width: 64 };

const EXPECTED_OUTPUT_SHAPES: Record<string, Record<string, number[]>> = {
  text_encoder: {
    last_hidden_state: [BATCH, 77, H], pooler_output: [BATCH, H],
    'hidden_states.0': [BATCH, 77, H], 'hidden_states.1': [BATCH, 77, H], 'hidden_states.2': [BATCH, 77, H], 'hidden_states.3': [BATCH, 77, H],
  },
  text_encoder_2: {
    text_embeds: [BATCH, H], last_hidden_state: [BATCH, 77, H],
    'hidden_states.0': [BATCH, 77, H], 'hidden_states.1': [BATCH, 77, H], 'hidden_states.2': [BATCH, 77, H], 'hidden_states.3': [BATCH, 77, H],
  },
  unet: { out_sample: [BATCH, 4, 8, 8] },
  vae_encoder: { latent_parameters: [BATCH, 8, 8, 8] },
  vae_decoder: { sample: [BATCH, 3, 64, 64] },
  controlnet: {
    down_block_res_sample_0: [BATCH, TOY_CONTROLNET_CHANNELS[0], 8, 8],
    down_block_res_sample_1: [BATCH, TOY_CONTROLNET_CHANNELS[1], 8, 8],
    down_block_res_sample_2: [BATCH, TOY_CONTROLNET_CHANNELS[2], 4, 4],
    down_block_res_sample_3: [BATCH, TOY_CONTROLNET_CHANNELS[3], 4, 4],
    mid_block_res_sample: [BATCH, TOY_CONTROLNET_CHANNELS[4], 4, 4],
  },
};

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'diff-toy-pipelines-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function feedFor(spec: ValueSpec, component: string, seed: number): FeedValue {
  const dims = component === 'vae_encoder' ? IMAGE_DIMS : LATENT_DIMS;
  const shape = spec.shape.map((dim) => (typeof dim === 'number' ? dim : dims[dim ?? '']));
  if (shape.length === 0) return spec.name === 'timestep' ? 501 : 1;
  const size = shape.reduce((a, b) => a * b, 1);
  if (spec.name === 'input_ids') return { data: Int32Array.from({ length: size }, (_, i) => (i * 31 + seed) % TOY_VOCAB_SIZE), shape };
  if (spec.name === 'timestep') return { data: new Array<number>(size).fill(501), shape };
  return new Tensor(toyWeights(size, seed, 1), shape);
}

/** The same feed, changed: ids shifted, numbers and float tensors moved by 0.5 or 1. */
function perturbed(value: FeedValue): FeedValue {
  if (typeof value === 'number') return value + 1;
  if (value instanceof Tensor) return new Tensor(value.data.map((v) => v + 0.5), value.shape);
  const { data, shape } = value;
  return { data: Array.from({ length: data.length }, (_, i) => (Number(data[i]) + 1) % TOY_VOCAB_SIZE), shape };
}

function differs(a: Record<string, Tensor>, b: Record<string, Tensor>): boolean {
  return Object.keys(a).some((name) => a[name].data.some((v, i) => Math.abs(v - b[name].data[i]) > 1e-6));
}

describe.each(KINDS)('toy %s pipeline', (kind) => {
  it.each(VARIANTS)('runs every component with the real shapes, each depending on all its inputs (%s)', async (variant, options) => {
    const dir = join(root, `${kind}-${variant.replace(/\W+/g, '-')}`);
    const components = await writeToyPipeline(dir, kind, options);
    const models = components.filter((component) => component in EXPECTED_OUTPUT_SHAPES);
    expect(models.sort()).toEqual(
      ['text_encoder', 'unet', 'vae_decoder', 'vae_encoder', ...(kind === 'sdxl' ? ['text_encoder_2'] : []), ...(kind === 'sd-controlnet' ? ['controlnet'] : [])].sort(),
    );
    const pool = new SessionPool();
    for (const component of models) {
      const path = join(dir, component, 'model.onnx');
      const inputs = await pool.inputs(path);
      const feeds = Object.fromEntries(inputs.map((spec, i) => [spec.name, feedFor(spec, component, i + 1)]));
      const outputs = await pool.run(path, feeds);
      const shapes = Object.fromEntries(Object.entries(outputs).map(([name, tensor]) => [name, tensor.shape]));
      expect(shapes).toEqual(EXPECTED_OUTPUT_SHAPES[component]);
      for (const spec of inputs) {
        const changed = await pool.run(path, { ...feeds, [spec.name]: perturbed(feeds[spec.name]) });
        if (!differs(outputs, changed)) throw new Error(`${kind}/${component}: the outputs do not depend on ${spec.name}`);
      }
    }
    await pool.dispose();
  });

  it('writes the diffusers folder conventions', async () => {
    const dir = join(root, `${kind}-layout`);
    const components = await writeToyPipeline(dir, kind);
    const readJson = async (...path: string[]) => JSON.parse(await readFile(join(dir, ...path), 'utf8'));

    const index = await readJson('model_index.json');
    expect(Object.keys(index).filter((key) => !key.startsWith('_') && key !== 'force_zeros_for_empty_prompt').sort()).toEqual(components);
    expect((await readdir(dir)).sort()).toEqual([...components, 'model_index.json'].sort());

    const scheduler = await readJson('scheduler', 'scheduler_config.json');
    expect(scheduler).toMatchObject({
      _class_name: kind === 'sdxl' ? 'EulerDiscreteScheduler' : 'PNDMScheduler',
      num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear',
      skip_prk_steps: true, steps_offset: 1, set_alpha_to_one: false,
    });
    for (const vae of ['vae_encoder', 'vae_decoder']) {
      expect((await readJson(vae, 'config.json')).scaling_factor).toBe(kind === 'sdxl' ? 0.13025 : 0.18215);
    }
    expect((await readJson('unet', 'config.json')).in_channels).toBe(kind === 'sd-inpaint' ? 9 : 4);

    for (const tokenizer of components.filter((component) => component.startsWith('tokenizer'))) {
      const vocab: Record<string, number> = await readJson(tokenizer, 'vocab.json');
      expect(Object.keys(vocab)).toHaveLength(TOY_VOCAB_SIZE);
      expect(vocab['!']).toBe(0);
      expect(vocab['<|startoftext|>']).toBe(TOY_BOS_TOKEN_ID);
      expect(vocab['<|endoftext|>']).toBe(TOY_EOS_TOKEN_ID);
      const merges = (await readFile(join(dir, tokenizer, 'merges.txt'), 'utf8')).trim().split('\n');
      expect(merges[0]).toBe('#version: 0.2');
      for (const merge of merges.slice(1)) expect(vocab[merge.replace(' ', '')]).toBeDefined();
      const config = await readJson(tokenizer, 'tokenizer_config.json');
      expect(config).toMatchObject({ model_max_length: 77, tokenizer_class: 'CLIPTokenizer', bos_token: { __type: 'AddedToken', content: '<|startoftext|>' } });
      const pad = tokenizer === 'tokenizer_2' ? '!' : '<|endoftext|>';
      expect((await readJson(tokenizer, 'special_tokens_map.json')).pad_token).toBe(pad);
    }
  });
});

it('feeds ControlNet residuals straight into the ControlNet UNet', async () => {
  const dir = join(root, 'controlnet-wiring');
  await writeToyPipeline(dir, 'sd-controlnet');
  const pool = new SessionPool();
  const sample = new Tensor(toyWeights(BATCH * 4 * 64, 1, 1), [BATCH, 4, 8, 8]);
  const context = new Tensor(toyWeights(BATCH * 77 * H, 2, 1), [BATCH, 77, H]);
  const timestep = new Tensor(new Float32Array([801, 801]), [BATCH]);
  const residuals = await pool.run(join(dir, 'controlnet', 'model.onnx'), {
    sample, timestep, encoder_hidden_states: context,
    controlnet_cond: new Tensor(toyWeights(BATCH * 3 * 64 * 64, 3, 0.5).map((v) => v + 0.5), [BATCH, 3, 64, 64]),
    conditioning_scale: 1,
  });
  const { out_sample } = await pool.run(join(dir, 'unet', 'model.onnx'), {
    sample, timestep, encoder_hidden_states: context,
    down_block_additional_residual_0: residuals.down_block_res_sample_0,
    down_block_additional_residual_1: residuals.down_block_res_sample_1,
    down_block_additional_residual_2: residuals.down_block_res_sample_2,
    down_block_additional_residual_3: residuals.down_block_res_sample_3,
    mid_block_additional_residual: residuals.mid_block_res_sample,
  });
  expect(out_sample.shape).toEqual([BATCH, 4, 8, 8]);
  await pool.dispose();
});
