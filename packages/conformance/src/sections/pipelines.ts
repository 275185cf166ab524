import { EXACT, runChecks, type Check, type CheckOutcome, type Tolerance } from '../compare.js';
import type { RunRef } from '../refs.js';
import { settleCase, type CaseResult, type SectionName } from '../report.js';

export type PipelineSectionName = Extract<SectionName, 'sd_runs' | 'sdxl_runs' | 'inpaint_runs' | 'controlnet_runs'>;

const LATENTS_TOLERANCE: Tolerance = { atol: 5e-4, rtol: 5e-4 };
const IMAGE_TOLERANCE: Tolerance = { atol: 1e-3, rtol: 0 };

export interface PipelineRunOutput {
  /** The latents after each denoising step (read after that step's callback), flattened. */
  steps: Float32Array[];
  /** The decoded images, NHWC in [0, 1], flattened. */
  image?: Float32Array;
}

export type PipelineRunner = (caseSpec: RunRef, modelsDir: string) => Promise<PipelineRunOutput | 'unsupported'>;

/**
 * Runs one case through the project's pipeline and records what the refs hold: the model folder
 * `<modelsDir>/<caseSpec.model>`, the scheduler from `buildScheduler(caseSpec.scheduler, caseSpec.scheduler_config)`
 * (./schedulers.ts), one Generator seeded with `caseSpec.seed`, `caseSpec.kwargs` as the call's options, the callback
 * `caseSpec.callback` with `caseSpec.callback_args`, and the input pictures that `init_image`, `mask_image` and
 * `control_image` describe. Returns 'unsupported' for pipelines the project does not have yet — so far, all of them.
 */
export async function runPipelineCase(_caseSpec: RunRef, _modelsDir: string): Promise<PipelineRunOutput | 'unsupported'> {
  return 'unsupported';
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
          return { ok: null, maxAbsDiff: null, detail: `pipeline ${caseSpec.pipeline} not implemented yet` };
        }
        return checkPipelineRun(caseSpec, output);
      }),
    );
  }
  return results;
}
