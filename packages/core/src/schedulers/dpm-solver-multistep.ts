import { UnsupportedError } from '../errors.js';
import { Tensor } from '../tensor.js';
import {
  BETA_SCHEDULE_CHECKS,
  BETA_SCHEDULE_FIELDS,
  PREDICTION_TYPES,
  SchedulerBase,
  TIMESTEP_SPACINGS,
  assertSameShapes,
  booleanField,
  choiceField,
  exponentialSigmas,
  f32,
  float32TensorFrom,
  indexForTimestep,
  integerField,
  karrasSigmas,
  logSigmasOf,
  numberField,
  numpyArange,
  numpyLinspace,
  resolveSchedulerConfig,
  roundHalfToEven,
  sigmaToT,
  sigmasFromAlphasCumprod,
  type BetaScheduleConfig,
  type ConfigField,
  type PredictionType,
  type SchedulerConfigSchema,
  type TimestepSpacing,
} from './common.js';
import { checkOneSigmaRespacing, trainingAlphasCumprod } from './euler-discrete.js';
import type { SchedulerOutput, SchedulerStepOptions } from './scheduler.js';

export type DPMSolverAlgorithmType = 'dpmsolver++' | 'sde-dpmsolver++' | 'dpmsolver' | 'sde-dpmsolver';
export type DPMSolverType = 'midpoint' | 'heun';

/** diffusers' `DPMSolverMultistepScheduler` config, camelCased. */
export type DPMSolverMultistepConfig = BetaScheduleConfig & {
  /** 1, 2 or 3: how many model outputs each update combines. */
  solverOrder: number;
  /** `flow_prediction` is not implemented: it is rejected. */
  predictionType: PredictionType | 'flow_prediction';
  /** Dynamic thresholding is not implemented: `true` is rejected. */
  thresholding: boolean;
  dynamicThresholdingRatio: number;
  sampleMaxValue: number;
  /** Only `dpmsolver++` is implemented; diffusers' `deis` reads as `dpmsolver++`, as in diffusers. */
  algorithmType: DPMSolverAlgorithmType;
  /** diffusers' `logrho`, `bh1` and `bh2` (other solvers' names) read as `midpoint`, as in diffusers. */
  solverType: DPMSolverType;
  /** First- and second-order updates at the end of runs of fewer than 15 steps. */
  lowerOrderFinal: boolean;
  /** A first-order (Euler) update on the last step, whatever the step count. */
  eulerAtFinal: boolean;
  useKarrasSigmas: boolean;
  useExponentialSigmas: boolean;
  /** Not implemented (it needs scipy's beta quantiles): `true` is rejected. */
  useBetaSigmas: boolean;
  /** Sigmas evenly spaced in log σ (Lu et al.'s uniform logSNR). */
  useLuLambdas: boolean;
  /** Flow-matching sigmas are not implemented: `true` is rejected. */
  useFlowSigmas: boolean;
  flowShift: number;
  /** The sigma after the last step: 0, or the smallest training sigma. */
  finalSigmasType: 'zero' | 'sigma_min';
  /** Timesteps whose λ = log(α/σ) falls below this are left out of the schedule (cosine schedules). */
  lambdaMinClipped: number;
  /** Learned-variance outputs are not implemented: anything but null is rejected. */
  varianceType: 'learned' | 'learned_range' | null;
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
  rescaleBetasZeroSnr: boolean;
  /** Needs a per-call shift (`mu`): `true` is rejected. */
  useDynamicShifting: boolean;
  timeShiftType: 'exponential';
};

/** A choice key whose legacy spellings diffusers rewrites to a supported value when it loads a config. */
function aliasedChoiceField<V extends string>(
  values: readonly V[],
  aliases: Readonly<Record<string, V>>,
  defaultValue: V,
): ConfigField<V> {
  const plain = choiceField(values, defaultValue);
  return {
    defaultValue,
    allowed: `${plain.allowed} (or ${Object.keys(aliases)
      .map((alias) => JSON.stringify(alias))
      .join(', ')}, read as ${[...new Set(Object.values(aliases))].map((v) => JSON.stringify(v)).join(', ')})`,
    accept: (value) =>
      typeof value === 'string' && Object.hasOwn(aliases, value) ? { ok: true, value: aliases[value] } : plain.accept(value),
  };
}

