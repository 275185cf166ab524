import { InvalidArgumentError } from '../errors.js';
import { Tensor } from '../tensor.js';
import {
  AlphaCumprodScheduler,
  BETA_SCHEDULE_CHECKS,
  BETA_SCHEDULE_FIELDS,
  TIMESTEP_SPACINGS,
  assertSameShapes,
  booleanField,
  choiceField,
  f32,
  integerField,
  resolveSchedulerConfig,
  spacedTimesteps,
  type BetaScheduleConfig,
  type SchedulerConfigSchema,
  type TimestepSpacing,
  mapFloat32,
} from './common.js';
import type { SchedulerOutput } from './scheduler.js';

/** diffusers' `PNDMScheduler` config, camelCased. */
export type PNDMConfig = BetaScheduleConfig & {
  skipPrkSteps: boolean;
  setAlphaToOne: boolean;
  /** PNDM has no x₀ form of its update, so `sample` prediction is not accepted (as in diffusers). */
  predictionType: 'epsilon' | 'v_prediction';
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
};

export const PNDM_CONFIG_SCHEMA: SchedulerConfigSchema<PNDMConfig> = {
  className: 'PNDMScheduler',
  fields: {
    ...BETA_SCHEDULE_FIELDS,
    skipPrkSteps: booleanField(false),
    setAlphaToOne: booleanField(false),
    predictionType: choiceField(['epsilon', 'v_prediction'] as const, 'epsilon'),
    timestepSpacing: choiceField(TIMESTEP_SPACINGS, 'leading'),
    stepsOffset: integerField(0, { min: 0 }),
  },
  checks: BETA_SCHEDULE_CHECKS,
};

/** Runge–Kutta warm-up steps need the last four timesteps of the spacing. */
const PNDM_ORDER = 4;

/**
 * Pseudo numerical methods for diffusion models (Liu et al. 2022), ported from diffusers' `PNDMScheduler`.
 * With `skipPrkSteps` (the Stable Diffusion setting, PLMS): N steps make N + 1 model calls — the second timestep
 * repeats, and its call averages with the first (a Heun-like warm-up) — then Adams–Bashforth of order 2, 3, 4 over
 * the stored outputs. Without it: 12 Runge–Kutta calls over the last four timesteps first (F-PNDM).
 */
export class PNDMScheduler extends AlphaCumprodScheduler<PNDMConfig> {
  readonly className = 'PNDMScheduler';
  readonly computesPredOriginalSample = false;

  private prkTimesteps: readonly number[] = [];
  /** Model outputs of the steps so far, newest last; four are all the update reads. */
  private storedOutputs: Float32Array[] = [];
  /** Calls since `setTimesteps`: diffusers' `counter`, which selects the update. */
  private counter = 0;
  private runningModelOutput: Float64Array | undefined;
  private warmUpSample: Float32Array | undefined;

  static fromConfig(config: Readonly<Record<string, unknown>>, overrides?: Readonly<Record<string, unknown>>): PNDMScheduler {
    return new PNDMScheduler(resolveSchedulerConfig(PNDM_CONFIG_SCHEMA, config, overrides));
  }

  constructor(config: Partial<PNDMConfig> = {}) {
    super(resolveSchedulerConfig(PNDM_CONFIG_SCHEMA, {}, config));
  }

  setTimesteps(numInferenceSteps: number): void {
    const { numTrainTimesteps, timestepSpacing, stepsOffset, skipPrkSteps } = this.config;
    this.checkNumInferenceSteps(numInferenceSteps, numTrainTimesteps);
    const descending = Array.from(
      spacedTimesteps(timestepSpacing, numTrainTimesteps, numInferenceSteps, stepsOffset, { roundLinspace: true }),
    );
    let timesteps: number[];
    if (skipPrkSteps) {
      this.prkTimesteps = [];
      timesteps = [...descending.slice(0, 2), ...descending.slice(1)];
    } else {
      if (numInferenceSteps < PNDM_ORDER) {
        throw new InvalidArgumentError(
          `PNDMScheduler.setTimesteps: with skip_prk_steps false numInferenceSteps must be an integer from ${PNDM_ORDER} ` +
            `to num_train_timesteps (${numTrainTimesteps}), got ${numInferenceSteps}.`,
        );
      }
      // diffusers: each of the last four timesteps, and its midpoint towards the next, visited as RK4 stages.
      const halfStep = Math.floor(Math.floor(numTrainTimesteps / numInferenceSteps) / 2);
      const stages = descending
        .slice(0, PNDM_ORDER)
        .reverse()
        .flatMap((t) => [t, t + halfStep]);
      this.prkTimesteps = stages
        .slice(0, -1)
        .flatMap((t) => [t, t])
        .slice(1, -1)
        .reverse();
      timesteps = [...this.prkTimesteps, ...descending.slice(PNDM_ORDER - 1)];
    }
    this.startRun(Float64Array.from(timesteps), numInferenceSteps);
    this.storedOutputs = [];
    this.counter = 0;
    this.runningModelOutput = undefined;
    this.warmUpSample = undefined;
  }

