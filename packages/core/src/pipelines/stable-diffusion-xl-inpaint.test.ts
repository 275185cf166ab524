import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describedImage } from '@diff/test-fixtures';
import { PipelineCallback } from '../callbacks/pipeline-callback.js';
import type { CallbackKwargs, CallbackPipeline, StableDiffusionXLInpaintTensorName } from '../contract.js';
import { InvalidArgumentError, ModelLoadError, UnsupportedError } from '../errors.js';
import { Generator, randn } from '../random/generator.js';
import type { ModelFeeds } from '../runtime/feeds.js';
import type { OnnxModel } from '../runtime/onnx-model.js';
import { Tensor } from '../tensor.js';
import { camelCaseKeys, expectMatchesReference, referenceScheduler, type ReferenceRun } from '../__fixtures__/conformance-runs.js';
import {
  LATENT_MASK, LEFT_HALF_MASK, channels, ddimAt, expectClose, expectKnownRegionPutBack, expectedDraws, loadInpaintingToys, mask, maskedPicture,
  picture, sampledLatents, type InpaintingToys,
} from '../__fixtures__/inpainting.js';
import { recordRuns, restoreModelRuns } from '../__fixtures__/model-runs.js';
import { SHARED_CONFORMANCE_DIR, readSharedRefs } from '../__fixtures__/shared-conformance.js';
import { AutoPipelineForInpainting } from './auto-pipeline.js';
import { StableDiffusionXLInpaintPipeline, type StableDiffusionXLInpaintOptions } from './stable-diffusion-xl-inpaint.js';

type Name = StableDiffusionXLInpaintTensorName;
type Kwargs = CallbackKwargs<Name>;
type LatentOptions = Partial<StableDiffusionXLInpaintOptions<Name, 'latent'>>;
const DOUBLED = ['promptEmbeds', 'addTextEmbeds', 'addTimeIds', 'mask', 'maskedImageLatents'] as const;

/** What diffusers' `SDXLCFGCutoffCallback` does now: at the cut-off step, guidance off and every doubled tensor halved. */
class SDXLCFGCutoff extends PipelineCallback<'promptEmbeds' | 'addTextEmbeds' | 'addTimeIds'> {
  readonly tensorInputs = ['promptEmbeds', 'addTextEmbeds', 'addTimeIds'] as const;

  callbackFn(pipeline: CallbackPipeline, stepIndex: number, _timestep: number, kwargs: CallbackKwargs<'promptEmbeds' | 'addTextEmbeds' | 'addTimeIds'>) {
    return stepIndex === this.cutoffStep(pipeline) ? pipeline.disableGuidance(kwargs) : kwargs;
  }
}

let toys: InpaintingToys<StableDiffusionXLInpaintPipeline>;
let dir: string;
let inpaint9: StableDiffusionXLInpaintPipeline;
let inpaint4: StableDiffusionXLInpaintPipeline;

beforeAll(async () => {
  toys = await loadInpaintingToys(StableDiffusionXLInpaintPipeline, 'sdxl');
  ({ dir, inpaint9, inpaint4 } = toys);
});
afterAll(() => toys.dispose());
afterEach(restoreModelRuns);

const base = { prompt: 'a red cat', image: picture(), maskImage: LEFT_HALF_MASK, height: 16, width: 16, numInferenceSteps: 4 } as const;

const generate = (pipe: StableDiffusionXLInpaintPipeline, options: LatentOptions = {}) =>
  pipe.generate({ ...base, outputType: 'latent', ...options } as StableDiffusionXLInpaintOptions<Name, 'latent'>);

async function unetFeeds(pipe: StableDiffusionXLInpaintPipeline, options: LatentOptions) {
  const calls = recordRuns(pipe.components.unet);
  await generate(pipe, options);
  return calls.map(({ feeds }) => feeds as ModelFeeds & { sample: Tensor; time_ids: Tensor });
}