export const DPM_SOLVER_MULTISTEP_CONFIG_SCHEMA: SchedulerConfigSchema<DPMSolverMultistepConfig> = {
  className: 'DPMSolverMultistepScheduler',
  fields: {
    ...BETA_SCHEDULE_FIELDS,
    solverOrder: integerField(2, { min: 1, max: 3 }),
    predictionType: choiceField([...PREDICTION_TYPES, 'flow_prediction'], 'epsilon'),
    thresholding: booleanField(false),
    dynamicThresholdingRatio: numberField(0.995, { min: 0, max: 1, minExclusive: true }),
    sampleMaxValue: numberField(1, { min: 0, minExclusive: true }),
    algorithmType: aliasedChoiceField(
      ['dpmsolver++', 'sde-dpmsolver++', 'dpmsolver', 'sde-dpmsolver'],
      { deis: 'dpmsolver++' },
      'dpmsolver++',
    ),
    solverType: aliasedChoiceField(['midpoint', 'heun'], { logrho: 'midpoint', bh1: 'midpoint', bh2: 'midpoint' }, 'midpoint'),
    lowerOrderFinal: booleanField(true),
    eulerAtFinal: booleanField(false),
    useKarrasSigmas: booleanField(false),
    useExponentialSigmas: booleanField(false),
    useBetaSigmas: booleanField(false),
    useLuLambdas: booleanField(false),
    useFlowSigmas: booleanField(false),
    flowShift: numberField(1, { min: 0, minExclusive: true }),
    finalSigmasType: choiceField(['zero', 'sigma_min'], 'zero'),
    lambdaMinClipped: numberField(-Infinity),
    varianceType: choiceField(['learned', 'learned_range'], null, { nullable: true }),
    timestepSpacing: choiceField(TIMESTEP_SPACINGS, 'linspace'),
    stepsOffset: integerField(0, { min: 0 }),
    rescaleBetasZeroSnr: booleanField(false),
    useDynamicShifting: booleanField(false),
    timeShiftType: choiceField(['exponential'], 'exponential'),
  },
  checks: [...BETA_SCHEDULE_CHECKS, checkOneSigmaRespacing],
};

/** The config values this port rejects with UnsupportedError, each with what to use instead. */
function unsupportedSettingOf(config: DPMSolverMultistepConfig): string | undefined {
  if (config.algorithmType !== 'dpmsolver++') {
    return `algorithm_type "${config.algorithmType}" is not supported; the supported algorithm_type is "dpmsolver++" (DPM-Solver++ 1S/2M/3M)`;
  }
  if (config.predictionType === 'flow_prediction') {
    return 'prediction_type "flow_prediction" is not supported; use "epsilon", "v_prediction" or "sample"';
  }
  if (config.thresholding) return 'thresholding (dynamic thresholding) is not supported; set thresholding to false';
  if (config.useBetaSigmas) return 'use_beta_sigmas is not supported; use use_karras_sigmas, use_exponential_sigmas or use_lu_lambdas';
  if (config.useFlowSigmas) return 'use_flow_sigmas (flow matching) is not supported; set it to false';
  if (config.useDynamicShifting) return 'use_dynamic_shifting is not supported; set it to false';
  if (config.varianceType !== null) return `variance_type "${config.varianceType}" is not supported; set it to null`;
  return undefined;
}

/** A sigma's VP coefficients: α = 1/√(σ²+1), σ_t = σ·α, and λ = log α − log σ_t (torch float32 scalars). */
function vpCoefficients(sigma: number): { alpha: number; sigmaT: number; lambda: number } {
  const alpha = f32(1 / f32(Math.sqrt(f32(f32(sigma * sigma) + 1))));
  const sigmaT = f32(sigma * alpha);
  return { alpha, sigmaT, lambda: f32(f32(Math.log(alpha)) - f32(Math.log(sigmaT))) };
}

/**
 * DPM-Solver++ (Lu et al. 2022), the multistep solver of diffusers' `DPMSolverMultistepScheduler` with
 * `algorithm_type="dpmsolver++"`: it integrates the data prediction x₀ in λ = log(α/σ), combining the latest
 * `solver_order` model outputs (2M: second order). The first step is first order (nothing stored yet), and so is
 * the last one when it lands on σ = 0, when `euler_at_final` is set, or with `lower_order_final` below 15 steps.
 */
export class DPMSolverMultistepScheduler extends SchedulerBase<DPMSolverMultistepConfig> {
  readonly className = 'DPMSolverMultistepScheduler';
  readonly computesPredOriginalSample = true;
  readonly alphasCumprod: Float32Array;
  /** σ of every training timestep, ascending with t. */
  readonly trainingSigmas: Float32Array;
  /** λ = log √ᾱ − log √(1 − ᾱ) of every training timestep (float32). */
  private readonly trainingLambdas: Float32Array;
  private currentSigmas: Float32Array;
  /** The data predictions x₀ of the latest steps, oldest first (`solver_order` slots). */
  private modelOutputs: (Float32Array | undefined)[];
  /** How many steps have run so far, capped at `solver_order`: the highest order the next update may use. */
  private lowerOrderNums = 0;

