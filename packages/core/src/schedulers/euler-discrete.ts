import { UnsupportedError } from '../errors.js';
import { Tensor } from '../tensor.js';
import {
  BETA_SCHEDULE_CHECKS,
  BETA_SCHEDULE_FIELDS,
  PREDICTION_TYPES,
  SigmaScheduler,
  TIMESTEP_SPACINGS,
  alphasCumprodFor,
  assertSameShapes,
  betasFor,
  booleanField,
  choiceField,
  exponentialSigmas,
  f32,
  float32TensorFrom,
  integerField,
  karrasSigmas,
  logSigmasOf,
  numberField,
  rescaleZeroTerminalSnr,
  resolveSchedulerConfig,
  sigmaToT,
  sigmasAtTimesteps,
  spacedTimesteps,
  torchLinspaceF32,
  type BetaScheduleConfig,
  type ConfigProblem,
  type PredictionType,
  type SchedulerConfigSchema,
  type TimestepSpacing,
} from './common.js';
import type { SchedulerOutput, SchedulerStepOptions } from './scheduler.js';

/** diffusers' `EulerDiscreteScheduler` config, camelCased. */
export type EulerDiscreteConfig = BetaScheduleConfig & {
  predictionType: PredictionType;
  /** `linear`: sigmas interpolated at the timesteps; `log_linear`: evenly spaced in log σ. */
  interpolationType: 'linear' | 'log_linear';
  useKarrasSigmas: boolean;
  useExponentialSigmas: boolean;
  /** Not implemented (it needs scipy's beta quantiles): `true` is rejected. */
  useBetaSigmas: boolean;
  /** Ends of the Karras / exponential sigma range; null takes them from the spaced sigmas. */
  sigmaMin: number | null;
  sigmaMax: number | null;
  timestepSpacing: TimestepSpacing;
  /** `continuous` with v_prediction gives EDM-style timesteps `0.25·log σ`. */
  timestepType: 'discrete' | 'continuous';
  stepsOffset: number;
  rescaleBetasZeroSnr: boolean;
  /** The sigma after the last step: 0, or the smallest training sigma. */
  finalSigmasType: 'zero' | 'sigma_min';
};

/** At most one of the sigma re-spacings may be on, as diffusers requires. */
export function checkOneSigmaRespacing(config: {
  useKarrasSigmas: boolean;
  useExponentialSigmas: boolean;
  useBetaSigmas: boolean;
}): ConfigProblem | undefined {
  const { useKarrasSigmas, useExponentialSigmas, useBetaSigmas } = config;
  if ([useKarrasSigmas, useExponentialSigmas, useBetaSigmas].filter(Boolean).length <= 1) return undefined;
  return {
    key: 'useKarrasSigmas',
    value: { useKarrasSigmas, useExponentialSigmas, useBetaSigmas },
    allowed: 'at most one of use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas set to true',
  };
}

export const EULER_DISCRETE_CONFIG_SCHEMA: SchedulerConfigSchema<EulerDiscreteConfig> = {
  className: 'EulerDiscreteScheduler',
  fields: {
    ...BETA_SCHEDULE_FIELDS,
    predictionType: choiceField(PREDICTION_TYPES, 'epsilon'),
    interpolationType: choiceField(['linear', 'log_linear'], 'linear'),
    useKarrasSigmas: booleanField(false),
    useExponentialSigmas: booleanField(false),
    useBetaSigmas: booleanField(false),
    sigmaMin: numberField(null, { min: 0, minExclusive: true, nullable: true }),
    sigmaMax: numberField(null, { min: 0, minExclusive: true, nullable: true }),
    timestepSpacing: choiceField(TIMESTEP_SPACINGS, 'linspace'),
    timestepType: choiceField(['discrete', 'continuous'], 'discrete'),
    stepsOffset: integerField(0, { min: 0 }),
    rescaleBetasZeroSnr: booleanField(false),
    finalSigmasType: choiceField(['zero', 'sigma_min'], 'zero'),
  },
  checks: [...BETA_SCHEDULE_CHECKS, checkOneSigmaRespacing],
};

/**
 * The training `alphas_cumprod` of the Euler and DPM-Solver schedulers: with `rescale_betas_zero_snr` the betas are
 * rescaled and the last ᾱ is set to 2^-24 (fp16's smallest subnormal), so that the largest sigma stays finite.
 */
export function trainingAlphasCumprod(config: BetaScheduleConfig & { rescaleBetasZeroSnr: boolean }): Float32Array {
  if (!config.rescaleBetasZeroSnr) return alphasCumprodFor(betasFor(config));
  const alphasCumprod = alphasCumprodFor(rescaleZeroTerminalSnr(betasFor(config)));
  alphasCumprod[alphasCumprod.length - 1] = 2 ** -24;
  return alphasCumprod;
}

/**
 * The model's x₀ estimate in the k-diffusion parametrisation x = x₀ + σ·ε, in torch's float32 steps:
 * epsilon `x − σ·out`; v_prediction `out·(−σ/√(σ²+1)) + x/(σ²+1)`; sample `out`.
 */
