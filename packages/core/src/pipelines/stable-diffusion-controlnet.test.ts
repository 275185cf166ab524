import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describedImage } from '@diff/test-fixtures';
import sharp from 'sharp';
import { GraphBuilder } from '../testing/onnx-graph.js';
import { writeToyPipeline } from '../testing/toy-models.js';
import type { CallbackKwargs, CallbackPipeline, StableDiffusionControlNetTensorName, CallbackPlugin } from '../contract.js';
import { InvalidArgumentError, ModelLoadError } from '../errors.js';
import { Generator } from '../random/generator.js';
import { Tensor } from '../tensor.js';
import type { RawImage } from './images.js';
import { AutoPipelineForText2Image } from './auto-pipeline.js';
import { StableDiffusionControlNetPipeline, type StableDiffusionControlNetOptions } from './stable-diffusion-controlnet.js';
import {
  CONTROLNET_RESIDUAL_OUTPUTS, UNET_RESIDUAL_INPUTS, controlNetActed, expectGuessModeResidualsFed, expectResidualsFed, loadControlNetToys, scaled,
  type ControlNetToys,
} from '../__fixtures__/controlnet.js';
import { camelCaseKeys, expectMatchesReference, referenceScheduler, type ReferenceRun } from '../__fixtures__/conformance-runs.js';
import { recordRuns, restoreModelRuns, rowsFed, tensorFeed } from '../__fixtures__/model-runs.js';
import { SHARED_CONFORMANCE_DIR, readSharedRefs } from '../__fixtures__/shared-conformance.js';

type Name = StableDiffusionControlNetTensorName;
type LatentOptions = Partial<StableDiffusionControlNetOptions<Name, 'latent'>>;

/** A white disc on black, as raw pixels with `channels` channels (grey repeated; alpha opaque). */
function disc(size: number, centre: [number, number], radius: number, channels: 1 | 3 | 4 = 3): RawImage {
  const data = new Uint8Array(size * size * channels);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const value = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius ** 2 ? 255 : 0;
      for (let c = 0; c < channels; c++) data[(y * size + x) * channels + c] = c === 3 ? 255 : value;
    }
  }
  return { data, width: size, height: size, channels };
}

/** Raw RGB pixels as the pipeline feeds them: NCHW floats in [0, 1]. */
function toNchw({ data, width, height }: RawImage): Float32Array {
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let pixel = 0; pixel < plane; pixel++) for (let c = 0; c < 3; c++) out[c * plane + pixel] = data[pixel * 3 + c] / 255;
  return out;
}

afterEach(restoreModelRuns);

/** diffusers' SDCFGCutoffCallback (the plugin package's rule): at the cut-off step, guidance off and every CFG-doubled tensor halved. */
function cfgCutoff(cutoffStepRatio: number): CallbackPlugin<'promptEmbeds'> {
  return {
    specificationVersion: 'v1',
    name: 'cfgCutoff',
    tensorInputs: ['promptEmbeds'],
    onStepEnd(state, step, _timestep, kwargs) {
      if (step !== Math.trunc(state.numTimesteps * cutoffStepRatio)) return kwargs;
      return state.disableGuidance(kwargs);
    },
  };
}

let toys: ControlNetToys<StableDiffusionControlNetPipeline>;
let pipeline: StableDiffusionControlNetPipeline;
let multi: StableDiffusionControlNetPipeline;
const circle = disc(16, [8, 7], 5);
const square = { ...circle, data: circle.data.map((_, i) => ((i % 48) < 24 ? 255 : 0)) };

beforeAll(async () => {
  toys = await loadControlNetToys(StableDiffusionControlNetPipeline, 'sd-controlnet');
  ({ pipeline, multi } = toys);
});
afterAll(() => toys.dispose());

const base = { prompt: 'a red circle', numInferenceSteps: 4, image: circle } as const;
function latentsOf(options: LatentOptions = {}, on = pipeline, seed = 0): Promise<Tensor> {
  const settings = { ...base, generator: new Generator().manualSeed(seed), outputType: 'latent', ...options };
  return on.generate(settings as StableDiffusionControlNetOptions<Name, 'latent'>).then((output) => output.images);
}

/** The tensors a callback saw at each step. */
async function tensorsSeen(options: LatentOptions = {}, on = pipeline): Promise<Array<Record<Name, Tensor>>> {
  const seen: Array<Record<Name, Tensor>> = [];
  await latentsOf({
    callbackOnStepEndTensorInputs: ['latents', 'promptEmbeds', 'image'],
    callbackOnStepEnd: (_state, _step, _t, kwargs) => void seen.push({ ...kwargs }),
    ...options,
  }, on);
  return seen;
}

