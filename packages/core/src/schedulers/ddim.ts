import { InvalidArgumentError, UnsupportedError } from '../errors.js';
import { randn } from '../random/generator.js';
import { Tensor } from '../tensor.js';
import {
  AlphaCumprodScheduler,
  BETA_SCHEDULE_CHECKS,
  BETA_SCHEDULE_FIELDS,
  PREDICTION_TYPES,
  TIMESTEP_SPACINGS,
  assertSameShapes,
  betasFor,
  booleanField,
  choiceField,
  f32,
  float32TensorFrom,
  integerField,
  numberField,
  rescaleZeroTerminalSnr,
  resolveSchedulerConfig,
  spacedTimesteps,
  type BetaScheduleConfig,
  type PredictionType,
  type SchedulerConfigSchema,
  type TimestepSpacing,
} from './common.js';
import type { SchedulerOutput, SchedulerStepOptions } from './scheduler.js';

/** diffusers' `DDIMScheduler` config, camelCased. */
export type DDIMConfig = BetaScheduleConfig & {
  clipSample: boolean;
  setAlphaToOne: boolean;
  stepsOffset: number;
  predictionType: PredictionType;
  /** Dynamic thresholding is not implemented: `true` is rejected. */
  thresholding: boolean;
  dynamicThresholdingRatio: number;
  clipSampleRange: number;
  sampleMaxValue: number;
  timestepSpacing: TimestepSpacing;
  rescaleBetasZeroSnr: boolean;
};

export const DDIM_CONFIG_SCHEMA: SchedulerConfigSchema<DDIMConfig> = {
  className: 'DDIMScheduler',
  fields: {
    ...BETA_SCHEDULE_FIELDS,
    clipSample: booleanField(true),
    setAlphaToOne: booleanField(true),
    stepsOffset: integerField(0, { min: 0 }),
    predictionType: choiceField(PREDICTION_TYPES, 'epsilon'),
    thresholding: booleanField(false),
    dynamicThresholdingRatio: numberField(0.995, { min: 0, max: 1, minExclusive: true }),
    clipSampleRange: numberField(1, { min: 0, minExclusive: true }),
    sampleMaxValue: numberField(1, { min: 0, minExclusive: true }),
    timestepSpacing: choiceField(TIMESTEP_SPACINGS, 'leading'),
    rescaleBetasZeroSnr: booleanField(false),
  },
  checks: BETA_SCHEDULE_CHECKS,
};

export interface DDIMStepOptions extends SchedulerStepOptions {
  /** Re-derive ε from the clipped x₀ (diffusers' `use_clipped_model_output`). */
  useClippedModelOutput?: boolean;
}

/**
 * Denoising diffusion implicit models (Song et al. 2020), ported from diffusers' `DDIMScheduler`:
 * x₀ = (x − √(1−ᾱₜ)·ε)/√ᾱₜ, x_prev = √ᾱ_prev·x₀ + √(1 − ᾱ_prev − σₜ²)·ε + σₜ·z with σₜ = η·√variance.
 */
export class DDIMScheduler extends AlphaCumprodScheduler<DDIMConfig> {
  readonly className = 'DDIMScheduler';
  readonly computesPredOriginalSample = true;

  static fromConfig(config: Readonly<Record<string, unknown>>, overrides?: Readonly<Record<string, unknown>>): DDIMScheduler {
    return new DDIMScheduler(resolveSchedulerConfig(DDIM_CONFIG_SCHEMA, config, overrides));
  }

  constructor(config: Partial<DDIMConfig> = {}) {
    const resolved = resolveSchedulerConfig(DDIM_CONFIG_SCHEMA, {}, config);
    if (resolved.thresholding) {
      throw new UnsupportedError('DDIMScheduler: thresholding (dynamic thresholding) is not supported; set thresholding to false.');
    }
    const betas = betasFor(resolved);
    super(resolved, resolved.rescaleBetasZeroSnr ? rescaleZeroTerminalSnr(betas) : betas);
  }

