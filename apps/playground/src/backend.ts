/**
 * Where the playground's generations run: in this process (`LocalBackend`, src/local-backend.ts) or on the workers of
 * a `@diff/queue` queue (`QueueBackend`, src/queue-backend.ts, with --redis). The HTTP API, the sessions and the
 * event replay (src/generations.ts, src/playground.ts) are the same for both.
 */
import { randomInt } from 'node:crypto';
import {
  InvalidArgumentError,
  InvalidRequestError,
  type CallbackRegistry,
  type GenerationEvent,
  type GenerationRequest,
  type RegisteredCallback,
} from '@diff/core/plugin';
import type { LatentPreview } from '@diff/callback-preview';

/** A request as it runs: the model and the seed filled in, so that the gallery can repeat it exactly. */
export type ResolvedRequest = GenerationRequest & { readonly model: string; readonly seed: number | bigint };

type DoneEvent = Extract<GenerationEvent, { type: 'done' }>;

/** What a backend reports: core's events; `done` needs no `image`, the server links to its pictures itself. */
export type BackendEvent = Exclude<GenerationEvent, DoneEvent> | Omit<DoneEvent, 'image'>;

export interface GenerationBackend {
  /** The callbacks requests may name. */
  readonly registry: CallbackRegistry;
  /** The models requests may name; the first is the default. */
  models(): Promise<readonly string[]>;
  /**
   * Validates a JSON request and starts it, or queues it; its events go to `onEvent` in order, a final one (`done`,
   * `cancelled` or `error`) last. Throws `InvalidRequestError` naming the field for a bad request,
   * `BackendUnavailableError` when nothing can run it now.
   */
  submit(body: unknown, onEvent: (event: BackendEvent) => void): Promise<{ id: string; request: ResolvedRequest }>;
  /** Stop: a running generation ends after its current step and keeps its partial picture; a waiting one is cancelled. */
  interrupt(id: string): Promise<void>;
  /** Abort, without a picture. Nothing happens to a generation that has ended. */
  cancel(id: string): Promise<void>;
  /** The `index`-th picture (from 0) of a generation that is `done`, as PNG; undefined when it has none. */
  image(id: string, index: number): Promise<Buffer | undefined>;
  /** The server has forgotten the generation: drop what is kept for it here. */
  forget(id: string): void;
  /** Cancels this server's generations that have not ended, waits for the running ones to stop, frees what it holds. */
  close(): Promise<void>;
}

/** Nothing can run generations now (no worker serves the queue): HTTP 503, try again later. */
export class BackendUnavailableError extends Error {
  override readonly name = 'BackendUnavailableError';
}

/** The model and seed of a request, filled in: the first model, a random seed (as diffusers' own default draws one). */
export function resolveRequest(request: GenerationRequest, models: readonly string[]): ResolvedRequest {
  const model = request.model ?? models[0];
  if (!models.includes(model)) {
    throw new InvalidRequestError('model', `Invalid generation request: model must be one of ${models.join(', ')}, got ${JSON.stringify(model)}.`);
  }
  return { ...request, model, seed: request.seed ?? randomInt(2 ** 48 - 1) };
}

/**
 * The request's callbacks, made by the registry: options only a plugin's constructor can judge (the interrupt
 * callback needs a condition) are refused here as a bad request, naming the callback, before anything runs.
 */
export function createRequestedCallbacks(
  registry: CallbackRegistry,
  request: GenerationRequest,
  onPreview: (preview: LatentPreview) => Promise<void> | void,
): RegisteredCallback[] {
  return (request.callbacks ?? []).map(({ name, options }, index) => {
    try {
      return registry.create(name, options, name === 'preview' ? { onPreview } : undefined);
    } catch (error) {
      if (!(error instanceof InvalidArgumentError)) throw error;
      throw new InvalidRequestError(`callbacks.${index}`, `Invalid generation request: callbacks.${index}: ${error.message}`);
    }
  });
}
