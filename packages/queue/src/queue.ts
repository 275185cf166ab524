import { randomInt, randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { InvalidArgumentError, parseGenerationRequest, type CallbackRegistry, type GenerationEvent } from '@diff/core/plugin';
import { createRegistry, type AnyCallbackPluginDescriptor } from './plugins.js';
import {
  FINAL_EVENT_TYPES,
  GenerationStore,
  QueueKeys,
  RedisResultStore,
  createRedisClient,
  requestToJson,
  type ControlAction,
  type GenerationResult,
  type LiveMessage,
  type RedisConnection,
  type ResultStore,
} from './redis.js';

/** The BullMQ queue name and key prefix both sides use unless told otherwise. */
export const DEFAULT_QUEUE_NAME = 'generations';
export const DEFAULT_PREFIX = 'diff';
/** How long events and results are kept: a day. */
export const DEFAULT_RESULT_TTL_SECONDS = 86_400;
/** The BullMQ job name of a generation. */
export const GENERATION_JOB_NAME = 'generate';

/** What a BullMQ job carries: the request as JSON (seed and model filled in where known) and how long to keep what it makes. */
export interface GenerationJobData {
  readonly request: Record<string, unknown>;
  readonly ttlSeconds: number;
}

export interface GenerationQueueOptions {
  /** A `redis://` URL or ioredis options. */
  redis: RedisConnection;
  /** The callbacks requests may name; default: every official callback package's. Workers must run the same ones. */
  plugins?: readonly AnyCallbackPluginDescriptor[];
  /** The queue (BullMQ's queue name); default `generations`. Workers of another name never see its jobs. */
  name?: string;
  /** The Redis key prefix (BullMQ's `prefix` too); default `diff`. */
  prefix?: string;
  /** How long each generation's events and result are kept; default 86 400 (a day). */
  resultTtlSeconds?: number;
  /** Where results are read from; default Redis. Workers must write to the same place. */
  results?: ResultStore;
  /**
   * Runs per job, counting the first. Default 1: a failed generation is reported at once. Errors of the request or
   * the model (every `DiffError`) never retry; others retry with exponential backoff from one second.
   */
  attempts?: number;
}

/** A generation that ended without a picture: its `error` event's code and message, or `CANCELLED`. */
export class GenerationFailedError extends Error {
  constructor(
    readonly id: string,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'GenerationFailedError';
  }
}

/** An id no generation of this queue has (never added, or forgotten after `resultTtlSeconds`). */
export class UnknownGenerationError extends InvalidArgumentError {
  readonly id: string;
  constructor(id: string) {
    super(`No generation ${JSON.stringify(id)} in this queue: it was never added, or its events expired.`);
    this.id = id;
  }
}

/** How long an `events()` iterator waits for a live event before it reads the log again, as a safety net. */
const RESYNC_AFTER_QUIET_MS = 10_000;
const CLOSED = Symbol('closed');
const RESYNC = Symbol('resync');
type InboxItem = string | typeof CLOSED | typeof RESYNC;

/** Messages of one subscription, waiting to be read. */
class Inbox {
  private readonly items: InboxItem[] = [];
  private wake?: () => void;

  push(item: InboxItem): void {
    this.items.push(item);
    this.wake?.();
  }

  /** The next item; `RESYNC` when none came for `quietMs` (pub/sub drops messages while Redis is away). */
  async take(quietMs: number): Promise<InboxItem> {
    if (this.items.length === 0) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        timer = setTimeout(resolve, quietMs);
      });
      clearTimeout(timer);
      this.wake = undefined;
    }
    return this.items.shift() ?? RESYNC;
  }
}

/**
 * One pub/sub connection for every `events()` iterator of a queue. After a reconnection (ioredis subscribes again by
 * itself) each iterator re-reads its log, so that events published while Redis was away are not missed.
 */
class Subscriptions {
  private client?: Redis;
  private readonly channels = new Map<string, { inboxes: Set<Inbox>; subscribed: Promise<unknown> }>();

  constructor(private readonly connect: () => Redis) {}

  /** Resolves once the channel is subscribed: messages published from then on reach the inbox. */
  async open(channel: string): Promise<Inbox> {
    const inbox = new Inbox();
    let subscription = this.channels.get(channel);
    if (!subscription) {
      subscription = { inboxes: new Set(), subscribed: this.subscriber().subscribe(channel) };
      this.channels.set(channel, subscription);
    }
    subscription.inboxes.add(inbox);
    try {
      await subscription.subscribed;
    } catch (error) {
      await this.leave(channel, inbox);
      throw error;
    }
    return inbox;
  }

