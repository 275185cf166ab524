import { join } from 'node:path';
import * as core from '@diff/core';
import type { CallbackKwargs, CallbackPipeline, Tensor } from '@diff/core';
import { SDCFGCutoffCallback, SDXLCFGCutoffCallback, SDXLControlnetCFGCutoffCallback } from '@diff/callback-cfg-cutoff';
import { IPAdapterScaleCutoffCallback } from '@diff/callback-ipadapter';
import { describedImage } from '../inputs.js';
import { buildScheduler } from './schedulers.js';
import { EXACT, runChecks, type Check, type CheckOutcome, type Tolerance } from '../compare.js';
import type { RunRef } from '../refs.js';
import { settleCase, type CaseResult, type SectionName } from '../report.js';

export type PipelineSectionName = Exclude<SectionName, 'randn' | 'tokenizer' | 'schedulers' | 'image_encoder'>;

const LATENTS_TOLERANCE: Tolerance = { atol: 5e-4, rtol: 5e-4 };
const IMAGE_TOLERANCE: Tolerance = { atol: 1e-3, rtol: 0 };

export interface PipelineRunOutput {
  /** The latents after each denoising step (read after that step's callback), flattened. */
  steps: Float32Array[];
  /** The decoded images, NHWC in [0, 1], flattened. */
  image?: Float32Array;
  /** IP-Adapter runs: the scale after each step's callbacks. */
  ipAdapterScales?: number[];
}

export type PipelineRunner = (caseSpec: RunRef, modelsDir: string) => Promise<PipelineRunOutput | 'unsupported'>;

type GenerateOptions = Record<string, unknown>;
interface LoadedPipeline {
  scheduler: unknown;
  generate(options: GenerateOptions): Promise<{ images: Tensor }>;
}
type PipelineClass = { fromPretrained(dir: string): Promise<LoadedPipeline> };

/**
 * The class that runs each kind of case; the Auto pipelines pick the concrete one from model_index.json. Imported,
 * not looked up by name: a renamed or removed pipeline breaks this build instead of turning its cases 'unsupported'.
 */
const PIPELINE_CLASSES: Readonly<Record<string, PipelineClass>> = {
  text2img: core.AutoPipelineForText2Image as unknown as PipelineClass,
  img2img: core.AutoPipelineForImage2Image as unknown as PipelineClass,
  inpaint: core.AutoPipelineForInpainting as unknown as PipelineClass,
  // SD and SDXL ControlNet folders alike: model_index.json picks the pipeline.
  controlnet: core.AutoPipelineForText2Image as unknown as PipelineClass,
};

function pipelineClass(caseSpec: RunRef): PipelineClass | undefined {
  return Object.hasOwn(PIPELINE_CLASSES, caseSpec.pipeline) ? PIPELINE_CLASSES[caseSpec.pipeline] : undefined;
}

/** The callbacks the refs name, built as a user of @diff/core would write them. */
function caseCallback(caseSpec: RunRef): unknown {
  const args = caseSpec.callback_args ?? {};
  const cutoff = { cutoffStepRatio: args.cutoff_step_ratio as number | undefined, cutoffStepIndex: args.cutoff_step_index as number | undefined };
  switch (caseSpec.callback) {
    case null:
    case undefined:
    case 'None':
      return undefined;
    case 'SDCFGCutoffCallback':
      return new SDCFGCutoffCallback(cutoff);
    case 'SDXLCFGCutoffCallback':
      return new SDXLCFGCutoffCallback(cutoff);
    case 'SDXLControlnetCFGCutoffCallback':
      return new SDXLControlnetCFGCutoffCallback(cutoff);
    case 'IPAdapterScaleCutoffCallback':
      return new IPAdapterScaleCutoffCallback(cutoff);
    case 'interrupt':
      return (pipeline: CallbackPipeline, stepIndex: number) => {
        if (stepIndex === args.step_index) pipeline.interrupt = true;
      };
    case 'dynamic_cfg':
      // The seed guide's example: at int(num_timesteps · 0.4) keep the conditional embeddings and drop guidance.
      return (pipeline: CallbackPipeline, stepIndex: number, _timestep: number, kwargs: CallbackKwargs<'promptEmbeds'>) => {
        if (stepIndex === Math.trunc(pipeline.numTimesteps * 0.4)) {
          kwargs.promptEmbeds = kwargs.promptEmbeds.chunk(2)[1];
          pipeline.guidanceScale = 0;
        }
        return kwargs;
      };
    default:
      throw new core.UnsupportedError(`callback "${caseSpec.callback}" is not known to the conformance runner`);
  }
}

const camelCase = (key: string) => key.replace(/_([a-z0-9])/g, (_, letter: string) => letter.toUpperCase());

