// The image-conditioned pipelines against diffusers itself (the shared refs.json), where the shared conformance data
// is present: per-step latents within 5e-4 + 5e-4·|ref|, the image within 1e-3.
import { join } from 'node:path';
import { describedImage } from '@diff/test-fixtures';
import type { CallbackKwargs, CallbackPipeline } from '../contract.js';
import { Generator } from '../random/generator.js';
import type { Tensor } from '../tensor.js';
import { StableDiffusionImg2ImgPipeline } from './stable-diffusion-img2img.js';
import { StableDiffusionInpaintPipeline } from './stable-diffusion-inpaint.js';
import { expectMatchesReference, referenceScheduler, type ReferenceRun } from '../__fixtures__/conformance-runs.js';
import { SHARED_CONFORMANCE_DIR, readSharedRefs } from '../__fixtures__/shared-conformance.js';

const conformance = SHARED_CONFORMANCE_DIR;

interface RunRef extends ReferenceRun<{ cutoff_step_ratio: number }> {
  kwargs: { prompt: string; strength: number; num_inference_steps: number; guidance_scale: number };
  /** The pictures, as refs.json describes them (see `describedImage`). */
  init_image: string;
  mask_image?: string;
}

const refs = readSharedRefs<{ sd_runs: RunRef[]; inpaint_runs: RunRef[] }>();
const refCase = (section: 'sd_runs' | 'inpaint_runs', id: string) => refs![section].find((entry) => entry.id === id)!;

function optionsOf(ref: RunRef) {
  const { prompt, strength, num_inference_steps: numInferenceSteps, guidance_scale: guidanceScale } = ref.kwargs;
  return { prompt, strength, numInferenceSteps, guidanceScale, generator: new Generator().manualSeed(ref.seed), outputType: 'np' as const };
}

function schedulerOf({ scheduler, scheduler_config }: RunRef) {
  return scheduler_config && referenceScheduler({ scheduler, scheduler_config });
}

const recordLatents = (steps: Float32Array[]) => (_pipeline: unknown, _step: number, _timestep: number, kwargs: { latents: Tensor }) => {
  steps.push(kwargs.latents.data.slice());
};

(refs ? describe : describe.skip)('diffusers conformance of the image pipelines (shared refs.json)', () => {
  it('sd-img2img-ddim', async () => {
    const ref = refCase('sd_runs', 'sd-img2img-ddim');
    const pipe = await StableDiffusionImg2ImgPipeline.fromPretrained(join(conformance, ref.model), { scheduler: schedulerOf(ref) });
    const steps: Float32Array[] = [];
    const { images } = await pipe.generate({ ...optionsOf(ref), image: describedImage(ref.init_image), callbackOnStepEnd: recordLatents(steps) });
    await pipe.dispose();
    expectMatchesReference(ref, steps, images);
  });

  it('inpaint-ddim-full', async () => {
    const ref = refCase('inpaint_runs', 'inpaint-ddim-full');
    const pipe = await StableDiffusionInpaintPipeline.fromPretrained(join(conformance, ref.model), { scheduler: schedulerOf(ref) });
    const steps: Float32Array[] = [];
    const { images } = await pipe.generate({ ...optionsOf(ref), image: describedImage(ref.init_image), maskImage: describedImage(ref.mask_image!), callbackOnStepEnd: recordLatents(steps) });
    await pipe.dispose();
    expectMatchesReference(ref, steps, images);
  });

  it('inpaint-pndm-cfgcut runs to the end with the mask and masked-image latents halved at the cut-off', async () => {
    const ref = refCase('inpaint_runs', 'inpaint-pndm-cfgcut');
    const pipe = await StableDiffusionInpaintPipeline.fromPretrained(join(conformance, ref.model));
    const rowsPerStep: Record<string, number>[] = [];
    // What SDCFGCutoffCallback does: at int(numTimesteps · ratio), guidance off and every doubled tensor halved.
    const cfgCutoff = (pipeline: CallbackPipeline, step: number, _t: number, kwargs: CallbackKwargs<'latents' | 'promptEmbeds' | 'mask' | 'maskedImageLatents'>) => {
      let result = kwargs;
      if (step === Math.floor(pipeline.numTimesteps * ref.callback_args!.cutoff_step_ratio)) {
        pipeline.guidanceScale = 0;
        result = { ...kwargs };
        for (const name of ['promptEmbeds', 'mask', 'maskedImageLatents'] as const) result[name] = kwargs[name].chunk(2)[1];
      }
      rowsPerStep.push(Object.fromEntries(Object.entries(result).map(([name, tensor]) => [name, tensor.shape[0]])));
      return result;
    };
    const { images } = await pipe.generate({
      ...optionsOf(ref), image: describedImage(ref.init_image), maskImage: describedImage(ref.mask_image!),
      callbackOnStepEnd: cfgCutoff, callbackOnStepEndTensorInputs: ['latents', 'promptEmbeds', 'mask', 'maskedImageLatents'],
    });
    await pipe.dispose();
    expect(rowsPerStep).toHaveLength(11); // PNDM: 10 steps, 11 UNet calls
    expect(rowsPerStep[4]).toEqual({ latents: 1, promptEmbeds: 2, mask: 2, maskedImageLatents: 2 });
    for (const rows of rowsPerStep.slice(5)) expect(rows).toEqual({ latents: 1, promptEmbeds: 1, mask: 1, maskedImageLatents: 1 });
    expect(images.shape).toEqual([1, 64, 64, 3]);
    expect(images.data.every(Number.isFinite)).toBe(true);
  });
});
