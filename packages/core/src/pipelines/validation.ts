import { AbortError, InvalidArgumentError } from '../errors.js';

function requireInteger(name: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, got ${value}.`);
}

/** diffusers' `check_inputs`, for the options every pipeline shares. */
export function checkGenerationOptions(options: {
  height: number;
  width: number;
  numInferenceSteps: number;
  guidanceScale: number;
  guidanceRescale: number;
  numImagesPerPrompt: number;
  vaeScaleFactor: number;
}): void {
  const { height, width, vaeScaleFactor } = options;
  if (!Number.isInteger(height) || !Number.isInteger(width) || height <= 0 || width <= 0 || height % vaeScaleFactor || width % vaeScaleFactor) {
    throw new InvalidArgumentError(`height and width must be positive multiples of ${vaeScaleFactor}, got ${height}×${width}.`);
  }
  requireInteger('numInferenceSteps', options.numInferenceSteps, 1);
  requireInteger('numImagesPerPrompt', options.numImagesPerPrompt, 1);
  if (!Number.isFinite(options.guidanceScale)) throw new InvalidArgumentError(`guidanceScale must be a finite number, got ${options.guidanceScale}.`);
  if (!(options.guidanceRescale >= 0 && options.guidanceRescale <= 1)) {
    throw new InvalidArgumentError(`guidanceRescale must be between 0 and 1, got ${options.guidanceRescale}.`);
  }
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortError(undefined, { cause: signal.reason });
}
