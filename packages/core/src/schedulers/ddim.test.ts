import { InvalidArgumentError, UnsupportedError } from '../errors.js';
import { Generator, randn } from '../random/generator.js';
import { Tensor } from '../tensor.js';
import { expectTrajectoryMatches, runToyTrajectory, schedulerRefCase } from './__fixtures__/toy-trajectory.js';
import { DDIMScheduler } from './ddim.js';

const SD_CONFIG = {
  _class_name: 'DDIMScheduler',
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  clip_sample: false,
  set_alpha_to_one: false,
  steps_offset: 1,
};

function filled(value: number, shape = [1, 4, 2, 2]): Tensor<'float32'> {
  return new Tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(value), shape);
}

describe('DDIMScheduler', () => {
  test.each([
    ['ddim', 4],
    ['ddim_trailing', 4],
  ])('reproduces the diffusers trajectory of %s with %i steps', (name, steps) => {
    const ref = schedulerRefCase(name, steps);
    const scheduler = DDIMScheduler.fromConfig(ref.config);
    expectTrajectoryMatches(runToyTrajectory(scheduler, steps), ref);
    expect(Array.from(scheduler.timesteps)).toEqual(ref.timesteps);
  });

  test.each([
    ['ddim', 25],
    ['ddim_trailing', 25],
  ])('schedules the diffusers timesteps of %s with %i steps', (name, steps) => {
    const ref = schedulerRefCase(name, steps);
    const scheduler = DDIMScheduler.fromConfig(ref.config);
    scheduler.setTimesteps(steps);
    expect(Array.from(scheduler.timesteps)).toEqual(ref.timesteps);
    expect(scheduler.initNoiseSigma).toBe(1);
  });

  test('defaults to leading spacing when the config has no timestep_spacing (SD 1.5)', () => {
    const scheduler = DDIMScheduler.fromConfig(SD_CONFIG);
    expect(scheduler.config.timestepSpacing).toBe('leading');
    scheduler.setTimesteps(10);
    expect(Array.from(scheduler.timesteps)).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
  });

  test('linspace spacing rounds half to even', () => {
    const scheduler = DDIMScheduler.fromConfig(SD_CONFIG, { timestep_spacing: 'linspace' });
    scheduler.setTimesteps(7);
    expect(Array.from(scheduler.timesteps)).toEqual([999, 832, 666, 500, 333, 166, 0]);
  });

  test('one step goes from timestep 1 to the final ᾱ', () => {
    const scheduler = DDIMScheduler.fromConfig(SD_CONFIG);
    scheduler.setTimesteps(1);
    expect(Array.from(scheduler.timesteps)).toEqual([1]);
    const sample = filled(1);
    const { prevSample, predOriginalSample } = scheduler.step(filled(0), 1, sample);
    // ε = 0: x₀ = x/√ᾱ₁ and x_prev = √ᾱ₀·x₀.
    const [alpha0, alpha1] = scheduler.alphasCumprod;
    expect(predOriginalSample?.data[0]).toBeCloseTo(1 / Math.sqrt(alpha1), 5);
    expect(prevSample.data[0]).toBeCloseTo(Math.sqrt(alpha0 / alpha1), 5);
  });

  test.each([0, 2.5, -3, 1001])('rejects %p inference steps with the allowed range', (steps) => {
    const scheduler = DDIMScheduler.fromConfig(SD_CONFIG);
    expect(() => scheduler.setTimesteps(steps)).toThrow(InvalidArgumentError);
    expect(() => scheduler.setTimesteps(steps)).toThrow(/integer from 1 to num_train_timesteps \(1000\)/);
  });

  test('step before setTimesteps says to call setTimesteps', () => {
    const scheduler = new DDIMScheduler();
    expect(() => scheduler.step(filled(0), 1, filled(1))).toThrow(/step was called before setTimesteps/);
  });

  test('a timestep outside the schedule and mismatched shapes are rejected', () => {
    const scheduler = DDIMScheduler.fromConfig(SD_CONFIG);
    scheduler.setTimesteps(4);
    expect(() => scheduler.step(filled(0), 500, filled(1))).toThrow(/timestep 500 is not in the current schedule/);
    expect(() => scheduler.step(filled(0, [1, 4, 2, 3]), 751, filled(1))).toThrow(/modelOutput has shape \[1, 4, 2, 3\]/);
  });

  test('eta > 0 adds σₜ·randn from the generator; eta = 0 draws nothing', () => {
    const run = (eta: number, generator: Generator) => {
      const scheduler = DDIMScheduler.fromConfig(SD_CONFIG);
      scheduler.setTimesteps(4);
      return scheduler.step(filled(0.1), 501, filled(1), { eta, generator }).prevSample;
    };
    const deterministic = run(0, new Generator().manualSeed(7));
    const untouched = new Generator().manualSeed(7);
    run(0, untouched);
    expect(untouched.getState()).toEqual(new Generator().manualSeed(7).getState());

    const noisy = run(1, new Generator().manualSeed(7));
    const noise = randn([1, 4, 2, 2], { generator: new Generator().manualSeed(7) }).data;
    const scheduler = DDIMScheduler.fromConfig(SD_CONFIG);
    const [alphaT, alphaPrev] = [scheduler.alphasCumprod[501], scheduler.alphasCumprod[251]];
    const std = Math.sqrt(((1 - alphaPrev) / (1 - alphaT)) * (1 - alphaT / alphaPrev));
    const predOriginal = (1 - Math.sqrt(1 - alphaT) * 0.1) / Math.sqrt(alphaT);
    noisy.data.forEach((value, i) => {
      const expected = Math.sqrt(alphaPrev) * predOriginal + Math.sqrt(1 - alphaPrev - std * std) * 0.1 + std * noise[i];
      expect(value).toBeCloseTo(expected, 5);
    });
    expect(noisy.data[0]).not.toBeCloseTo(deterministic.data[0], 3);
    expect(() => run(-1, new Generator())).toThrow(/eta must be a finite number ≥ 0/);
  });

  test('clip_sample clamps x₀ to ±clip_sample_range; sample and v prediction', () => {
    const clipped = DDIMScheduler.fromConfig(SD_CONFIG, { clip_sample: true, clip_sample_range: 0.5 });
    clipped.setTimesteps(4);
    expect(clipped.step(filled(-3), 751, filled(2)).predOriginalSample?.data[0]).toBeCloseTo(0.5, 6);

    const sample = DDIMScheduler.fromConfig(SD_CONFIG, { prediction_type: 'sample' });
    sample.setTimesteps(4);
    expect(sample.step(filled(0.25), 751, filled(2)).predOriginalSample?.data[0]).toBeCloseTo(0.25, 6);

    const velocity = DDIMScheduler.fromConfig(SD_CONFIG, { predictionType: 'v_prediction' });
    velocity.setTimesteps(4);
    const alpha = velocity.alphasCumprod[751];
    expect(velocity.step(filled(0.5), 751, filled(2)).predOriginalSample?.data[0]).toBeCloseTo(
      Math.sqrt(alpha) * 2 - Math.sqrt(1 - alpha) * 0.5,
      5,
    );
  });

  test('thresholding is rejected as unsupported', () => {
    expect(() => DDIMScheduler.fromConfig({ thresholding: true })).toThrow(UnsupportedError);
  });

  test('set_alpha_to_one and rescale_betas_zero_snr', () => {
    expect(new DDIMScheduler().finalAlphaCumprod).toBe(1);
    expect(DDIMScheduler.fromConfig(SD_CONFIG).finalAlphaCumprod).toBe(DDIMScheduler.fromConfig(SD_CONFIG).alphasCumprod[0]);
    expect(DDIMScheduler.fromConfig(SD_CONFIG, { rescale_betas_zero_snr: true }).alphasCumprod[999]).toBe(0);
  });

  test('addNoise mixes √ᾱ·x₀ with √(1−ᾱ)·noise', () => {
    const scheduler = DDIMScheduler.fromConfig(SD_CONFIG);
    const alpha = scheduler.alphasCumprod[501];
    const noisy = scheduler.addNoise(filled(1), filled(2), 501);
    expect(noisy.data[0]).toBeCloseTo(Math.sqrt(alpha) + 2 * Math.sqrt(1 - alpha), 6);
  });

  test('clone gives an independent scheduler with the same config and no run state', () => {
    const scheduler = DDIMScheduler.fromConfig(SD_CONFIG);
    scheduler.setTimesteps(4);
    scheduler.step(filled(0.1), 751, filled(1));
    const copy = scheduler.clone();
    expect(copy).toBeInstanceOf(DDIMScheduler);
    expect(copy.config).toEqual(scheduler.config);
    expect(copy.timesteps).toHaveLength(0);
    expect(copy.stepIndex).toBeUndefined();
    copy.setTimesteps(10);
    expect(scheduler.timesteps).toHaveLength(4);
    expect(scheduler.stepIndex).toBe(1);
  });

  test('setBeginIndex starts the step index there', () => {
    const scheduler = DDIMScheduler.fromConfig(SD_CONFIG);
    scheduler.setTimesteps(10);
    scheduler.setBeginIndex(4);
    scheduler.step(filled(0), 501, filled(1));
    expect(scheduler.stepIndex).toBe(5);
    expect(() => scheduler.setBeginIndex(-1)).toThrow(InvalidArgumentError);
  });
});