  async leave(channel: string, inbox: Inbox): Promise<void> {
    const subscription = this.channels.get(channel);
    if (!subscription?.inboxes.delete(inbox) || subscription.inboxes.size > 0) return;
    this.channels.delete(channel);
    if (this.client?.status === 'ready') await this.client.unsubscribe(channel);
  }

  async close(): Promise<void> {
    for (const { inboxes } of this.channels.values()) for (const inbox of inboxes) inbox.push(CLOSED);
    this.channels.clear();
    await this.client?.quit().catch(() => this.client?.disconnect());
  }

  private subscriber(): Redis {
    if (this.client) return this.client;
    const client = this.connect();
    client.on('message', (channel: string, message: string) => this.channels.get(channel)?.inboxes.forEach((inbox) => inbox.push(message)));
    let connectedBefore = false;
    client.on('ready', () => {
      if (connectedBefore) for (const { inboxes } of this.channels.values()) for (const inbox of inboxes) inbox.push(RESYNC);
      connectedBefore = true;
    });
    this.client = client;
    return client;
  }
}

/**
 * Generations on a fleet of workers, through BullMQ on Redis: `add` a JSON request, follow its `events`,
 * `interrupt` or `cancel` it from any process, read its `result`. Requests name a model the workers offer; their
 * pictures come from `startWorker` processes (`@diff/queue/worker`) on the machines with the models.
 */
export class GenerationQueue {
  readonly name: string;
  readonly registry: CallbackRegistry;
  private readonly redis: Redis;
  private readonly store: GenerationStore;
  private readonly results: ResultStore;
  private readonly queue: Queue<GenerationJobData>;
  private readonly subscriptions: Subscriptions;
  private readonly ttlSeconds: number;
  private readonly attempts: number;
  private closed = false;

  constructor(options: GenerationQueueOptions) {
    const { redis, plugins, name = DEFAULT_QUEUE_NAME, prefix = DEFAULT_PREFIX, resultTtlSeconds = DEFAULT_RESULT_TTL_SECONDS, results, attempts = 1 } =
      options ?? ({} as GenerationQueueOptions);
    if (!(Number.isInteger(resultTtlSeconds) && resultTtlSeconds > 0)) {
      throw new InvalidArgumentError(`resultTtlSeconds must be a positive integer, got ${String(resultTtlSeconds)}.`);
    }
    if (!(Number.isInteger(attempts) && attempts >= 1)) throw new InvalidArgumentError(`attempts must be an integer ≥ 1, got ${String(attempts)}.`);
    const keys = new QueueKeys(prefix, name);
    this.name = keys.name;
    this.registry = createRegistry(plugins);
    this.ttlSeconds = resultTtlSeconds;
    this.attempts = attempts;
    this.redis = createRedisClient(redis);
    this.redis.on('error', () => undefined); // reported by the failing calls; ioredis reconnects by itself
    this.store = new GenerationStore(this.redis, keys);
    this.results = results ?? new RedisResultStore(this.redis, keys);
    this.queue = new Queue<GenerationJobData>(keys.name, { connection: this.redis, prefix: keys.prefix });
    this.queue.on('error', () => undefined);
    this.subscriptions = new Subscriptions(() => {
      const client = createRedisClient(redis);
      client.on('error', () => undefined);
      return client;
    });
  }

  /**
   * Validates `body` (settings, and callbacks against the registry: a bad one throws `InvalidRequestError` naming
   * the field, before anything reaches Redis) and queues it. The seed is fixed here when absent, so that a job run
   * again after a lost worker makes the same picture.
   *
   * A `model` that live workers are known not to offer ends the generation at once with an `error` event
   * (`UNKNOWN_MODEL`) rather than a job; when no worker is live (all restarting, say) the job waits for one.
   */
  async add(body: unknown): Promise<{ id: string }> {
    this.checkOpen();
    const request = parseGenerationRequest(body, { registry: this.registry });
    const id = randomUUID();
    if (request.model !== undefined) {
      const offered = await this.models();
      if (offered.length > 0 && !offered.includes(request.model)) {
        const message = `No worker offers model ${JSON.stringify(request.model)}; the workers offer: ${offered.join(', ')}.`;
        await this.store.append({ type: 'error', id, code: 'UNKNOWN_MODEL', message }, this.ttlSeconds);
        return { id };
      }
    }
    // Logged before the job exists, so that `queued` always comes before the worker's `started`.
    const position = (await this.queue.getWaitingCount()) + 1;
    await this.store.append({ type: 'queued', id, position }, this.ttlSeconds);
    const data: GenerationJobData = { request: requestToJson({ ...request, seed: request.seed ?? randomInt(2 ** 48 - 1) }), ttlSeconds: this.ttlSeconds };
    const keep = { age: this.ttlSeconds };
    await this.queue.add(GENERATION_JOB_NAME, data, {
      jobId: id,
      attempts: this.attempts,
      backoff: { type: 'exponential', delay: 1000 },
      removeOnComplete: keep,
      removeOnFail: keep,
    });
    return { id };
  }

