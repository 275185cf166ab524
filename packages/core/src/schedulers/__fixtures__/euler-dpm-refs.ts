import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import type { Scheduler } from '../scheduler.js';
import { runToyTrajectory } from './toy-trajectory.js';
import { readSharedRefs } from '../../__fixtures__/shared-conformance.js';

/** One recorded step of the toy trajectory: `prev_head` is the start of prev_sample (all of it for shared refs). */
export interface RefStep {
  step: number;
  scaled_input_sum: number;
  prev_sum: number;
  prev_head: number[];
}

export interface RefCase {
  scheduler: string;
  config: Record<string, unknown>;
  steps: number;
  timesteps: number[];
  sigmas: number[];
  init_noise_sigma: number;
  trajectory: RefStep[];
}

/** The cases of one of the `<scheduler>-refs.json` fixtures beside this file (cut from refs.json). */
export function fixtureCases(fileName: string): RefCase[] {
  const file = fileURLToPath(new URL(`./${fileName}`, import.meta.url));
  return (JSON.parse(readFileSync(file, 'utf8')) as { cases: RefCase[] }).cases;
}

const sharedRefs = readSharedRefs<{ schedulers: SharedCase[] }>();

export const sharedRefsPresent = sharedRefs !== undefined;

interface SharedCase extends Omit<RefCase, 'trajectory'> {
  trajectory: { scaled_input_sum: number; prev: number[] }[];
}

/** The refs.json scheduler cases named `names`, every step and value kept; empty without the shared data. */
export function sharedCases(names: readonly string[]): RefCase[] {
  if (!sharedRefs) return [];
  return sharedRefs.schedulers
    .filter((c) => names.includes(c.scheduler))
    .map((c) => ({
      ...c,
      trajectory: c.trajectory.map((s, step) => ({
        step,
        scaled_input_sum: s.scaled_input_sum,
        prev_sum: s.prev.reduce((sum, v) => sum + v, 0),
        prev_head: s.prev,
      })),
    }));
}

/** |value − expected| beyond `absolute + relative·|expected|`, worst over the elements (≤ 0 passes). */
function worstExcess(values: ArrayLike<number>, expected: readonly number[], absolute: number, relative: number): number {
  let worst = -Infinity;
  for (let i = 0; i < expected.length; i++) {
    worst = Math.max(worst, Math.abs(values[i] - expected[i]) - (absolute + relative * Math.abs(expected[i])));
  }
  return worst;
}

/**
 * Runs the toy trajectory of `ref` and checks it within the conformance bounds: schedule abs 1e-4 + rel 1e-5,
 * trajectory abs 1e-4 + rel 1e-4 per value (the sum of prev gets 256 values' worth of absolute slack).
 * Returns the largest |prev − ref| seen, for reports.
 */
export function expectCaseMatches(scheduler: Scheduler & { readonly sigmas: Float32Array }, ref: RefCase): number {
  const trajectory = runToyTrajectory(scheduler, ref.steps);
  expect(scheduler.timesteps).toHaveLength(ref.timesteps.length);
  expect(worstExcess(scheduler.timesteps, ref.timesteps, 1e-4, 1e-5)).toBeLessThanOrEqual(0);
  expect(scheduler.sigmas).toHaveLength(ref.sigmas.length);
  expect(worstExcess(scheduler.sigmas, ref.sigmas, 1e-4, 1e-5)).toBeLessThanOrEqual(0);
  expect(worstExcess([scheduler.initNoiseSigma], [ref.init_noise_sigma], 1e-4, 1e-5)).toBeLessThanOrEqual(0);

  expect(trajectory).toHaveLength(ref.steps);
  let largestDifference = 0;
  for (const expected of ref.trajectory) {
    const ours = trajectory[expected.step];
    expect(worstExcess(ours.prev, expected.prev_head, 1e-4, 1e-4)).toBeLessThanOrEqual(0);
    const prevSum = ours.prev.reduce((sum, v) => sum + v, 0);
    expect(worstExcess([prevSum], [expected.prev_sum], 256 * 1e-4, 1e-4)).toBeLessThanOrEqual(0);
    expect(worstExcess([ours.scaledInputSum], [expected.scaled_input_sum], 1e-4, 1e-4)).toBeLessThanOrEqual(0);
    expected.prev_head.forEach((value, i) => {
      largestDifference = Math.max(largestDifference, Math.abs(ours.prev[i] - value));
    });
  }
  return largestDifference;
}
