// Shared pieces of the ControlNet pipelines' tests (SD 1.x and SDXL): toy pipelines with one and with two
// ControlNets, and the residuals a ControlNet hands the UNet.
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Tensor } from '../tensor.js';
import { writeToyPipeline } from '../testing/toy-models.js';
import { tensorFeed, type ModelCall } from './model-runs.js';

/** A ControlNet's outputs: the down-block residuals, then the mid-block one. */
export const CONTROLNET_RESIDUAL_OUTPUTS = ['down_block_res_sample_0', 'down_block_res_sample_1', 'down_block_res_sample_2', 'down_block_res_sample_3', 'mid_block_res_sample'];

/** The UNet inputs that take them, in the same order. */
export const UNET_RESIDUAL_INPUTS = [
  'down_block_additional_residual_0', 'down_block_additional_residual_1', 'down_block_additional_residual_2',
  'down_block_additional_residual_3', 'mid_block_additional_residual',
];

/** Guess mode's weights of the residuals, first down block to mid block: torch.logspace(-1, 0, 5). */
const GUESS_MODE_DEPTH_WEIGHTS = [0.1, 10 ** -0.75, 10 ** -0.5, 10 ** -0.25, 1];

/** A tensor's values times `factor` in float32 arithmetic, as the pipelines scale residuals. */
export const scaled = (tensor: Tensor, factor: number) => Array.from(tensor.data, (value) => Math.fround(value * Math.fround(factor)));

/** The residuals a UNet run was fed, in the order of `UNET_RESIDUAL_INPUTS`. */
export const residualsFed = (unetCall: ModelCall) => UNET_RESIDUAL_INPUTS.map((name) => tensorFeed(unetCall, name));

/** For each UNet run, whether it was fed a nonzero residual: whether a ControlNet acted at that step. */
export const controlNetActed = (unetCalls: readonly ModelCall[]) =>
  unetCalls.map((call) => residualsFed(call).some((residual) => residual.data.some((value) => value !== 0)));

/** Expects a UNet run fed the residuals of the ControlNet runs (one per ControlNet), each times its scale, summed in float32. */
export function expectResidualsFed(unetCall: ModelCall, controlCalls: readonly ModelCall[], scales: readonly number[]): void {
  residualsFed(unetCall).forEach((fed, k) => {
    const terms = controlCalls.map((call, j) => scaled(call.outputs[CONTROLNET_RESIDUAL_OUTPUTS[k]], scales[j]));
    expect(Array.from(fed.data)).toEqual(terms.reduce((sum, term) => sum.map((value, i) => Math.fround(value + term[i]))));
  });
}

/**
 * Expects a UNet run in guess mode: no residuals for the unconditional half; for the conditional half the ControlNet
 * run's, times `scale` and a depth weight that rises from 0.1 (first down block) to 1 (mid block).
 */
export function expectGuessModeResidualsFed(unetCall: ModelCall, controlCall: ModelCall, scale: number): void {
  residualsFed(unetCall).forEach((fed, k) => {
    const [unconditional, conditional] = fed.chunk(2);
    expect(unconditional.data.every((value) => value === 0)).toBe(true);
    const produced = controlCall.outputs[CONTROLNET_RESIDUAL_OUTPUTS[k]].data;
    conditional.data.forEach((value, i) => expect(value / produced[i]).toBeCloseTo(scale * GUESS_MODE_DEPTH_WEIGHTS[k], 5));
  });
}

export interface ControlNetToys<Pipeline> {
  /** The toy pipeline folder, with one ControlNet. */
  dir: string;
  /** A copy of it with a second ControlNet, `controlnet_1`. */
  multiDir: string;
  pipeline: Pipeline;
  multi: Pipeline;
  /** Disposes both pipelines and removes both folders. */
  dispose(): Promise<void>;
}

/** Writes the toy ControlNet pipeline of `kind` and its two-ControlNet copy to temporary folders, and loads both. */
export async function loadControlNetToys<Pipeline extends { dispose(): Promise<void> }>(
  pipelineClass: { fromPretrained(dir: string): Promise<Pipeline> },
  kind: 'sd-controlnet' | 'sdxl-controlnet',
): Promise<ControlNetToys<Pipeline>> {
  const dir = await mkdtemp(join(tmpdir(), `diff-${kind}-`));
  await writeToyPipeline(dir, kind);
  const multiDir = await mkdtemp(join(tmpdir(), `diff-multi-${kind}-`));
  await cp(dir, multiDir, { recursive: true });
  await cp(join(dir, 'controlnet'), join(multiDir, 'controlnet_1'), { recursive: true });
  const pipeline = await pipelineClass.fromPretrained(dir);
  const multi = await pipelineClass.fromPretrained(multiDir);
  return {
    dir,
    multiDir,
    pipeline,
    multi,
    async dispose() {
      await Promise.all([pipeline.dispose(), multi.dispose()]);
      await Promise.all([dir, multiDir].map((folder) => rm(folder, { recursive: true, force: true })));
    },
  };
}
