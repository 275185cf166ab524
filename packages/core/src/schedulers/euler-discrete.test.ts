import { ConfigError, InvalidArgumentError, UnsupportedError } from '../errors.js';
import { Generator, randn } from '../random/generator.js';
import type { Tensor } from '../tensor.js';
import { expectCaseMatches, fixtureCases, sharedCases, sharedRefsPresent } from './__fixtures__/euler-dpm-refs.js';
import { EulerDiscreteScheduler } from './euler-discrete.js';

const fixtures = fixtureCases('euler-discrete-refs.json');
/** SD 1.5's scheduler config as diffusers resolves it for Euler (with PNDM's extra keys, which are ignored). */
const SD_CONFIG = fixtures[0].config;

function randomTensor(seed: number, shape: readonly number[] = [1, 4, 8, 8]): Tensor<'float32'> {
  return randn(shape, { generator: new Generator().manualSeed(seed), dtype: 'float32' }) as Tensor<'float32'>;
}

function sdEuler(overrides: Record<string, unknown> = {}): EulerDiscreteScheduler {
  return EulerDiscreteScheduler.fromConfig(SD_CONFIG, overrides);
}

describe('EulerDiscreteScheduler against diffusers (fixtures)', () => {
  test.each(fixtures.map((c) => [`${c.scheduler} ${c.steps} steps`, c] as const))('%s', (_name, ref) => {
    expectCaseMatches(EulerDiscreteScheduler.fromConfig(ref.config), ref);
  });
});

const shared = sharedCases(['euler', 'euler_karras']);
(sharedRefsPresent ? describe : describe.skip)('EulerDiscreteScheduler against diffusers (shared refs.json)', () => {
  test.each(shared.map((c) => [`${c.scheduler} ${c.steps} steps`, c] as const))('%s', (_name, ref) => {
    const largest = expectCaseMatches(EulerDiscreteScheduler.fromConfig(ref.config), ref);
    if (process.env.SCHEDULER_CONFORMANCE_REPORT) console.log(`${ref.scheduler} ${ref.steps}: max |prev − ref| = ${largest}`);
  });
});

