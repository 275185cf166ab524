// Shared pieces of the tests that replay diffusers' pipeline runs from refs.json.
import type { Scheduler } from '../schedulers/scheduler.js';
import { REFERENCE_SCHEDULER_CLASSES } from '@diff/test-fixtures';
import { schedulerFromConfig } from '../schedulers/index.js';

/** The scheduler a reference run used, built from its recorded config. */
export function referenceScheduler(run: { scheduler: string; scheduler_config: Record<string, unknown> }): Scheduler {
  const className = REFERENCE_SCHEDULER_CLASSES[run.scheduler];
  if (!className) throw new Error(`refs.json names an unknown scheduler "${run.scheduler}".`);
  return schedulerFromConfig({ ...run.scheduler_config, _class_name: className });
}

/** The largest amount by which `actual` exceeds the README's bound `abs + rel·|ref|` (≤ 0: within tolerance). */
export function toleranceExcess(actual: ArrayLike<number>, expected: ArrayLike<number>, abs: number, rel: number): { excess: number; maxAbsDiff: number } {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} ≠ reference length ${expected.length}`);
  let excess = -Infinity;
  let maxAbsDiff = 0;
  for (let k = 0; k < actual.length; k++) {
    const diff = Math.abs(actual[k] - expected[k]);
    maxAbsDiff = Math.max(maxAbsDiff, diff);
    excess = Math.max(excess, diff - (abs + rel * Math.abs(expected[k])));
  }
  return { excess, maxAbsDiff };
}

/** diffusers' snake_case `__call__` kwargs as our pipelines' camelCase options. */
export function camelCaseKeys(kwargs: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(kwargs).map(([key, value]) => [key.replace(/_([a-z0-9])/g, (_, letter: string) => letter.toUpperCase()), value]));
}

/** A pipeline run of refs.json (see its README): how diffusers was called, and what it gave. */
export interface ReferenceRun<CallbackArgs = Record<string, number>> {
  id: string;
  model: string;
  scheduler: string;
  /** Absent where diffusers crashed: the model folder's own scheduler then. */
  scheduler_config?: Record<string, unknown>;
  seed: number;
  /** diffusers' `__call__` kwargs, snake_case. */
  kwargs: Record<string, unknown>;
  callback: string | null;
  callback_args: CallbackArgs | null;
  /** The latents after each step, and the output image (numpy layout); absent where diffusers crashed. */
  steps?: Array<{ step: number; latents: number[] }>;
  image?: { shape: number[]; data: number[] };
  /** What diffusers fails with on this run, where it does. */
  diffusers_error?: string;
}

/**
 * Expects our run to match a reference run within the README's tolerances (each step's latents within
 * 5e-4 + 5e-4·|ref|, the image within 1e-3), and logs the largest differences.
 */
export function expectMatchesReference(run: Pick<ReferenceRun, 'id' | 'steps' | 'image'>, stepLatents: ReadonlyArray<ArrayLike<number>>, image: { shape: readonly number[]; data: ArrayLike<number> }): void {
  if (!run.steps || !run.image) throw new Error(`refs.json records no steps or no image for ${run.id}.`);
  expect(stepLatents).toHaveLength(run.steps.length);
  expect(image.shape).toEqual(run.image.shape);
  const latentDiffs = run.steps.map((ref, i) => toleranceExcess(stepLatents[i], ref.latents, 5e-4, 5e-4));
  const imageDiff = toleranceExcess(image.data, run.image.data, 1e-3, 0);
  console.info(`${run.id}: latents max abs diff ${Math.max(...latentDiffs.map((diff) => diff.maxAbsDiff)).toExponential(2)}, image ${imageDiff.maxAbsDiff.toExponential(2)}`);
  for (const diff of latentDiffs) expect(diff.excess).toBeLessThanOrEqual(0);
  expect(imageDiff.excess).toBeLessThanOrEqual(0);
}
