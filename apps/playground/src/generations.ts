/**
 * The playground's generations, whatever runs them (a `GenerationBackend`): each one's owner (the session that
 * started it), its events kept for replay, the links to its pictures, the limit on waiting ones, and the rule that a
 * generation whose last page has left is cancelled.
 */
import type { GenerationEvent } from '@diff/core/plugin';
import type { BackendEvent, GenerationBackend, ResolvedRequest } from './backend.js';

type DoneEvent = Extract<GenerationEvent, { type: 'done' }>;

/** Core's event vocabulary; `done` also lists every picture (`image` is the first) for requests that ask for several. */
export type PlaygroundEvent = Exclude<GenerationEvent, DoneEvent> | (DoneEvent & { readonly images: readonly string[] });

/** The events after which nothing more comes. */
export const FINAL_EVENT_TYPES: ReadonlySet<PlaygroundEvent['type']> = new Set(['done', 'cancelled', 'error']);

type Listener = (event: PlaygroundEvent, index: number) => void;

export class Generation {
  readonly events: PlaygroundEvent[] = [];
  readonly listeners = new Set<Listener>();
  /** Where the latest step event with a preview is stored: only that one keeps its picture for replay. */
  latestPreviewIndex = -1;

  constructor(
    readonly id: string,
    readonly owner: string,
    readonly request: ResolvedRequest,
  ) {}

  get finished(): boolean {
    const last = this.events.at(-1);
    return last !== undefined && FINAL_EVENT_TYPES.has(last.type);
  }

  /** Not started yet: nothing came, or only `queued`. */
  get waiting(): boolean {
    return this.events.every((event) => event.type === 'queued');
  }

  /** The pictures it has: those of the request once done, none otherwise. */
  get pictureCount(): number {
    return this.events.at(-1)?.type === 'done' ? (this.request.numImagesPerPrompt ?? 1) : 0;
  }

  pictureUrl(index: number): string {
    return `/api/generations/${this.id}/image/${index}`;
  }
}

/** More generations wait than the server allows. */
export class QueueFullError extends Error {
  constructor(readonly maxQueued: number) {
    super(`${maxQueued} generations are already waiting; try again when one has finished.`);
  }
}

export interface GenerationsOptions {
  backend: GenerationBackend;
  /** Waiting generations (not started yet, all models together) beyond which new ones are refused. */
  maxQueued: number;
  /** Finished generations kept for replay and their pictures; the oldest are forgotten first. */
  maxFinished: number;
  /** Where unexpected failures are reported. */
  logError: (message: string) => void;
}

export class Generations {
  private readonly byId = new Map<string, Generation>();
  private readonly finishedOrder: Generation[] = [];
  /** Requests being submitted: they count as waiting until their generation exists. */
  private submitting = 0;

  constructor(private readonly options: GenerationsOptions) {}

  /**
   * Validates a JSON request and starts it for `owner`. Throws `InvalidRequestError` (naming the field) for a bad
   * request, `QueueFullError` when too many wait, `BackendUnavailableError` when nothing can run it now.
   */
  async submit(body: unknown, owner: string): Promise<Generation> {
    const waiting = this.submitting + [...this.byId.values()].filter((generation) => generation.waiting).length;
    if (waiting >= this.options.maxQueued) throw new QueueFullError(this.options.maxQueued);
    // Events may come before `submit` returns (the local backend queues at once): kept until the generation exists.
    let generation: Generation | undefined;
    const early: BackendEvent[] = [];
    this.submitting += 1;
    try {
      const { id, request } = await this.options.backend.submit(body, (event) => (generation ? this.emit(generation, event) : early.push(event)));
      generation = new Generation(id, owner, request);
    } finally {
      this.submitting -= 1;
    }
    this.byId.set(generation.id, generation);
    for (const event of early) this.emit(generation, event);
    return generation;
  }

  /** The generation, if it exists and `owner` started it: other sessions cannot tell it from a missing one. */
  get(id: string, owner: string): Generation | undefined {
    const generation = this.byId.get(id);
    return generation?.owner === owner ? generation : undefined;
  }

  /**
   * Replays the events after `afterIndex`, then passes each new one to `listener` until the final one. Returns the
   * unsubscribe function: when the last listener of an unfinished generation leaves (its page closed), it is cancelled.
   */
  subscribe(generation: Generation, listener: Listener, afterIndex = -1): () => void {
    generation.events.forEach((event, index) => index > afterIndex && listener(event, index));
    if (generation.finished) return () => undefined;
    generation.listeners.add(listener);
    return () => {
      generation.listeners.delete(listener);
      if (generation.listeners.size === 0) {
        this.cancel(generation).catch((error: unknown) => this.options.logError(`cancelling generation ${generation.id} failed: ${String(error)}`));
      }
    };
  }

  /** Stop: a running generation ends after its current step and keeps its partial picture; a waiting one is cancelled. */
  async interrupt(generation: Generation): Promise<void> {
    if (!generation.finished) await this.options.backend.interrupt(generation.id);
  }

  async cancel(generation: Generation): Promise<void> {
    if (!generation.finished) await this.options.backend.cancel(generation.id);
  }

  /** The `index`-th picture as PNG, once done; undefined when it has no such picture. */
  async image(generation: Generation, index: number): Promise<Buffer | undefined> {
    return index < generation.pictureCount ? this.options.backend.image(generation.id, index) : undefined;
  }

  /** Cancels every unfinished generation, waits for the running ones to stop and frees what the backend holds. */
  close(): Promise<void> {
    return this.options.backend.close();
  }

  private emit(generation: Generation, backendEvent: BackendEvent): void {
    if (generation.finished) return;
    const { events } = generation;
    let event: PlaygroundEvent;
    if (backendEvent.type === 'done') {
      const images = Array.from({ length: generation.request.numImagesPerPrompt ?? 1 }, (_, index) => generation.pictureUrl(index));
      event = { ...backendEvent, image: images[0], images };
    } else {
      event = backendEvent;
    }
    if (event.type === 'step' && event.preview !== undefined) {
      // Replays show the latest preview only: earlier ones would make a long generation's log grow by a picture a step.
      const previous = events[generation.latestPreviewIndex];
      if (previous?.type === 'step') {
        const { preview: _shownBefore, ...withoutPreview } = previous;
        events[generation.latestPreviewIndex] = withoutPreview;
      }
      generation.latestPreviewIndex = events.length;
    }
    events.push(event);
    for (const listener of generation.listeners) listener(event, events.length - 1);
    if (FINAL_EVENT_TYPES.has(event.type)) this.finish(generation);
  }

  private finish(generation: Generation): void {
    generation.listeners.clear();
    this.finishedOrder.push(generation);
    while (this.finishedOrder.length > this.options.maxFinished) {
      const { id } = this.finishedOrder.shift() as Generation;
      this.byId.delete(id);
      this.options.backend.forget(id);
    }
  }
}
