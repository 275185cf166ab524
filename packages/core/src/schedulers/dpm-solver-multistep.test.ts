import { ConfigError, InvalidArgumentError, UnsupportedError } from '../errors.js';
import { Generator, randn } from '../random/generator.js';
import { Tensor } from '../tensor.js';
import { expectCaseMatches, fixtureCases, sharedCases, sharedRefsPresent } from './__fixtures__/euler-dpm-refs.js';
import { DPMSolverMultistepScheduler } from './dpm-solver-multistep.js';
import { EulerDiscreteScheduler } from './euler-discrete.js';

const fixtures = fixtureCases('dpm-solver-multistep-refs.json');
/** SD 1.5's scheduler config as diffusers resolves it for DPM-Solver (lambda_min_clipped written "-Infinity"). */
const SD_CONFIG = fixtures[0].config;

function randomTensor(seed: number, shape: readonly number[] = [1, 4, 8, 8]): Tensor<'float32'> {
  return randn(shape, { generator: new Generator().manualSeed(seed), dtype: 'float32' }) as Tensor<'float32'>;
}

function sdDpm(overrides: Record<string, unknown> = {}): DPMSolverMultistepScheduler {
  return DPMSolverMultistepScheduler.fromConfig(SD_CONFIG, overrides);
}

/** A smooth stand-in for the UNet, so that successive outputs differ as real ones do. */
function toyModel(sample: Tensor<'float32'>, timestep: number): Tensor<'float32'> {
  return new Tensor(sample.data.map((x) => 0.3 * x + 0.05 * Math.sin(3 * x + timestep / 100)), sample.shape);
}

interface RecordedStep {
  sample: Tensor<'float32'>;
  modelOutput: Tensor<'float32'>;
  prevSample: Tensor<'float32'>;
}

/** A whole run of `steps` steps with the toy model, every step's inputs and result kept. */
function run(scheduler: DPMSolverMultistepScheduler, steps: number): RecordedStep[] {
  scheduler.setTimesteps(steps);
  let sample = randomTensor(steps);
  return Array.from(scheduler.timesteps, (t) => {
    const modelOutput = toyModel(sample, t);
    const { prevSample } = scheduler.step(modelOutput, t, sample);
    const recorded = { sample, modelOutput, prevSample };
    sample = prevSample;
    return recorded;
  });
}

/** What a first-order (DPM-Solver++ 1S) update from step `index` of `recorded` gives. */
function firstOrderStep(config: Record<string, unknown>, steps: number, index: number, recorded: RecordedStep): Tensor<'float32'> {
  const firstOrder = sdDpm({ ...config, solverOrder: 1 });
  firstOrder.setTimesteps(steps);
  firstOrder.setBeginIndex(index);
  return firstOrder.step(recorded.modelOutput, firstOrder.timesteps[index], recorded.sample).prevSample;
}

describe('DPMSolverMultistepScheduler against diffusers (fixtures)', () => {
  test.each(fixtures.map((c) => [`${c.scheduler} ${c.steps} steps`, c] as const))('%s', (_name, ref) => {
    expectCaseMatches(DPMSolverMultistepScheduler.fromConfig(ref.config), ref);
  });
});

const shared = sharedCases(['dpmpp_2m', 'dpmpp_2m_karras']);
(sharedRefsPresent ? describe : describe.skip)('DPMSolverMultistepScheduler against diffusers (shared refs.json)', () => {
  test.each(shared.map((c) => [`${c.scheduler} ${c.steps} steps`, c] as const))('%s', (_name, ref) => {
    const largest = expectCaseMatches(DPMSolverMultistepScheduler.fromConfig(ref.config), ref);
    if (process.env.SCHEDULER_CONFORMANCE_REPORT) console.log(`${ref.scheduler} ${ref.steps}: max |prev − ref| = ${largest}`);
  });
});

