import type { GenerationContext } from '../callbacks/context.js';
import type { StepEndCallbacks } from '../callbacks/step-end.js';
import type { Generator } from '../random/generator.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import { Tensor } from '../tensor.js';
import { applyGuidance, rescaleNoiseCfg } from './steps.js';
import { throwIfAborted } from './validation.js';

type TensorMap<Name extends string> = { latents: Tensor<'float32'> } & Partial<Record<Name, Tensor<'float32'>>>;

/** What differs between pipelines: how the noise is predicted, and an optional correction after each step. */
export interface DenoisingRun<Name extends string> {
  scheduler: Scheduler;
  /** The timesteps to visit (the whole schedule, or its tail for image-to-image). */
  timesteps: ArrayLike<number>;
  /** The loop state callbacks may read and replace; `latents` is always there. */
  tensors: TensorMap<Name>;
  pipeline: GenerationContext;
  callbacks: StepEndCallbacks;
  generator?: Generator;
  /** DDIM's η; schedulers without one ignore it. */
  eta?: number;
  guidanceRescale: number;
  /**
   * Runs the model(s) on the scaled latent batch (`[latents; latents]` when guidance is on) and returns the noise
   * prediction for that batch. Reads conditioning (prompt embeddings, masks, control images) from `tensors`.
   */
  predictNoise(latentModelInput: Tensor<'float32'>, timestep: number, stepIndex: number, tensors: TensorMap<Name>): Promise<Tensor<'float32'>>;
  /** Runs after `scheduler.step` (inpainting with a 4-channel UNet re-imposes the known region here). */
  afterStep?(latents: Tensor<'float32'>, stepIndex: number, tensors: TensorMap<Name>): Tensor<'float32'>;
}

/**
 * The denoising loop every pipeline shares — diffusers' loop, top to bottom: skip when interrupted, predict the
 * noise (doubled batch under guidance), guide, step the scheduler, then let the callbacks read and replace tensors.
 * Returns the final latents.
 */
export async function denoise<Name extends string>(run: DenoisingRun<Name>): Promise<Tensor<'float32'>> {
  const { scheduler, timesteps, tensors, pipeline, callbacks, generator, eta, guidanceRescale } = run;
  for (let stepIndex = 0; stepIndex < timesteps.length; stepIndex++) {
    throwIfAborted(pipeline.signal);
    if (pipeline.interrupt) continue;
    const timestep = timesteps[stepIndex];
    const cfg = pipeline.doClassifierFreeGuidance;

    const latents = tensors.latents;
    const latentModelInput = scheduler.scaleModelInput(cfg ? Tensor.cat([latents, latents]) : latents, timestep);
    let noisePred = await run.predictNoise(latentModelInput, timestep, stepIndex, tensors);
    if (cfg) {
      const { guided, text } = applyGuidance(noisePred, pipeline.guidanceScale);
      noisePred = guidanceRescale > 0 ? rescaleNoiseCfg(guided, text, guidanceRescale) : guided;
    }
    let next = scheduler.step(noisePred, timestep, latents, { generator, eta }).prevSample;
    if (run.afterStep) next = run.afterStep(next, stepIndex, tensors);
    tensors.latents = next;

    if (!callbacks.isEmpty) {
      const present = Object.fromEntries(Object.entries(tensors).filter(([, tensor]) => tensor !== undefined)) as Record<string, Tensor<'float32'>>;
      Object.assign(tensors, await callbacks.run(pipeline, stepIndex, timestep, present));
    }
  }
  throwIfAborted(pipeline.signal);
  return tensors.latents;
}
