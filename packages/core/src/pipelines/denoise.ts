import type { GenerationContext } from '../callbacks/context.js';
import type { GenerationCallbacks } from '../callbacks/resolve.js';
import type { CallbackHookName } from '../contract.js';
import { NonFiniteError, type TensorWriter } from '../errors.js';
import type { Generator } from '../random/generator.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import { Tensor } from '../tensor.js';
import { applyGuidance, rescaleNoiseCfg } from './steps.js';
import { isFinitePass, throwIfAborted } from './validation.js';

type TensorMap<Name extends string> = { latents: Tensor<'float32'> } & Partial<Record<Name, Tensor<'float32'>>>;

/** What differs between pipelines: how the noise is predicted, and an optional correction after each step. */
export interface DenoisingRun<Name extends string> {
  scheduler: Scheduler;
  /** The timesteps to visit (the whole schedule, or its tail for image-to-image). */
  timesteps: ArrayLike<number>;
  /** The loop state callbacks may read and replace; `latents` is always there. */
  tensors: TensorMap<Name>;
  pipeline: GenerationContext;
  callbacks: GenerationCallbacks;
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

/** The final latents, and the step after which a callback interrupted the run (`undefined`: it ran to the end). */
export interface DenoisingResult {
  latents: Tensor<'float32'>;
  interruptedAtStep?: number;
}

/**
 * The denoising loop every pipeline shares — diffusers' loop, top to bottom: stop when interrupted, step-begin
 * callbacks, predict the noise (doubled batch under guidance), guide, step the scheduler, then the step-end callbacks
 * read and replace tensors. After each step one pass over the latents checks that they are finite, so a NaN (a
 * callback's bad write, an fp16 overflow) stops the run with its origin named instead of decoding a black picture.
 */
export async function denoise<Name extends string>(run: DenoisingRun<Name>): Promise<DenoisingResult> {
  const { scheduler, timesteps, tensors, pipeline, callbacks, generator, eta, guidanceRescale } = run;
  pipeline.attachLoopTensors(tensors);
  const runCallbacks = async (hook: CallbackHookName, stepIndex: number, timestep: number, extra?: Record<string, Tensor<'float32'>>) => {
    if (!callbacks.has(hook)) return;
    const present = { ...(Object.fromEntries(Object.entries(tensors).filter(([, tensor]) => tensor !== undefined)) as Record<string, Tensor<'float32'>>), ...extra };
    Object.assign(tensors, await callbacks.run(hook, pipeline, stepIndex, timestep, present));
  };
  const checkedLatents = (stepIndex: number) => {
    if (!isFinitePass(tensors.latents.data)) throw nonFiniteLatents(tensors, stepIndex, callbacks);
    return tensors.latents;
  };

  for (let stepIndex = 0; stepIndex < timesteps.length; stepIndex++) {
    throwIfAborted(pipeline.signal);
    if (pipeline.interrupt) return { latents: tensors.latents, interruptedAtStep: stepIndex - 1 };
    const timestep = timesteps[stepIndex];
    await runCallbacks('onStepBegin', stepIndex, timestep);
    if (pipeline.interrupt) return { latents: checkedLatents(stepIndex), interruptedAtStep: stepIndex - 1 };
    const cfg = pipeline.doClassifierFreeGuidance;

    const latents = tensors.latents;
    const latentModelInput = scheduler.scaleModelInput(cfg ? Tensor.cat([latents, latents]) : latents, timestep);
    let noisePred = await run.predictNoise(latentModelInput, timestep, stepIndex, tensors);
    if (cfg) {
      const { guided, text } = applyGuidance(noisePred, pipeline.guidanceScale);
      noisePred = guidanceRescale > 0 ? rescaleNoiseCfg(guided, text, guidanceRescale) : guided;
    }
    const { prevSample, predOriginalSample } = scheduler.step(noisePred, timestep, latents, { generator, eta });
    tensors.latents = run.afterStep ? run.afterStep(prevSample, stepIndex, tensors) : prevSample;

    await runCallbacks('onStepEnd', stepIndex, timestep, predOriginalSample && { predOriginalSample });
    checkedLatents(stepIndex);
  }
  throwIfAborted(pipeline.signal);
  // diffusers keeps the loop going with `continue` once interrupted; a flag set after the last step skips nothing.
  return { latents: tensors.latents };
}

/** Where non-finite latents came from, as far as the loop can tell: their last writer, and other non-finite tensors. */
function nonFiniteLatents(tensors: Record<string, Tensor<'float32'> | undefined>, stepIndex: number, callbacks: GenerationCallbacks): NonFiniteError {
  const writtenBy = callbacks.lastWriter('latents');
  const by = (writer: TensorWriter) => `callback "${writer.callbackName}" in ${writer.hook} at step ${writer.stepIndex}`;
  const editors = [...new Set([...callbacks.receivers('onStepBegin', 'latents'), ...callbacks.receivers('onStepEnd', 'latents')])];
  const origin = writtenBy
    ? `they were last replaced by ${by(writtenBy)}`
    : 'no callback replaced them, so the UNet\'s prediction or the scheduler step made them' +
      (editors.length > 0 ? ` (or an in-place edit by ${editors.map((name) => `"${name}"`).join(', ')}, which received them)` : '');
  const others = Object.entries(tensors)
    .filter(([name, tensor]) => name !== 'latents' && tensor !== undefined && !isFinitePass(tensor.data))
    .map(([name]) => {
      const writer = callbacks.lastWriter(name);
      return writer ? `${name} (last replaced by ${by(writer)})` : name;
    });
  const { data } = tensors.latents!;
  const bad = data.reduce((count, value) => count + (Number.isFinite(value) ? 0 : 1), 0);
  return new NonFiniteError(
    'latents',
    stepIndex,
    `The latents hold NaN or Infinity (${bad} of ${data.length} values) after step ${stepIndex}: ${origin}.` +
      (others.length > 0 ? ` Not finite either: ${others.join(', ')}.` : '') +
      ' The generation stopped rather than decode a broken picture.',
    writtenBy,
  );
}
