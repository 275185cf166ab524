/**
 * Generation requests as JSON — what a web page posts and a job queue carries — and the one vocabulary of progress
 * events apps report them with. Dependency-free (part of `@diff/core/plugin`), so an API process validates requests
 * without loading ONNX Runtime.
 */
import type { JsonSchema, StandardSchemaV1 } from './contract.js';
import { InvalidArgumentError } from './errors.js';
import { Generator } from './random/generator.js';
import type { CallbackRegistry } from './plugins/registry.js';
import { SCHEDULER_NAMES, type SchedulerName } from './schedulers/names.js';

/** One callback of a request, by registry name. */
export interface CallbackRequest {
  readonly name: string;
  readonly options?: Readonly<Record<string, unknown>>;
}

/** A generation request after validation. */
export interface GenerationRequest {
  readonly prompt: string;
  readonly negativePrompt?: string;
  /** torch's 64-bit seed: a number up to 2^53 − 1, a bigint beyond (sent as a decimal string). */
  readonly seed?: number | bigint;
  readonly numInferenceSteps?: number;
  readonly guidanceScale?: number;
  readonly width?: number;
  readonly height?: number;
  readonly scheduler?: SchedulerName;
  readonly numImagesPerPrompt?: number;
  readonly callbacks?: readonly CallbackRequest[];
  /** A model the server offers, by name; never a path. */
  readonly model?: string;
}

/** The limits the schema enforces, also shown in its JSON Schema. */
export const GENERATION_REQUEST_LIMITS = {
  maxPromptLength: 10_000,
  maxSteps: 1000,
  maxGuidanceScale: 100,
  maxSide: 4096,
  maxImagesPerPrompt: 8,
  maxCallbacks: 16,
} as const;

const MAX_SEED = 2n ** 64n - 1n;
const { maxPromptLength, maxSteps, maxGuidanceScale, maxSide, maxImagesPerPrompt, maxCallbacks } = GENERATION_REQUEST_LIMITS;

/** The JSON Schema of a request body: forms and docs are generated from it. */
export const GENERATION_REQUEST_JSON_SCHEMA: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['prompt'],
  properties: {
    prompt: { type: 'string', maxLength: maxPromptLength, description: 'What to draw.' },
    negativePrompt: { type: 'string', maxLength: maxPromptLength, description: 'What to steer away from (classifier-free guidance).' },
    seed: {
      anyOf: [
        { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
        { type: 'string', pattern: '^[0-9]{1,20}$' },
      ],
      description: "torch's seed: an integer up to 2^53 − 1, or a decimal string up to 2^64 − 1. Random when absent.",
    },
    numInferenceSteps: { type: 'integer', minimum: 1, maximum: maxSteps, description: 'Denoising steps.' },
    guidanceScale: { type: 'number', minimum: 0, maximum: maxGuidanceScale, description: 'Classifier-free guidance scale (≤ 1: off).' },
    width: { type: 'integer', minimum: 8, maximum: maxSide, multipleOf: 8, description: 'Picture width in pixels.' },
    height: { type: 'integer', minimum: 8, maximum: maxSide, multipleOf: 8, description: 'Picture height in pixels.' },
    scheduler: { type: 'string', enum: SCHEDULER_NAMES, description: 'The scheduler; the model’s own when absent.' },
    numImagesPerPrompt: { type: 'integer', minimum: 1, maximum: maxImagesPerPrompt, description: 'Pictures per prompt.' },
    callbacks: {
      type: 'array',
      maxItems: maxCallbacks,
      description: 'Callbacks by registry name, with their JSON options.',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name'],
        properties: { name: { type: 'string' }, options: { type: 'object' } },
      },
    },
    model: { type: 'string', description: 'A model the server offers, by name.' },
  },
};

type Issue = StandardSchemaV1.Issue;
const issue = (path: string | number | readonly (string | number)[], message: string): Issue => ({
  message,
  path: Array.isArray(path) ? path : [path as string | number],
});
const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

function checkInteger(body: Record<string, unknown>, key: string, min: number, max: number, issues: Issue[], multipleOf = 1): void {
  const value = body[key];
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max || value % multipleOf !== 0) {
    const step = multipleOf > 1 ? `, a multiple of ${multipleOf}` : '';
    issues.push(issue(key, `must be an integer from ${min} to ${max}${step}, got ${JSON.stringify(value)}`));
  }
}

function checkString(body: Record<string, unknown>, key: string, issues: Issue[], required = false): void {
  const value = body[key];
  if (value === undefined && !required) return;
  if (typeof value !== 'string') issues.push(issue(key, `must be a string, got ${value === undefined ? 'nothing' : JSON.stringify(value)}`));
  else if (value.length > maxPromptLength) issues.push(issue(key, `must be at most ${maxPromptLength} characters, got ${value.length}`));
}

function parseSeed(value: unknown, issues: Issue[]): number | bigint | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return value;
  if (typeof value === 'string' && /^[0-9]{1,20}$/.test(value) && BigInt(value) <= MAX_SEED) {
    const seed = BigInt(value);
    return seed <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(seed) : seed;
  }
  issues.push(issue('seed', `must be an integer from 0 to 2^53 − 1, or a decimal string up to 2^64 − 1, got ${JSON.stringify(value)}`));
  return undefined;
}