/** A UNet stand-in with the given config that records its feeds and predicts zero noise. */
function recordingUnet(): { unet: OnnxModel; feeds: (ModelFeeds & { sample: Tensor; time_ids: Tensor })[] } {
  const feeds: (ModelFeeds & { sample: Tensor; time_ids: Tensor })[] = [];
  const unet = {
    inputs: async () => [], // the recording stands in for a UNet without an IP-Adapter
    path: join(dir, 'unet', 'model.onnx'),
    run: async (input: ModelFeeds & { sample: Tensor; time_ids: Tensor }) => {
      feeds.push(input);
      const [batch, , height, width] = input.sample.shape;
      return { out_sample: Tensor.zeros([batch, 4, height, width]) };
    },
  } as unknown as OnnxModel;
  return { unet, feeds };
}

const rowsOf = (tensor: Tensor) => tensor.chunk(tensor.shape[0]).map((row) => Array.from(row.data));

/** The timesteps a run visits, as its callbacks see them. */
async function visitedTimesteps(options: LatentOptions): Promise<readonly number[]> {
  let timesteps: readonly number[] = [];
  await generate(inpaint9, { guidanceScale: 1, numInferenceSteps: 10, callbackOnStepEnd: (state) => void (timesteps = state.timesteps), ...options });
  return timesteps;
}

