import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describedImage } from '@diff/test-fixtures';
import { writeToyPipeline } from '../testing/toy-models.js';
import type { CallbackKwargs, CallbackPipeline, CallbackPlugin, StableDiffusionXLControlNetTensorName } from '../contract.js';
import { InvalidArgumentError, ModelLoadError } from '../errors.js';
import { Generator } from '../random/generator.js';
import { Tensor } from '../tensor.js';
import { AutoPipelineForText2Image } from './auto-pipeline.js';
import { StableDiffusionXLControlNetPipeline, type StableDiffusionXLControlNetOptions } from './stable-diffusion-xl-controlnet.js';
import {
  UNET_RESIDUAL_INPUTS, controlNetActed, expectGuessModeResidualsFed, expectResidualsFed, loadControlNetToys, type ControlNetToys,
} from '../__fixtures__/controlnet.js';
import { camelCaseKeys, expectMatchesReference, referenceScheduler, type ReferenceRun } from '../__fixtures__/conformance-runs.js';
import { recordRuns, restoreModelRuns, rowsFed, tensorFeed } from '../__fixtures__/model-runs.js';
import { SHARED_CONFORMANCE_DIR, readSharedRefs } from '../__fixtures__/shared-conformance.js';

type Name = StableDiffusionXLControlNetTensorName;
type LatentOptions = Partial<StableDiffusionXLControlNetOptions<Name, 'latent'>>;

afterEach(restoreModelRuns);

/** Rows `rows` of a tensor, stacked. */
const pickRows = (tensor: Tensor, rows: readonly number[]) => Tensor.cat(rows.map((row) => tensor.narrow(0, row, 1)));
const CONDITIONING_FEEDS = ['encoder_hidden_states', 'text_embeds', 'time_ids'];

/**
 * diffusers' SDXLControlnetCFGCutoffCallback as a plugin: at the cut-off step, guidance off and every CFG-doubled
 * tensor (prompt and pooled embeddings, time ids, control image) halved.
 */
function controlnetCfgCutoff(cutoffStepRatio: number): CallbackPlugin<'promptEmbeds' | 'addTextEmbeds' | 'addTimeIds' | 'image'> {
  return {
    specificationVersion: 'v1',
    name: 'controlnetCfgCutoff',
    tensorInputs: ['promptEmbeds', 'addTextEmbeds', 'addTimeIds', 'image'],
    onStepEnd(state, step, _timestep, kwargs) {
      return step === Math.trunc(state.numTimesteps * cutoffStepRatio) ? state.disableGuidance(kwargs) : kwargs;
    },
  };
}

let toys: ControlNetToys<StableDiffusionXLControlNetPipeline>;
let pipeline: StableDiffusionXLControlNetPipeline;
let multi: StableDiffusionXLControlNetPipeline;
const square = describedImage('RGB 16x16: white where |x-8| <= 4 and |y-7| <= 3, else black');
const stripes = describedImage('RGB 16x16: white where x % 4 < 2, else black');

beforeAll(async () => {
  toys = await loadControlNetToys(StableDiffusionXLControlNetPipeline, 'sdxl-controlnet');
  ({ pipeline, multi } = toys);
});
afterAll(() => toys.dispose());

const base = { prompt: 'a red square', numInferenceSteps: 5, image: square } as const;
function latentsOf(options: LatentOptions = {}, on = pipeline, seed = 0): Promise<Tensor> {
  const settings = { ...base, generator: new Generator().manualSeed(seed), outputType: 'latent', ...options };
  return on.generate(settings as StableDiffusionXLControlNetOptions<Name, 'latent'>).then((output) => output.images);
}

/** The tensors a callback saw at each step end. */
async function tensorsSeen(options: LatentOptions = {}, on = pipeline): Promise<Array<Record<Name, Tensor>>> {
  const seen: Array<Record<Name, Tensor>> = [];
  const record = (_state: CallbackPipeline, _step: number, _t: number, kwargs: CallbackKwargs<Name>) => void seen.push({ ...kwargs });
  await latentsOf({
    ...options,
    callbackOnStepEnd: [options.callbackOnStepEnd as CallbackPlugin<never> | undefined, record],
    callbackOnStepEndTensorInputs: ['latents', 'promptEmbeds', 'addTextEmbeds', 'addTimeIds', 'image'],
  } as LatentOptions, on);
  return seen;
}