/**
 * Runs one case through the project's pipeline as a user would: the model folder `<modelsDir>/<caseSpec.model>`,
 * the scheduler from `buildScheduler`, one Generator seeded with `caseSpec.seed`, the kwargs camelCased, the case's
 * callback followed by a recorder of the latents after each step, and the input pictures the case describes.
 */
export async function runPipelineCase(caseSpec: RunRef, modelsDir: string): Promise<PipelineRunOutput | 'unsupported'> {
  const PipelineClass = pipelineClass(caseSpec);
  if (!PipelineClass) return 'unsupported';
  const pipeline = await PipelineClass.fromPretrained(join(modelsDir, caseSpec.model));
  // Entries where diffusers crashed carry no scheduler config: the model folder's own then, as diffusers would load it.
  pipeline.scheduler = buildScheduler(caseSpec.scheduler, caseSpec.scheduler_config ?? (pipeline.scheduler as { config: Record<string, unknown> }).config);

  const options: GenerateOptions = Object.fromEntries(Object.entries(caseSpec.kwargs).map(([key, value]) => [camelCase(key), value]));
  if (caseSpec.init_image) options.image = describedImage(caseSpec.init_image);
  if (caseSpec.mask_image) options.maskImage = describedImage(caseSpec.mask_image);
  if (caseSpec.control_image) options.image = describedImage(caseSpec.control_image);
  if (caseSpec.ip_adapter_image) options.ipAdapterImage = describedImage(caseSpec.ip_adapter_image);
  if (caseSpec.ip_adapter_scale !== undefined) options.ipAdapterScale = caseSpec.ip_adapter_scale;

  const steps: Float32Array[] = [];
  const ipAdapterScales: number[] = [];
  const recordLatents = (pipeline: CallbackPipeline, _step: number, _timestep: number, kwargs: CallbackKwargs<'latents'>) => {
    steps.push(kwargs.latents.data.slice());
    ipAdapterScales.push(pipeline.ipAdapterScale);
  };
  const { images } = await pipeline.generate({
    ...options,
    generator: new core.Generator().manualSeed(typeof caseSpec.seed === 'bigint' ? caseSpec.seed : BigInt(caseSpec.seed)),
    outputType: 'np',
    callbackOnStepEnd: [caseCallback(caseSpec), recordLatents],
    callbackOnStepEndTensorInputs: caseSpec.callback === 'dynamic_cfg' ? ['latents', 'promptEmbeds'] : ['latents'],
  });
  return { steps, image: images.data, ...(caseSpec.ip_adapter_image ? { ipAdapterScales } : {}) };
}

/** Compares a finished run with its reference; a case diffusers itself crashed on passes by running to the end. */
export function checkPipelineRun(caseSpec: RunRef, output: PipelineRunOutput): CheckOutcome {
  if (caseSpec.diffusers_error !== undefined) {
    return {
      ok: true,
      maxAbsDiff: null,
      detail: `ran to the end (steps: ${output.steps.length}); no reference: diffusers failed with ${caseSpec.diffusers_error}`,
    };
  }
  const expectedSteps = caseSpec.steps ?? [];
  const checks: Check[] = [
    { label: 'step count', actual: [output.steps.length], expected: [expectedSteps.length], tolerance: EXACT },
  ];
  expectedSteps.forEach((expected, i) => {
    const actual = output.steps[i];
    if (actual) checks.push({ label: `latents@${expected.step}`, actual, expected: expected.latents, tolerance: LATENTS_TOLERANCE });
  });
  const expectedScales = expectedSteps.map((step) => step.ip_adapter_scale_after);
  if (expectedScales.every((scale) => scale !== undefined) && expectedScales.length > 0) {
    checks.push({ label: 'ip_adapter_scale_after', actual: output.ipAdapterScales ?? [], expected: expectedScales as number[], tolerance: EXACT });
  }
  if (caseSpec.image) {
    checks.push({
      label: output.image ? 'image' : 'image (none returned)',
      actual: output.image ?? new Float32Array(0),
      expected: caseSpec.image.data,
      tolerance: IMAGE_TOLERANCE,
    });
  }
  return runChecks(checks, `${expectedSteps.length} steps' latents${caseSpec.image ? ' and the image' : ''} within tolerance`);
}

export async function checkPipelineSection(
  section: PipelineSectionName,
  entries: readonly RunRef[],
  modelsDir: string,
  run: PipelineRunner = runPipelineCase,
): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  for (const caseSpec of entries) {
    results.push(
      await settleCase(section, caseSpec.id, async () => {
        const output = await run(caseSpec, modelsDir);
        if (output === 'unsupported') {
          return { ok: null, maxAbsDiff: null, detail: `pipeline kind "${caseSpec.pipeline}" is not supported (known: ${Object.keys(PIPELINE_CLASSES).join(', ')})` };
        }
        return checkPipelineRun(caseSpec, output);
      }),
    );
  }
  return results;
}
