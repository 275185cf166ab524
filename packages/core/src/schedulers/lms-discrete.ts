import { InvalidArgumentError, UnsupportedError } from '../errors.js';
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
  exponentialSigmas,
  f32,
  integerField,
  karrasSigmas,
  logSigmasOf,
  resolveSchedulerConfig,
  sigmaToT,
  sigmasAtTimesteps,
  spacedTimesteps,
  type BetaScheduleConfig,
  type PredictionType,
  type SchedulerConfigSchema,
  type TimestepSpacing,
  mapFloat32,
} from './common.js';
import type { SchedulerOutput, SchedulerStepOptions } from './scheduler.js';

/** diffusers' `LMSDiscreteScheduler` config, camelCased. */
export type LMSDiscreteConfig = BetaScheduleConfig & {
  useKarrasSigmas: boolean;
  useExponentialSigmas: boolean;
  /** Beta-distribution sigmas need scipy's beta quantiles: `true` is rejected. */
  useBetaSigmas: boolean;
  predictionType: PredictionType;
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
};

export const LMS_DISCRETE_CONFIG_SCHEMA: SchedulerConfigSchema<LMSDiscreteConfig> = {
  className: 'LMSDiscreteScheduler',
  fields: {
    ...BETA_SCHEDULE_FIELDS,
    useKarrasSigmas: booleanField(false),
    useExponentialSigmas: booleanField(false),
    useBetaSigmas: booleanField(false),
    predictionType: choiceField(PREDICTION_TYPES, 'epsilon'),
    timestepSpacing: choiceField(TIMESTEP_SPACINGS, 'linspace'),
    stepsOffset: integerField(0, { min: 0 }),
  },
  checks: [
    ...BETA_SCHEDULE_CHECKS,
    (config) =>
      [config.useKarrasSigmas, config.useExponentialSigmas, config.useBetaSigmas].filter(Boolean).length > 1
        ? {
            key: 'useKarrasSigmas',
            value: config.useKarrasSigmas,
            allowed: 'at most one of use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas set to true',
          }
        : undefined,
  ],
};

export interface LMSStepOptions extends SchedulerStepOptions {
  /** Number of stored derivatives the multistep update uses (diffusers' `order` argument of `step`), default 4. */
  order?: number;
}

const DEFAULT_LMS_ORDER = 4;

/**
 * ∫ from `from` to `to` of the Lagrange basis polynomial that is 1 at `nodes[j]` and 0 at the other nodes. Exact:
 * the product is expanded in u = τ − from and integrated term by term (diffusers integrates it numerically).
 */
function lagrangeBasisIntegral(nodes: readonly number[], j: number, from: number, to: number): number {
  let coefficients = [1]; // coefficients[p] multiplies u^p
  nodes.forEach((node, k) => {
    if (k === j) return;
    const root = node - from;
    const scale = nodes[j] - node;
    const next = new Array<number>(coefficients.length + 1).fill(0);
    coefficients.forEach((c, p) => {
      next[p + 1] += c / scale;
      next[p] -= (c * root) / scale;
    });
    coefficients = next;
  });
  const width = to - from;
  return coefficients.reduce((sum, c, p) => sum + (c * width ** (p + 1)) / (p + 1), 0);
}

/**
 * Linear multistep in sigma space, ported from diffusers' `LMSDiscreteScheduler`: the ODE derivative (x − x₀)/σ of
 * the last `order` steps, weighted by integrals of their Lagrange polynomials over [σᵢ, σᵢ₊₁].
 */
export class LMSDiscreteScheduler extends SigmaScheduler<LMSDiscreteConfig> {
  readonly className = 'LMSDiscreteScheduler';
  readonly computesPredOriginalSample = true;

  /** Derivatives of the latest steps, newest last. */
  private derivatives: Float32Array[] = [];

  static fromConfig(config: Readonly<Record<string, unknown>>, overrides?: Readonly<Record<string, unknown>>): LMSDiscreteScheduler {
    return new LMSDiscreteScheduler(resolveSchedulerConfig(LMS_DISCRETE_CONFIG_SCHEMA, config, overrides));
  }