describe('StableDiffusionXLControlNetPipeline', () => {
  it('hands callbacks the control image with as many rows as the prompt embeddings, step by step', async () => {
    const rows = async (options: LatentOptions) => (await tensorsSeen(options)).map((step) => [step.image.shape[0], step.promptEmbeds.shape[0]]);
    expect(await rows({})).toEqual(new Array(5).fill([2, 2]));
    expect(await rows({ numImagesPerPrompt: 2 })).toEqual(new Array(5).fill([4, 4]));
    expect(await rows({ guidanceScale: 1, numImagesPerPrompt: 2 })).toEqual(new Array(5).fill([2, 2]));
    expect(await rows({ guessMode: true })).toEqual(new Array(5).fill([1, 2]));
    // Cut off after step 2 of 5, with two images: each doubled tensor keeps its conditional half from then on.
    const cut = await tensorsSeen({ numImagesPerPrompt: 2, callbackOnStepEnd: controlnetCfgCutoff(0.4) });
    for (const name of ['image', 'promptEmbeds', 'addTextEmbeds', 'addTimeIds'] as const) {
      expect(cut.map((step) => step[name].shape[0])).toEqual([4, 4, 2, 2, 2]);
    }
    const [first] = await tensorsSeen({});
    expect(first.image.shape).toEqual([2, 3, 16, 16]);
    expect(first.image.narrow(0, 0, 1).data).toEqual(first.image.narrow(0, 1, 1).data);
  });

  it('sizes the output after the control picture and conditions on that size', async () => {
    const wide = describedImage('RGB 35x20: white where 1, else black');
    const [first] = await tensorsSeen({ image: wide });
    expect(first.latents.shape).toEqual([1, 4, 2, 4]); // 35×20 rounded down to 32×16
    expect(first.image.shape).toEqual([2, 3, 16, 32]);
    expect(Array.from(first.addTimeIds.data)).toEqual([16, 32, 0, 0, 16, 32, 16, 32, 0, 0, 16, 32]);
  });

  it('feeds the ControlNet the UNet batch and conditioning, and the UNet its residuals times the scale', async () => {
    const controlCalls = recordRuns(pipeline.components.controlnets[0].model);
    const unetCalls = recordRuns(pipeline.components.unet);
    await latentsOf({ controlnetConditioningScale: 0.5 });
    expect(unetCalls).toHaveLength(5);
    controlCalls.forEach((call, step) => {
      const unetCall = unetCalls[step];
      expect(call.feeds.conditioning_scale).toBe(1);
      for (const name of ['sample', ...CONDITIONING_FEEDS]) expect(tensorFeed(call, name)).toBe(tensorFeed(unetCall, name));
      expect(tensorFeed(call, 'controlnet_cond').shape).toEqual([2, 3, 16, 16]);
      expectResidualsFed(unetCall, [call], [0.5]);
    });
    expect((await latentsOf()).data).not.toEqual((await latentsOf({ controlnetConditioningScale: 0 })).data);
  });

  it('in guess mode runs the ControlNet on the conditional rows, time ids included, and weighs its residuals', async () => {
    const controlCalls = recordRuns(pipeline.components.controlnets[0].model);
    const unetCalls = recordRuns(pipeline.components.unet);
    // Negative sizes make the negative time ids differ; two images tile the [negative, positive] pairs.
    await latentsOf({ guessMode: true, controlnetConditioningScale: 0.8, numImagesPerPrompt: 2, negativeOriginalSize: [32, 32], negativeTargetSize: [8, 8] });
    controlCalls.forEach((call, step) => {
      const unetCall = unetCalls[step];
      expect(tensorFeed(call, 'sample').data).toEqual(tensorFeed(unetCall, 'sample').narrow(0, 2, 2).data);
      expect(tensorFeed(call, 'encoder_hidden_states').data).toEqual(tensorFeed(unetCall, 'encoder_hidden_states').narrow(0, 2, 2).data);
      expect(tensorFeed(call, 'text_embeds').data).toEqual(tensorFeed(unetCall, 'text_embeds').narrow(0, 2, 2).data);
      expect(Array.from(tensorFeed(call, 'time_ids').data)).toEqual([16, 16, 0, 0, 16, 16, 16, 16, 0, 0, 16, 16]);
      expect(pickRows(tensorFeed(unetCall, 'time_ids'), [0, 2]).data).toEqual(Float32Array.from([32, 32, 0, 0, 8, 8, 32, 32, 0, 0, 8, 8]));
      expect(tensorFeed(call, 'controlnet_cond').shape).toEqual([2, 3, 16, 16]);
      expectGuessModeResidualsFed(unetCall, call, 0.8);
    });
  });

  it('applies each ControlNet only within its controlGuidanceStart…End fraction of the steps', async () => {
    const unetCalls = recordRuns(pipeline.components.unet);
    await latentsOf({ controlGuidanceStart: 0.4, controlGuidanceEnd: 0.8 });
    // 5 timesteps: step i acts when i/5 ≥ 0.4 and (i + 1)/5 ≤ 0.8, as diffusers' controlnet_keep.
    expect(controlNetActed(unetCalls)).toEqual([false, false, true, true, false]);
  });

  it('sums the residuals of two ControlNets, each with its picture, scale and schedule', async () => {
    const [firstCalls, secondCalls] = multi.components.controlnets.map(({ model }) => recordRuns(model));
    const unetCalls = recordRuns(multi.components.unet);
    const [first] = await tensorsSeen({ image: [square, stripes], controlnetConditioningScale: [1, 0.5], controlGuidanceEnd: [1, 0.6] }, multi);
    expect(first.image.shape).toEqual([2, 6, 16, 16]);
    expect(tensorFeed(firstCalls[0], 'controlnet_cond').data).toEqual(first.image.narrow(1, 0, 3).data);
    expect(tensorFeed(secondCalls[0], 'controlnet_cond').data).toEqual(first.image.narrow(1, 3, 3).data);
    unetCalls.forEach((call, step) => expectResidualsFed(call, [firstCalls[step], secondCalls[step]], [1, (step + 1) / 5 > 0.6 ? 0 : 0.5]));
  });

  it('after a guidance cut-off with two images per prompt feeds the models the conditional half and runs to the end', async () => {
    const controlCalls = recordRuns(pipeline.components.controlnets[0].model);
    const unetCalls = recordRuns(pipeline.components.unet);
    const seen = await tensorsSeen({ callbackOnStepEnd: controlnetCfgCutoff(0.4), numImagesPerPrompt: 2 });
    for (const name of ['sample', 'controlnet_cond', ...CONDITIONING_FEEDS]) expect(rowsFed(controlCalls, name)).toEqual([4, 4, 4, 2, 2]);
    for (const name of ['sample', ...CONDITIONING_FEEDS, ...UNET_RESIDUAL_INPUTS]) expect(rowsFed(unetCalls, name)).toEqual([4, 4, 4, 2, 2]);
    // The conditional rows kept: each image's positive time ids, the second half of the control image.
    expect(seen[2].addTimeIds.data).toEqual(pickRows(seen[1].addTimeIds, [1, 3]).data);
    expect(seen[2].image.data).toEqual(seen[1].image.narrow(0, 2, 2).data);
    expect(seen).toHaveLength(5);

    const guessUnet = recordRuns(pipeline.components.unet);
    const guessControl = recordRuns(pipeline.components.controlnets[0].model);
    await latentsOf({ callbackOnStepEnd: controlnetCfgCutoff(0.4), guessMode: true, numImagesPerPrompt: 2 });
    expect(rowsFed(guessControl, 'controlnet_cond')).toEqual([2, 2, 2, 2, 2]);
    expect(rowsFed(guessUnet, UNET_RESIDUAL_INPUTS[0])).toEqual([4, 4, 4, 2, 2]);
  });

  it('explains the fix when a callback leaves the control image doubled after turning guidance off', async () => {
    const halveEmbeddingsOnly = (state: CallbackPipeline, step: number, _t: number, kwargs: CallbackKwargs<'promptEmbeds' | 'addTextEmbeds' | 'addTimeIds'>) => {
      if (step !== 1) return kwargs;
      state.guidanceScale = 0;
      return { promptEmbeds: kwargs.promptEmbeds.chunk(2)[1], addTextEmbeds: kwargs.addTextEmbeds.chunk(2)[1], addTimeIds: kwargs.addTimeIds.chunk(2)[1] };
    };
    await expect(latentsOf({ callbackOnStepEnd: halveEmbeddingsOnly, callbackOnStepEndTensorInputs: ['promptEmbeds', 'addTextEmbeds', 'addTimeIds'] })).rejects.toThrow(
      /image has 2 rows but the next step needs 1: classifier-free guidance is off, so keep only the conditional half/,
    );
  });

  it('rejects bad control options with clear errors', async () => {
    const rejects = (options: LatentOptions, message: RegExp, on = pipeline) => expect(latentsOf(options, on)).rejects.toThrow(message);
    await rejects({ image: undefined }, /image is required: the control picture, or one per ControlNet/);
    await rejects({}, /image has 1 entries but the pipeline has 2 ControlNets; give one control image per ControlNet/, multi);
    await rejects({ image: [square, square, square] }, /image has 3 entries but the pipeline has 2 ControlNets/, multi);
    await rejects({ image: [square, square] }, /image has 2 entries but the pipeline has 1 ControlNet;/);
    await rejects({ image: [square, square], controlnetConditioningScale: [1] }, /controlnetConditioningScale has 1 entries but the pipeline has 2 ControlNets/, multi);
    await rejects({ controlGuidanceStart: 0.7, controlGuidanceEnd: 0.2 }, /need 0 ≤ start < end ≤ 1, got start 0.7 and end 0.2\./);
    await rejects({ originalSize: [64] as unknown as [number, number] }, /originalSize must be a pair of finite numbers/);
    await expect(latentsOf({ controlnetConditioningScale: Number.POSITIVE_INFINITY })).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe('StableDiffusionXLControlNetPipeline.fromPretrained', () => {
  let other: string;
  beforeEach(async () => {
    other = await mkdtemp(join(tmpdir(), 'diff-sdxl-controlnet-other-'));
  });
  afterEach(async () => {
    await rm(other, { recursive: true, force: true });
  });

  it('refuses an SD 1.x ControlNet, which was made for another UNet', async () => {
    await writeToyPipeline(other, 'sd-controlnet');
    const mismatched = await StableDiffusionXLControlNetPipeline.fromPretrained(toys.dir, { controlnets: [join(other, 'controlnet')] });
    try {
      const run = latentsOf({}, mismatched);
      await expect(run).rejects.toThrow(ModelLoadError);
      await expect(run).rejects.toThrow(
        /controlnet[/\\]model\.onnx: takes sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale, but this pipeline feeds its ControlNets .*text_embeds, time_ids: this ControlNet was made for another UNet/,
      );
    } finally {
      await mismatched.dispose();
    }
  });

  it('refuses a ControlNet whose text embeddings are not as wide as the UNet’s', async () => {
    await writeToyPipeline(other, 'sdxl-controlnet', { hiddenSize: 4 });
    const mismatched = await StableDiffusionXLControlNetPipeline.fromPretrained(toys.dir, { controlnets: [join(other, 'controlnet')] });
    try {
      await expect(mismatched.residualNames()).rejects.toThrow(/takes text embeddings 8 wide, but the UNet \(.*\) takes 16: this ControlNet was made for another UNet/);
    } finally {
      await mismatched.dispose();
    }
  });

  it('refuses a folder without a ControlNet and an empty controlnets list', async () => {
    await writeToyPipeline(other, 'sdxl');
    await expect(StableDiffusionXLControlNetPipeline.fromPretrained(other)).rejects.toThrow(/controlnet[/\\]model\.onnx: is missing/);
    await expect(StableDiffusionXLControlNetPipeline.fromPretrained(toys.dir, { controlnets: [] })).rejects.toThrow(/controlnets lists no folder/);
  });

  it('is what AutoPipelineForText2Image loads for an SDXL ControlNet folder', async () => {
    const auto = await AutoPipelineForText2Image.fromPretrained(toys.dir);
    try {
      expect(auto).toBeInstanceOf(StableDiffusionXLControlNetPipeline);
    } finally {
      await auto.dispose();
    }
  });
});

// The diffusers references, where the shared conformance data is present.
interface ControlNetRunRef extends ReferenceRun {
  /** The control picture, as refs.json describes it (see `describedImage`). */
  control_image: string;
}

/** The refs' callbacks by name. */
const CALLBACKS: Readonly<Record<string, (args: Record<string, number>) => CallbackPlugin<'promptEmbeds' | 'addTextEmbeds' | 'addTimeIds' | 'image'>>> = {
  SDXLControlnetCFGCutoffCallback: (args) => controlnetCfgCutoff(args.cutoff_step_ratio),
};
const sdxlControlnetRuns: ControlNetRunRef[] = readSharedRefs<{ sdxl_controlnet_runs?: ControlNetRunRef[] }>()?.sdxl_controlnet_runs ?? [];

(sdxlControlnetRuns.length > 0 ? describe : describe.skip)('diffusers conformance (shared refs.json sdxl_controlnet_runs)', () => {
  test.each(sdxlControlnetRuns.map((run) => [run.id, run] as const))('%s', async (_id, run) => {
    const callback = run.callback === null ? undefined : CALLBACKS[run.callback];
    if (run.callback !== null) expect(callback).toBeDefined();
    // Entries where diffusers crashed carry no scheduler config: the model folder's own then.
    const scheduler = run.scheduler_config && referenceScheduler({ scheduler: run.scheduler, scheduler_config: run.scheduler_config });
    const controlnet = await StableDiffusionXLControlNetPipeline.fromPretrained(join(SHARED_CONFORMANCE_DIR, run.model), { scheduler });
    try {
      const steps: Array<Record<'latents' | 'promptEmbeds' | 'image', Tensor>> = [];
      const record = (_state: CallbackPipeline, _step: number, _t: number, kwargs: CallbackKwargs<'latents' | 'promptEmbeds' | 'image'>) => void steps.push({ ...kwargs });
      const options = camelCaseKeys(run.kwargs) as Partial<StableDiffusionXLControlNetOptions<'latents' | 'promptEmbeds' | 'image', 'np'>>;
      const { images } = await controlnet.generate({
        ...options,
        image: describedImage(run.control_image),
        generator: new Generator().manualSeed(run.seed),
        callbackOnStepEnd: [callback?.(run.callback_args ?? {}), record],
        callbackOnStepEndTensorInputs: ['latents', 'promptEmbeds', 'image'],
        outputType: 'np',
      });
      const imageCount = options.numImagesPerPrompt ?? 1;
      expect(images.shape).toEqual([imageCount, 64, 64, 3]);

      if (run.diffusers_error) {
        // diffusers crashes here; ours runs to the end, on the conditional half once guidance is cut off.
        const cutoffStep = Math.trunc(steps.length * run.callback_args!.cutoff_step_ratio);
        const rows = steps.map((_, i) => (i < cutoffStep ? 2 * imageCount : imageCount));
        expect(steps.map((step) => step.image.shape[0])).toEqual(rows);
        expect(steps.map((step) => step.promptEmbeds.shape[0])).toEqual(rows);
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
    image: square,
    callbackOnStepEndTensorInputs: ['image', 'addTimeIds'],
    callbackOnStepEnd: (_state, _step, _t, kwargs) => ({ image: kwargs.image, addTimeIds: kwargs.addTimeIds }),
  });
  // @ts-expect-error `negativePromptEmbeds` is an SD 1.x tensor; SDXL pipelines offer none.
  void pipeline.generate({ prompt: 'x', image: square, callbackOnStepEndTensorInputs: ['negativePromptEmbeds'] });
  // @ts-expect-error the control picture is required.
  void pipeline.generate({ prompt: 'x' });
}
