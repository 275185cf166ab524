import { mkdtemp, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TOY_SEQUENCE_LENGTH, writeToyPipeline } from '../testing/toy-models.js';
import { GenerationContext } from '../callbacks/context.js';

import type { CallbackOnStepEnd, CallbackPipeline, StableDiffusionXLTensorName } from '../contract.js';
import { InvalidArgumentError, UnsupportedError } from '../errors.js';
import { Generator } from '../random/generator.js';
import { Tensor } from '../tensor.js';
import { AutoPipelineForText2Image } from './auto-pipeline.js';
import { StableDiffusionXLPipeline, type StableDiffusionXLOptions } from './stable-diffusion-xl.js';
import { StableDiffusionPipeline } from './stable-diffusion.js';
import { encodePromptXL, predictNoiseXL, type PromptXLSettings } from './stable-diffusion-xl-steps.js';
import { runTextEncoder } from './steps.js';
import { camelCaseKeys, expectMatchesReference, referenceScheduler, type ReferenceRun } from '../__fixtures__/conformance-runs.js';
import { SHARED_CONFORMANCE_DIR, readSharedRefs } from '../__fixtures__/shared-conformance.js';
import { SDXL_CFG_LAYOUT } from './cfg-layouts.js';

const HIDDEN = 8;
let dir: string;
let pipeline: StableDiffusionXLPipeline;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diff-sdxl-'));
  await writeToyPipeline(dir, 'sdxl', { hiddenSize: HIDDEN });
  pipeline = await StableDiffusionXLPipeline.fromPretrained(dir);
});

afterAll(async () => {
  await pipeline.dispose();
  await rm(dir, { recursive: true, force: true });
});

type LatentOptions = Partial<StableDiffusionXLOptions<StableDiffusionXLTensorName, 'latent'>>;
const base = { prompt: 'a red cat', numInferenceSteps: 3, height: 16, width: 16 } as const;
const latentsOf = (options: LatentOptions = {}, seed = 0) =>
  pipeline
    .generate({ ...base, generator: new Generator().manualSeed(seed), outputType: 'latent', ...options } as StableDiffusionXLOptions<StableDiffusionXLTensorName, 'latent'>)
    .then((out) => out.images);

/** Runs a generation and returns the tensors the callback saw at each step. */
async function tensorsSeen(options: LatentOptions = {}): Promise<Array<Record<StableDiffusionXLTensorName, Tensor>>> {
  const seen: Array<Record<StableDiffusionXLTensorName, Tensor>> = [];
  await latentsOf({
    callbackOnStepEndTensorInputs: ['latents', 'promptEmbeds', 'addTextEmbeds', 'addTimeIds'],
    callbackOnStepEnd: (_state, _step, _t, kwargs) => void seen.push({ ...kwargs }),
    ...options,
  });
  return seen;
}

const rowsOf = (tensor: Tensor) => tensor.chunk(tensor.shape[0]).map((row) => Array.from(row.data));

const encodeSettings = (settings: Partial<PromptXLSettings> = {}): PromptXLSettings => ({
  prompt: 'a photo of the cat',
  numImagesPerPrompt: 1,
  doClassifierFreeGuidance: true,
  forceZerosForEmptyPrompt: true,
  ...settings,
});