function validate(value: unknown): StandardSchemaV1.Result<GenerationRequest> {
  if (!isObject(value)) return { issues: [issue([], `a generation request must be a JSON object, got ${JSON.stringify(value) ?? typeof value}`)] };
  const issues: Issue[] = [];
  const allowed = Object.keys(GENERATION_REQUEST_JSON_SCHEMA.properties ?? {});
  for (const key of Object.keys(value)) if (!allowed.includes(key)) issues.push(issue(key, `is not a request field; allowed: ${allowed.join(', ')}`));
  checkString(value, 'prompt', issues, true);
  checkString(value, 'negativePrompt', issues);
  checkString(value, 'model', issues);
  const seed = parseSeed(value.seed, issues);
  checkInteger(value, 'numInferenceSteps', 1, maxSteps, issues);
  checkInteger(value, 'width', 8, maxSide, issues, 8);
  checkInteger(value, 'height', 8, maxSide, issues, 8);
  checkInteger(value, 'numImagesPerPrompt', 1, maxImagesPerPrompt, issues);
  const { guidanceScale, scheduler, callbacks } = value;
  if (guidanceScale !== undefined && (typeof guidanceScale !== 'number' || !(guidanceScale >= 0 && guidanceScale <= maxGuidanceScale))) {
    issues.push(issue('guidanceScale', `must be a number from 0 to ${maxGuidanceScale}, got ${JSON.stringify(guidanceScale)}`));
  }
  if (scheduler !== undefined && !SCHEDULER_NAMES.includes(scheduler as SchedulerName)) {
    issues.push(issue('scheduler', `must be one of ${SCHEDULER_NAMES.join(', ')}, got ${JSON.stringify(scheduler)}`));
  }
  if (callbacks !== undefined) {
    if (!Array.isArray(callbacks) || callbacks.length > maxCallbacks) {
      issues.push(issue('callbacks', `must be an array of at most ${maxCallbacks} { name, options } objects`));
    } else {
      callbacks.forEach((callback, index) => {
        const ok = isObject(callback) && typeof callback.name === 'string' && (callback.options === undefined || isObject(callback.options))
          && Object.keys(callback).every((key) => key === 'name' || key === 'options');
        if (!ok) issues.push(issue(['callbacks', index], 'must be { name: string, options?: object }'));
      });
    }
  }
  if (issues.length > 0) return { issues };
  return { value: { ...(value as unknown as GenerationRequest), ...(seed === undefined ? {} : { seed }) } };
}

/** The request schema as a Standard Schema validator (synchronous). Callback options are checked by `parseGenerationRequest`. */
export const generationRequestSchema: StandardSchemaV1<unknown, GenerationRequest> = {
  '~standard': { version: 1, vendor: '@diff/core', validate },
};

/** `field: message` for each issue, as one sentence. */
function describeIssues(issues: readonly Issue[]): string {
  return issues
    .map((found) => {
      const path = (found.path ?? []).map((segment) => (typeof segment === 'object' ? String(segment.key) : String(segment))).join('.');
      return path ? `${path} ${found.message}` : found.message;
    })
    .join('; ');
}

/** An invalid request: `field` names the first offending field (for an HTTP 400 body). */
export class InvalidRequestError extends InvalidArgumentError {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.field = field;
  }
}

/**
 * Validates a JSON request, and each callback's name and options against `registry` when one is given: any problem
 * is an `InvalidRequestError` naming the field and what is allowed.
 */
export function parseGenerationRequest(value: unknown, options: { registry?: CallbackRegistry } = {}): GenerationRequest {
  const result = validate(value);
  if (result.issues) {
    const first = result.issues[0].path?.map((segment) => (typeof segment === 'object' ? String(segment.key) : String(segment))).join('.') ?? '';
    throw new InvalidRequestError(first, `Invalid generation request: ${describeIssues(result.issues)}.`);
  }
  const request = result.value;
  request.callbacks?.forEach((callback, index) => {
    try {
      options.registry?.parseOptions(callback.name, callback.options);
    } catch (error) {
      throw new InvalidRequestError(`callbacks.${index}`, `Invalid generation request: callbacks.${index}: ${(error as Error).message}`);
    }
  });
  return request;
}

/** The `generate` options a request sets (everything but callbacks and the signal, which the app adds). */
export interface RequestGenerationOptions {
  prompt: string;
  negativePrompt?: string;
  numInferenceSteps?: number;
  guidanceScale?: number;
  width?: number;
  height?: number;
  scheduler?: SchedulerName;
  numImagesPerPrompt?: number;
  generator?: Generator;
}

/**
 * A validated request as `generate` options: `pipeline.generate({ ...generationOptions(request), callbackOnStepEnd,
 * signal })`. The seed becomes a fresh `Generator`; without one the generation draws from a random seed.
 */
export function generationOptions(request: GenerationRequest): RequestGenerationOptions {
  const { prompt, negativePrompt, numInferenceSteps, guidanceScale, width, height, scheduler, numImagesPerPrompt, seed } = request;
  return {
    prompt, negativePrompt, numInferenceSteps, guidanceScale, width, height, scheduler, numImagesPerPrompt,
    ...(seed === undefined ? {} : { generator: new Generator().manualSeed(seed) }),
  };
}

/**
 * Progress of one generation, as every app reports it (the playground's Server-Sent Events, the job queue's events):
 * the event names and fields are the same everywhere.
 */
export type GenerationEvent =
  | { readonly type: 'queued'; readonly id: string; readonly position: number }
  | { readonly type: 'started'; readonly id: string }
  | { readonly type: 'step'; readonly id: string; readonly stepIndex: number; readonly numTimesteps: number; readonly preview?: string }
  | { readonly type: 'done'; readonly id: string; readonly image: string; readonly interruptedAtStep?: number }
  | { readonly type: 'cancelled'; readonly id: string }
  | { readonly type: 'error'; readonly id: string; readonly message: string; readonly code: string };

export type GenerationEventType = GenerationEvent['type'];
