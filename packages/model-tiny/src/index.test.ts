import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { COLORS, DEFAULTS, PALETTE, POSITIONS, SHAPES, SIZES, VOCABULARY, modelDir, scenePrompt } from './index.js';

const json = (path: string) => JSON.parse(readFileSync(join(modelDir, path), 'utf8'));
const components = ['text_encoder', 'unet', 'vae_decoder', 'vae_encoder'] as const;

describe('@diff/model-tiny', () => {
  it('points at a diffusers SD 1.5 ONNX folder', () => {
    expect(json('model_index.json')._class_name).toBe('StableDiffusionPipeline');
    for (const c of components) expect(existsSync(join(modelDir, c, 'model.onnx'))).toBe(true);
    for (const f of ['vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json']) {
      expect(existsSync(join(modelDir, 'tokenizer', f))).toBe(true);
    }
    const scheduler = json('scheduler/scheduler_config.json');
    expect(scheduler).toMatchObject({ num_train_timesteps: 1000, prediction_type: 'epsilon', steps_offset: 1 });
  });

  it('keeps the ONNX files within 8 MB together', () => {
    const total = components.reduce((sum, c) => sum + statSync(join(modelDir, c, 'model.onnx')).size, 0);
    expect(total).toBeLessThanOrEqual(8_000_000);
  });

  it('declares 8x8 latents for 64x64 images', () => {
    const vae = json('vae_decoder/config.json');
    expect(vae.latent_channels).toBe(4);
    expect(2 ** (vae.block_out_channels.length - 1)).toBe(8);
    expect(json('unet/config.json')).toMatchObject({ in_channels: 4, sample_size: 8 });
    expect(json('unet/config.json').cross_attention_dim).toBe(json('text_encoder/config.json').hidden_size);
    expect(DEFAULTS.width).toBe(vae.sample_size);
  });

  it('has every grammar word as one token of the tokenizer', () => {
    const vocab = json('tokenizer/vocab.json') as Record<string, number>;
    for (const word of VOCABULARY) expect(vocab[`${word}</w>`]).toEqual(expect.any(Number));
    expect(readFileSync(join(modelDir, 'tokenizer/merges.txt'), 'utf8').split('\n')[0]).toBe('#version: 0.2');
    expect(json('tokenizer/tokenizer_config.json')).toMatchObject({
      model_max_length: 77,
      bos_token: '<|startoftext|>',
      eos_token: '<|endoftext|>',
      pad_token: '<|endoftext|>',
      unk_token: '<|endoftext|>',
    });
  });

  it('exports the grammar', () => {
    expect(COLORS).toHaveLength(Object.keys(PALETTE).length);
    expect(SHAPES).toEqual(expect.arrayContaining(['circle', 'square', 'triangle', 'star']));
    expect(SIZES.length).toBeGreaterThan(1);
    expect(POSITIONS.length).toBeGreaterThan(4);
    expect(scenePrompt({ color: 'red', shape: 'circle', size: 'small', position: 'left', background: 'blue' })).toBe(
      'a small red circle on the left on a blue background',
    );
    expect(scenePrompt({ color: 'orange', shape: 'star', position: 'top left', background: 'orange' })).toBe(
      'an orange star in the top left corner on an orange background',
    );
  });
});