describe('encodePromptXL', () => {
  it('concatenates the penultimate hidden states of both encoders and pools with text_encoder_2', async () => {
    const { components } = pipeline;
    const prompts = ['a photo of the cat', 'red dog'];
    const encoded = await encodePromptXL(components, encodeSettings({ prompt: prompts, numImagesPerPrompt: 2 }));
    expect(encoded.promptEmbeds.shape).toEqual([4, TOY_SEQUENCE_LENGTH, 2 * HIDDEN]);
    expect(encoded.pooledPromptEmbeds.shape).toEqual([4, HIDDEN]);

    // Three layers: hidden_states.0…3, of which hidden_states.2 is the penultimate.
    const first = await runTextEncoder(components.tokenizer, components.textEncoder, prompts, ['hidden_states.2']);
    const second = await runTextEncoder(components.tokenizer2, components.textEncoder2, prompts, ['hidden_states.2', 'text_embeds']);
    const imageRow = 2; // prompt 1, first image
    const token = 5;
    const embedding = encoded.promptEmbeds.narrow(0, imageRow, 1).narrow(1, token, 1).data;
    const tokenOf = (tensor: Tensor) => tensor.narrow(0, 1, 1).narrow(1, token, 1).data;
    expect(Array.from(embedding.subarray(0, HIDDEN))).toEqual(Array.from(tokenOf(first['hidden_states.2'])));
    expect(Array.from(embedding.subarray(HIDDEN))).toEqual(Array.from(tokenOf(second['hidden_states.2'])));
    expect(rowsOf(encoded.pooledPromptEmbeds)[imageRow]).toEqual(rowsOf(second.text_embeds)[1]);
    expect(rowsOf(encoded.pooledPromptEmbeds)[imageRow + 1]).toEqual(rowsOf(second.text_embeds)[1]);
  });

  it('feeds prompt2 to the second encoder only', async () => {
    const same = await encodePromptXL(pipeline.components, encodeSettings());
    const other = await encodePromptXL(pipeline.components, encodeSettings({ prompt2: 'red dog' }));
    const half = (tensor: Tensor, which: 0 | 1) => Array.from(tensor.chunk(2, 2)[which].data);
    expect(half(other.promptEmbeds, 0)).toEqual(half(same.promptEmbeds, 0));
    expect(half(other.promptEmbeds, 1)).not.toEqual(half(same.promptEmbeds, 1));
    expect(other.pooledPromptEmbeds.data).not.toEqual(same.pooledPromptEmbeds.data);
  });

  it('uses zero negative embeddings without a negative prompt when forceZerosForEmptyPrompt is on', async () => {
    const zeros = await encodePromptXL(pipeline.components, encodeSettings());
    expect(zeros.negative?.promptEmbeds.shape).toEqual([1, TOY_SEQUENCE_LENGTH, 2 * HIDDEN]);
    expect(zeros.negative?.promptEmbeds.data.every((value) => value === 0)).toBe(true);
    expect(zeros.negative?.pooledPromptEmbeds.data.every((value) => value === 0)).toBe(true);

    const empty = await encodePromptXL(pipeline.components, encodeSettings({ forceZerosForEmptyPrompt: false }));
    const emptyPrompt = await encodePromptXL(pipeline.components, encodeSettings({ prompt: '', doClassifierFreeGuidance: false }));
    expect(empty.negative?.promptEmbeds.data).toEqual(emptyPrompt.promptEmbeds.data);
    expect(empty.negative?.pooledPromptEmbeds.data).toEqual(emptyPrompt.pooledPromptEmbeds.data);

    // Only `negativePrompt` counts, as in diffusers: `negativePrompt2` alone keeps the zeros.
    const negative = await encodePromptXL(pipeline.components, encodeSettings({ negativePrompt: 'red dog' }));
    expect(negative.negative?.promptEmbeds.data.some((value) => value !== 0)).toBe(true);
    const onlySecond = await encodePromptXL(pipeline.components, encodeSettings({ negativePrompt2: 'red dog' }));
    expect(onlySecond.negative?.promptEmbeds.data.every((value) => value === 0)).toBe(true);
    expect((await encodePromptXL(pipeline.components, encodeSettings({ doClassifierFreeGuidance: false }))).negative).toBeUndefined();
  });

  it('reads force_zeros_for_empty_prompt from model_index.json, overridable when loading', async () => {
    expect(pipeline.components.forceZerosForEmptyPrompt).toBe(true);
    const overridden = await StableDiffusionXLPipeline.fromPretrained(dir, { forceZerosForEmptyPrompt: false });
    try {
      expect(overridden.components.forceZerosForEmptyPrompt).toBe(false);
    } finally {
      await overridden.dispose();
    }
  });

  it('takes given embeddings as they are and checks diffusers’ pairing rules', async () => {
    const computed = await encodePromptXL(pipeline.components, encodeSettings({ negativePrompt: 'red dog' }));
    const given = await encodePromptXL(
      pipeline.components,
      encodeSettings({
        prompt: undefined,
        promptEmbeds: computed.promptEmbeds,
        pooledPromptEmbeds: computed.pooledPromptEmbeds,
        negativePromptEmbeds: computed.negative?.promptEmbeds,
        negativePooledPromptEmbeds: computed.negative?.pooledPromptEmbeds,
        numImagesPerPrompt: 2,
      }),
    );
    expect(given.promptEmbeds.shape[0]).toBe(2);
    expect(Array.from(given.negative!.pooledPromptEmbeds.narrow(0, 1, 1).data)).toEqual(Array.from(computed.negative!.pooledPromptEmbeds.data));

    const embeds = { prompt: undefined, promptEmbeds: computed.promptEmbeds };
    await expect(encodePromptXL(pipeline.components, encodeSettings(embeds))).rejects.toThrow(/promptEmbeds need pooledPromptEmbeds/);
    await expect(
      encodePromptXL(pipeline.components, encodeSettings({ promptEmbeds: computed.promptEmbeds, pooledPromptEmbeds: computed.pooledPromptEmbeds })),
    ).rejects.toThrow('Give either prompt or promptEmbeds, not both.');
    await expect(
      encodePromptXL(pipeline.components, encodeSettings({ negativePromptEmbeds: computed.promptEmbeds })),
    ).rejects.toThrow(/negativePromptEmbeds need negativePooledPromptEmbeds/);
    await expect(encodePromptXL(pipeline.components, encodeSettings({ prompt: ['a', 'b'], negativePrompt: ['c'] }))).rejects.toThrow(
      'negativePrompt must be a string or 2 strings (one per prompt), got 1 entries.',
    );
    await expect(encodePromptXL(pipeline.components, encodeSettings({ prompt: undefined }))).rejects.toThrow(InvalidArgumentError);
  });
});

