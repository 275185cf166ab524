import { ConfigError, InvalidArgumentError, UnsupportedError } from '../errors.js';
import { Generator, randn } from '../random/generator.js';
import type { Tensor } from '../tensor.js';
import { expectCaseMatches, fixtureCases, sharedCases, sharedRefsPresent } from './__fixtures__/euler-dpm-refs.js';
import { EulerAncestralDiscreteScheduler } from './euler-ancestral-discrete.js';
import { EulerDiscreteScheduler } from './euler-discrete.js';

const fixtures = fixtureCases('euler-ancestral-discrete-refs.json');
const SD_CONFIG = fixtures[0].config;

function randomTensor(seed: number, shape: readonly number[] = [1, 4, 8, 8]): Tensor<'float32'> {
  return randn(shape, { generator: new Generator().manualSeed(seed), dtype: 'float32' }) as Tensor<'float32'>;
}

function sdEulerAncestral(overrides: Record<string, unknown> = {}): EulerAncestralDiscreteScheduler {
  return EulerAncestralDiscreteScheduler.fromConfig(SD_CONFIG, overrides);
}

describe('EulerAncestralDiscreteScheduler against diffusers (fixtures)', () => {
  test.each(fixtures.map((c) => [`${c.scheduler} ${c.steps} steps`, c] as const))('%s', (_name, ref) => {
    expectCaseMatches(EulerAncestralDiscreteScheduler.fromConfig(ref.config), ref);
  });
});

const shared = sharedCases(['euler_a']);
(sharedRefsPresent ? describe : describe.skip)('EulerAncestralDiscreteScheduler against diffusers (shared refs.json)', () => {
  test.each(shared.map((c) => [`${c.scheduler} ${c.steps} steps`, c] as const))('%s', (_name, ref) => {
    const largest = expectCaseMatches(EulerAncestralDiscreteScheduler.fromConfig(ref.config), ref);
    if (process.env.SCHEDULER_CONFORMANCE_REPORT) console.log(`${ref.scheduler} ${ref.steps}: max |prev − ref| = ${largest}`);
  });
});

describe('EulerAncestralDiscreteScheduler', () => {
  test('has the Euler schedule', () => {
    for (const spacing of ['linspace', 'leading', 'trailing']) {
      const ancestral = sdEulerAncestral({ timestepSpacing: spacing });
      const euler = EulerDiscreteScheduler.fromConfig(SD_CONFIG, { timestepSpacing: spacing });
      ancestral.setTimesteps(7);
      euler.setTimesteps(7);
      expect(ancestral.timesteps).toEqual(euler.timesteps);
      expect(ancestral.sigmas).toEqual(euler.sigmas);
      expect(ancestral.initNoiseSigma).toBe(euler.initNoiseSigma);
    }
  });

  test('a step goes down to σ_down and adds σ_up of noise drawn from the generator', () => {
    const scheduler = sdEulerAncestral();
    scheduler.setTimesteps(4);
    const sample = randomTensor(1);
    const output = randomTensor(2);
    const [sigmaFrom, sigmaTo] = scheduler.sigmas;
    const sigmaUp = Math.sqrt((sigmaTo ** 2 * (sigmaFrom ** 2 - sigmaTo ** 2)) / sigmaFrom ** 2);
    const sigmaDown = Math.sqrt(sigmaTo ** 2 - sigmaUp ** 2);
    const { prevSample } = scheduler.step(output, scheduler.timesteps[0], sample, { generator: new Generator().manualSeed(3) });
    const noise = randomTensor(3);
    prevSample.data.forEach((value, i) => {
      expect(value).toBeCloseTo(sample.data[i] + output.data[i] * (sigmaDown - sigmaFrom) + noise.data[i] * sigmaUp, 4);
    });
  });

  test('noise is drawn on every step, the last one included (where σ_up = 0 and the step lands on x₀)', () => {
    const steps = 3;
    const scheduler = sdEulerAncestral();
    scheduler.setTimesteps(steps);
    const generator = new Generator().manualSeed(42);
    let sample = randomTensor(4);
    let last = scheduler.step(randomTensor(5), scheduler.timesteps[0], sample, { generator });
    for (const t of scheduler.timesteps.subarray(1)) {
      sample = last.prevSample;
      last = scheduler.step(randomTensor(6), t, sample, { generator });
    }
    last.prevSample.data.forEach((value, i) => expect(value).toBeCloseTo(last.predOriginalSample!.data[i], 5));

    const reference = new Generator().manualSeed(42);
    for (let i = 0; i < steps; i++) randn([1, 4, 8, 8], { generator: reference });
    expect(randn([5], { generator }).data).toEqual(randn([5], { generator: reference }).data);
  });

  test('v_prediction takes x₀ = v·(−σ/√(σ²+1)) + x/(σ²+1)', () => {
    const scheduler = sdEulerAncestral({ predictionType: 'v_prediction' });
    scheduler.setTimesteps(4);
    const sample = randomTensor(7);
    const velocity = randomTensor(8);
    const sigma = scheduler.sigmas[0];
    const { predOriginalSample } = scheduler.step(velocity, scheduler.timesteps[0], sample, { generator: new Generator() });
    sample.data.forEach((x, i) => {
      expect(predOriginalSample!.data[i]).toBeCloseTo(velocity.data[i] * (-sigma / Math.sqrt(sigma * sigma + 1)) + x / (sigma * sigma + 1), 5);
    });
  });

  test('clones share the config but not the run', () => {
    const scheduler = sdEulerAncestral();
    scheduler.setTimesteps(4);
    scheduler.step(randomTensor(9), scheduler.timesteps[0], randomTensor(10), { generator: new Generator() });
    const copy = scheduler.clone();
    expect(copy.config).toEqual(scheduler.config);
    expect(copy.stepIndex).toBeUndefined();
    expect(copy.timesteps).toHaveLength(0);
    expect(scheduler.stepIndex).toBe(1);
  });

  test('config: defaults, unknown keys ignored, errors', () => {
    const scheduler = new EulerAncestralDiscreteScheduler();
    expect(scheduler.className).toBe('EulerAncestralDiscreteScheduler');
    expect(scheduler.config).toMatchObject({ betaSchedule: 'linear', timestepSpacing: 'linspace', predictionType: 'epsilon' });
    expect(sdEulerAncestral({ use_karras_sigmas: true }).config).not.toHaveProperty('useKarrasSigmas');
    expect(() => sdEulerAncestral({ prediction_type: 'sample' })).toThrow(UnsupportedError);
    expect(() => sdEulerAncestral({ prediction_type: 'noise' })).toThrow(ConfigError);
    expect(() => scheduler.setTimesteps(0)).toThrow(InvalidArgumentError);
    expect(() => scheduler.setTimesteps(1001)).toThrow(InvalidArgumentError);
  });
});