describe('EulerDiscreteScheduler schedules', () => {
  test('linspace spacing keeps fractional timesteps as float32 and ends the sigmas with 0', () => {
    const scheduler = sdEuler();
    scheduler.setTimesteps(25);
    expect(scheduler.timesteps[1]).toBe(957.375);
    expect(scheduler.sigmas).toHaveLength(26);
    expect(scheduler.sigmas[25]).toBe(0);
    expect(scheduler.initNoiseSigma).toBe(scheduler.sigmas[0]);
  });

  test('one step: numpy linspace(0, 999, 1) is [0], so the only sigma is the smallest training sigma', () => {
    const scheduler = sdEuler();
    scheduler.setTimesteps(1);
    expect(Array.from(scheduler.timesteps)).toEqual([0]);
    expect(Array.from(scheduler.sigmas)).toEqual([scheduler.trainingSigmas[0], 0]);
    expect(scheduler.initNoiseSigma).toBeCloseTo(0.0291675, 6);

    // Stepping to σ = 0 lands on the x₀ prediction.
    const sample = randomTensor(1);
    const { prevSample, predOriginalSample } = scheduler.step(randomTensor(2), 0, sample);
    prevSample.data.forEach((value, i) => expect(value).toBeCloseTo(predOriginalSample!.data[i], 5));
  });

  test('two steps run from the largest to the smallest training sigma', () => {
    const scheduler = sdEuler();
    scheduler.setTimesteps(2);
    expect(Array.from(scheduler.timesteps)).toEqual([999, 0]);
    expect(Array.from(scheduler.sigmas)).toEqual([scheduler.trainingSigmas[999], scheduler.trainingSigmas[0], 0]);
  });

  test('leading spacing adds steps_offset and starts from √(σmax² + 1)', () => {
    const scheduler = sdEuler({ timestep_spacing: 'leading' });
    scheduler.setTimesteps(4);
    expect(Array.from(scheduler.timesteps)).toEqual([751, 501, 251, 1]);
    const sigmaMax = scheduler.trainingSigmas[751];
    expect(scheduler.sigmas[0]).toBe(sigmaMax);
    expect(scheduler.initNoiseSigma).toBeCloseTo(Math.sqrt(sigmaMax * sigmaMax + 1), 5);
  });

  test('trailing spacing counts down from the last training timestep', () => {
    const scheduler = sdEuler({ timestepSpacing: 'trailing' });
    scheduler.setTimesteps(4);
    expect(Array.from(scheduler.timesteps)).toEqual([999, 749, 499, 249]);
    expect(scheduler.initNoiseSigma).toBe(scheduler.trainingSigmas[999]);
  });

  test('Karras sigmas span the spaced sigmas, with fractional (unrounded) timesteps', () => {
    const scheduler = sdEuler({ useKarrasSigmas: true });
    scheduler.setTimesteps(10);
    const { sigmas, timesteps, trainingSigmas } = scheduler;
    expect(sigmas[0]).toBe(trainingSigmas[999]);
    expect(sigmas[9]).toBe(trainingSigmas[0]);
    expect(sigmas[10]).toBe(0);
    // ρ = 7: σ^(1/7) evenly spaced.
    const root = (i: number): number => sigmas[i] ** (1 / 7);
    expect(root(1) - root(0)).toBeCloseTo(root(5) - root(4), 5);
    expect(Array.from(timesteps).some((t) => !Number.isInteger(t))).toBe(true);
  });

  test('sigma_min and sigma_max bound the Karras range', () => {
    const scheduler = sdEuler({ useKarrasSigmas: true, sigmaMin: 0.1, sigmaMax: 10 });
    scheduler.setTimesteps(5);
    expect(scheduler.sigmas[0]).toBeCloseTo(10, 5);
    expect(scheduler.sigmas[4]).toBeCloseTo(0.1, 6);
  });

  test('exponential sigmas are evenly spaced in log σ', () => {
    const scheduler = sdEuler({ use_exponential_sigmas: true });
    scheduler.setTimesteps(5);
    const logs = Array.from(scheduler.sigmas.subarray(0, 5), Math.log);
    expect(logs[1] - logs[0]).toBeCloseTo(logs[4] - logs[3], 5);
  });

  test('final_sigmas_type sigma_min ends with the smallest training sigma instead of 0', () => {
    const scheduler = sdEuler({ finalSigmasType: 'sigma_min' });
    scheduler.setTimesteps(4);
    expect(scheduler.sigmas[4]).toBe(scheduler.trainingSigmas[0]);
  });

  test('log_linear interpolation gives n + 1 sigmas evenly spaced in log σ, then the final 0', () => {
    const scheduler = sdEuler({ interpolation_type: 'log_linear' });
    scheduler.setTimesteps(4);
    expect(scheduler.sigmas).toHaveLength(6);
    expect(scheduler.sigmas[0]).toBeCloseTo(scheduler.trainingSigmas[999], 4);
    expect(scheduler.sigmas[4]).toBeCloseTo(scheduler.trainingSigmas[0], 6);
  });

  test('continuous timesteps with v_prediction are 0.25·log σ', () => {
    const scheduler = sdEuler({ timestepType: 'continuous', predictionType: 'v_prediction' });
    scheduler.setTimesteps(3);
    expect(scheduler.timesteps[0]).toBeCloseTo(0.25 * Math.log(scheduler.sigmas[0]), 6);
  });
});

