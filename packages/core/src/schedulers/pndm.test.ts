import { InvalidArgumentError, ConfigError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { expectTrajectoryMatches, runToyTrajectory, schedulerRefCase } from './__fixtures__/toy-trajectory.js';
import { PNDMScheduler } from './pndm.js';

function filled(value: number): Tensor<'float32'> {
  return new Tensor(new Float32Array(4).fill(value), [1, 4, 1, 1]);
}

describe('PNDMScheduler', () => {
  test('reproduces the diffusers PLMS trajectory (4 steps, 5 model calls)', () => {
    const ref = schedulerRefCase('pndm', 4);
    const scheduler = PNDMScheduler.fromConfig(ref.config);
    expectTrajectoryMatches(runToyTrajectory(scheduler, 4), ref);
    expect(Array.from(scheduler.timesteps)).toEqual([751, 501, 501, 251, 1]);
  });

  test('schedules N + 1 timesteps with skip_prk_steps, the second one repeated', () => {
    const ref = schedulerRefCase('pndm', 25);
    const scheduler = PNDMScheduler.fromConfig(ref.config);
    scheduler.setTimesteps(25);
    expect(Array.from(scheduler.timesteps)).toEqual(ref.timesteps);
    expect(scheduler.timesteps).toHaveLength(26);
  });

  test('one step is one call', () => {
    const scheduler = PNDMScheduler.fromConfig({ skip_prk_steps: true, steps_offset: 1 });
    scheduler.setTimesteps(1);
    expect(Array.from(scheduler.timesteps)).toEqual([1]);
    expect(scheduler.step(filled(0), 1, filled(1)).prevSample.shape).toEqual([1, 4, 1, 1]);
  });

  test('the repeated call restarts from the first call’s sample with the averaged output', () => {
    const scheduler = PNDMScheduler.fromConfig({ skip_prk_steps: true });
    scheduler.setTimesteps(10);
    const [first, second] = scheduler.timesteps;
    const start = filled(1);
    const afterFirst = scheduler.step(filled(0.2), first, start).prevSample;
    const afterRepeat = scheduler.step(filled(0.4), second, afterFirst).prevSample;

    const heun = PNDMScheduler.fromConfig({ skip_prk_steps: true });
    heun.setTimesteps(10);
    const direct = heun.step(filled(0.3), first, start).prevSample;
    expect(afterRepeat.data[0]).toBeCloseTo(direct.data[0], 6);
  });

  test('without skip_prk_steps: 12 Runge–Kutta calls over the last four timesteps, then PLMS', () => {
    const scheduler = new PNDMScheduler({ stepsOffset: 1 });
    scheduler.setTimesteps(10);
    expect(Array.from(scheduler.timesteps)).toEqual([
      901, 851, 851, 801, 801, 751, 751, 701, 701, 651, 651, 601, 601, 501, 401, 301, 201, 101, 1,
    ]);
    let sample = filled(1);
    for (const t of scheduler.timesteps) sample = scheduler.step(filled(0.1), t, sample).prevSample;
    expect(Number.isFinite(sample.data[0])).toBe(true);
    expect(() => scheduler.setTimesteps(3)).toThrow(/from 4 to num_train_timesteps/);
  });

  test('rejects prediction_type sample, bad step counts, and step before setTimesteps', () => {
    expect(() => PNDMScheduler.fromConfig({ prediction_type: 'sample' })).toThrow(ConfigError);
    const scheduler = new PNDMScheduler();
    expect(() => scheduler.step(filled(0), 1, filled(1))).toThrow(/before setTimesteps/);
    expect(() => scheduler.setTimesteps(1001)).toThrow(InvalidArgumentError);
    expect(() => scheduler.setTimesteps(0)).toThrow(/integer from 1 to num_train_timesteps \(1000\), got 0/);
  });

  test('clone is independent of the original run', () => {
    const ref = schedulerRefCase('pndm', 4);
    const scheduler = PNDMScheduler.fromConfig(ref.config);
    scheduler.setTimesteps(4);
    scheduler.step(filled(0.3), 751, filled(1));
    const copy = scheduler.clone();
    expectTrajectoryMatches(runToyTrajectory(copy, 4), ref);
    expect(scheduler.stepIndex).toBe(1);
  });
});