  /**
   * The generation's events from its start — those before the call replayed (the latest preview only), then the
   * live ones — ending after `done`, `cancelled` or `error`, or when the queue closes. A worker lost mid-job shows as
   * a second `started` and steps counting from 0 again; `done` comes once. Throws `UnknownGenerationError` for an
   * id this queue does not have.
   */
  async *events(id: string): AsyncGenerator<GenerationEvent, void, undefined> {
    this.checkOpen();
    const channel = this.store.keys.channel(id);
    const inbox = await this.subscriptions.open(channel);
    try {
      let lastSeq = 0;
      let resync = true;
      for (;;) {
        if (resync) {
          resync = false;
          const log = await this.store.read(id);
          if (!log.exists && lastSeq === 0) throw new UnknownGenerationError(id);
          for (const { seq, event } of log.events) {
            if (seq <= lastSeq) continue;
            lastSeq = seq;
            yield event;
            if (FINAL_EVENT_TYPES.has(event.type)) return;
          }
        }
        const item = await inbox.take(RESYNC_AFTER_QUIET_MS);
        if (item === CLOSED) return;
        if (item === RESYNC) {
          resync = true;
          continue;
        }
        const { seq, event, preview } = JSON.parse(item) as LiveMessage;
        if (seq <= lastSeq) continue;
        if (seq > lastSeq + 1) {
          resync = true; // a message went missing: the log has it
          continue;
        }
        lastSeq = seq;
        yield (preview === undefined ? event : { ...event, preview }) as GenerationEvent;
        if (FINAL_EVENT_TYPES.has(event.type)) return;
      }
    } finally {
      await this.subscriptions.leave(channel, inbox);
    }
  }

  /**
   * Stop, keeping the picture: a running generation ends after the step in flight and its partial picture is the
   * result (`interruptedAtStep`). A waiting one has no picture yet: it is cancelled. False when the generation had
   * already ended (or is unknown).
   */
  interrupt(id: string): Promise<boolean> {
    return this.control(id, 'interrupt');
  }

  /** Abort: a running generation stops within a step and ends `cancelled`; a waiting one is removed. False when already over. */
  cancel(id: string): Promise<boolean> {
    return this.control(id, 'cancel');
  }

  /**
   * Waits for the generation to end and resolves to its result. An `error` or `cancelled` ending rejects with
   * `GenerationFailedError` (its code, or `CANCELLED`).
   */
  async result(id: string): Promise<GenerationResult> {
    let final = await this.store.finalEventType(id);
    let ending: GenerationEvent | undefined;
    if (final === undefined) {
      for await (const event of this.events(id)) ending = event;
      final = ending?.type;
    }
    if (final === 'done') {
      const result = await this.results.get(id);
      if (!result) throw new UnknownGenerationError(id);
      return result;
    }
    if (final === 'cancelled') throw new GenerationFailedError(id, 'CANCELLED', `Generation ${id} was cancelled.`);
    if (final === 'error') {
      ending ??= (await this.store.read(id)).events.at(-1)?.event;
      const { code, message } = ending?.type === 'error' ? ending : { code: 'INTERNAL', message: `Generation ${id} failed.` };
      throw new GenerationFailedError(id, code, message);
    }
    throw new InvalidArgumentError(`This GenerationQueue closed before generation ${id} ended.`);
  }

  /** The models live workers offer (each worker renews its offer every few seconds). */
  models(): Promise<string[]> {
    return this.store.liveModels();
  }

  /** Ends every `events()` iterator and closes the connections. Workers and queued jobs are not affected. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.subscriptions.close();
    await this.queue.close();
    await this.redis.quit().catch(() => this.redis.disconnect());
  }

  private async control(id: string, action: ControlAction): Promise<boolean> {
    this.checkOpen();
    if (!(await this.store.requestControl(id, action))) return false;
    // Recorded first: a worker that takes the job from now on reads it when it starts.
    if ((await this.queue.remove(id)) === 1) {
      await this.store.append({ type: 'cancelled', id }, this.ttlSeconds);
    } else {
      await this.redis.publish(this.store.keys.control, JSON.stringify({ id, action }));
    }
    return true;
  }

  private checkOpen(): void {
    if (this.closed) throw new InvalidArgumentError('This GenerationQueue is closed.');
  }
}