  static fromConfig(
    config: Readonly<Record<string, unknown>>,
    overrides?: Readonly<Record<string, unknown>>,
  ): DPMSolverMultistepScheduler {
    return new DPMSolverMultistepScheduler(resolveSchedulerConfig(DPM_SOLVER_MULTISTEP_CONFIG_SCHEMA, config, overrides));
  }

  constructor(config: Partial<DPMSolverMultistepConfig> = {}) {
    const resolved = resolveSchedulerConfig(DPM_SOLVER_MULTISTEP_CONFIG_SCHEMA, {}, config);
    const unsupported = unsupportedSettingOf(resolved);
    if (unsupported !== undefined) throw new UnsupportedError(`DPMSolverMultistepScheduler: ${unsupported}.`);
    super(resolved);
    this.alphasCumprod = trainingAlphasCumprod(resolved);
    this.trainingSigmas = sigmasFromAlphasCumprod(this.alphasCumprod);
    this.trainingLambdas = this.alphasCumprod.map(
      (alphaCumprod) => f32(Math.log(f32(Math.sqrt(alphaCumprod)))) - f32(Math.log(f32(Math.sqrt(f32(1 - alphaCumprod))))),
    );
    // Before setTimesteps diffusers leaves the training sigmas here.
    this.currentSigmas = this.trainingSigmas;
    this.modelOutputs = new Array<Float32Array | undefined>(resolved.solverOrder).fill(undefined);
  }

  get initNoiseSigma(): number {
    return 1;
  }

  /** The sigmas of the run, one per timestep, then the final sigma (float32, as diffusers keeps them). */
  get sigmas(): Float32Array {
    return this.currentSigmas;
  }

  setTimesteps(numInferenceSteps: number): void {
    const { numTrainTimesteps, useKarrasSigmas, useExponentialSigmas, useLuLambdas } = this.config;
    this.checkNumInferenceSteps(numInferenceSteps, numTrainTimesteps);
    const training = this.trainingSigmas;
    const smallest = training[0];
    const largest = training[training.length - 1];
    const logSigmas = logSigmasOf(training);

    let timesteps: Float64Array;
    let sigmas: ArrayLike<number>;
    if (useKarrasSigmas || useExponentialSigmas || useLuLambdas) {
      // Re-spaced over the full training range; each sigma gets the (fractional) timestep where it lies.
      sigmas = useKarrasSigmas
        ? karrasSigmas(smallest, largest, numInferenceSteps)
        : useExponentialSigmas
          ? exponentialSigmas(smallest, largest, numInferenceSteps)
          : this.luLambdaSigmas(logSigmas, numInferenceSteps);
      const fractional = Float64Array.from(sigmas, (sigma) => sigmaToT(sigma, logSigmas));
      // diffusers rounds these (except for the cosine schedule and exponential sigmas); the int64 cast truncates.
      const rounds = (useKarrasSigmas || useLuLambdas) && this.config.betaSchedule !== 'squaredcos_cap_v2';
      timesteps = fractional.map((t) => (rounds ? roundHalfToEven(t) : Math.trunc(t)));
    } else {
      timesteps = this.spacedTimesteps(numInferenceSteps);
      // Integer timesteps: np.interp is the training sigma itself (timestep −1 of trailing spacing clamps to σ₀).
      sigmas = Array.from(timesteps, (t) => training[Math.max(0, Math.min(t, training.length - 1))]);
    }

    const finalSigma = this.config.finalSigmasType === 'sigma_min' ? smallest : 0;
    this.currentSigmas = Float32Array.from([...Array.from(sigmas), finalSigma]);
    this.startRun(timesteps, timesteps.length);
    this.modelOutputs.fill(undefined);
    this.lowerOrderNums = 0;
  }

