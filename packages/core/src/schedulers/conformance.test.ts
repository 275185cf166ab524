
import { runToyTrajectory } from './__fixtures__/toy-trajectory.js';
import { SCHEDULER_CLASS_NAMES, schedulerFromConfig } from './index.js';
import { readSharedRefs } from '../__fixtures__/shared-conformance.js';

/** The full diffusers references; checked only where the shared conformance data is present. */

const CLASS_OF_CASE: Readonly<Record<string, string>> = {
  pndm: 'PNDMScheduler',
  ddim: 'DDIMScheduler',
  ddim_trailing: 'DDIMScheduler',
  lms: 'LMSDiscreteScheduler',
  euler: 'EulerDiscreteScheduler',
  euler_karras: 'EulerDiscreteScheduler',
  euler_a: 'EulerAncestralDiscreteScheduler',
  dpmpp_2m: 'DPMSolverMultistepScheduler',
  dpmpp_2m_karras: 'DPMSolverMultistepScheduler',
};

interface RefCase {
  scheduler: string;
  config: Record<string, unknown>;
  steps: number;
  timesteps: number[];
  sigmas: number[] | null;
  init_noise_sigma: number;
  trajectory: { scaled_input_sum: number; prev: number[] }[];
}

const cases: RefCase[] = (readSharedRefs<{ schedulers: RefCase[] }>()?.schedulers ?? []).filter((c) =>
  SCHEDULER_CLASS_NAMES.includes(CLASS_OF_CASE[c.scheduler]),
);

/** Largest |ours − ref| − bound over the elements: ≤ 0 passes. */
function worstExcess(ours: ArrayLike<number>, ref: readonly number[], absolute: number, relative: number): number {
  let worst = -Infinity;
  for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(ours[i] - ref[i]) - (absolute + relative * Math.abs(ref[i])));
  return worst;
}

function maxAbsDiff(ours: ArrayLike<number>, ref: readonly number[]): number {
  let worst = 0;
  for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(ours[i] - ref[i]));
  return worst;
}

(cases.length > 0 ? describe : describe.skip)('diffusers conformance (shared refs.json)', () => {
  test.each(cases.map((c) => [`${c.scheduler} ${c.steps} steps`, c] as const))('%s', (_name, ref) => {
    const scheduler = schedulerFromConfig({ _class_name: CLASS_OF_CASE[ref.scheduler], ...ref.config });
    const trajectory = runToyTrajectory(scheduler, ref.steps);

    expect(Array.from(scheduler.timesteps)).toHaveLength(ref.timesteps.length);
    expect(worstExcess(scheduler.timesteps, ref.timesteps, 1e-4, 1e-5)).toBeLessThanOrEqual(0);
    if (ref.sigmas) {
      expect(worstExcess((scheduler as unknown as { sigmas: Float32Array }).sigmas, ref.sigmas, 1e-4, 1e-5)).toBeLessThanOrEqual(0);
    }
    expect(Math.abs(scheduler.initNoiseSigma - ref.init_noise_sigma)).toBeLessThanOrEqual(1e-4 + 1e-5 * ref.init_noise_sigma);

    let worstPrev = 0;
    ref.trajectory.forEach((expected, i) => {
      expect(worstExcess(trajectory[i].prev, expected.prev, 1e-4, 1e-4)).toBeLessThanOrEqual(0);
      expect(Math.abs(trajectory[i].scaledInputSum - expected.scaled_input_sum)).toBeLessThanOrEqual(1e-3 + 1e-4 * Math.abs(expected.scaled_input_sum));
      worstPrev = Math.max(worstPrev, maxAbsDiff(trajectory[i].prev, expected.prev));
    });
    if (process.env.SCHEDULER_CONFORMANCE_REPORT) console.log(`${ref.scheduler} ${ref.steps}: max |prev − ref| = ${worstPrev.toExponential(2)}`);
  });
});