describe('StableDiffusionControlNetPipeline', () => {
  it('sizes the image after the control picture and hands callbacks the CFG-doubled control image', async () => {
    const wide = { data: new Uint8Array(20 * 35 * 3).fill(200), width: 35, height: 20, channels: 3 as const };
    const seen = await tensorsSeen({ image: wide });
    expect(seen[0].latents.shape).toEqual([1, 4, 2, 4]); // 35×20 rounded down to 32×16
    expect(seen[0].image.shape).toEqual([2, 3, 16, 32]);
    expect(seen[0].image.data.every((value) => value === Math.fround(200 / 255))).toBe(true);
    const sized = await tensorsSeen({ image: wide, height: 24, width: 16 });
    expect(sized[0].image.shape).toEqual([2, 3, 24, 16]);
    expect((await tensorsSeen({ guessMode: true }))[0].image.shape).toEqual([1, 3, 16, 16]);
    expect((await tensorsSeen({ guidanceScale: 1, numImagesPerPrompt: 2 }))[0].image.shape).toEqual([2, 3, 16, 16]);
  });

  it('feeds the ControlNet residuals to the UNet, times controlnetConditioningScale', async () => {
    const [controlnet] = pipeline.components.controlnets;
    const controlCalls = recordRuns(controlnet.model);
    const unetCalls = recordRuns(pipeline.components.unet);
    await latentsOf({ controlnetConditioningScale: 0.5 });
    expect(unetCalls).toHaveLength(5); // PNDM: 4 steps, 5 UNet calls
    controlCalls.forEach((call, step) => {
      const unetCall = unetCalls[step];
      expect(call.feeds.conditioning_scale).toBe(1);
      expect(tensorFeed(call, 'sample')).toBe(tensorFeed(unetCall, 'sample'));
      expect(tensorFeed(call, 'encoder_hidden_states')).toBe(tensorFeed(unetCall, 'encoder_hidden_states'));
      expect(Array.from(tensorFeed(call, 'controlnet_cond').data)).toEqual([...toNchw(circle), ...toNchw(circle)]);
      expectResidualsFed(unetCall, [call], [0.5]);
    });
    const plain = await latentsOf();
    const unguided = await latentsOf({ controlnetConditioningScale: 0 });
    expect(plain.data).not.toEqual(unguided.data);
  });

  it('in guess mode runs the ControlNet on the conditional half and weighs its residuals from 0.1 to 1', async () => {
    const [controlnet] = pipeline.components.controlnets;
    const controlCalls = recordRuns(controlnet.model);
    const unetCalls = recordRuns(pipeline.components.unet);
    await latentsOf({ guessMode: true, controlnetConditioningScale: 0.8 });
    controlCalls.forEach((call, step) => {
      const unetCall = unetCalls[step];
      expect(Array.from(tensorFeed(call, 'sample').data)).toEqual(Array.from(tensorFeed(unetCall, 'sample').narrow(0, 1, 1).data));
      expect(tensorFeed(call, 'encoder_hidden_states').data).toEqual(tensorFeed(unetCall, 'encoder_hidden_states').narrow(0, 1, 1).data);
      expect(tensorFeed(call, 'controlnet_cond').shape).toEqual([1, 3, 16, 16]);
      expectGuessModeResidualsFed(unetCall, call, 0.8);
    });
  });

  it('applies each ControlNet only within its controlGuidanceStart…End fraction of the steps', async () => {
    const unetCalls = recordRuns(pipeline.components.unet);
    await latentsOf({ controlGuidanceStart: 0.4, controlGuidanceEnd: 0.8 });
    // 5 timesteps: step i acts when i/5 ≥ 0.4 and (i + 1)/5 ≤ 0.8, as diffusers' controlnet_keep.
    expect(controlNetActed(unetCalls)).toEqual([false, false, true, true, false]);
  });

  it('sums the residuals of several ControlNets, each with its picture, scale and schedule', async () => {
    expect(multi.components.controlnets.map(({ model }) => model.path.split(/[/\\]/).at(-2))).toEqual(['controlnet', 'controlnet_1']);
    const [firstCalls, secondCalls] = multi.components.controlnets.map(({ model }) => recordRuns(model));
    const unetCalls = recordRuns(multi.components.unet);
    const seen = await tensorsSeen({ image: [circle, square], controlnetConditioningScale: [1, 0.5], controlGuidanceStart: [0, 0.5] }, multi);
    expect(seen[0].image.shape).toEqual([2, 6, 16, 16]);
    expect(tensorFeed(firstCalls[0], 'controlnet_cond').narrow(0, 0, 1).data).toEqual(toNchw(circle));
    expect(tensorFeed(secondCalls[0], 'controlnet_cond').narrow(0, 0, 1).data).toEqual(toNchw(square));
    unetCalls.forEach((call, step) => expectResidualsFed(call, [firstCalls[step], secondCalls[step]], [1, step / 5 < 0.5 ? 0 : 0.5]));
  });

  it('loads the ControlNet folders it is given', async () => {
    const chosen = await StableDiffusionControlNetPipeline.fromPretrained(toys.multiDir, { controlnets: ['controlnet_1', join(toys.dir, 'controlnet')] });
    try {
      expect(chosen.components.controlnets.map(({ model }) => model.path)).toEqual([
        join(toys.multiDir, 'controlnet_1', 'model.onnx'),
        join(toys.dir, 'controlnet', 'model.onnx'),
      ]);
      expect((await latentsOf({ image: [circle, circle] }, chosen)).data).toEqual((await latentsOf({ image: [circle, circle] }, multi)).data);
    } finally {
      await chosen.dispose();
    }
  });

  it('after a guidance cut-off feeds the ControlNet and the UNet the conditional half only', async () => {
    const controlCalls = recordRuns(pipeline.components.controlnets[0].model);
    const unetCalls = recordRuns(pipeline.components.unet);
    await latentsOf({ callbackOnStepEnd: cfgCutoff(0.4), numImagesPerPrompt: 2 }); // cut-off after step 2 of 5
    for (const name of ['sample', 'encoder_hidden_states', 'controlnet_cond']) expect(rowsFed(controlCalls, name)).toEqual([4, 4, 4, 2, 2]);
    for (const name of ['sample', 'encoder_hidden_states', ...UNET_RESIDUAL_INPUTS]) expect(rowsFed(unetCalls, name)).toEqual([4, 4, 4, 2, 2]);

    const guessControl = recordRuns(pipeline.components.controlnets[0].model);
    const guessUnet = recordRuns(pipeline.components.unet);
    await latentsOf({ callbackOnStepEnd: cfgCutoff(0.4), guessMode: true });
    expect(rowsFed(guessControl, 'controlnet_cond')).toEqual([1, 1, 1, 1, 1]);
    expect(rowsFed(guessUnet, UNET_RESIDUAL_INPUTS[0])).toEqual([2, 2, 2, 1, 1]);
  });

  it('explains the fix when guidance is turned off without halving the control image', async () => {
    const halveEmbeddingsOnly = (state: CallbackPipeline, step: number, _t: number, kwargs: CallbackKwargs<'promptEmbeds'>) => {
      if (step !== 1) return kwargs;
      state.guidanceScale = 0;
      return { promptEmbeds: kwargs.promptEmbeds.chunk(2)[1] };
    };
    await expect(latentsOf({ callbackOnStepEnd: halveEmbeddingsOnly, callbackOnStepEndTensorInputs: ['promptEmbeds'] })).rejects.toThrow(
      /image has 2 rows but the next step needs 1: classifier-free guidance is off, so keep only the conditional half/,
    );
    const doubleImage = (_state: CallbackPipeline, _step: number, _t: number, kwargs: CallbackKwargs<'image'>) => ({ image: Tensor.cat([kwargs.image, kwargs.image]) });
    await expect(latentsOf({ guessMode: true, callbackOnStepEnd: doubleImage, callbackOnStepEndTensorInputs: ['image'] })).rejects.toThrow(
      /image has 2 rows but the ControlNets need 1: in guess mode the control image has one row per image/,
    );
  });

  it('reads grey and RGBA control pictures as RGB, as PIL’s convert("RGB")', async () => {
    const rgb = await latentsOf();
    expect((await latentsOf({ image: disc(16, [8, 7], 5, 1) })).data).toEqual(rgb.data);
    expect((await latentsOf({ image: disc(16, [8, 7], 5, 4) })).data).toEqual(rgb.data);
    const greyPng = await sharp(circle.data, { raw: circle }).toColourspace('b-w').png().toBuffer();
    expect((await sharp(greyPng).metadata()).channels).toBe(1);
    expect((await latentsOf({ image: greyPng })).data).toEqual(rgb.data);
  });

  it('rejects bad control options with clear errors', async () => {
    const rejects = (options: LatentOptions, message: RegExp, on = pipeline) => expect(latentsOf(options, on)).rejects.toThrow(message);
    await rejects({ image: undefined }, /image is required/);
    await rejects({ image: { ...circle, channels: 2 } as unknown as RawImage }, /1, 3 or 4 channels/);
    await rejects({ image: [circle, circle] }, /image has 2 entries but the pipeline has 1 ControlNet; give one control image per ControlNet/);
    await rejects({}, /image has 1 entries but the pipeline has 2 ControlNets/, multi);
    await rejects({ image: [circle, circle], controlnetConditioningScale: [1, 1, 1] }, /controlnetConditioningScale has 3 entries but the pipeline has 2 ControlNets/, multi);
    await rejects({ image: [circle, circle], controlGuidanceEnd: [1] }, /controlGuidanceEnd has 1 entries/, multi);
    await rejects({ controlGuidanceStart: 0.6, controlGuidanceEnd: 0.5 }, /need 0 ≤ start < end ≤ 1, got start 0.6 and end 0.5\./);
    await rejects({ controlGuidanceStart: 0.5, controlGuidanceEnd: 0.5 }, /got start 0.5 and end 0.5/);
    await rejects({ controlGuidanceStart: -0.1 }, /got start -0.1 and end 1/);
    await rejects({ image: [circle, circle], controlGuidanceEnd: [1, 1.5] }, /got start 0 and end 1.5 \(ControlNet 1\)/, multi);
    await rejects({ controlnetConditioningScale: Number.NaN }, /controlnetConditioningScale must be a finite number/);
    await rejects({ height: 20 }, /height and width must be positive multiples of 8, got 20×16/);
    await expect(latentsOf({ controlGuidanceStart: 2 })).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe('StableDiffusionControlNetPipeline.fromPretrained', () => {
  let broken: string;
  beforeEach(async () => {
    broken = await mkdtemp(join(tmpdir(), 'diff-sd-controlnet-broken-'));
  });
  afterEach(async () => {
    await rm(broken, { recursive: true, force: true });
  });

  it('names both residual counts when a ControlNet does not fit the UNet', async () => {
    await cp(toys.dir, broken, { recursive: true });
    const graph = new GraphBuilder('three_block_controlnet');
    const sample = graph.input('sample', 'float32', ['batch', 4, 'height', 'width']);
    for (const name of ['timestep', 'encoder_hidden_states', 'controlnet_cond', 'conditioning_scale']) graph.input(name, 'float32', []);
    for (const name of ['down_block_res_sample_0', 'down_block_res_sample_1', 'down_block_res_sample_2', 'mid_block_res_sample']) {
      graph.output(name, 'float32', ['batch', 4, 'height', 'width']);
      graph.emit(sample, name);
    }
    await writeFile(join(broken, 'controlnet', 'model.onnx'), graph.serialize().model);
    const mismatched = await StableDiffusionControlNetPipeline.fromPretrained(broken);
    try {
      const run = latentsOf({}, mismatched);
      await expect(run).rejects.toThrow(ModelLoadError);
      await expect(run).rejects.toThrow(/controlnet[/\\]model\.onnx: gives 3 down-block residuals, but the UNet \(.*\) takes 4 and a mid-block one/);
    } finally {
      await mismatched.dispose();
    }
  });

  it('forces guess mode without depth weights for a ControlNet with global_pool_conditions, as diffusers', async () => {
    await cp(toys.dir, broken, { recursive: true });
    const configPath = join(broken, 'controlnet', 'config.json');
    await writeFile(configPath, JSON.stringify({ ...JSON.parse(await readFile(configPath, 'utf8')), global_pool_conditions: true }));
    const pooled = await StableDiffusionControlNetPipeline.fromPretrained(broken);
    try {
      const controlCalls = recordRuns(pooled.components.controlnets[0].model);
      const unetCalls = recordRuns(pooled.components.unet);
      await latentsOf({ controlnetConditioningScale: 0.8 }, pooled);
      expect(rowsFed(controlCalls, 'controlnet_cond')).toEqual([1, 1, 1, 1, 1]);
      CONTROLNET_RESIDUAL_OUTPUTS.forEach((output, k) => {
        const [unconditional, conditional] = tensorFeed(unetCalls[0], UNET_RESIDUAL_INPUTS[k]).chunk(2);
        expect(unconditional.data.every((value) => value === 0)).toBe(true);
        expect(Array.from(conditional.data)).toEqual(scaled(controlCalls[0].outputs[output], 0.8));
      });
    } finally {
      await pooled.dispose();
    }
  });

  it('is what AutoPipelineForText2Image loads for a ControlNet folder', async () => {
    const auto = await AutoPipelineForText2Image.fromPretrained(toys.dir);
    try {
      expect(auto).toBeInstanceOf(StableDiffusionControlNetPipeline);
    } finally {
      await auto.dispose();
    }
  });

  it('refuses a UNet without residual inputs and a folder without a ControlNet', async () => {
    await writeToyPipeline(broken, 'sd');
    await expect(StableDiffusionControlNetPipeline.fromPretrained(broken)).rejects.toThrow(/controlnet[/\\]model\.onnx: is missing/);
    await cp(join(toys.dir, 'controlnet'), join(broken, 'controlnet'), { recursive: true });
    const plainUnet = await StableDiffusionControlNetPipeline.fromPretrained(broken);
    try {
      await expect(plainUnet.residualNames()).rejects.toThrow(/unet[/\\]model\.onnx: takes no ControlNet residuals/);
    } finally {
      await plainUnet.dispose();
    }
    await expect(StableDiffusionControlNetPipeline.fromPretrained(broken, { controlnets: [] })).rejects.toThrow(/controlnets lists no folder/);
  });
});

// The diffusers references, where the shared conformance data is present.
interface ControlNetRunRef extends ReferenceRun {
  /** The control picture, as refs.json describes it (see `describedImage`). */
  control_image: string;
}

const CONFORMANCE_CASES = ['cn-pndm-default', 'cn-guess-mode', 'cn-cfgcut'];
const controlnetRuns: ControlNetRunRef[] = (readSharedRefs<{ controlnet_runs: ControlNetRunRef[] }>()?.controlnet_runs ?? []).filter((run) =>
  CONFORMANCE_CASES.includes(run.id),
);

(controlnetRuns.length > 0 ? describe : describe.skip)('diffusers conformance (shared refs.json controlnet_runs)', () => {
  test.each(controlnetRuns.map((run) => [run.id, run] as const))('%s', async (_id, run) => {
    const scheduler = run.scheduler_config && referenceScheduler({ scheduler: run.scheduler, scheduler_config: run.scheduler_config });
    const controlnet = await StableDiffusionControlNetPipeline.fromPretrained(join(SHARED_CONFORMANCE_DIR, run.model), { scheduler });
    try {
      const steps: Array<Record<'latents' | 'promptEmbeds' | 'image', Tensor>> = [];
      const record = (_state: CallbackPipeline, _step: number, _t: number, kwargs: CallbackKwargs<'latents' | 'promptEmbeds' | 'image'>) => void steps.push({ ...kwargs });
      const cutoff = run.callback === 'SDCFGCutoffCallback' ? cfgCutoff(run.callback_args!.cutoff_step_ratio) : undefined;
      const { images } = await controlnet.generate({
        ...(camelCaseKeys(run.kwargs) as Partial<StableDiffusionControlNetOptions<'latents' | 'promptEmbeds' | 'image', 'np'>>),
        image: describedImage(run.control_image),
        generator: new Generator().manualSeed(run.seed),
        callbackOnStepEnd: [cutoff, record],
        callbackOnStepEndTensorInputs: ['latents', 'promptEmbeds', 'image'],
        outputType: 'np',
      });
      expect(images.shape).toEqual([1, 64, 64, 3]);

      if (run.diffusers_error) {
        // diffusers crashes here (the doubled control image is never halved); ours completes on the conditional half.
        const cutoffStep = Math.trunc(steps.length * run.callback_args!.cutoff_step_ratio);
        expect(steps.map((step) => step.image.shape[0])).toEqual(steps.map((_, i) => (i < cutoffStep ? 2 : 1)));
        expect(steps.map((step) => step.promptEmbeds.shape[0])).toEqual(steps.map((_, i) => (i < cutoffStep ? 2 : 1)));
        expect(steps.at(-1)!.image.shape).toEqual([1, 3, 64, 64]);
        expect(images.data.every(Number.isFinite)).toBe(true);
        console.info(`${run.id}: completed (diffusers: ${run.diffusers_error})`);
        return;
      }
      expectMatchesReference(run, steps.map((step) => step.latents.data), images);
    } finally {
      await controlnet.dispose();
    }
  });
});

// Type-level checks (compiled by `tsc --noEmit` in the test script, never run).
export function typeChecks(): void {
  void pipeline.generate({
    prompt: 'x',
    image: circle,
    callbackOnStepEndTensorInputs: ['image'],
    callbackOnStepEnd: (_state, _step, _t, kwargs) => ({ image: kwargs.image }),
  });
  // @ts-expect-error `mask` is an inpainting tensor; the ControlNet pipeline does not have it.
  void pipeline.generate({ prompt: 'x', image: circle, callbackOnStepEndTensorInputs: ['mask'] });
  // @ts-expect-error the control picture is required.
  void pipeline.generate({ prompt: 'x' });
}