describe('StableDiffusionXLPipeline', () => {
  it('returns RGB pictures, NHWC floats or latents, by default at sample_size × VAE factor', async () => {
    const images = await pipeline.generate({ ...base, generator: new Generator().manualSeed(0) });
    expect(images.images[0]).toMatchObject({ width: 16, height: 16, channels: 3 });
    const np = await pipeline.generate({ ...base, outputType: 'np', numImagesPerPrompt: 2 });
    expect(np.images.shape).toEqual([2, 16, 16, 3]);
    const { height: _height, width: _width, ...unsized } = base;
    const full = await pipeline.generate({ ...unsized, numInferenceSteps: 1, outputType: 'latent' });
    expect(full.images.shape).toEqual([1, 4, 8, 8]); // toy UNet sample_size 8: 64×64 pixels
  });

  it('is deterministic for a seed and differs across seeds', async () => {
    expect((await latentsOf({}, 5)).data).toEqual((await latentsOf({}, 5)).data);
    expect((await latentsOf({}, 5)).data).not.toEqual((await latentsOf({}, 6)).data);
  });

  it('hands callbacks the CFG-doubled conditioning: [negative; positive] rows', async () => {
    const [first] = await tensorsSeen({ negativePrompt: 'red dog', numImagesPerPrompt: 2 });
    expect(first.latents.shape).toEqual([2, 4, 2, 2]);
    expect(first.promptEmbeds.shape).toEqual([4, TOY_SEQUENCE_LENGTH, 2 * HIDDEN]);
    expect(first.addTextEmbeds.shape).toEqual([4, HIDDEN]);
    expect(first.addTimeIds.shape).toEqual([4, 6]);
    const encoded = await encodePromptXL(pipeline.components, encodeSettings({ prompt: base.prompt, negativePrompt: 'red dog', numImagesPerPrompt: 2 }));
    expect(first.addTextEmbeds.data).toEqual(Tensor.cat([encoded.negative!.pooledPromptEmbeds, encoded.pooledPromptEmbeds]).data);
    const [unguided] = await tensorsSeen({ guidanceScale: 1 });
    expect(unguided.promptEmbeds.shape[0]).toBe(1);
  });

  it('builds the time ids from original size, crop corner and target size', async () => {
    const [defaults] = await tensorsSeen();
    expect(rowsOf(defaults.addTimeIds)).toEqual([[16, 16, 0, 0, 16, 16], [16, 16, 0, 0, 16, 16]]);

    const [custom] = await tensorsSeen({ originalSize: [1024, 768], cropsCoordsTopLeft: [32, 8], targetSize: [512, 384] });
    expect(rowsOf(custom.addTimeIds)).toEqual([[1024, 768, 32, 8, 512, 384], [1024, 768, 32, 8, 512, 384]]);

    // The negative row needs both negative sizes; the crop corner defaults to (0, 0).
    const [negative] = await tensorsSeen({ originalSize: [96, 64], negativeOriginalSize: [48, 32], negativeTargetSize: [24, 16] });
    expect(rowsOf(negative.addTimeIds)).toEqual([[48, 32, 0, 0, 24, 16], [96, 64, 0, 0, 16, 16]]);
    const [halfGiven] = await tensorsSeen({ negativeOriginalSize: [48, 32] });
    expect(rowsOf(halfGiven.addTimeIds)).toEqual([[16, 16, 0, 0, 16, 16], [16, 16, 0, 0, 16, 16]]);

    // diffusers tiles the [negative, positive] pair per image.
    const [batch] = await tensorsSeen({ prompt: ['a', 'b'], negativeOriginalSize: [8, 8], negativeTargetSize: [8, 8], negativeCropsCoordsTopLeft: [1, 2] });
    expect(rowsOf(batch.addTimeIds)).toEqual([[8, 8, 1, 2, 8, 8], [16, 16, 0, 0, 16, 16], [8, 8, 1, 2, 8, 8], [16, 16, 0, 0, 16, 16]]);

    await expect(latentsOf({ originalSize: [64] as never })).rejects.toThrow('originalSize must be a pair of finite numbers, got [64].');
  });

  it('feeds the UNet its int64 scalar timestep and every conditioning input', async () => {
    const { unet } = pipeline.components;
    expect((await unet.inputs()).find((input) => input.name === 'timestep')).toMatchObject({ type: 'int64', shape: [] });
    const sample = new Tensor(Float32Array.from({ length: 2 * 4 * 2 * 2 }, (_, i) => Math.sin(i)), [2, 4, 2, 2]);
    const promptEmbeds = new Tensor(Float32Array.from({ length: 2 * TOY_SEQUENCE_LENGTH * 2 * HIDDEN }, (_, i) => Math.cos(i) + (i < TOY_SEQUENCE_LENGTH * 2 * HIDDEN ? 0 : 1)), [2, TOY_SEQUENCE_LENGTH, 2 * HIDDEN]);
    const addTextEmbeds = new Tensor(Float32Array.from({ length: 2 * HIDDEN }, (_, i) => i / 10), [2, HIDDEN]);
    const addTimeIds = new Tensor(Float32Array.from([64, 64, 0, 0, 64, 64, 32, 32, 4, 4, 16, 16]), [2, 6]);
    const context = new GenerationContext({
      pipelineName: 'StableDiffusionXLPipeline', modelFamily: 'stable-diffusion-xl', callbackTensorInputs: pipeline.callbackTensorInputs,
      cfgLayout: SDXL_CFG_LAYOUT, guidanceScale: 5, timesteps: [951], batchSize: 1, latentChannels: 4, vaeScaleFactor: 8, decodeLatents: async () => [],
    });
    const out = await predictNoiseXL(unet, context)(sample, 951, 0, { latents: sample.narrow(0, 0, 1), promptEmbeds, addTextEmbeds, addTimeIds });

    const mean = (tensor: Tensor, row: number) => tensor.chunk(tensor.shape[0])[row].data.reduce((sum, v) => sum + v, 0) / (tensor.size / tensor.shape[0]);
    const perRow = sample.size / 2;
    const expected = Array.from(sample.data, (value, i) => {
      const row = Math.floor(i / perRow);
      return 0.1 * value + mean(promptEmbeds, row) + 0.001 * 951 + 0.01 * mean(addTextEmbeds, row) + 0.0001 * mean(addTimeIds, row);
    });
    expect(Math.max(...Array.from(out.data, (value, i) => Math.abs(value - expected[i])))).toBeLessThan(1e-5);
  });

  it('writes time ids a callback returns back into the loop', async () => {
    const plain = await latentsOf({}, 2);
    const seenAtStepOne: number[][] = [];
    const edited = await latentsOf(
      {
        callbackOnStepEndTensorInputs: ['addTimeIds'],
        callbackOnStepEnd: (_state, step, _t, kwargs) => {
          if (step === 1) seenAtStepOne.push(...rowsOf(kwargs.addTimeIds));
          return step === 0 ? { addTimeIds: new Tensor(new Float32Array(12).fill(1000), [2, 6]) } : kwargs;
        },
      },
      2,
    );
    expect(seenAtStepOne).toEqual([new Array(6).fill(1000), new Array(6).fill(1000)]);
    expect(edited.data).not.toEqual(plain.data);
  });

  it('turns guidance off when a callback halves all three conditioning tensors', async () => {
    const rows: number[] = [];
    const cutoff: CallbackOnStepEnd<'promptEmbeds' | 'addTextEmbeds' | 'addTimeIds'> = (state: CallbackPipeline, step, _t, kwargs) => {
      rows.push(kwargs.addTimeIds.shape[0]);
      if (step !== 0) return kwargs;
      state.guidanceScale = 0;
      const conditional = (tensor: Tensor) => tensor.chunk(2)[1];
      return { promptEmbeds: conditional(kwargs.promptEmbeds), addTextEmbeds: conditional(kwargs.addTextEmbeds), addTimeIds: conditional(kwargs.addTimeIds) };
    };
    await latentsOf({ callbackOnStepEnd: cutoff, callbackOnStepEndTensorInputs: ['promptEmbeds', 'addTextEmbeds', 'addTimeIds'] });
    expect(rows).toEqual([2, 1, 1]);

    const forgetsTimeIds: CallbackOnStepEnd<'promptEmbeds' | 'addTextEmbeds'> = (state, _step, _t, kwargs) => {
      state.guidanceScale = 0;
      return { promptEmbeds: kwargs.promptEmbeds.chunk(2)[1], addTextEmbeds: kwargs.addTextEmbeds.chunk(2)[1] };
    };
    await expect(latentsOf({ callbackOnStepEnd: forgetsTimeIds, callbackOnStepEndTensorInputs: ['promptEmbeds', 'addTextEmbeds'] })).rejects.toThrow(
      /addTimeIds has 2 rows but the next step needs 1: classifier-free guidance is off/,
    );
  });

  it('rejects SD-only tensor names and bad options before running', async () => {
    await expect(latentsOf({ callbackOnStepEndTensorInputs: ['negativePromptEmbeds'] } as never)).rejects.toThrow(
      'callbackOnStepEndTensorInputs asks for tensor inputs that StableDiffusionXLPipeline does not have: negativePromptEmbeds. ' +
        'Allowed: latents, promptEmbeds, addTextEmbeds, addTimeIds, predOriginalSample, ipAdapterImageEmbeds.',
    );
    await expect(latentsOf({ height: 20 } as never)).rejects.toThrow(/height and width must be positive multiples of 8, got 20×16/);
    await expect(latentsOf({ prompt: undefined })).rejects.toThrow(/Give either prompt or promptEmbeds/);
  });
});

