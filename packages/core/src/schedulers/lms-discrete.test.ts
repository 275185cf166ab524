import { ConfigError, UnsupportedError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { expectTrajectoryMatches, runToyTrajectory, schedulerRefCase } from './__fixtures__/toy-trajectory.js';
import { LMSDiscreteScheduler } from './lms-discrete.js';

function filled(value: number): Tensor<'float32'> {
  return new Tensor(new Float32Array(4).fill(value), [1, 4, 1, 1]);
}

describe('LMSDiscreteScheduler', () => {
  test('reproduces the diffusers trajectory (4 steps)', () => {
    const ref = schedulerRefCase('lms', 4);
    const scheduler = LMSDiscreteScheduler.fromConfig(ref.config);
    expectTrajectoryMatches(runToyTrajectory(scheduler, 4), ref);
    expect(scheduler.initNoiseSigma).toBe(ref.init_noise_sigma);
  });

  test('timesteps and sigmas equal diffusers’ float32 values (25 steps, linspace by default)', () => {
    const ref = schedulerRefCase('lms', 25);
    const { timestep_spacing: _spacing, ...withoutSpacing } = ref.config;
    const scheduler = LMSDiscreteScheduler.fromConfig(withoutSpacing);
    scheduler.setTimesteps(25);
    expect(Array.from(scheduler.timesteps)).toEqual(ref.timesteps);
    expect(Array.from(scheduler.sigmas)).toEqual(ref.sigmas);
    expect(scheduler.initNoiseSigma).toBe(ref.init_noise_sigma);
  });

  test('Karras sigmas (ρ = 7 between the spaced σmax and σmin) and their timesteps', () => {
    const ref = schedulerRefCase('euler_karras', 25);
    const scheduler = LMSDiscreteScheduler.fromConfig(ref.config, { use_karras_sigmas: true });
    scheduler.setTimesteps(25);
    expect(Array.from(scheduler.sigmas)).toEqual(ref.sigmas);
    scheduler.timesteps.forEach((t, i) => expect(Math.abs(t - ref.timesteps[i])).toBeLessThanOrEqual(1e-4 + 1e-5 * ref.timesteps[i]));
  });

  test('exponential sigmas span the same range', () => {
    const scheduler = LMSDiscreteScheduler.fromConfig(schedulerRefCase('lms', 4).config, { useExponentialSigmas: true });
    scheduler.setTimesteps(4);
    expect(scheduler.sigmas[0]).toBeCloseTo(14.614647, 4);
    expect(scheduler.sigmas[3]).toBeCloseTo(0.0291675, 6);
    expect(scheduler.sigmas[1] / scheduler.sigmas[0]).toBeCloseTo(scheduler.sigmas[2] / scheduler.sigmas[1], 5);
  });

  test('with a constant derivative every order steps by (σᵢ₊₁ − σᵢ)·d: the coefficients sum to the interval', () => {
    const scheduler = LMSDiscreteScheduler.fromConfig(schedulerRefCase('lms', 4).config);
    scheduler.setTimesteps(6);
    let sample = filled(3);
    scheduler.timesteps.forEach((t, i) => {
      const { prevSample, predOriginalSample } = scheduler.step(filled(0.5), t, sample);
      const sigmas = scheduler.sigmas;
      expect(predOriginalSample?.data[0]).toBeCloseTo(sample.data[0] - sigmas[i] * 0.5, 4);
      expect(prevSample.data[0]).toBeCloseTo(sample.data[0] + (sigmas[i + 1] - sigmas[i]) * 0.5, 4);
      sample = prevSample;
    });
  });

  test('order 1 is Euler’s step; order is an option of step', () => {
    const scheduler = LMSDiscreteScheduler.fromConfig(schedulerRefCase('lms', 4).config);
    scheduler.setTimesteps(4);
    const [t0, t1] = scheduler.timesteps;
    const first = scheduler.step(filled(0.5), t0, filled(3), { order: 1 }).prevSample;
    const [s0, s1, s2] = scheduler.sigmas;
    const second = scheduler.step(filled(0.1), t1, first, { order: 1 }).prevSample;
    expect(second.data[0]).toBeCloseTo(first.data[0] + (s2 - s1) * 0.1, 5);
    expect(first.data[0]).toBeCloseTo(3 + (s1 - s0) * 0.5, 5);
    expect(() => scheduler.step(filled(0.1), scheduler.timesteps[2], second, { order: 0 })).toThrow(/order must be an integer ≥ 1/);
  });

  test('scaleModelInput divides by √(σ² + 1); leading spacing raises initNoiseSigma', () => {
    const scheduler = LMSDiscreteScheduler.fromConfig(schedulerRefCase('lms', 4).config);
    scheduler.setTimesteps(4);
    const sigma = scheduler.sigmas[0];
    expect(scheduler.scaleModelInput(filled(2), scheduler.timesteps[0]).data[0]).toBeCloseTo(2 / Math.sqrt(sigma * sigma + 1), 6);

    const leading = LMSDiscreteScheduler.fromConfig(schedulerRefCase('lms', 4).config, { timestep_spacing: 'leading' });
    leading.setTimesteps(4);
    expect(Array.from(leading.timesteps)).toEqual([751, 501, 251, 1]);
    expect(leading.initNoiseSigma).toBeCloseTo(Math.sqrt(leading.sigmas[0] ** 2 + 1), 5);
  });

  test('addNoise uses the timestep’s sigma, or the begin index once set (img2img)', () => {
    const scheduler = LMSDiscreteScheduler.fromConfig(schedulerRefCase('lms', 4).config);
    scheduler.setTimesteps(4);
    const [, t1, t2] = scheduler.timesteps;
    expect(scheduler.addNoise(filled(1), filled(2), t1).data[0]).toBeCloseTo(1 + 2 * scheduler.sigmas[1], 5);
    scheduler.setBeginIndex(2);
    expect(scheduler.addNoise(filled(1), filled(2), t2).data[0]).toBeCloseTo(1 + 2 * scheduler.sigmas[2], 5);
    expect(() => new LMSDiscreteScheduler().addNoise(filled(1), filled(2), 999)).toThrow(/before setTimesteps/);
  });

  test('rejects beta sigmas, conflicting sigma options, and use before setTimesteps', () => {
    expect(() => LMSDiscreteScheduler.fromConfig({ use_beta_sigmas: true })).toThrow(UnsupportedError);
    expect(() => LMSDiscreteScheduler.fromConfig({ use_karras_sigmas: true, use_exponential_sigmas: true })).toThrow(ConfigError);
    const scheduler = new LMSDiscreteScheduler();
    expect(() => scheduler.scaleModelInput(filled(1), 999)).toThrow(/scaleModelInput was called before setTimesteps/);
    expect(() => scheduler.step(filled(1), 999, filled(1))).toThrow(/step was called before setTimesteps/);
  });

  test('clone keeps the config and drops the stored derivatives', () => {
    const ref = schedulerRefCase('lms', 4);
    const scheduler = LMSDiscreteScheduler.fromConfig(ref.config);
    runToyTrajectory(scheduler, 2);
    const copy = scheduler.clone();
    expect(copy.config).toEqual(scheduler.config);
    expectTrajectoryMatches(runToyTrajectory(copy, 4), ref);
  });
});
