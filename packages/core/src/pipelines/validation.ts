import { AbortError, InvalidArgumentError } from '../errors.js';

function requireInteger(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, got ${value}.`);
}

/** The options every pipeline shares, as `generate` receives them. */
interface SharedGenerationOptions {
  numInferenceSteps?: number;
  guidanceScale?: number;
  guidanceRescale?: number;
  numImagesPerPrompt?: number;
}

/** The shared options with diffusers' defaults filled in, and the picture size. */
export interface GenerationSettings {
  height: number;
  width: number;
  numInferenceSteps: number;
  guidanceScale: number;
  guidanceRescale: number;
  numImagesPerPrompt: number;
}

/**
 * The settings every pipeline shares — diffusers' defaults (50 steps, no rescale, one image per prompt; the
 * guidance scale is the pipeline's) — checked as diffusers' `check_inputs` checks them. `size` is the picture size
 * the pipeline settled on (given, from the UNet config, or from an input image).
 */
export function generationSettings(
  options: SharedGenerationOptions,
  size: { height: number; width: number },
  defaults: { guidanceScale: number; vaeScaleFactor: number },
): GenerationSettings {
  const { height, width } = size;
  const { vaeScaleFactor } = defaults;
  const settings = {
    height,
    width,
    numInferenceSteps: options.numInferenceSteps ?? 50,
    guidanceScale: options.guidanceScale ?? defaults.guidanceScale,
    guidanceRescale: options.guidanceRescale ?? 0,
    numImagesPerPrompt: options.numImagesPerPrompt ?? 1,
  };
  if (!Number.isInteger(height) || !Number.isInteger(width) || height <= 0 || width <= 0 || height % vaeScaleFactor || width % vaeScaleFactor) {
    throw new InvalidArgumentError(`height and width must be positive multiples of ${vaeScaleFactor}, got ${height}×${width}.`);
  }
  requireInteger('numInferenceSteps', settings.numInferenceSteps, 1);
  requireInteger('numImagesPerPrompt', settings.numImagesPerPrompt, 1);
  if (!Number.isFinite(settings.guidanceScale)) throw new InvalidArgumentError(`guidanceScale must be a finite number, got ${settings.guidanceScale}.`);
  if (!(settings.guidanceRescale >= 0 && settings.guidanceRescale <= 1)) {
    throw new InvalidArgumentError(`guidanceRescale must be between 0 and 1, got ${settings.guidanceRescale}.`);
  }
  return settings;
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortError(undefined, { cause: signal.reason });
}