describe('DPMSolverMultistepScheduler schedules', () => {
  test('linspace spacing rounds N + 1 points and drops the last; sigmas are the training sigmas, then 0', () => {
    const scheduler = sdDpm();
    scheduler.setTimesteps(2);
    expect(Array.from(scheduler.timesteps)).toEqual([999, 500]);
    expect(Array.from(scheduler.sigmas)).toEqual([scheduler.trainingSigmas[999], scheduler.trainingSigmas[500], 0]);
    expect(scheduler.initNoiseSigma).toBe(1);
  });

  test('leading and trailing spacing', () => {
    const leading = sdDpm({ timestep_spacing: 'leading' });
    leading.setTimesteps(4);
    expect(Array.from(leading.timesteps)).toEqual([801, 601, 401, 201]);
    const trailing = sdDpm({ timestep_spacing: 'trailing' });
    trailing.setTimesteps(4);
    expect(Array.from(trailing.timesteps)).toEqual([999, 749, 499, 249]);
  });

  test('Karras sigmas come from the full training range, with rounded timesteps, and drive the update', () => {
    const scheduler = sdDpm({ use_karras_sigmas: true });
    scheduler.setTimesteps(10);
    const { sigmas, timesteps, trainingSigmas } = scheduler;
    expect(sigmas[0]).toBe(trainingSigmas[999]);
    expect(sigmas[9]).toBe(trainingSigmas[0]);
    expect(sigmas[10]).toBe(0);
    expect(timesteps.every(Number.isInteger)).toBe(true);
    expect(timesteps[9]).toBe(0);
    expect(sigmas[3]).not.toBe(trainingSigmas[timesteps[3]]);
  });

  test('final_sigmas_type sigma_min ends with the smallest training sigma', () => {
    const scheduler = sdDpm({ final_sigmas_type: 'sigma_min' });
    scheduler.setTimesteps(4);
    expect(scheduler.sigmas[4]).toBe(scheduler.trainingSigmas[0]);
  });

  test('lambda_min_clipped leaves out the timesteps whose λ lies below it (cosine schedule)', () => {
    const scheduler = new DPMSolverMultistepScheduler({ betaSchedule: 'squaredcos_cap_v2', lambdaMinClipped: -5.1 });
    const clipped = Array.from(scheduler.alphasCumprod).filter((a) => 0.5 * Math.log(a / (1 - a)) < -5.1).length;
    expect(clipped).toBeGreaterThan(0);
    scheduler.setTimesteps(10);
    expect(scheduler.timesteps[0]).toBe(1000 - clipped - 1);
  });

  test('a timestep occurring twice starts the run at its second occurrence', () => {
    const scheduler = sdDpm({ useKarrasSigmas: true });
    scheduler.setTimesteps(300);
    const timesteps = Array.from(scheduler.timesteps);
    const repeated = timesteps.findIndex((t, i) => i > 0 && t === timesteps[i - 1]);
    expect(repeated).toBeGreaterThan(0);
    scheduler.step(randomTensor(1), timesteps[repeated], randomTensor(2));
    expect(scheduler.stepIndex).toBe(repeated + 1);
  });
});

describe('DPMSolverMultistepScheduler steps', () => {
  test('one step is first order to σ = 0, which is the x₀ prediction (x − σ_t·ε)/α_t', () => {
    const scheduler = sdDpm();
    scheduler.setTimesteps(1);
    expect(Array.from(scheduler.timesteps)).toEqual([999]);
    const sample = randomTensor(3);
    const output = randomTensor(4);
    const sigma = scheduler.sigmas[0];
    const alpha = 1 / Math.sqrt(sigma * sigma + 1);
    const { prevSample } = scheduler.step(output, 999, sample);
    prevSample.data.forEach((value, i) => expect(value).toBeCloseTo((sample.data[i] - sigma * alpha * output.data[i]) / alpha, 4));
  });

  test('v_prediction takes x₀ = α_t·x − σ_t·v', () => {
    const scheduler = sdDpm({ prediction_type: 'v_prediction' });
    scheduler.setTimesteps(1);
    const sample = randomTensor(5);
    const velocity = randomTensor(6);
    const sigma = scheduler.sigmas[0];
    const alpha = 1 / Math.sqrt(sigma * sigma + 1);
    const { prevSample } = scheduler.step(velocity, 999, sample);
    prevSample.data.forEach((value, i) => expect(value).toBeCloseTo(alpha * sample.data[i] - sigma * alpha * velocity.data[i], 5));
  });

  test('the first step is first order; the second uses the stored output', () => {
    const secondOrder = run(sdDpm(), 10);
    const firstOrder = run(sdDpm({ solver_order: 1 }), 10);
    expect(secondOrder[0].prevSample.data).toEqual(firstOrder[0].prevSample.data);
    expect(secondOrder[1].prevSample.data).not.toEqual(firstOrder[1].prevSample.data);
  });

  test('two steps: the last step lands on σ = 0 with a first-order update', () => {
    const recorded = run(sdDpm(), 2);
    expect(recorded[1].prevSample.data).toEqual(firstOrderStep({}, 2, 1, recorded[1]).data);
  });

  test('lower_order_final makes the last step first order below 15 steps only', () => {
    const config = { final_sigmas_type: 'sigma_min' };
    const lower = run(sdDpm(config), 5);
    const full = run(sdDpm({ ...config, lower_order_final: false }), 5);
    for (let i = 0; i < 4; i++) expect(lower[i].prevSample.data).toEqual(full[i].prevSample.data);
    expect(lower[4].prevSample.data).not.toEqual(full[4].prevSample.data);
    expect(lower[4].prevSample.data).toEqual(firstOrderStep(config, 5, 4, lower[4]).data);

    const long = run(sdDpm(config), 15);
    const longFull = run(sdDpm({ ...config, lower_order_final: false }), 15);
    expect(long[14].prevSample.data).toEqual(longFull[14].prevSample.data);
  });

  test('euler_at_final makes the last step first order whatever the step count', () => {
    const config = { final_sigmas_type: 'sigma_min' };
    const euler = run(sdDpm({ ...config, euler_at_final: true }), 16);
    const plain = run(sdDpm(config), 16);
    expect(euler[14].prevSample.data).toEqual(plain[14].prevSample.data);
    expect(euler[15].prevSample.data).not.toEqual(plain[15].prevSample.data);
    expect(euler[15].prevSample.data).toEqual(firstOrderStep({ ...config, euler_at_final: true }, 16, 15, euler[15]).data);
  });

  test('heun and midpoint differ from the second step on', () => {
    const heun = run(sdDpm({ solver_type: 'heun' }), 6);
    const midpoint = run(sdDpm(), 6);
    expect(heun[0].prevSample.data).toEqual(midpoint[0].prevSample.data);
    expect(heun[1].prevSample.data).not.toEqual(midpoint[1].prevSample.data);
    heun[1].prevSample.data.forEach((value, i) => expect(value).toBeCloseTo(midpoint[1].prevSample.data[i], 1));
  });

  test('third order starts on the third step', () => {
    const third = run(sdDpm({ solver_order: 3 }), 20);
    const second = run(sdDpm(), 20);
    expect(third[1].prevSample.data).toEqual(second[1].prevSample.data);
    expect(third[2].prevSample.data).not.toEqual(second[2].prevSample.data);
  });

  test('scaleModelInput is the identity; addNoise is α_t·x₀ + σ_t·noise', () => {
    const scheduler = sdDpm();
    scheduler.setTimesteps(4);
    const sample = randomTensor(7);
    expect(scheduler.scaleModelInput(sample, 999)).toBe(sample);
    const noise = randomTensor(8);
    const sigma = scheduler.sigmas[2];
    const alpha = 1 / Math.sqrt(sigma * sigma + 1);
    const noisy = scheduler.addNoise(sample, noise, scheduler.timesteps[2]);
    expect(noisy.data[5]).toBeCloseTo(alpha * sample.data[5] + sigma * alpha * noise.data[5], 5);
  });

  test('a timestep missing from the schedule maps to the last step, as in diffusers', () => {
    const scheduler = sdDpm();
    scheduler.setTimesteps(4);
    scheduler.step(randomTensor(9), 123, randomTensor(10));
    expect(scheduler.stepIndex).toBe(4);
  });

  test('clones share the config but not the stored outputs', () => {
    const scheduler = sdDpm();
    const original = run(scheduler, 6);
    const copy = scheduler.clone();
    expect(copy.config).toEqual(scheduler.config);
    expect(copy.stepIndex).toBeUndefined();
    const rerun = run(copy, 6);
    rerun.forEach((step, i) => expect(step.prevSample.data).toEqual(original[i].prevSample.data));
  });
});

