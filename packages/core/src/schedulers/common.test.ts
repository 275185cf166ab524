import { ConfigError } from '../errors.js';
import {
  BETA_SCHEDULE_CHECKS,
  BETA_SCHEDULE_FIELDS,
  alphasCumprodFor,
  betasFor,
  booleanField,
  choiceField,
  fmaF32,
  indexForTimestep,
  interp,
  karrasSigmas,
  logSigmasOf,
  numberField,
  numpyArange,
  numpyLinspace,
  parsePythonJson,
  rescaleZeroTerminalSnr,
  resolveSchedulerConfig,
  roundHalfToEven,
  sigmaToT,
  sigmasFromAlphasCumprod,
  spacedTimesteps,
  torchLinspaceF32,
  type BetaScheduleConfig,
  type SchedulerConfigSchema,
} from './common.js';

type ToyConfig = BetaScheduleConfig & { clipSample: boolean; lambdaMinClipped: number; variance: 'a' | 'b' | null };

const TOY_SCHEMA: SchedulerConfigSchema<ToyConfig> = {
  className: 'ToyScheduler',
  fields: {
    ...BETA_SCHEDULE_FIELDS,
    clipSample: booleanField(true),
    lambdaMinClipped: numberField(-Infinity),
    variance: choiceField(['a', 'b'] as const, null, { nullable: true }),
  },
  checks: BETA_SCHEDULE_CHECKS,
};

const SD_BETAS: BetaScheduleConfig = {
  numTrainTimesteps: 1000,
  betaStart: 0.00085,
  betaEnd: 0.012,
  betaSchedule: 'scaled_linear',
  trainedBetas: null,
};

describe('parsePythonJson', () => {
  test('reads bare NaN, Infinity and -Infinity outside strings', () => {
    const parsed = parsePythonJson('{"lambda_min_clipped": -Infinity, "a": [NaN, Infinity, 1.5e3], "s": "x"}') as Record<string, unknown>;
    expect(parsed.lambda_min_clipped).toBe(-Infinity);
    expect(parsed.a).toEqual([NaN, Infinity, 1500]);
    expect(parsed.s).toBe('x');
  });

  test('leaves the same words inside strings alone, escaped quotes included', () => {
    expect(parsePythonJson('{"k": "NaN -Infinity \\" Infinity", "n": NaN}')).toEqual({ k: 'NaN -Infinity " Infinity', n: NaN });
  });

  test('parses plain JSON like JSON.parse and rejects malformed text', () => {
    expect(parsePythonJson('[1, "two", null, true]')).toEqual([1, 'two', null, true]);
    expect(() => parsePythonJson('{"a": Nope}')).toThrow(SyntaxError);
    expect(() => parsePythonJson('{"a": 1,}')).toThrow(SyntaxError);
  });
});