  setTimesteps(numInferenceSteps: number): void {
    const { numTrainTimesteps, timestepSpacing, stepsOffset } = this.config;
    this.checkNumInferenceSteps(numInferenceSteps, numTrainTimesteps);
    const timesteps = spacedTimesteps(timestepSpacing, numTrainTimesteps, numInferenceSteps, stepsOffset, { roundLinspace: true });
    this.startRun(timesteps, numInferenceSteps);
  }

  step(modelOutput: Tensor<'float32'>, timestep: number, sample: Tensor<'float32'>, options: DDIMStepOptions = {}): SchedulerOutput {
    this.assertTimestepsSet('step');
    assertSameShapes(this.className, 'step', { sample, modelOutput });
    const eta = options.eta ?? 0;
    if (!(eta >= 0) || !Number.isFinite(eta)) {
      throw new InvalidArgumentError(`DDIMScheduler.step: eta must be a finite number ≥ 0, got ${eta}.`);
    }
    // DDIM reads everything from the timestep; the index only reports the run's progress.
    this.stepIndexFor(timestep);

    // The previous timestep is t − T/N whatever the spacing, as in diffusers.
    const prevTimestep = timestep - Math.floor(this.config.numTrainTimesteps / (this.numInferenceSteps as number));
    const alphaProdT = this.alphaCumprodAt(timestep);
    const alphaProdTPrev = this.alphaCumprodBefore(prevTimestep);
    const betaProdT = f32(1 - alphaProdT);
    const betaProdTPrev = f32(1 - alphaProdTPrev);
    const sqrtAlphaProdT = f32(Math.sqrt(alphaProdT));
    const sqrtBetaProdT = f32(Math.sqrt(betaProdT));

    const x = sample.data;
    const output = modelOutput.data;
    const size = x.length;
    const predOriginal = new Float32Array(size);
    const predEpsilon = new Float32Array(size);
    for (let i = 0; i < size; i++) {
      switch (this.config.predictionType) {
        case 'epsilon':
          predOriginal[i] = (x[i] - sqrtBetaProdT * output[i]) / sqrtAlphaProdT;
          predEpsilon[i] = output[i];
          break;
        case 'sample':
          predOriginal[i] = output[i];
          predEpsilon[i] = (x[i] - sqrtAlphaProdT * output[i]) / sqrtBetaProdT;
          break;
        case 'v_prediction':
          predOriginal[i] = sqrtAlphaProdT * x[i] - sqrtBetaProdT * output[i];
          predEpsilon[i] = sqrtAlphaProdT * output[i] + sqrtBetaProdT * x[i];
          break;
      }
    }

    if (this.config.clipSample) {
      const range = this.config.clipSampleRange;
      for (let i = 0; i < size; i++) predOriginal[i] = Math.min(Math.max(predOriginal[i], -range), range);
    }
    if (options.useClippedModelOutput) {
      for (let i = 0; i < size; i++) predEpsilon[i] = (x[i] - sqrtAlphaProdT * predOriginal[i]) / sqrtBetaProdT;
    }

    // σₜ(η) of formula (16): √((1 − ᾱ_prev)/(1 − ᾱₜ)) · √(1 − ᾱₜ/ᾱ_prev), times η.
    const variance = f32(f32(betaProdTPrev / betaProdT) * f32(1 - f32(alphaProdT / alphaProdTPrev)));
    const stdDev = f32(eta * f32(Math.sqrt(variance)));
    const directionScale = f32(Math.sqrt(f32(betaProdTPrev - f32(stdDev * stdDev))));
    const sqrtAlphaProdTPrev = f32(Math.sqrt(alphaProdTPrev));
    const noise = eta > 0 ? randn(modelOutput.shape, { generator: options.generator, dtype: 'float32' }).data : undefined;

    const prevSample = float32TensorFrom(sample.shape, (i) => {
      const deterministic = f32(sqrtAlphaProdTPrev * predOriginal[i]) + f32(directionScale * predEpsilon[i]);
      return noise === undefined ? deterministic : f32(deterministic) + stdDev * noise[i];
    });
    this.advanceStepIndex();
    return { prevSample, predOriginalSample: new Tensor(predOriginal, sample.shape) };
  }
}
