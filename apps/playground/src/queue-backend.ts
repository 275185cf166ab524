/**
 * Generations on the workers of a `@diff/queue` queue (the playground with --redis): this server runs no pipeline;
 * it adds each request to the queue and relays the generation's events, so that one page is served by many workers.
 */
import { parseGenerationRequest, type CallbackRegistry } from '@diff/core/plugin';
import { GenerationQueue, UnknownGenerationError, type GenerationQueueOptions } from '@diff/queue';
import {
  BackendUnavailableError,
  createRequestedCallbacks,
  resolveRequest,
  type BackendEvent,
  type GenerationBackend,
  type ResolvedRequest,
} from './backend.js';

export class QueueBackend implements GenerationBackend {
  private readonly queue: GenerationQueue;
  /** The relays of this server's generations that have not ended: id → its events' end. */
  private readonly following = new Map<string, Promise<void>>();
  private closing = false;

  constructor(
    options: GenerationQueueOptions,
    private readonly logError: (message: string) => void,
  ) {
    this.queue = new GenerationQueue(options);
  }

  get registry(): CallbackRegistry {
    return this.queue.registry;
  }

  /** What live workers offer (`GenerationQueue.models`), in name order. */
  models(): Promise<readonly string[]> {
    return this.queue.models();
  }

  async submit(body: unknown, onEvent: (event: BackendEvent) => void): Promise<{ id: string; request: ResolvedRequest }> {
    const parsed = parseGenerationRequest(body, { registry: this.registry });
    createRequestedCallbacks(this.registry, parsed, () => undefined); // refuses what only a constructor can judge, as the local backend does
    const offered = await this.models();
    if (offered.length === 0) {
      throw new BackendUnavailableError(`No worker serves queue "${this.queue.name}" now: start one (diff-sd worker --redis URL), or wait for one to come back.`);
    }
    const request = resolveRequest(parsed, offered);
    // The seed and model as resolved, so that the answer says how the picture is made; a given seed stays as sent.
    const { id } = await this.queue.add({ ...(body as Record<string, unknown>), model: request.model, ...(parsed.seed === undefined ? { seed: request.seed } : {}) });
    this.following.set(id, this.relay(id, onEvent));
    return { id, request };
  }

  async interrupt(id: string): Promise<void> {
    await this.queue.interrupt(id);
  }

  async cancel(id: string): Promise<void> {
    await this.queue.cancel(id);
  }

  async image(id: string, index: number): Promise<Buffer | undefined> {
    try {
      return (await this.queue.result(id)).pngs[index];
    } catch (error) {
      if (error instanceof UnknownGenerationError) return undefined; // expired in Redis
      throw error;
    }
  }

  forget(): void {
    // Redis forgets on its own, after the queue's resultTtlSeconds.
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.following.keys()].map((id) => this.queue.cancel(id).catch(() => false)));
    await this.queue.close(); // ends the relays
    await Promise.all(this.following.values());
  }

  /** Passes the generation's events on until the final one (or until the queue closes). */
  private async relay(id: string, onEvent: (event: BackendEvent) => void): Promise<void> {
    try {
      for await (const event of this.queue.events(id)) onEvent(event);
    } catch (error) {
      if (this.closing) return;
      this.logError(`following generation ${id} failed: ${(error as Error).stack ?? String(error)}`);
      onEvent({ type: 'error', id, code: 'INTERNAL', message: `Lost track of the generation: ${(error as Error).message}` });
    } finally {
      this.following.delete(id);
    }
  }
}