describe('resolveSchedulerConfig', () => {
  test('fills class defaults and ignores metadata and keys of other classes', () => {
    const config = resolveSchedulerConfig(TOY_SCHEMA, {
      _class_name: 'PNDMScheduler',
      _diffusers_version: '0.40.0',
      _use_default_values: ['timestep_spacing'],
      skip_prk_steps: true,
      beta_schedule: 'scaled_linear',
    });
    expect(config).toEqual({
      numTrainTimesteps: 1000,
      betaStart: 0.0001,
      betaEnd: 0.02,
      betaSchedule: 'scaled_linear',
      trainedBetas: null,
      clipSample: true,
      lambdaMinClipped: -Infinity,
      variance: null,
    });
  });

  test('reads snake_case and camelCase keys; overrides (either case) win', () => {
    const config = resolveSchedulerConfig(
      TOY_SCHEMA,
      { beta_start: 0.001, betaEnd: 0.01, clip_sample: true },
      { clipSample: false, beta_end: 0.015 },
    );
    expect(config).toMatchObject({ betaStart: 0.001, betaEnd: 0.015, clipSample: false });
  });

  test('treats null as Python None: kept where the key allows it, false for booleans', () => {
    const config = resolveSchedulerConfig(TOY_SCHEMA, { trained_betas: null, variance: null, clip_sample: null });
    expect(config).toMatchObject({ trainedBetas: null, variance: null, clipSample: false });
    expect(() => resolveSchedulerConfig(TOY_SCHEMA, { beta_schedule: null })).toThrow(ConfigError);
  });

  test('accepts the non-finite spellings refs.json uses for Python floats', () => {
    expect(resolveSchedulerConfig(TOY_SCHEMA, { lambda_min_clipped: '-Infinity' }).lambdaMinClipped).toBe(-Infinity);
  });

  test.each([
    [{ beta_schedule: 'cosine' }, /ToyScheduler config: beta_schedule \(betaSchedule\) = "cosine".*one of "linear", "scaled_linear", "squaredcos_cap_v2"/],
    [{ num_train_timesteps: 0 }, /num_train_timesteps .* = 0 .*an integer ≥ 1/],
    [{ num_train_timesteps: 10.5 }, /num_train_timesteps .* = 10.5/],
    [{ clip_sample: 'yes' }, /clip_sample .* = "yes" .*true or false/],
    [{ beta_start: 0.02, beta_end: 0.01 }, /beta_start .* = 0.02 .*below beta_end \(0.01\)/],
    [{ beta_start: '0.001' }, /beta_start .* = "0.001"/],
    [{ trained_betas: [0.1, 0.2] }, /trained_betas .*num_train_timesteps \(1000\) betas/],
    [{ variance: 'c' }, /variance .* = "c" .*one of "a", "b" or null/],
  ])('rejects %j with a ConfigError naming class, key, value and what is allowed', (bad, message) => {
    expect(() => resolveSchedulerConfig(TOY_SCHEMA, bad)).toThrow(ConfigError);
    expect(() => resolveSchedulerConfig(TOY_SCHEMA, bad)).toThrow(message);
  });

  test('rejects a config that is not an object', () => {
    expect(() => resolveSchedulerConfig(TOY_SCHEMA, [] as unknown as Record<string, unknown>)).toThrow(/ToyScheduler config must be an object/);
  });
});

describe('float32 noise-schedule tables', () => {
  test('fmaF32 rounds once', () => {
    expect(fmaF32(1 + 2 ** -12, 1 + 2 ** -12, 0)).toBe(Math.fround(1 + 2 ** -11));
    // a·b + c = (1 + 3·2^-24) − 2^-70: just below the midpoint of two floats. Rounding to double first lands on the
    // midpoint, which would then tie to the even float above; one rounding gives the float below.
    const a = 2 ** -24 * (1 + 2 ** -23);
    const b = 1 - 2 ** -23;
    const c = 1 + 2 ** -23;
    expect(Math.fround(Math.fround(a * b + c))).toBe(1 + 2 ** -22);
    expect(fmaF32(a, b, c)).toBe(1 + 2 ** -23);
  });

  test('torch float32 linspace: first half from the start, second half from the end', () => {
    const values = torchLinspaceF32(0, 1, 5);
    expect(Array.from(values)).toEqual([0, 0.25, 0.5, 0.75, 1]);
    expect(torchLinspaceF32(3, 7, 1)[0]).toBe(3);
  });

  test('Stable Diffusion tables reproduce torch: σ at t = 999 and t = 0', () => {
    const sigmas = sigmasFromAlphasCumprod(alphasCumprodFor(betasFor(SD_BETAS)));
    expect(sigmas[999]).toBe(14.614646911621094);
    expect(sigmas[0]).toBe(Math.fround(0.029167532920837402));
  });

  test('linear and cosine schedules', () => {
    const linear = betasFor({ ...SD_BETAS, betaSchedule: 'linear', betaStart: 0.0001, betaEnd: 0.02 });
    expect(linear[0]).toBe(Math.fround(0.0001));
    expect(linear[999]).toBe(Math.fround(0.02));
    const cosine = betasFor({ ...SD_BETAS, betaSchedule: 'squaredcos_cap_v2' });
    expect(cosine[999]).toBe(Math.fround(0.999));
    expect(cosine[0]).toBeCloseTo(4.1e-5, 6);
  });

  test('trained betas are used as given', () => {
    const trained = Array.from({ length: 4 }, (_, i) => 0.1 * (i + 1));
    expect(Array.from(betasFor({ ...SD_BETAS, numTrainTimesteps: 4, trainedBetas: trained }))).toEqual(trained.map(Math.fround));
  });

  test('zero-terminal-SNR rescaling ends at ᾱ = 0 and keeps ᾱ₀', () => {
    const betas = betasFor(SD_BETAS);
    const rescaled = alphasCumprodFor(rescaleZeroTerminalSnr(betas));
    expect(rescaled[999]).toBe(0);
    expect(rescaled[0]).toBeCloseTo(alphasCumprodFor(betas)[0], 6);
  });
});