describe('StableDiffusionXLInpaintPipeline with a 9-channel UNet', () => {
  it('feeds the UNet concat(latents, mask, masked-picture latents) and the SDXL conditioning, all CFG-doubled', async () => {
    const seen: Kwargs[] = [];
    const feeds = await unetFeeds(inpaint9, {
      generator: new Generator().manualSeed(1),
      callbackOnStepEnd: (_state, _step, _t, kwargs) => void seen.push(kwargs),
      callbackOnStepEndTensorInputs: ['latents', ...DOUBLED],
    });
    expect(feeds).toHaveLength(3); // int(4 · 0.9999): diffusers' default strength
    const { sample } = feeds[0];
    expect(sample.shape).toEqual([2, 9, 2, 2]);
    expect((feeds[0].encoder_hidden_states as Tensor).shape).toEqual([2, 77, 16]);
    expect((feeds[0].text_embeds as Tensor).shape).toEqual([2, 8]);
    expect(rowsOf(feeds[0].time_ids)).toEqual([[16, 16, 0, 0, 16, 16], [16, 16, 0, 0, 16, 16]]);
    expect(seen[0].mask.shape).toEqual([2, 1, 2, 2]);
    expect(seen[0].maskedImageLatents.shape).toEqual([2, 4, 2, 2]);
    expect(Array.from(seen[0].mask.data)).toEqual([...LATENT_MASK, ...LATENT_MASK]);
    for (const row of [0, 1]) {
      const fed = sample.narrow(0, row, 1);
      expect(Array.from(fed.narrow(1, 4, 1).data)).toEqual(LATENT_MASK);
      expect(Array.from(fed.narrow(1, 5, 4).data)).toEqual(Array.from(seen[0].maskedImageLatents.narrow(0, row, 1).data));
    }
  });

  it('by default (strength 0.9999) draws the picture sample, the noise, then the masked picture sample, and starts from the noised picture', async () => {
    const feeds = await unetFeeds(inpaint9, { generator: new Generator().manualSeed(6), guidanceScale: 1 });
    const { imageLatents, noise, maskedImageLatents } = await expectedDraws(inpaint9, 6);
    const reference = ddimAt(inpaint9, 4);
    expectClose(channels(feeds[0].sample, 0, 4), reference.addNoise(imageLatents, noise, reference.timesteps[1]).data);
    expectClose(channels(feeds[0].sample, 5, 4), maskedImageLatents.data);
  });

  it('at strength 1 starts from pure noise (the first draw) and runs every step', async () => {
    const feeds = await unetFeeds(inpaint9, { generator: new Generator().manualSeed(5), guidanceScale: 1, strength: 1 });
    expect(feeds).toHaveLength(4);
    const generator = new Generator().manualSeed(5);
    expect(channels(feeds[0].sample, 0, 4)).toEqual(Array.from(randn([1, 4, 2, 2], { generator }).data));
    expectClose(channels(feeds[0].sample, 5, 4), (await sampledLatents(inpaint9, await maskedPicture(), generator)).data);
  });

  it('with denoisingStart starts from the picture latents, un-noised, and runs only the timesteps below int(round(T − start·T))', async () => {
    const feeds = await unetFeeds(inpaint9, { generator: new Generator().manualSeed(7), guidanceScale: 1, numInferenceSteps: 10, denoisingStart: 0.35 });
    expect(feeds).toHaveLength(7);
    const { imageLatents, maskedImageLatents } = await expectedDraws(inpaint9, 7); // the noise: drawn, unused by a 9-channel UNet
    expectClose(channels(feeds[0].sample, 0, 4), imageLatents.data);
    expectClose(channels(feeds[0].sample, 5, 4), maskedImageLatents.data);

    expect(await visitedTimesteps({ denoisingStart: 0.35, strength: 0.1 })).toEqual([601, 501, 401, 301, 201, 101, 1]);
    expect(await visitedTimesteps({ denoisingEnd: 0.5 })).toEqual([801, 701, 601, 501]);
    expect(await visitedTimesteps({ denoisingStart: 0.35, denoisingEnd: 0.8 })).toEqual([601, 501, 401, 301, 201]);
  });

  it('binarises the mask: mid-grey 127 keeps everything, 128 repaints everything', async () => {
    const maskOf = async (level: number) => {
      const feeds = await unetFeeds(inpaint9, { guidanceScale: 1, numInferenceSteps: 1, strength: 1, maskImage: mask(16, 16, () => level) });
      return channels(feeds[0].sample, 4, 1);
    };
    expect(await maskOf(127)).toEqual([0, 0, 0, 0]);
    expect(await maskOf(128)).toEqual([1, 1, 1, 1]);
  });

  it('resizes picture and mask to height × width (default: the UNet sample size × 8)', async () => {
    const { images } = await inpaint9.generate({ ...base, height: undefined, width: undefined, numInferenceSteps: 2 });
    expect(images[0]).toMatchObject({ width: 64, height: 64 });
    const feeds = await unetFeeds(inpaint9, { height: 32, width: 24, numInferenceSteps: 2 });
    expect(feeds[0].sample.shape).toEqual([2, 9, 4, 3]);
  });

  it('stacks the time ids as diffusers does here, every negative row then every positive', async () => {
    const feeds = await unetFeeds(inpaint9, { numImagesPerPrompt: 2, originalSize: [32, 24], cropsCoordsTopLeft: [4, 2], negativeOriginalSize: [8, 8] });
    const [negative, positive] = [[8, 8, 4, 2, 16, 16], [32, 24, 4, 2, 16, 16]];
    expect(rowsOf(feeds[0].time_ids)).toEqual([negative, negative, positive, positive]);
  });

  it('conditions on aesthetic scores with requiresAestheticsScore, and explains a time-id count the UNet was not trained with', async () => {
    const { unet, feeds } = recordingUnet();
    const { unetConfig } = inpaint9.components;
    const fiveIds = { ...unetConfig, projection_class_embeddings_input_dim: (unetConfig.projection_class_embeddings_input_dim as number) - 8 };
    const aesthetic = new StableDiffusionXLInpaintPipeline({ ...inpaint9.components, unet, unetConfig: fiveIds }, { requiresAestheticsScore: true });
    await generate(aesthetic, { negativeCropsCoordsTopLeft: [1, 2], aestheticScore: 7, negativeAestheticScore: 2 });
    expect(rowsOf(feeds[0].time_ids)).toEqual([[16, 16, 1, 2, 2], [16, 16, 0, 0, 7]]);
    const mismatched = StableDiffusionXLInpaintPipeline.fromPipe(inpaint9, { requiresAestheticsScore: true });
    await expect(generate(mismatched)).rejects.toThrow(/The UNet takes 6 time ids \(original size, crop corner, target size\): turn requiresAestheticsScore off/);
  });
});