  step(modelOutput: Tensor<'float32'>, timestep: number, sample: Tensor<'float32'>): SchedulerOutput {
    this.assertTimestepsSet('step');
    assertSameShapes(this.className, 'step', { sample, modelOutput });
    // The update follows diffusers' call counter; the step index only reports the run's progress.
    this.stepIndexFor(timestep);
    const prevSample =
      this.counter < this.prkTimesteps.length
        ? this.rungeKuttaStep(modelOutput.data, timestep, sample.data)
        : this.linearMultistepStep(modelOutput.data, timestep, sample.data);
    this.counter += 1;
    this.advanceStepIndex();
    return { prevSample: new Tensor(prevSample, sample.shape) };
  }

  private rememberOutput(output: Float32Array): void {
    this.storedOutputs.push(output.slice());
    if (this.storedOutputs.length > PNDM_ORDER) this.storedOutputs.shift();
  }

  /** diffusers' `step_prk`: stages 1–4 of RK4 from the stage's first sample, weights 1/6, 1/3, 1/3, 1/6. */
  private rungeKuttaStep(output: Float32Array, timestep: number, sample: Float32Array): Float32Array {
    const halfStep = Math.floor(Math.floor(this.config.numTrainTimesteps / (this.numInferenceSteps as number)) / 2);
    const prevTimestep = timestep - (this.counter % 2 === 1 ? 0 : halfStep);
    const stageTimestep = this.prkTimesteps[Math.floor(this.counter / 4) * 4];
    const running = (this.runningModelOutput ??= new Float64Array(output.length));
    let update: ArrayLike<number> = output;
    switch (this.counter % 4) {
      case 0:
        for (let i = 0; i < output.length; i++) running[i] += output[i] / 6;
        this.rememberOutput(output);
        this.warmUpSample = sample;
        break;
      case 1:
      case 2:
        for (let i = 0; i < output.length; i++) running[i] += output[i] / 3;
        break;
      case 3:
        update = mapFloat32(output.length, (i) => running[i] + output[i] / 6);
        this.runningModelOutput = undefined;
        break;
    }
    return this.previousSample(this.warmUpSample ?? sample, stageTimestep, prevTimestep, update);
  }

  /** diffusers' `step_plms`: the warm-up pair, then Adams–Bashforth over the stored outputs. */
  private linearMultistepStep(output: Float32Array, timestep: number, sample: Float32Array): Float32Array {
    const stepRatio = Math.floor(this.config.numTrainTimesteps / (this.numInferenceSteps as number));
    let prevTimestep = timestep - stepRatio;
    let fromTimestep = timestep;
    let fromSample = sample;
    // The second call re-evaluates at the repeated timestep: it restarts from the first call's sample.
    const isWarmUpRepeat = this.counter === 1;
    if (isWarmUpRepeat) {
      prevTimestep = timestep;
      fromTimestep = timestep + stepRatio;
    } else {
      this.rememberOutput(output);
    }

    const e = this.storedOutputs;
    const n = e.length;
    let update: ArrayLike<number>;
    if (n === 1 && this.counter === 0) {
      update = output;
      this.warmUpSample = sample;
    } else if (n === 1 && isWarmUpRepeat) {
      update = mapFloat32(output.length, (i) => (output[i] + e[0][i]) / 2);
      fromSample = this.warmUpSample ?? sample;
      this.warmUpSample = undefined;
    } else if (n === 2) {
      update = mapFloat32(output.length, (i) => (3 * e[1][i] - e[0][i]) / 2);
    } else if (n === 3) {
      update = mapFloat32(output.length, (i) => (23 * e[2][i] - 16 * e[1][i] + 5 * e[0][i]) / 12);
    } else {
      update = mapFloat32(output.length, (i) => (55 * e[n - 1][i] - 59 * e[n - 2][i] + 37 * e[n - 3][i] - 9 * e[n - 4][i]) / 24);
    }
    return this.previousSample(fromSample, fromTimestep, prevTimestep, update);
  }

  /** Formula (9) of the PNDM paper: x_(t−δ) from x_t and the (combined) ε. */
  private previousSample(sample: ArrayLike<number>, timestep: number, prevTimestep: number, output: ArrayLike<number>): Float32Array {
    const alphaProdT = this.alphaCumprodAt(timestep);
    const alphaProdTPrev = this.alphaCumprodBefore(prevTimestep);
    const betaProdT = f32(1 - alphaProdT);
    const betaProdTPrev = f32(1 - alphaProdTPrev);
    const sqrtAlphaProdT = f32(Math.sqrt(alphaProdT));
    const sqrtBetaProdT = f32(Math.sqrt(betaProdT));
    const sampleCoeff = f32(Math.sqrt(f32(alphaProdTPrev / alphaProdT)));
    const denominator = f32(
      f32(alphaProdT * f32(Math.sqrt(betaProdTPrev))) + f32(Math.sqrt(f32(f32(alphaProdT * betaProdT) * alphaProdTPrev))),
    );
    const outputCoeff = f32(alphaProdTPrev - alphaProdT);
    const isVelocity = this.config.predictionType === 'v_prediction';
    return mapFloat32(sample.length, (i) => {
      const x = sample[i];
      const epsilon = isVelocity ? f32(sqrtAlphaProdT * output[i]) + f32(sqrtBetaProdT * x) : output[i];
      return f32(sampleCoeff * x) - f32(f32(outputCoeff * epsilon) / denominator);
    });
  }
}
