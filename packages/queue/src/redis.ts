/**
 * What the queue keeps in Redis besides BullMQ's jobs, shared by `GenerationQueue` and the workers: each generation's
 * event log (a capped list with an expiry, plus pub/sub for live events), its control requests (interrupt, cancel),
 * the models live workers offer, and the default result store. Every write that must happen once is one Lua script.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { InvalidArgumentError, parseGenerationRequest, type GenerationEvent, type GenerationRequest } from '@diff/core/plugin';

/** Where Redis is: a `redis://` URL, or ioredis options (without `keyPrefix`: BullMQ refuses it; use `prefix`). */
export type RedisConnection = string | RedisOptions;

/** Opens an ioredis client; `overrides` win over the caller's options (workers need `maxRetriesPerRequest: null`). */
export function createRedisClient(connection: RedisConnection, overrides: RedisOptions = {}): Redis {
  if (typeof connection === 'string') return new Redis(connection, overrides);
  if (typeof connection !== 'object' || connection === null) {
    throw new InvalidArgumentError(`redis must be a redis:// URL or ioredis options, got ${String(connection)}.`);
  }
  if (connection.keyPrefix) throw new InvalidArgumentError('redis: keyPrefix is not supported (BullMQ refuses it); use the prefix option instead.');
  return new Redis({ ...connection, ...overrides });
}

const QUEUE_NAME_PATTERN = /^[A-Za-z0-9_-]+$/;

/** Where a queue's generations live in Redis: `<prefix>:<name>:gen:<id>…`, beside BullMQ's `<prefix>:<name>:…` keys. */
export class QueueKeys {
  constructor(
    readonly prefix: string,
    readonly name: string,
  ) {
    for (const [option, value] of [['prefix', prefix], ['name', name]] as const) {
      if (typeof value !== 'string' || !QUEUE_NAME_PATTERN.test(value)) {
        throw new InvalidArgumentError(`The queue ${option} must be letters, digits, "-" and "_" only, got ${JSON.stringify(value)}.`);
      }
    }
  }

  /** A hash: the event counter `seq`, the `final` event type, the latest `preview`, the `control` request. */
  state(id: string): string {
    return `${this.prefix}:${this.name}:gen:${id}`;
  }

  events(id: string): string {
    return `${this.state(id)}:events`;
  }

  result(id: string): string {
    return `${this.state(id)}:result`;
  }

  /** The pub/sub channel of one generation's live events. */
  channel(id: string): string {
    return `${this.state(id)}:channel`;
  }

  /** A sorted set: model name → when the last worker heartbeat offering it expires (Redis time, ms). */
  get models(): string {
    return `${this.prefix}:${this.name}:gen-models`;
  }

  /** The pub/sub channel workers listen on for interrupt and cancel requests. */
  get control(): string {
    return `${this.prefix}:${this.name}:gen-control`;
  }
}

/** The events after which a generation's log takes no more. */
export const FINAL_EVENT_TYPES: ReadonlySet<GenerationEvent['type']> = new Set(['done', 'cancelled', 'error']);

export type ControlAction = 'interrupt' | 'cancel';

/** One entry of a log: its position (from 1) and the event. */
export interface LoggedEvent {
  readonly seq: number;
  readonly event: GenerationEvent;
}

/** A live message: the event, and the preview a `step` event carries (kept apart in the log, see `append`). */
export interface LiveMessage extends LoggedEvent {
  readonly preview?: string;
}

// KEYS: state, events. ARGV: event JSON, preview JSON or '', final event type or '', ttl s, max events, channel.
// Nothing is appended once a final event is: a generation ends once, and a worker that lost its job stays silent.
const APPEND_EVENT = `
if redis.call('HEXISTS', KEYS[1], 'final') == 1 then return 0 end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local ttl = tonumber(ARGV[4])
local entry = '{"seq":' .. seq .. ',"event":' .. ARGV[1] .. '}'
redis.call('RPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[5]), -1)
redis.call('EXPIRE', KEYS[2], ttl)
local message = entry
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'preview', '{"seq":' .. seq .. ',"preview":' .. ARGV[2] .. '}')
  message = '{"seq":' .. seq .. ',"event":' .. ARGV[1] .. ',"preview":' .. ARGV[2] .. '}'
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'final', ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('PUBLISH', ARGV[6], message)
return seq
`;