export function eulerPredOriginalSample(
  predictionType: PredictionType,
  sigma: number,
  sample: Float32Array,
  modelOutput: Float32Array,
): Float32Array {
  switch (predictionType) {
    case 'epsilon':
      return sample.map((x, i) => x - f32(sigma * modelOutput[i]));
    case 'v_prediction': {
      const sigmaSquaredPlusOne = f32(f32(sigma * sigma) + 1);
      const outputScale = f32(-sigma / f32(Math.sqrt(sigmaSquaredPlusOne)));
      return sample.map((x, i) => f32(modelOutput[i] * outputScale) + f32(x / sigmaSquaredPlusOne));
    }
    case 'sample':
      return modelOutput.slice();
  }
}

/**
 * Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 2), ported from diffusers'
 * `EulerDiscreteScheduler` without churn (s_churn = 0): x₀ from the model, d = (x − x₀)/σ, x_next = x + d·(σ_next − σ).
 */
export class EulerDiscreteScheduler extends SigmaScheduler<EulerDiscreteConfig> {
  readonly className = 'EulerDiscreteScheduler';
  readonly computesPredOriginalSample = true;

  static fromConfig(
    config: Readonly<Record<string, unknown>>,
    overrides?: Readonly<Record<string, unknown>>,
  ): EulerDiscreteScheduler {
    return new EulerDiscreteScheduler(resolveSchedulerConfig(EULER_DISCRETE_CONFIG_SCHEMA, config, overrides));
  }

  constructor(config: Partial<EulerDiscreteConfig> = {}) {
    const resolved = resolveSchedulerConfig(EULER_DISCRETE_CONFIG_SCHEMA, {}, config);
    if (resolved.useBetaSigmas) {
      throw new UnsupportedError(
        'EulerDiscreteScheduler: use_beta_sigmas is not supported; use use_karras_sigmas or use_exponential_sigmas.',
      );
    }
    super(resolved, trainingAlphasCumprod(resolved));
  }

  setTimesteps(numInferenceSteps: number): void {
    const { numTrainTimesteps, timestepSpacing, stepsOffset, sigmaMin, sigmaMax } = this.config;
    this.checkNumInferenceSteps(numInferenceSteps, numTrainTimesteps);
    // diffusers stores the spaced timesteps as float32 before interpolating the sigmas at them.
    let timesteps: ArrayLike<number> = spacedTimesteps(timestepSpacing, numTrainTimesteps, numInferenceSteps, stepsOffset, {
      roundLinspace: false,
    }).map(f32);
    let sigmas: ArrayLike<number> =
      this.config.interpolationType === 'linear'
        ? sigmasAtTimesteps(timesteps, this.trainingSigmas)
        : this.logLinearSigmas(numInferenceSteps);

    if (this.config.useKarrasSigmas || this.config.useExponentialSigmas) {
      const respace = this.config.useKarrasSigmas ? karrasSigmas : exponentialSigmas;
      sigmas = respace(sigmaMin ?? sigmas[sigmas.length - 1], sigmaMax ?? sigmas[0], numInferenceSteps);
      const logSigmas = logSigmasOf(this.trainingSigmas);
      // Fractional timesteps: unlike DPM-Solver, Euler does not round them.
      timesteps = Array.from(sigmas, (sigma) => sigmaToT(sigma, logSigmas));
    }

    const runSigmas = Float32Array.from(sigmas);
    if (this.config.timestepType === 'continuous' && this.config.predictionType === 'v_prediction') {
      timesteps = runSigmas.map((sigma) => 0.25 * f32(Math.log(sigma)));
    }
    this.startSigmaRun(timesteps, runSigmas, numInferenceSteps);
    if (this.config.finalSigmasType === 'sigma_min') {
      // ((1 − ᾱ₀)/ᾱ₀)^½ replaces the final 0 that startSigmaRun appends.
      this.currentSigmas[this.currentSigmas.length - 1] = this.trainingSigmas[0];
    }
  }

  step(
    modelOutput: Tensor<'float32'>,
    timestep: number,
    sample: Tensor<'float32'>,
    _options: SchedulerStepOptions = {},
  ): SchedulerOutput {
    this.assertTimestepsSet('step');
    assertSameShapes(this.className, 'step', { sample, modelOutput });
    const stepIndex = this.stepIndexFor(timestep);
    const sigma = this.currentSigmas[stepIndex];
    const dt = f32(this.currentSigmas[stepIndex + 1] - sigma);

    const x = sample.data;
    const predOriginal = eulerPredOriginalSample(this.config.predictionType, sigma, x, modelOutput.data);
    const prevSample = float32TensorFrom(sample.shape, (i) => {
      const derivative = f32(f32(x[i] - predOriginal[i]) / sigma);
      return x[i] + f32(derivative * dt);
    });
    this.advanceStepIndex();
    return { prevSample, predOriginalSample: new Tensor(predOriginal, sample.shape) };
  }

  /** `interpolation_type="log_linear"`: n + 1 sigmas evenly spaced in log σ from σmax to σmin (torch float32). */
  private logLinearSigmas(numInferenceSteps: number): Float32Array {
    const training = this.trainingSigmas;
    const logMax = f32(Math.log(training[training.length - 1]));
    const logMin = f32(Math.log(training[0]));
    return torchLinspaceF32(logMax, logMin, numInferenceSteps + 1).map(Math.exp);
  }
}