  /** Identity: DPM-Solver works on the unscaled sample. */
  scaleModelInput(sample: Tensor<'float32'>, _timestep: number): Tensor<'float32'> {
    return sample;
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
    const { solverOrder, lowerOrderFinal, eulerAtFinal, finalSigmasType } = this.config;
    const stepCount = this.currentTimesteps.length;
    // Lower orders at the end keep few-step runs stable; a final σ of 0 always takes a first-order step.
    const lowerOrderAtEnd = lowerOrderFinal && stepCount < 15;
    const firstOrderFinal = stepIndex === stepCount - 1 && (eulerAtFinal || lowerOrderAtEnd || finalSigmasType === 'zero');
    const secondOrderSecondToLast = stepIndex === stepCount - 2 && lowerOrderAtEnd;

    const dataPrediction = this.dataPrediction(modelOutput.data, sample.data, this.currentSigmas[stepIndex]);
    this.modelOutputs.shift();
    this.modelOutputs.push(dataPrediction);

    let prevSample: Float32Array;
    if (solverOrder === 1 || this.lowerOrderNums < 1 || firstOrderFinal) {
      prevSample = this.firstOrderUpdate(stepIndex, sample.data, dataPrediction);
    } else if (solverOrder === 2 || this.lowerOrderNums < 2 || secondOrderSecondToLast) {
      prevSample = this.secondOrderUpdate(stepIndex, sample.data);
    } else {
      prevSample = this.thirdOrderUpdate(stepIndex, sample.data);
    }
    if (this.lowerOrderNums < solverOrder) this.lowerOrderNums += 1;

    this.advanceStepIndex();
    return {
      prevSample: new Tensor(prevSample, sample.shape),
      predOriginalSample: new Tensor(dataPrediction.slice(), sample.shape),
    };
  }

  /** Forward noising in VP form: α·x₀ + σ_t·noise at the timestep's sigma. */
  addNoise(originalSamples: Tensor<'float32'>, noise: Tensor<'float32'>, timestep: number): Tensor<'float32'> {
    this.assertTimestepsSet('addNoise');
    assertSameShapes(this.className, 'addNoise', { originalSamples, noise });
    const { alpha, sigmaT } = vpCoefficients(this.currentSigmas[this.noiseIndexFor(timestep)]);
    const x0 = originalSamples.data;
    const n = noise.data;
    return float32TensorFrom(originalSamples.shape, (i) => f32(alpha * x0[i]) + f32(sigmaT * n[i]));
  }

  /** diffusers' DPM-Solver `index_for_timestep`: a timestep missing from the schedule maps to the last step. */
  protected override indexOfTimestep(timestep: number): number {
    return indexForTimestep(this.currentTimesteps, timestep) ?? this.currentTimesteps.length - 1;
  }

  /**
   * The integer timesteps of `timestep_spacing`, as DPM-Solver spaces them: over `num_inference_steps + 1` points
   * with the last dropped, and up to the last timestep whose λ is at least `lambda_min_clipped`.
   */
  private spacedTimesteps(numInferenceSteps: number): Float64Array {
    const { numTrainTimesteps, timestepSpacing, stepsOffset } = this.config;
    // torch.searchsorted over the ascending (flipped) λ: how many λ lie below the clip value.
    const clipValue = f32(this.config.lambdaMinClipped);
    const clippedCount = this.trainingLambdas.reduce((count, lambda) => count + (lambda < clipValue ? 1 : 0), 0);
    const lastTimestep = numTrainTimesteps - clippedCount;
    switch (timestepSpacing) {
      case 'linspace':
        return numpyLinspace(0, lastTimestep - 1, numInferenceSteps + 1).map(roundHalfToEven).reverse().subarray(0, numInferenceSteps);
      case 'leading': {
        const stepRatio = Math.floor(lastTimestep / (numInferenceSteps + 1));
        return Float64Array.from({ length: numInferenceSteps }, (_, i) => (numInferenceSteps - i) * stepRatio + stepsOffset);
      }
      case 'trailing':
        return numpyArange(lastTimestep, 0, -numTrainTimesteps / numInferenceSteps).map((t) => roundHalfToEven(t) - 1);
    }
  }

  /** `use_lu_lambdas`: sigmas whose log is evenly spaced from log σmax to log σmin. */
  private luLambdaSigmas(logSigmas: Float32Array, numInferenceSteps: number): Float64Array {
    const lambdaMax = logSigmas[logSigmas.length - 1];
    const lambdaMin = logSigmas[0];
    return numpyLinspace(0, 1, numInferenceSteps).map((ramp) => Math.exp(lambdaMax + ramp * (lambdaMin - lambdaMax)));
  }

  /** diffusers' `convert_model_output` for DPM-Solver++: the model's estimate of x₀ at `sigma`. */
  private dataPrediction(modelOutput: Float32Array, sample: Float32Array, sigma: number): Float32Array {
    const { alpha, sigmaT } = vpCoefficients(sigma);
    switch (this.config.predictionType) {
      case 'epsilon':
        return sample.map((x, i) => f32(x - f32(sigmaT * modelOutput[i])) / alpha);
      case 'v_prediction':
        return sample.map((x, i) => f32(alpha * x) - f32(sigmaT * modelOutput[i]));
      default: // 'sample' ('flow_prediction' is rejected by the constructor)
        return modelOutput.slice();
    }
  }

