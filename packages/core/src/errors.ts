/**
 * Every error @diff/core throws on purpose is a `DiffError` with a stable `code`, so applications can branch on
 * `error.code` instead of parsing messages. Messages say what was wrong and what is allowed.
 */
export type DiffErrorCode =
  | 'INVALID_ARGUMENT'
  | 'INVALID_CONFIG'
  | 'UNSUPPORTED'
  | 'MODEL_LOAD'
  | 'MODEL_RUN'
  | 'CALLBACK'
  | 'PLUGIN_LOAD'
  | 'ABORTED'
  | 'NON_FINITE';

export class DiffError extends Error {
  readonly code: DiffErrorCode;
  constructor(code: DiffErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** An argument is out of range, of the wrong shape or of the wrong kind. */
export class InvalidArgumentError extends DiffError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INVALID_ARGUMENT', message, options);
  }
}

/** A configuration object (scheduler_config.json, model_index.json, …) holds a value the library cannot use. */
export class ConfigError extends DiffError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INVALID_CONFIG', message, options);
  }
}

/** Asked for something the library does not implement (an unknown scheduler class, a prediction type, …). */
export class UnsupportedError extends DiffError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('UNSUPPORTED', message, options);
  }
}

/** A model folder or file is missing or malformed. `path` names the file. */
export class ModelLoadError extends DiffError {
  readonly path: string;
  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super('MODEL_LOAD', `${path}: ${message}`, options);
    this.path = path;
  }
}

/** A step-end callback threw or returned something unusable. Names the callback, the hook and the step. */
export class CallbackError extends DiffError {
  readonly callbackName: string;
  readonly hook: string;
  readonly stepIndex: number;
  constructor(callbackName: string, hook: string, stepIndex: number, reason: string, options?: { cause?: unknown }) {
    super('CALLBACK', `Callback "${callbackName}" failed in ${hook} at step ${stepIndex}: ${reason}`, options);
    this.callbackName = callbackName;
    this.hook = hook;
    this.stepIndex = stepIndex;
  }
}

/** The caller aborted the generation through its `signal`. */
export class AbortError extends DiffError {
  constructor(message = 'The generation was aborted.', options?: { cause?: unknown }) {
    super('ABORTED', message, options);
  }
}

/** ONNX Runtime failed while running a model that loaded. `path` names the model file. */
export class ModelRunError extends DiffError {
  readonly path: string;
  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super('MODEL_RUN', `${path}: ${message}`, options);
    this.path = path;
  }
}

/** An installed callback package could not be loaded. `packageName` names it. */
export class PluginLoadError extends DiffError {
  readonly packageName: string;
  constructor(packageName: string, message: string, options?: { cause?: unknown }) {
    super('PLUGIN_LOAD', `${packageName}: ${message}`, options);
    this.packageName = packageName;
  }
}

/** Who last replaced a loop tensor: a callback, its hook and the step (see `NonFiniteError`). */
export interface TensorWriter {
  readonly callbackName: string;
  readonly hook: string;
  readonly stepIndex: number;
}

/**
 * A tensor of the denoising loop (or a decoded picture) holds NaN or ±Infinity: the generation stops instead of
 * decoding a black or noisy picture. Names the tensor, the step, and the callback that last replaced the tensor
 * (`writtenBy`; undefined when no callback did, so the values came from the models or the scheduler).
 */
export class NonFiniteError extends DiffError {
  readonly tensorName: string;
  readonly stepIndex: number;
  readonly writtenBy?: TensorWriter;
  constructor(tensorName: string, stepIndex: number, message: string, writtenBy?: TensorWriter) {
    super('NON_FINITE', message);
    this.tensorName = tensorName;
    this.stepIndex = stepIndex;
    this.writtenBy = writtenBy;
  }
}