describe('StableDiffusionXLInpaintPipeline with a 4-channel UNet', () => {
  it('feeds the latents alone and puts the known region back after every step, noised to the next timestep', async () => {
    const latentsPerStep: Tensor[] = [];
    const seen: Kwargs[] = [];
    const feeds = await unetFeeds(inpaint4, {
      generator: new Generator().manualSeed(9), guidanceScale: 1, strength: 1,
      callbackOnStepEnd: (_state, _step, _t, kwargs) => {
        latentsPerStep.push(kwargs.latents);
        seen.push(kwargs);
      },
      callbackOnStepEndTensorInputs: ['latents', 'maskedImageLatents'],
    });
    expect(feeds[0].sample.shape).toEqual([1, 4, 2, 2]);

    // Even at strength 1 the picture's VAE sample is drawn: the blending needs it.
    const { imageLatents, noise, maskedImageLatents } = await expectedDraws(inpaint4, 9);
    expectClose(seen[0].maskedImageLatents.data, maskedImageLatents.data);
    expect(Array.from(feeds[0].sample.data)).toEqual(Array.from(noise.data));
    expectKnownRegionPutBack(latentsPerStep, imageLatents, noise, ddimAt(inpaint4, 4));
  });
});

describe('StableDiffusionXLInpaintPipeline and the SDXL CFG cut-off', () => {
  it.each([
    ['9-channel', () => inpaint9, 9],
    ['4-channel', () => inpaint4, 4],
  ])('runs to the end with %s UNets and two images per prompt, every doubled tensor halved as its layout says', async (_kind, pipe, inChannels) => {
    const rows: number[][] = [];
    let timeIdsAfterCutoff: number[][] = [];
    const record = (_state: CallbackPipeline, step: number, _t: number, kwargs: CallbackKwargs<(typeof DOUBLED)[number]>) => {
      rows.push(DOUBLED.map((name) => kwargs[name].shape[0]));
      if (step === 2) timeIdsAfterCutoff = rowsOf(kwargs.addTimeIds);
    };
    const unetCalls = recordRuns(pipe().components.unet);
    const { images } = await pipe().generate({
      ...base, strength: 1, numImagesPerPrompt: 2, negativeOriginalSize: [8, 8], outputType: 'np',
      callbackOnStepEnd: [new SDXLCFGCutoff({ cutoffStepRatio: 0.5 }), record], callbackOnStepEndTensorInputs: DOUBLED,
    });
    const samples = unetCalls.map(({ feeds }) => (feeds.sample as Tensor).shape);
    expect(samples).toEqual([...Array<number[]>(3).fill([4, inChannels, 2, 2]), [2, inChannels, 2, 2]]);
    expect(rows).toEqual([[4, 4, 4, 4, 4], [4, 4, 4, 4, 4], [2, 2, 2, 2, 2], [2, 2, 2, 2, 2]]);
    expect(timeIdsAfterCutoff).toEqual([[16, 16, 0, 0, 16, 16], [16, 16, 0, 0, 16, 16]]);
    expect(images.shape).toEqual([2, 16, 16, 3]);
    expect(images.data.every(Number.isFinite)).toBe(true);
  });

  it('says which tensor a callback left doubled (diffusers crashes here: its cut-off keeps the mask doubled)', async () => {
    const halveXLOnly = (state: CallbackPipeline, step: number, _t: number, kwargs: CallbackKwargs<'promptEmbeds' | 'addTextEmbeds' | 'addTimeIds'>) => {
      if (step !== 0) return kwargs;
      state.guidanceScale = 0;
      return { promptEmbeds: kwargs.promptEmbeds.chunk(2)[1], addTextEmbeds: kwargs.addTextEmbeds.chunk(2)[1], addTimeIds: kwargs.addTimeIds.chunk(2)[1] };
    };
    await expect(generate(inpaint9, { callbackOnStepEnd: halveXLOnly, callbackOnStepEndTensorInputs: ['promptEmbeds', 'addTextEmbeds', 'addTimeIds'] })).rejects.toThrow(
      new InvalidArgumentError(
        'mask has 2 rows but the next step needs 1: classifier-free guidance is off, so keep only the conditional half (e.g. chunk(2)[1]) when turning it off.',
      ),
    );
  });
});