  /** The coefficients shared by the updates from sigmas[stepIndex] to sigmas[stepIndex + 1]. */
  private updateCoefficients(stepIndex: number): { sampleScale: number; alphaT: number; h: number; expMinusHMinusOne: number } {
    const target = vpCoefficients(this.currentSigmas[stepIndex + 1]);
    const source = vpCoefficients(this.currentSigmas[stepIndex]);
    // Towards σ = 0, λ = +∞ and h = +∞: exp(−h) − 1 = −1 and the update returns x₀ itself.
    const h = f32(target.lambda - source.lambda);
    return {
      sampleScale: f32(target.sigmaT / source.sigmaT),
      alphaT: target.alpha,
      h,
      expMinusHMinusOne: f32(f32(Math.exp(-h)) - 1),
    };
  }

  /** λ step between two stored outputs: h of the step that ended at sigmas[stepIndex − back + 1]. */
  private lambdaStep(stepIndex: number, back: number): number {
    const later = vpCoefficients(this.currentSigmas[stepIndex - back + 1]).lambda;
    const earlier = vpCoefficients(this.currentSigmas[stepIndex - back]).lambda;
    return f32(later - earlier);
  }

  /** DPM-Solver++ 1S (DDIM in x₀ form): x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·x₀. */
  private firstOrderUpdate(stepIndex: number, sample: Float32Array, dataPrediction: Float32Array): Float32Array {
    const { sampleScale, alphaT, expMinusHMinusOne } = this.updateCoefficients(stepIndex);
    const d0Scale = f32(alphaT * expMinusHMinusOne);
    return sample.map((x, i) => f32(sampleScale * x) - f32(d0Scale * dataPrediction[i]));
  }

  /** DPM-Solver++ 2M: D1 = (m0 − m1)/r0 corrects x₀ with the previous output (midpoint or Heun weighting). */
  private secondOrderUpdate(stepIndex: number, sample: Float32Array): Float32Array {
    const [m1, m0] = this.storedOutputs(2);
    const { sampleScale, alphaT, h, expMinusHMinusOne } = this.updateCoefficients(stepIndex);
    const r0 = f32(this.lambdaStep(stepIndex, 1) / h);
    const d1Factor = f32(1 / r0);
    const d0Scale = f32(alphaT * expMinusHMinusOne);
    return sample.map((x, i) => {
      const d1 = f32(d1Factor * f32(m0[i] - m1[i]));
      const firstOrder = f32(f32(sampleScale * x) - f32(d0Scale * m0[i]));
      if (this.config.solverType === 'midpoint') return firstOrder - f32(f32(0.5 * d0Scale) * d1);
      return firstOrder + f32(f32(alphaT * f32(f32(expMinusHMinusOne / h) + 1)) * d1);
    });
  }

  /** DPM-Solver++ 3M: first and second differences of the last three outputs. */
  private thirdOrderUpdate(stepIndex: number, sample: Float32Array): Float32Array {
    const [m2, m1, m0] = this.storedOutputs(3);
    const { sampleScale, alphaT, h, expMinusHMinusOne } = this.updateCoefficients(stepIndex);
    const r0 = f32(this.lambdaStep(stepIndex, 1) / h);
    const r1 = f32(this.lambdaStep(stepIndex, 2) / h);
    const r0PlusR1 = f32(r0 + r1);
    const d0Scale = f32(alphaT * expMinusHMinusOne);
    const d1Scale = f32(alphaT * f32(f32(expMinusHMinusOne / h) + 1));
    const d2Scale = f32(alphaT * f32(f32(f32(expMinusHMinusOne + h) / f32(h * h)) - 0.5));
    const inverseR0 = f32(1 / r0);
    const inverseR1 = f32(1 / r1);
    const d1Weight = f32(r0 / r0PlusR1);
    const d2Weight = f32(1 / r0PlusR1);
    return sample.map((x, i) => {
      const d10 = f32(inverseR0 * f32(m0[i] - m1[i]));
      const d11 = f32(inverseR1 * f32(m1[i] - m2[i]));
      const d1 = f32(d10 + f32(d1Weight * f32(d10 - d11)));
      const d2 = f32(d2Weight * f32(d10 - d11));
      const firstOrder = f32(f32(sampleScale * x) - f32(d0Scale * m0[i]));
      return f32(firstOrder + f32(d1Scale * d1)) - f32(d2Scale * d2);
    });
  }

  /** The latest `count` data predictions, oldest first (the step counter guarantees that they are stored). */
  private storedOutputs(count: number): Float32Array[] {
    return this.modelOutputs.slice(-count) as Float32Array[];
  }
}