// KEYS: state. ARGV: action. Refused (0) for an unknown or finished generation; a cancel is never downgraded.
const REQUEST_CONTROL = `
if redis.call('HEXISTS', KEYS[1], 'seq') == 0 or redis.call('HEXISTS', KEYS[1], 'final') == 1 then return 0 end
if redis.call('HGET', KEYS[1], 'control') ~= 'cancel' then redis.call('HSET', KEYS[1], 'control', ARGV[1]) end
return 1
`;

// KEYS: models. ARGV: ttl ms, model names. Redis's clock, so that machines with skewed clocks agree.
const REGISTER_MODELS = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local expires = now + tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do
  local current = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not current or tonumber(current) < expires then redis.call('ZADD', KEYS[1], expires, ARGV[i]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`;

// KEYS: models.
const LIVE_MODELS = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
`;

type ScriptArgument = string | number;
interface ScriptCommands {
  diffQueueAppendEvent(...args: ScriptArgument[]): Promise<number>;
  diffQueueRequestControl(...args: ScriptArgument[]): Promise<number>;
  diffQueueRegisterModels(...args: ScriptArgument[]): Promise<number>;
  diffQueueLiveModels(...args: ScriptArgument[]): Promise<string[]>;
}

/** The queue's scripts on a client (ioredis sends each once, then by its SHA, and again after a Redis restart). */
function withScripts(redis: Redis): Redis & ScriptCommands {
  const scripts: Record<keyof ScriptCommands, [number, string]> = {
    diffQueueAppendEvent: [2, APPEND_EVENT],
    diffQueueRequestControl: [1, REQUEST_CONTROL],
    diffQueueRegisterModels: [1, REGISTER_MODELS],
    diffQueueLiveModels: [1, LIVE_MODELS],
  };
  for (const [name, [numberOfKeys, lua]] of Object.entries(scripts)) {
    if (!(name in redis)) redis.defineCommand(name, { numberOfKeys, lua });
  }
  return redis as Redis & ScriptCommands;
}

/** What a generation's log holds. `exists` is false for an id never added (or whose log expired). */
export interface GenerationLog {
  readonly exists: boolean;
  /** In order; the latest step event carries the latest preview (earlier ones are not kept). */
  readonly events: readonly LoggedEvent[];
  readonly final?: GenerationEvent['type'];
  readonly control?: ControlAction;
}

/** The most events a log keeps (the oldest go first): a 1000-step generation with its restarts fits. */
export const MAX_LOGGED_EVENTS = 5000;

/** The Redis side of generations: event logs, control requests, the models on offer. */
export class GenerationStore {
  readonly redis: Redis & ScriptCommands;

  constructor(
    redis: Redis,
    readonly keys: QueueKeys,
  ) {
    this.redis = withScripts(redis);
  }

  /**
   * Appends an event and publishes it. A step's `preview` travels with the live message and replaces the log's
   * latest preview: a long generation's log never holds a picture per step. Resolves to false when the generation
   * had already ended (the event was dropped).
   */
  async append(event: GenerationEvent, ttlSeconds: number): Promise<boolean> {
    const { preview, ...logged } = event as GenerationEvent & { preview?: string };
    const final = FINAL_EVENT_TYPES.has(event.type) ? event.type : '';
    const { id } = event;
    const seq = await this.redis.diffQueueAppendEvent(
      this.keys.state(id),
      this.keys.events(id),
      JSON.stringify(logged),
      preview === undefined ? '' : JSON.stringify(preview),
      final,
      ttlSeconds,
      MAX_LOGGED_EVENTS,
      this.keys.channel(id),
    );
    return seq > 0;
  }

  async read(id: string): Promise<GenerationLog> {
    const results = await this.redis.multi().lrange(this.keys.events(id), 0, -1).hmget(this.keys.state(id), 'seq', 'preview', 'final', 'control').exec();
    const failure = results?.find(([error]) => error)?.[0];
    if (!results || failure) throw failure ?? new Error('Redis discarded the read of a generation log.');
    const entries = results[0][1] as string[];
    const [seq, previewJson, final, control] = results[1][1] as (string | null)[];
    const preview = previewJson === null ? undefined : (JSON.parse(previewJson) as { seq: number; preview: string });
    const events = entries.map((entry) => {
      const logged = JSON.parse(entry) as LoggedEvent;
      return logged.seq === preview?.seq ? { seq: logged.seq, event: { ...logged.event, preview: preview.preview } as GenerationEvent } : logged;
    });
    return {
      exists: seq !== null,
      events,
      final: (final ?? undefined) as GenerationEvent['type'] | undefined,
      control: (control ?? undefined) as ControlAction | undefined,
    };
  }

  /** Records an interrupt or cancel request; false when the generation is unknown or over. */
  async requestControl(id: string, action: ControlAction): Promise<boolean> {
    return (await this.redis.diffQueueRequestControl(this.keys.state(id), action)) === 1;
  }

  async control(id: string): Promise<ControlAction | undefined> {
    return ((await this.redis.hget(this.keys.state(id), 'control')) ?? undefined) as ControlAction | undefined;
  }

  async finalEventType(id: string): Promise<GenerationEvent['type'] | undefined> {
    return ((await this.redis.hget(this.keys.state(id), 'final')) ?? undefined) as GenerationEvent['type'] | undefined;
  }

  /** A worker's heartbeat: it offers these models for the next `ttlMs`. */
  async registerModels(names: readonly string[], ttlMs: number): Promise<void> {
    await this.redis.diffQueueRegisterModels(this.keys.models, ttlMs, ...names);
  }

  /** The models the live workers offer, sorted. */
  async liveModels(): Promise<string[]> {
    return (await this.redis.diffQueueLiveModels(this.keys.models)).sort();
  }
}

/** A request as it runs: the model and the seed filled in, so that the result says how to make it again. */
export type ResolvedRequest = GenerationRequest & { readonly model: string; readonly seed: number | bigint };

/** A request as JSON: a seed beyond 2^53 − 1 as its decimal string (what `parseGenerationRequest` reads back). */
export function requestToJson(request: GenerationRequest): Record<string, unknown> {
  return { ...request, ...(typeof request.seed === 'bigint' ? { seed: request.seed.toString() } : {}) };
}

/** A finished generation. */
export interface GenerationResult {
  /** The picture as PNG (the first one when the request asked for several). */
  readonly png: Buffer;
  /** Every picture as PNG, `numImagesPerPrompt` of them. */
  readonly pngs: readonly Buffer[];
  /** The step after which an interrupt stopped it (its picture is the partial one); undefined when every step ran. */
  readonly interruptedAtStep?: number;
  readonly request: ResolvedRequest;
}

/** Where workers put results and queues read them: Redis by default; object storage fits the same two methods. */
export interface ResultStore {
  /** Stores a result for `ttlSeconds` (a store without expiry may ignore it). Called once per finished generation. */
  put(id: string, result: GenerationResult, ttlSeconds: number): Promise<void>;
  /** The result, or undefined when there is none (not finished, failed, cancelled or expired). */
  get(id: string): Promise<GenerationResult | undefined>;
}

/** Results in Redis, as one hash per generation (`png:<i>` fields and a JSON `meta`) with an expiry. */
export class RedisResultStore implements ResultStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: QueueKeys,
  ) {}

  async put(id: string, result: GenerationResult, ttlSeconds: number): Promise<void> {
    const key = this.keys.result(id);
    const meta = { interruptedAtStep: result.interruptedAtStep, request: requestToJson(result.request), count: result.pngs.length };
    const fields = new Map<string, string | Buffer>([['meta', JSON.stringify(meta)], ...result.pngs.map((png, index) => [`png:${index}`, png] as [string, Buffer])]);
    const results = await this.redis.multi().del(key).hset(key, fields).expire(key, ttlSeconds).exec();
    const failure = results?.find(([error]) => error)?.[0];
    if (!results || failure) throw failure ?? new Error(`Redis discarded the result of generation ${id}.`);
  }

  async get(id: string): Promise<GenerationResult | undefined> {
    const fields = await this.redis.hgetallBuffer(this.keys.result(id));
    if (!fields.meta) return undefined;
    const meta = JSON.parse(fields.meta.toString('utf8')) as { interruptedAtStep?: number; request: unknown; count: number };
    const pngs = Array.from({ length: meta.count }, (_, index) => fields[`png:${index}`]);
    const request = parseGenerationRequest(meta.request) as ResolvedRequest;
    return { png: pngs[0], pngs, request, ...(meta.interruptedAtStep === undefined ? {} : { interruptedAtStep: meta.interruptedAtStep }) };
  }
}
