import { Generator, Tensor, UnsupportedError, randn, schedulerFromConfig, type Scheduler } from '@diff/core';
import { REFERENCE_SCHEDULER_CLASSES } from '@diff/test-fixtures';
import { runChecks, type Check, type Tolerance } from '../compare.js';
import { reviveNonFinite, type SchedulerRef } from '../refs.js';
import { settleCase, type CaseOutcome, type CaseResult } from '../report.js';

const SCHEDULE_TOLERANCE: Tolerance = { atol: 1e-4, rtol: 1e-5 };
const TRAJECTORY_TOLERANCE: Tolerance = { atol: 1e-4, rtol: 1e-4 };


/** Builds the scheduler a refs entry names from its config (as written in refs.json); pipelines use it too. */
export function buildScheduler(name: string, config: Record<string, unknown>): Scheduler {
  const className = REFERENCE_SCHEDULER_CLASSES[name];
  if (!className) {
    throw new UnsupportedError(`unknown scheduler name "${name}"; known: ${Object.keys(REFERENCE_SCHEDULER_CLASSES).join(', ')}`);
  }
  return schedulerFromConfig({ ...reviveNonFinite(config), _class_name: className });
}

const f32 = Math.fround;

/**
 * The README's stand-in for a UNet, eps = 0.3·xin + 0.05·sin(3·xin + t/100), rounded as torch computes it in float32:
 * every operation rounds, and Python scalars become float32 first.
 */
function toyModel(xin: Tensor<'float32'>, timestep: number): Tensor<'float32'> {
  const shift = f32(f32(timestep) / 100);
  const [a, b] = [f32(0.3), f32(0.05)];
  return new Tensor(
    xin.data.map((x) => f32(a * x) + f32(b * f32(Math.sin(f32(f32(3 * x) + shift))))),
    xin.shape,
  );
}

function scaled(tensor: Tensor<'float32'>, factor: number): Tensor<'float32'> {
  const factor32 = f32(factor);
  return new Tensor(tensor.data.map((value) => value * factor32), tensor.shape);
}

function sum(values: ArrayLike<number>): number {
  let total = 0;
  for (let i = 0; i < values.length; i++) total += values[i];
  return total;
}

function checkSchedulerCase(ref: SchedulerRef): CaseOutcome {
  const scheduler = buildScheduler(ref.scheduler, ref.config);
  scheduler.setTimesteps(ref.steps);
  const checks: Check[] = [
    { label: 'timesteps', actual: scheduler.timesteps, expected: ref.timesteps, tolerance: SCHEDULE_TOLERANCE },
    {
      label: 'init_noise_sigma',
      actual: [scheduler.initNoiseSigma],
      expected: [ref.init_noise_sigma],
      tolerance: SCHEDULE_TOLERANCE,
    },
  ];
  if (ref.sigmas) {
    const { sigmas } = scheduler as Scheduler & { sigmas?: ArrayLike<number> };
    if (!sigmas) throw new Error(`${scheduler.className} exposes no sigmas; the reference has ${ref.sigmas.length}`);
    checks.push({ label: 'sigmas', actual: sigmas, expected: ref.sigmas, tolerance: SCHEDULE_TOLERANCE });
  }

  let sample = scaled(randn([1, 4, 8, 8], { generator: new Generator().manualSeed(ref.steps) }), scheduler.initNoiseSigma);
  const generator = new Generator().manualSeed(1234);
  const scaledInputSums: number[] = [];
  for (const [i, timestep] of scheduler.timesteps.entries()) {
    const modelInput = scheduler.scaleModelInput(sample, timestep);
    scaledInputSums.push(sum(modelInput.data));
    sample = scheduler.step(toyModel(modelInput, timestep), timestep, sample, { generator }).prevSample;
    const expected = ref.trajectory[i];
    if (expected) checks.push({ label: `prev@${i}`, actual: sample.data, expected: expected.prev, tolerance: TRAJECTORY_TOLERANCE });
  }
  checks.push({
    label: 'scaled_input_sum',
    actual: scaledInputSums,
    expected: ref.trajectory.map((step) => step.scaled_input_sum),
    tolerance: TRAJECTORY_TOLERANCE,
  });
  return runChecks(checks, `timesteps, ${ref.sigmas ? 'sigmas, ' : ''}init_noise_sigma, ${ref.trajectory.length}-step trajectory`);
}

export async function checkSchedulersSection(entries: readonly SchedulerRef[]): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  for (const ref of entries) {
    results.push(await settleCase('schedulers', `${ref.scheduler} ×${ref.steps}`, () => checkSchedulerCase(ref)));
  }
  return results;
}
