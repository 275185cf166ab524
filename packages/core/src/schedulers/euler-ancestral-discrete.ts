import { UnsupportedError } from '../errors.js';
import { randn } from '../random/generator.js';
import { Tensor } from '../tensor.js';
import {
  BETA_SCHEDULE_CHECKS,
  BETA_SCHEDULE_FIELDS,
  PREDICTION_TYPES,
  SigmaScheduler,
  TIMESTEP_SPACINGS,
  assertSameShapes,
  booleanField,
  choiceField,
  f32,
  float32TensorFrom,
  integerField,
  resolveSchedulerConfig,
  sigmasAtTimesteps,
  spacedTimesteps,
  type BetaScheduleConfig,
  type PredictionType,
  type SchedulerConfigSchema,
  type TimestepSpacing,
} from './common.js';
import { eulerPredOriginalSample, trainingAlphasCumprod } from './euler-discrete.js';
import type { SchedulerOutput, SchedulerStepOptions } from './scheduler.js';

/** diffusers' `EulerAncestralDiscreteScheduler` config, camelCased. */
export type EulerAncestralDiscreteConfig = BetaScheduleConfig & {
  /** epsilon or v_prediction (diffusers does not implement `sample` here either). */
  predictionType: PredictionType;
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
  rescaleBetasZeroSnr: boolean;
};

export const EULER_ANCESTRAL_DISCRETE_CONFIG_SCHEMA: SchedulerConfigSchema<EulerAncestralDiscreteConfig> = {
  className: 'EulerAncestralDiscreteScheduler',
  fields: {
    ...BETA_SCHEDULE_FIELDS,
    predictionType: choiceField(PREDICTION_TYPES, 'epsilon'),
    timestepSpacing: choiceField(TIMESTEP_SPACINGS, 'linspace'),
    stepsOffset: integerField(0, { min: 0 }),
    rescaleBetasZeroSnr: booleanField(false),
  },
  checks: BETA_SCHEDULE_CHECKS,
};

/**
 * Ancestral sampling with Euler steps (k-diffusion's `sample_euler_ancestral`), ported from diffusers'
 * `EulerAncestralDiscreteScheduler`: each step goes deterministically down to σ_down and adds fresh noise of σ_up,
 * with σ_up² + σ_down² = σ_next². The noise is drawn on every step, the last one included (where σ_up = 0), so the
 * generator advances exactly as diffusers'.
 */
export class EulerAncestralDiscreteScheduler extends SigmaScheduler<EulerAncestralDiscreteConfig> {
  readonly className = 'EulerAncestralDiscreteScheduler';
  readonly computesPredOriginalSample = true;

  static fromConfig(
    config: Readonly<Record<string, unknown>>,
    overrides?: Readonly<Record<string, unknown>>,
  ): EulerAncestralDiscreteScheduler {
    return new EulerAncestralDiscreteScheduler(resolveSchedulerConfig(EULER_ANCESTRAL_DISCRETE_CONFIG_SCHEMA, config, overrides));
  }

  constructor(config: Partial<EulerAncestralDiscreteConfig> = {}) {
    const resolved = resolveSchedulerConfig(EULER_ANCESTRAL_DISCRETE_CONFIG_SCHEMA, {}, config);
    if (resolved.predictionType === 'sample') {
      throw new UnsupportedError(
        'EulerAncestralDiscreteScheduler: prediction_type "sample" is not supported (nor is it in diffusers); ' +
          'use "epsilon" or "v_prediction".',
      );
    }
    super(resolved, trainingAlphasCumprod(resolved));
  }

  setTimesteps(numInferenceSteps: number): void {
    const { numTrainTimesteps, timestepSpacing, stepsOffset } = this.config;
    this.checkNumInferenceSteps(numInferenceSteps, numTrainTimesteps);
    // diffusers stores the spaced timesteps as float32 before interpolating the sigmas at them.
    const timesteps = spacedTimesteps(timestepSpacing, numTrainTimesteps, numInferenceSteps, stepsOffset, {
      roundLinspace: false,
    }).map(f32);
    this.startSigmaRun(timesteps, sigmasAtTimesteps(timesteps, this.trainingSigmas), numInferenceSteps);
  }

  step(
    modelOutput: Tensor<'float32'>,
    timestep: number,
    sample: Tensor<'float32'>,
    options: SchedulerStepOptions = {},
  ): SchedulerOutput {
    this.assertTimestepsSet('step');
    assertSameShapes(this.className, 'step', { sample, modelOutput });
    const stepIndex = this.stepIndexFor(timestep);
    const sigmaFrom = this.currentSigmas[stepIndex];
    const sigmaTo = this.currentSigmas[stepIndex + 1];
    const sigmaFromSquared = f32(sigmaFrom * sigmaFrom);
    const sigmaToSquared = f32(sigmaTo * sigmaTo);
    const sigmaUp = f32(Math.sqrt(f32(f32(sigmaToSquared * f32(sigmaFromSquared - sigmaToSquared)) / sigmaFromSquared)));
    const sigmaDown = f32(Math.sqrt(f32(sigmaToSquared - f32(sigmaUp * sigmaUp))));
    const dt = f32(sigmaDown - sigmaFrom);

    const x = sample.data;
    const predOriginal = eulerPredOriginalSample(this.config.predictionType, sigmaFrom, x, modelOutput.data);
    const noise = randn(modelOutput.shape, { generator: options.generator, dtype: 'float32' }).data;
    const prevSample = float32TensorFrom(sample.shape, (i) => {
      const derivative = f32(f32(x[i] - predOriginal[i]) / sigmaFrom);
      return f32(x[i] + f32(derivative * dt)) + f32(noise[i] * sigmaUp);
    });
    this.advanceStepIndex();
    return { prevSample, predOriginalSample: new Tensor(predOriginal, sample.shape) };
  }
}