describe('EulerDiscreteScheduler steps', () => {
  test('an epsilon step is x + (x − x₀)/σ·(σ_next − σ) with x₀ = x − σ·ε', () => {
    const scheduler = sdEuler();
    scheduler.setTimesteps(4);
    const sample = randomTensor(3);
    const output = randomTensor(4);
    const [sigma, sigmaNext] = scheduler.sigmas;
    const { prevSample } = scheduler.step(output, scheduler.timesteps[0], sample);
    const expected = sample.data.map((x, i) => x + output.data[i] * (sigmaNext - sigma));
    prevSample.data.forEach((value, i) => expect(value).toBeCloseTo(expected[i], 4));
    expect(scheduler.stepIndex).toBe(1);
  });

  test('v_prediction takes x₀ = v·(−σ/√(σ²+1)) + x/(σ²+1)', () => {
    const scheduler = sdEuler({ prediction_type: 'v_prediction' });
    scheduler.setTimesteps(4);
    const sample = randomTensor(5);
    const velocity = randomTensor(6);
    const [sigma, sigmaNext] = scheduler.sigmas;
    const { prevSample, predOriginalSample } = scheduler.step(velocity, scheduler.timesteps[0], sample);
    sample.data.forEach((x, i) => {
      const x0 = velocity.data[i] * (-sigma / Math.sqrt(sigma * sigma + 1)) + x / (sigma * sigma + 1);
      expect(predOriginalSample!.data[i]).toBeCloseTo(x0, 5);
      expect(prevSample.data[i]).toBeCloseTo(x + ((x - x0) / sigma) * (sigmaNext - sigma), 4);
    });
  });

  test('scaleModelInput divides by √(σ² + 1) of the current step', () => {
    const scheduler = sdEuler();
    scheduler.setTimesteps(4);
    const sample = randomTensor(7);
    const sigma = scheduler.sigmas[1];
    const scaled = scheduler.scaleModelInput(sample, scheduler.timesteps[1]);
    expect(scaled.data[0]).toBeCloseTo(sample.data[0] / Math.sqrt(sigma * sigma + 1), 6);
  });

  test('setBeginIndex starts the run mid-schedule (img2img) and addNoise uses that sigma', () => {
    const scheduler = sdEuler();
    scheduler.setTimesteps(10);
    scheduler.setBeginIndex(4);
    const original = randomTensor(8);
    const noise = randomTensor(9);
    const noisy = scheduler.addNoise(original, noise, scheduler.timesteps[4]);
    expect(noisy.data[3]).toBeCloseTo(original.data[3] + scheduler.sigmas[4] * noise.data[3], 5);
    scheduler.step(randomTensor(10), scheduler.timesteps[4], noisy);
    expect(scheduler.stepIndex).toBe(5);
  });

  test('clones share the config but not the run', () => {
    const scheduler = sdEuler({ useKarrasSigmas: true });
    scheduler.setTimesteps(4);
    scheduler.step(randomTensor(11), scheduler.timesteps[0], randomTensor(12));
    const copy = scheduler.clone();
    expect(copy).toBeInstanceOf(EulerDiscreteScheduler);
    expect(copy.config).toEqual(scheduler.config);
    expect(copy.timesteps).toHaveLength(0);
    expect(copy.stepIndex).toBeUndefined();
    copy.setTimesteps(7);
    expect(scheduler.timesteps).toHaveLength(4);
    expect(scheduler.stepIndex).toBe(1);
  });
});

describe('EulerDiscreteScheduler config', () => {
  test('defaults follow diffusers; camelCase and snake_case keys and overrides resolve alike', () => {
    const defaults = new EulerDiscreteScheduler();
    expect(defaults.className).toBe('EulerDiscreteScheduler');
    expect(defaults.order).toBe(1);
    expect(defaults.config).toMatchObject({ betaSchedule: 'linear', timestepSpacing: 'linspace', stepsOffset: 0, finalSigmasType: 'zero' });
    const fromSnake = EulerDiscreteScheduler.fromConfig({ use_karras_sigmas: true });
    const fromCamel = new EulerDiscreteScheduler({ useKarrasSigmas: true });
    expect(fromSnake.config).toEqual(fromCamel.config);
    expect(sdEuler({ use_karras_sigmas: true }).config.useKarrasSigmas).toBe(true);
  });

  test("another scheduler's config works, its unknown keys ignored", () => {
    const scheduler = EulerDiscreteScheduler.fromConfig({ ...SD_CONFIG, solver_order: 2, algorithm_type: 'dpmsolver++' });
    expect(scheduler.config).not.toHaveProperty('solverOrder');
    expect(scheduler.config.betaSchedule).toBe('scaled_linear');
  });

  test('bad values are ConfigErrors, unimplemented options UnsupportedErrors', () => {
    expect(() => sdEuler({ timestep_spacing: 'uniform' })).toThrow(ConfigError);
    expect(() => sdEuler({ interpolation_type: 'cubic' })).toThrow(ConfigError);
    expect(() => sdEuler({ use_karras_sigmas: true, use_exponential_sigmas: true })).toThrow(ConfigError);
    expect(() => sdEuler({ use_beta_sigmas: true })).toThrow(UnsupportedError);
  });

  test('setTimesteps rejects 0, fractions and more steps than training timesteps', () => {
    const scheduler = sdEuler();
    for (const bad of [0, 2.5, 1001, Number.NaN]) expect(() => scheduler.setTimesteps(bad)).toThrow(InvalidArgumentError);
    expect(() => scheduler.step(randomTensor(1), 999, randomTensor(2))).toThrow(InvalidArgumentError);
  });
});