  constructor(config: Partial<LMSDiscreteConfig> = {}) {
    const resolved = resolveSchedulerConfig(LMS_DISCRETE_CONFIG_SCHEMA, {}, config);
    if (resolved.useBetaSigmas) {
      throw new UnsupportedError('LMSDiscreteScheduler: use_beta_sigmas is not supported; use use_karras_sigmas or use_exponential_sigmas.');
    }
    super(resolved);
  }

  setTimesteps(numInferenceSteps: number): void {
    const { numTrainTimesteps, timestepSpacing, stepsOffset, useKarrasSigmas, useExponentialSigmas } = this.config;
    this.checkNumInferenceSteps(numInferenceSteps, numTrainTimesteps);
    // diffusers stores the spaced timesteps as float32 before interpolating the sigmas at them.
    let timesteps: ArrayLike<number> = spacedTimesteps(timestepSpacing, numTrainTimesteps, numInferenceSteps, stepsOffset, {
      roundLinspace: false,
    }).map(f32);
    let sigmas = sigmasAtTimesteps(timesteps, this.trainingSigmas);
    if (useKarrasSigmas || useExponentialSigmas) {
      const respace = useKarrasSigmas ? karrasSigmas : exponentialSigmas;
      sigmas = respace(sigmas[sigmas.length - 1], sigmas[0], numInferenceSteps);
      const logSigmas = logSigmasOf(this.trainingSigmas);
      timesteps = sigmas.map((sigma) => sigmaToT(sigma, logSigmas));
    }
    this.startSigmaRun(timesteps, sigmas, numInferenceSteps);
    this.derivatives = [];
  }

  step(modelOutput: Tensor<'float32'>, timestep: number, sample: Tensor<'float32'>, options: LMSStepOptions = {}): SchedulerOutput {
    this.assertTimestepsSet('step');
    assertSameShapes(this.className, 'step', { sample, modelOutput });
    const maxOrder = options.order ?? DEFAULT_LMS_ORDER;
    if (!Number.isInteger(maxOrder) || maxOrder < 1) {
      throw new InvalidArgumentError(`LMSDiscreteScheduler.step: order must be an integer ≥ 1, got ${maxOrder}.`);
    }
    const stepIndex = this.stepIndexFor(timestep);
    const sigma = this.sigmas[stepIndex];
    const x = sample.data;
    const output = modelOutput.data;

    const predOriginal = new Float32Array(x.length);
    const inputScale = f32(f32(sigma * sigma) + 1);
    const velocityScale = f32(-sigma / f32(Math.sqrt(inputScale)));
    for (let i = 0; i < x.length; i++) {
      switch (this.config.predictionType) {
        case 'epsilon':
          predOriginal[i] = x[i] - f32(sigma * output[i]);
          break;
        case 'v_prediction':
          predOriginal[i] = f32(output[i] * velocityScale) + f32(x[i] / inputScale);
          break;
        case 'sample':
          predOriginal[i] = output[i];
          break;
      }
    }
    this.derivatives.push(mapFloat32(x.length, (i) => f32(x[i] - predOriginal[i]) / sigma));
    if (this.derivatives.length > maxOrder) this.derivatives.shift();

    // As in diffusers, the order follows the step index (which img2img starts mid-schedule), and the sum pairs the
    // coefficients with however many derivatives are stored.
    const order = Math.min(stepIndex + 1, maxOrder);
    const nodes = Array.from({ length: order }, (_, k) => this.sigmas[stepIndex - k]);
    const terms = Math.min(order, this.derivatives.length);
    const coefficients = Array.from({ length: terms }, (_, k) =>
      f32(lagrangeBasisIntegral(nodes, k, sigma, this.sigmas[stepIndex + 1])),
    );
    const prevSample = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) {
      let sum = 0;
      for (let k = 0; k < terms; k++) sum = f32(sum + f32(coefficients[k] * this.derivatives[this.derivatives.length - 1 - k][i]));
      prevSample[i] = x[i] + sum;
    }
    this.advanceStepIndex();
    return { prevSample: new Tensor(prevSample, sample.shape), predOriginalSample: new Tensor(predOriginal, sample.shape) };
  }
}