describe('DPMSolverMultistepScheduler config', () => {
  test("builds from another scheduler's config with overrides", () => {
    const euler = EulerDiscreteScheduler.fromConfig(SD_CONFIG);
    const scheduler = DPMSolverMultistepScheduler.fromConfig(euler.config, { useKarrasSigmas: true });
    expect(scheduler.config).toMatchObject({ betaSchedule: 'scaled_linear', useKarrasSigmas: true, solverOrder: 2 });
    expect(scheduler.config).not.toHaveProperty('interpolationType');
    expect(sdDpm().config.lambdaMinClipped).toBe(-Infinity);
  });

  test("diffusers' legacy names read as supported values", () => {
    expect(sdDpm({ algorithm_type: 'deis' }).config.algorithmType).toBe('dpmsolver++');
    expect(sdDpm({ solver_type: 'bh2' }).config.solverType).toBe('midpoint');
  });

  test('unimplemented options are UnsupportedErrors naming what is supported; bad values ConfigErrors', () => {
    expect(() => sdDpm({ algorithm_type: 'sde-dpmsolver++' })).toThrow(/supported algorithm_type is "dpmsolver\+\+"/);
    expect(() => sdDpm({ algorithm_type: 'dpmsolver' })).toThrow(UnsupportedError);
    expect(() => sdDpm({ thresholding: true })).toThrow(UnsupportedError);
    expect(() => sdDpm({ use_beta_sigmas: true })).toThrow(UnsupportedError);
    expect(() => sdDpm({ variance_type: 'learned_range' })).toThrow(UnsupportedError);
    expect(() => sdDpm({ algorithm_type: 'euler' })).toThrow(ConfigError);
    expect(() => sdDpm({ solver_order: 4 })).toThrow(ConfigError);
    expect(() => sdDpm({ use_karras_sigmas: true, use_exponential_sigmas: true })).toThrow(ConfigError);
  });

  test('setTimesteps rejects 0, fractions and more steps than training timesteps', () => {
    const scheduler = sdDpm();
    for (const bad of [0, 1.5, 1001]) expect(() => scheduler.setTimesteps(bad)).toThrow(InvalidArgumentError);
  });
});
