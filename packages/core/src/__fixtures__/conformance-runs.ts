// Shared pieces of the tests that replay diffusers' pipeline runs from refs.json.
import type { Scheduler } from '../schedulers/scheduler.js';
import { schedulerFromConfig } from '../schedulers/index.js';

/** refs.json's scheduler names (its README) → diffusers' classes; the `_karras` variants set it in their config. */
export const SCHEDULER_CLASSES: Readonly<Record<string, string>> = {
  pndm: 'PNDMScheduler',
  ddim: 'DDIMScheduler',
  ddim_trailing: 'DDIMScheduler',
  euler: 'EulerDiscreteScheduler',
  euler_karras: 'EulerDiscreteScheduler',
  euler_a: 'EulerAncestralDiscreteScheduler',
  dpmpp_2m: 'DPMSolverMultistepScheduler',
  dpmpp_2m_karras: 'DPMSolverMultistepScheduler',
  lms: 'LMSDiscreteScheduler',
};

/** The scheduler a reference run used, built from its recorded config. */
export function referenceScheduler(run: { scheduler: string; scheduler_config: Record<string, unknown> }): Scheduler {
  const className = SCHEDULER_CLASSES[run.scheduler];
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
