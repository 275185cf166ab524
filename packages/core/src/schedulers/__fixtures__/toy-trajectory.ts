import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { Generator, randn } from '../../random/generator.js';
import { Tensor } from '../../tensor.js';
import type { Scheduler } from '../scheduler.js';

export interface ToyStep {
  scaledInputSum: number;
  prev: Float32Array;
}

/**
 * The trajectory the conformance references record (shared/conformance/README.md): x = randn((1,4,8,8), seed=steps)
 * · init_noise_sigma; per timestep, xin = scale_model_input(x, t), eps = 0.3·xin + 0.05·sin(3·xin + t/100) in float32,
 * x = step(eps, t, x, generator seeded 1234).prev_sample.
 */
export function runToyTrajectory(scheduler: Scheduler, steps: number): ToyStep[] {
  const f32 = Math.fround;
  scheduler.setTimesteps(steps);
  const noise = randn([1, 4, 8, 8], { generator: new Generator().manualSeed(steps), dtype: 'float32' });
  const sigma = f32(scheduler.initNoiseSigma);
  let x = new Tensor(Float32Array.from(noise.data, (v) => v * sigma), noise.shape);
  const generator = new Generator().manualSeed(1234);
  const trajectory: ToyStep[] = [];
  for (const t of scheduler.timesteps) {
    const xin = scheduler.scaleModelInput(x, t);
    const shift = f32(t / 100);
    const eps = new Tensor(
      Float32Array.from(xin.data, (v) => f32(f32(0.3) * v) + f32(f32(0.05) * f32(Math.sin(f32(f32(3 * v) + shift))))),
      xin.shape,
    );
    x = scheduler.step(eps, t, x, { generator }).prevSample;
    trajectory.push({ scaledInputSum: xin.data.reduce((sum, v) => sum + v, 0), prev: x.data });
  }
  return trajectory;
}

export interface SchedulerRefCase {
  scheduler: string;
  config: Record<string, unknown>;
  steps: number;
  timesteps: number[];
  sigmas: number[] | null;
  init_noise_sigma: number;
  /** Per step: the sum of the scaled input, the sum of prev_sample and its first values. */
  trajectory?: { scaled_input_sum: number; prev_sum: number; prev_head: number[] }[];
}

/** The small copy of refs.json's scheduler cases kept beside the tests (see scheduler-refs.json `source`). */
export function schedulerRefCase(scheduler: string, steps: number): SchedulerRefCase {
  const file = fileURLToPath(new URL('./scheduler-refs.json', import.meta.url));
  const { cases } = JSON.parse(readFileSync(file, 'utf8')) as { cases: SchedulerRefCase[] };
  const found = cases.find((c) => c.scheduler === scheduler && c.steps === steps);
  if (!found) throw new Error(`No fixture case ${scheduler} with ${steps} steps.`);
  return found;
}

/** Asserts a toy trajectory against a fixture case within the conformance tolerance (abs 1e-4 + rel 1e-4). */
export function expectTrajectoryMatches(ours: ToyStep[], ref: SchedulerRefCase): void {
  const within = (value: number, expected: number, absolute: number, relative: number): boolean =>
    Math.abs(value - expected) <= absolute + relative * Math.abs(expected);
  const steps = ref.trajectory ?? [];
  expect(ours).toHaveLength(steps.length);
  steps.forEach((expected, i) => {
    const head = Array.from(ours[i].prev.slice(0, expected.prev_head.length));
    const badHead = head.filter((value, j) => !within(value, expected.prev_head[j], 1e-4, 1e-4));
    expect(badHead).toEqual([]);
    const prevSum = ours[i].prev.reduce((sum, v) => sum + v, 0);
    expect(within(prevSum, expected.prev_sum, 256 * 1e-4, 1e-4)).toBe(true);
    expect(within(ours[i].scaledInputSum, expected.scaled_input_sum, 1e-3, 1e-4)).toBe(true);
  });
}