describe('StableDiffusionXLPipeline.fromPretrained', () => {
  it('rejects refiner-style folders without the first text encoder', async () => {
    const refiner = await mkdtemp(join(tmpdir(), 'diff-sdxl-refiner-'));
    try {
      await writeToyPipeline(refiner, 'sdxl');
      await unlink(join(refiner, 'text_encoder', 'model.onnx'));
      await expect(StableDiffusionXLPipeline.fromPretrained(refiner)).rejects.toThrow(UnsupportedError);
      await expect(StableDiffusionXLPipeline.fromPretrained(refiner)).rejects.toThrow(/only the SDXL base layout/);
    } finally {
      await rm(refiner, { recursive: true, force: true });
    }
  });
});

describe('AutoPipelineForText2Image', () => {
  it('loads the text-to-image pipeline of the folder’s family, and refuses inpainting models', async () => {
    const xl = await AutoPipelineForText2Image.fromPretrained(dir, { forceZerosForEmptyPrompt: false });
    expect(xl).toBeInstanceOf(StableDiffusionXLPipeline);
    expect((xl as StableDiffusionXLPipeline).components.forceZerosForEmptyPrompt).toBe(false);
    await xl.dispose();

    const others = await mkdtemp(join(tmpdir(), 'diff-auto-t2i-'));
    try {
      await writeToyPipeline(join(others, 'sd'), 'sd');
      await writeToyPipeline(join(others, 'inpaint'), 'sd-inpaint');
      const sd = await AutoPipelineForText2Image.fromPretrained(join(others, 'sd'));
      expect(sd).toBeInstanceOf(StableDiffusionPipeline);
      await sd.dispose();
      await expect(AutoPipelineForText2Image.fromPretrained(join(others, 'inpaint'))).rejects.toThrow(/inpainting model .* AutoPipelineForInpainting/);
    } finally {
      await rm(others, { recursive: true, force: true });
    }
  });
});