describe('numpy timestep spacing', () => {
  test('rounds half to even like numpy', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, 166.5, 2.4999].map(roundHalfToEven)).toEqual([0, 2, 2, -0, -2, 166, 2]);
  });

  test('linspace and arange follow numpy, including arange’s extra element', () => {
    expect(Array.from(numpyLinspace(0, 999, 1))).toEqual([0]);
    expect(Array.from(numpyLinspace(0, 1, 3))).toEqual([0, 0.5, 1]);
    expect(numpyArange(1000, 0, -1000 / 61)).toHaveLength(62);
    expect(numpyArange(1000, 0, -250)).toHaveLength(4);
  });

  test('leading, trailing and linspace spacing (values from numpy)', () => {
    const spaced = (spacing: 'leading' | 'trailing' | 'linspace', n: number, roundLinspace = true) =>
      Array.from(spacedTimesteps(spacing, 1000, n, 1, { roundLinspace }));
    expect(spaced('leading', 4)).toEqual([751, 501, 251, 1]);
    expect(spaced('trailing', 4)).toEqual([999, 749, 499, 249]);
    expect(spaced('trailing', 3)).toEqual([999, 666, 332]);
    expect(spaced('trailing', 61).slice(-3)).toEqual([32, 15, -1]);
    expect(spaced('linspace', 7)).toEqual([999, 832, 666, 500, 333, 166, 0]);
    expect(spaced('linspace', 4, false)).toEqual([999, 666, 333, 0]);
    expect(spaced('linspace', 1)).toEqual([0]);
  });
});

describe('interpolation helpers', () => {
  test('interp clamps and interpolates like np.interp', () => {
    const xp = [0, 1, 2];
    const fp = [10, 20, 40];
    expect([-1, 0, 0.5, 1.25, 2, 3].map((x) => interp(x, xp, fp))).toEqual([10, 10, 15, 25, 40, 40]);
  });

  test('sigmaToT inverts the table in log σ, clamped to the table', () => {
    const sigmas = sigmasFromAlphasCumprod(alphasCumprodFor(betasFor(SD_BETAS)));
    const logSigmas = logSigmasOf(sigmas);
    expect(sigmaToT(sigmas[500], logSigmas)).toBeCloseTo(500, 4);
    expect(sigmaToT(Math.sqrt(sigmas[10] * sigmas[11]), logSigmas)).toBeCloseTo(10.5, 2);
    expect(sigmaToT(100, logSigmas)).toBe(999);
    expect(sigmaToT(0, logSigmas)).toBe(0);
  });

  test('Karras sigmas run from σmax to σmin with ρ = 7', () => {
    const sigmas = karrasSigmas(0.1, 10, 3);
    expect(sigmas[0]).toBeCloseTo(10, 12);
    expect(sigmas[2]).toBeCloseTo(0.1, 12);
    expect(sigmas[1]).toBeCloseTo(((10 ** (1 / 7) + 0.1 ** (1 / 7)) / 2) ** 7, 12);
  });

  test('indexForTimestep takes the second occurrence of a repeated timestep', () => {
    expect(indexForTimestep([901, 801, 801, 701], 801)).toBe(2);
    expect(indexForTimestep([901, 801, 701], 801)).toBe(1);
    expect(indexForTimestep([957.375, 915.75], Math.fround(915.75))).toBe(1);
    expect(indexForTimestep([901, 801], 5)).toBeUndefined();
  });
});