describe('StableDiffusionXLInpaintPipeline inputs and loading', () => {
  it('offers diffusers’ callback tensors and refuses others', async () => {
    expect(StableDiffusionXLInpaintPipeline.callbackTensorInputs).toEqual([
      'latents', 'promptEmbeds', 'addTextEmbeds', 'addTimeIds', 'mask', 'maskedImageLatents', 'predOriginalSample', 'ipAdapterImageEmbeds',
    ]);
    await expect(
      generate(inpaint9, { callbackOnStepEnd: () => undefined, callbackOnStepEndTensorInputs: ['negativePromptEmbeds' as Name] }),
    ).rejects.toThrow(InvalidArgumentError);
  });

  it('refuses a mask of another size, strengths outside [0, 1], and denoising fractions outside (0, 1) or out of order', async () => {
    await expect(generate(inpaint9, { maskImage: mask(8, 16, () => 255) })).rejects.toThrow(
      new InvalidArgumentError("maskImage is 8×16 but image is 16×16; give a mask of the picture's size."),
    );
    await expect(generate(inpaint9, { strength: -0.5 })).rejects.toThrow(new InvalidArgumentError('strength must be between 0 and 1, got -0.5.'));
    await expect(generate(inpaint9, { strength: 1.5 })).rejects.toThrow(new InvalidArgumentError('strength must be between 0 and 1, got 1.5.'));
    await expect(generate(inpaint9, { strength: 0.1 })).rejects.toThrow(/leaves no denoising step out of 4/);
    await expect(generate(inpaint9, { denoisingStart: 1 })).rejects.toThrow(new InvalidArgumentError('denoisingStart must be between 0 and 1 (both excluded), got 1.'));
    await expect(generate(inpaint9, { denoisingEnd: 0 })).rejects.toThrow(new InvalidArgumentError('denoisingEnd must be between 0 and 1 (both excluded), got 0.'));
    await expect(generate(inpaint9, { denoisingStart: 0.6, denoisingEnd: 0.4 })).rejects.toThrow(/denoisingStart \(0.6\) must be less than denoisingEnd \(0.4\)/);
    await expect(generate(inpaint9, { denoisingStart: 0.999 })).rejects.toThrow(/leave no denoising step of the 4/);
    await expect(generate(inpaint9, { denoisingStart: 0.5, latents: Tensor.zeros([1, 4, 2, 2]) })).rejects.toThrow(/Give latents or denoisingStart, not both/);
  });

  it('refuses UNets with neither 4 nor 9 input channels, and folders without a VAE encoder', async () => {
    const folder = join(dir, 'odd-unet');
    await cp(join(dir, 'sdxl'), folder, { recursive: true });
    const configPath = join(folder, 'unet', 'config.json');
    await writeFile(configPath, JSON.stringify({ ...JSON.parse(await readFile(configPath, 'utf8')), in_channels: 5 }));
    const pipe = await StableDiffusionXLInpaintPipeline.fromPretrained(folder);
    await expect(generate(pipe)).rejects.toThrow(UnsupportedError);
    await expect(generate(pipe)).rejects.toThrow(/takes 5 input channels; inpainting needs 9 \(an inpainting UNet\) or 4/);
    await pipe.dispose();
    await rm(join(folder, 'vae_encoder'), { recursive: true });
    await expect(StableDiffusionXLInpaintPipeline.fromPretrained(folder)).rejects.toThrow(ModelLoadError);
  });

  it('is what AutoPipelineForInpainting loads for SDXL folders, inpainting exports and plain ones, and shares sessions with fromPipe', async () => {
    for (const [folder, inChannels] of [['sdxl-inpaint', 9], ['sdxl', 4]] as const) {
      const auto = await AutoPipelineForInpainting.fromPretrained(join(dir, folder));
      expect(auto).toBeInstanceOf(StableDiffusionXLInpaintPipeline);
      expect(await auto.unetInChannels()).toBe(inChannels);
      await auto.dispose();
    }
    const shared = StableDiffusionXLInpaintPipeline.fromPipe(inpaint9);
    expect(shared.components.pool).toBe(inpaint9.components.pool);
    expect(shared.scheduler).toBe(inpaint9.scheduler);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// diffusers' own numbers (the shared refs.json `sdxl_inpaint_runs`), where the shared conformance data is present:
// per-step latents within 5e-4 + 5e-4·|ref|, the image within 1e-3. Entries with `diffusers_error` crash diffusers;
// here they must run to the end.

/** `cutoff_step_index` is null where the ratio applies. */
interface RunRef extends ReferenceRun<Record<string, number | null>> {
  /** The pictures, as refs.json describes them (see `describedImage`). */
  init_image: string;
  mask_image: string;
}

const sdxlInpaintRuns = readSharedRefs<{ sdxl_inpaint_runs?: RunRef[] }>()?.sdxl_inpaint_runs ?? [];

/** The callback a refs entry names, built as a user of the pipeline would. */
function namedCallback(ref: RunRef) {
  const args = ref.callback_args ?? {};
  switch (ref.callback) {
    case null:
    case 'None':
      return undefined;
    case 'SDXLCFGCutoffCallback':
      return new SDXLCFGCutoff({ cutoffStepRatio: args.cutoff_step_ratio, cutoffStepIndex: args.cutoff_step_index });
    case 'interrupt':
      return (state: CallbackPipeline, step: number) => void (step === args.step_index && (state.interrupt = true));
    default:
      throw new Error(`refs.json names a callback this test does not know: ${ref.callback}`);
  }
}

(sdxlInpaintRuns.length > 0 ? describe : describe.skip)('diffusers conformance (shared refs.json sdxl_inpaint_runs)', () => {
  test.each(sdxlInpaintRuns.map((ref) => [ref.id, ref] as const))('%s', async (_id, ref) => {
    const pipe = await StableDiffusionXLInpaintPipeline.fromPretrained(join(SHARED_CONFORMANCE_DIR, ref.model));
    // Entries where diffusers crashed carry no scheduler config: the model folder's own then, as diffusers loads it.
    pipe.scheduler = referenceScheduler({ scheduler: ref.scheduler, scheduler_config: ref.scheduler_config ?? pipe.scheduler.config });
    const steps: Float32Array[] = [];
    let numTimesteps = 0;
    const record = (state: CallbackPipeline, _step: number, _t: number, kwargs: CallbackKwargs<'latents'>) => {
      numTimesteps = state.numTimesteps;
      steps.push(kwargs.latents.data.slice());
    };
    try {
      const { images } = await pipe.generate({
        ...(camelCaseKeys(ref.kwargs) as Partial<StableDiffusionXLInpaintOptions<Name, 'np'>>),
        image: describedImage(ref.init_image),
        maskImage: describedImage(ref.mask_image),
        generator: new Generator().manualSeed(ref.seed),
        outputType: 'np',
        callbackOnStepEnd: [namedCallback(ref), record],
      });
      if (ref.diffusers_error !== undefined) {
        expect(steps).toHaveLength(numTimesteps);
        expect(images.data.every(Number.isFinite)).toBe(true);
        console.log(`${ref.id}: ran to the end (${steps.length} steps); diffusers fails with ${ref.diffusers_error}`);
        return;
      }
      expectMatchesReference(ref, steps, images);
    } finally {
      await pipe.dispose();
    }
  });
});