// The diffusers references, where the shared conformance data is present.
/** sdxl_runs entries all ran in diffusers, so each has its scheduler config. */
interface SdxlRunRef extends ReferenceRun {
  scheduler_config: Record<string, unknown>;
}

const sdxlRuns: SdxlRunRef[] = (readSharedRefs<{ sdxl_runs: SdxlRunRef[] }>()?.sdxl_runs ?? []).filter((run) =>
  ['xl-euler-default', 'xl-interrupt'].includes(run.id),
);

(sdxlRuns.length > 0 ? describe : describe.skip)('diffusers conformance (shared refs.json sdxl_runs)', () => {
  test.each(sdxlRuns.map((run) => [run.id, run] as const))('%s', async (_id, run) => {
    const xl = await StableDiffusionXLPipeline.fromPretrained(join(SHARED_CONFORMANCE_DIR, run.model), { scheduler: referenceScheduler(run) });
    try {
      const steps: Float32Array[] = [];
      const caseCallback: CallbackOnStepEnd<'latents'> = (state, step) => {
        if (run.callback === 'interrupt' && step === run.callback_args?.step_index) state.interrupt = true;
      };
      const record: CallbackOnStepEnd<'latents'> = (_state, _step, _t, kwargs) => void steps.push(kwargs.latents.data.slice());
      const { images } = await xl.generate({
        ...(camelCaseKeys(run.kwargs) as Partial<StableDiffusionXLOptions<'latents', 'np'>>),
        generator: new Generator().manualSeed(run.seed),
        callbackOnStepEnd: [caseCallback, record],
        outputType: 'np',
      });
      expectMatchesReference(run, steps, images);
    } finally {
      await xl.dispose();
    }
  });
});

// Type-level checks (compiled by `tsc --noEmit` in the test script, never run).
export function typeChecks(): void {
  void pipeline.generate({
    prompt: 'x',
    callbackOnStepEndTensorInputs: ['addTimeIds'],
    callbackOnStepEnd: (_state, _step, _t, kwargs) => ({ addTimeIds: kwargs.addTimeIds }),
  });
  // @ts-expect-error `negativePromptEmbeds` is an SD 1.x tensor; SDXL keeps the negatives inside the CFG batch.
  void pipeline.generate({ prompt: 'x', callbackOnStepEndTensorInputs: ['negativePromptEmbeds'] });
  void pipeline.generate({
    prompt: 'x',
    // @ts-expect-error only `latents` was requested (the default), so `addTextEmbeds` is not in the kwargs.
    callbackOnStepEnd: (_state, _step, _t, kwargs) => kwargs.addTextEmbeds,
  });
}
