/**
 * The worker side: takes generation jobs from the queue and runs them on this machine's pipelines. Loads ONNX
 * Runtime (through `@diff/core`), so it is its own entry point, `@diff/queue/worker`.
 */
import { hostname } from 'node:os';
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import sharp from 'sharp';
import {
  AutoPipelineForText2Image,
  DiffError,
  generationOptions,
  InvalidArgumentError,
  parseGenerationRequest,
  type CallbackPlugin,
  type CallbackRegistry,
  type ExecutionProviderName,
  type GenerationEvent,
  type RegisteredCallback,
  type RgbImage,
  type Text2ImagePipeline,
} from '@diff/core';
import { InterruptController } from '@diff/callback-interrupt';
import { LatentPreviewCallback, type LatentPreview } from '@diff/callback-preview';
import { createRegistry, type AnyCallbackPluginDescriptor } from './plugins.js';
import { DEFAULT_PREFIX, DEFAULT_QUEUE_NAME, type GenerationJobData } from './queue.js';
import {
  GenerationStore,
  QueueKeys,
  RedisResultStore,
  createRedisClient,
  type ControlAction,
  type RedisConnection,
  type ResolvedRequest,
  type ResultStore,
} from './redis.js';

export interface StartWorkerOptions {
  /** A `redis://` URL or ioredis options. */
  redis: RedisConnection;
  /** The models this machine offers: name → diffusers ONNX folder. A request without `model` gets the first. */
  models: Readonly<Record<string, string>>;
  /** Generations at once; default 1 (one GPU serves one generation at a time). */
  concurrency?: number;
  /** ONNX Runtime providers in order of preference, e.g. `['cuda']`; default CPU. */
  executionProviders?: readonly ExecutionProviderName[];
  /** The queue to serve (as `GenerationQueue`'s `name`); default `generations`. */
  name?: string;
  /** The Redis key prefix (as `GenerationQueue`'s); default `diff`. */
  prefix?: string;
  /** This worker's name, stored on the jobs it takes (BullMQ's `processedBy`); default `<hostname>-<pid>`. */
  workerName?: string;
  /** The callbacks requests may name; the queue's must be the same. Default: every official callback package's. */
  plugins?: readonly AnyCallbackPluginDescriptor[];
  /** Where results go; default Redis (as the queue reads them). */
  results?: ResultStore;
  /**
   * How long a job's lock lasts without renewal (renewed every half of it while the job runs); default 30 000. A
   * worker that dies loses its job to another one about `lockDurationMs + stalledIntervalMs` later.
   */
  lockDurationMs?: number;
  /** How often this worker looks for jobs whose worker died; default 30 000. */
  stalledIntervalMs?: number;
  /** How many times a job may lose its worker and start again; one more loss fails it. Default 1. */
  maxStalledCount?: number;
  /** Receives what the worker does, one line at a time. Default: errors to the console, the rest nowhere. */
  log?: (level: 'info' | 'error', message: string) => void;
}

export interface GenerationWorker {
  /** Stops taking jobs, waits for the running ones to finish, frees the models and disconnects. */
  close(): Promise<void>;
}

/** How often a worker renews its offer of models; the offer lapses three heartbeats after the last one. */
const HEARTBEAT_MS = 5000;

const defaultLog = (level: 'info' | 'error', message: string): void => {
  if (level === 'error') console.error(`[@diff/queue worker] ${message}`);
};

function checkWorkerOptions(options: StartWorkerOptions): void {
  const { models, concurrency = 1 } = options ?? ({} as StartWorkerOptions);
  if (typeof models !== 'object' || models === null || Object.keys(models).length === 0) {
    throw new InvalidArgumentError('startWorker needs models: at least one { name: folder } entry.');
  }
  for (const [name, dir] of Object.entries(models)) {
    if (typeof dir !== 'string' || dir === '') throw new InvalidArgumentError(`startWorker: model ${JSON.stringify(name)} needs a folder path, got ${JSON.stringify(dir)}.`);
  }
  if (!(Number.isInteger(concurrency) && concurrency >= 1)) throw new InvalidArgumentError(`startWorker: concurrency must be an integer ≥ 1, got ${String(concurrency)}.`);
  for (const key of ['lockDurationMs', 'stalledIntervalMs'] as const) {
    const value = options[key];
    if (value !== undefined && !(Number.isInteger(value) && value > 0)) throw new InvalidArgumentError(`startWorker: ${key} must be a positive integer, got ${String(value)}.`);
  }
  const { maxStalledCount } = options;
  if (maxStalledCount !== undefined && !(Number.isInteger(maxStalledCount) && maxStalledCount >= 0)) {
    throw new InvalidArgumentError(`startWorker: maxStalledCount must be an integer ≥ 0, got ${String(maxStalledCount)}.`);
  }
}

async function encodePng(image: RgbImage): Promise<Buffer> {
  return sharp(image.data, { raw: { width: image.width, height: image.height, channels: image.channels } }).png().toBuffer();
}

/** The error event of a failure: a `DiffError`'s code (bad settings, model files, …), else `INTERNAL`. */
function errorEvent(id: string, error: unknown, code = error instanceof DiffError ? error.code : 'INTERNAL'): GenerationEvent {
  return { type: 'error', id, code, message: error instanceof Error ? error.message : String(error) };
}

/** A model's pipeline, loaded on its first job; a failed load is tried again by the next job. */
class ModelPipelines {
  private readonly loaded = new Map<string, Promise<Text2ImagePipeline>>();

  constructor(
    private readonly models: Readonly<Record<string, string>>,
    private readonly executionProviders?: readonly ExecutionProviderName[],
  ) {}

  get(model: string): Promise<Text2ImagePipeline> {
    let pipeline = this.loaded.get(model);
    if (!pipeline) {
      pipeline = AutoPipelineForText2Image.fromPretrained(this.models[model], { executionProviders: this.executionProviders });
      pipeline.catch(() => this.loaded.delete(model));
      this.loaded.set(model, pipeline);
    }
    return pipeline;
  }

  async dispose(): Promise<void> {
    const pipelines = await Promise.all([...this.loaded.values()].map((pipeline) => pipeline.catch(() => undefined)));
    this.loaded.clear();
    await Promise.all(pipelines.map((pipeline) => pipeline?.dispose()));
  }
}

/**
 * Starts a worker: it offers `models` to the queue `name`, takes its jobs (`concurrency` at a time), runs each with
 * the request's settings and callbacks, reports `started`, `step` (with a small PNG preview) and `done`, stores the
 * pictures, and obeys interrupt and cancel within a step. A job whose worker dies is taken again by another worker
 * (BullMQ's stalled-job recovery); the generation still ends once.
 */
export async function startWorker(options: StartWorkerOptions): Promise<GenerationWorker> {
  checkWorkerOptions(options);
  const { models, concurrency = 1, log = defaultLog } = options;
  const modelNames = Object.keys(models);
  const workerName = options.workerName ?? `${hostname()}-${process.pid}`;
  const keys = new QueueKeys(options.prefix ?? DEFAULT_PREFIX, options.name ?? DEFAULT_QUEUE_NAME);
  const registry = createRegistry(options.plugins);
  const pipelines = new ModelPipelines(models, options.executionProviders);
  // BullMQ's workers block on Redis and must wait out a reconnection: maxRetriesPerRequest null.
  const redis = createRedisClient(options.redis, { maxRetriesPerRequest: null });
  const subscriber = createRedisClient(options.redis, { maxRetriesPerRequest: null });
  const store = new GenerationStore(redis, keys);
  const results = options.results ?? new RedisResultStore(redis, keys);
  /** The Stop button of each running job. */
  const running = new Map<string, InterruptController>();

  let lastError = '';
  const reportError = (error: Error) => {
    // ioredis retries every second or two while Redis is away: one line per distinct error in a row, not one per retry.
    if (error.message === lastError) return;
    lastError = error.message;
    log('error', error.message);
  };
  for (const client of [redis, subscriber]) client.on('error', reportError);

  const heartbeat = () =>
    store.registerModels(modelNames, 3 * HEARTBEAT_MS).then(
      () => (lastError = ''),
      (error: Error) => reportError(error),
    );
  // Redis may have restarted empty: offer the models again as soon as it is back.
  redis.on('ready', () => void heartbeat());

  const applyControl = (id: string, action: ControlAction) => {
    const stopButton = running.get(id);
    if (!stopButton) return;
    if (action === 'cancel') worker.cancelJob(id, 'cancelled');
    else stopButton.interrupt();
  };
  subscriber.on('message', (_channel: string, message: string) => {
    let request: { id: string; action: ControlAction };
    try {
      request = JSON.parse(message) as typeof request;
    } catch {
      log('error', `ignored a control message that is not JSON: ${message.slice(0, 200)}`);
      return;
    }
    applyControl(request.id, request.action);
  });

  // Three parameters: BullMQ passes the signal that `worker.cancelJob` aborts.
  const processJob = async (job: Job<GenerationJobData>, _token?: string, signal?: AbortSignal) => {
    const id = job.id as string;
    const { ttlSeconds } = job.data;
    const emit = (event: GenerationEvent) => store.append(event, ttlSeconds);
    // Ended before this attempt: cancelled while it waited, or done by a worker that died before telling BullMQ.
    if ((await store.finalEventType(id)) !== undefined) return { outcome: 'ended-before' };

    const stopButton = new InterruptController();
    running.set(id, stopButton);
    try {
      const request = parseGenerationRequest(job.data.request, { registry });
      const model = request.model ?? modelNames[0];
      if (!Object.hasOwn(models, model)) {
        const message = `This worker offers ${modelNames.join(', ')}, not model ${JSON.stringify(model)}; run each queue's workers with the same models.`;
        await emit({ type: 'error', id, code: 'UNKNOWN_MODEL', message });
        throw new UnrecoverableError(message);
      }
      const control = await store.control(id);
      if (control) applyControl(id, control);
      log('info', `job ${id} started (model ${model}, attempt ${job.attemptsStarted})`);
      const started = performance.now();
      await emit({ type: 'started', id });

      const resolved: ResolvedRequest = { ...request, model, seed: request.seed ?? 0 };
      let percent = 0;
      const { callbacks, reported } = createCallbacks(id, registry, resolved, stopButton, (event) => {
        // BullMQ's progress (for dashboards) in whole percents: at most 100 updates, however many steps.
        const reached = Math.floor((100 * (event.stepIndex + 1)) / event.numTimesteps);
        if (reached > percent) void job.updateProgress((percent = reached)).catch(() => undefined);
        return emit(event);
      });
      const pipeline = await pipelines.get(model);
      const output = await pipeline.generate({ ...generationOptions(resolved), callbackOnStepEnd: callbacks, signal });
      await reported();
      const pngs = await Promise.all(output.images.map(encodePng));
      const { interruptedAtStep } = output;
      await results.put(id, { png: pngs[0], pngs, request: resolved, ...(interruptedAtStep === undefined ? {} : { interruptedAtStep }) }, ttlSeconds);
      const image = `data:image/png;base64,${pngs[0].toString('base64')}`;
      await emit({ type: 'done', id, image, ...(interruptedAtStep === undefined ? {} : { interruptedAtStep }) });
      const seconds = ((performance.now() - started) / 1000).toFixed(2);
      log('info', `job ${id} done in ${seconds} s${interruptedAtStep === undefined ? '' : ` (interrupted after step ${interruptedAtStep})`}`);
      return { outcome: 'done' };
    } catch (error) {
      if (signal?.aborted) {
        await emit({ type: 'cancelled', id });
        log('info', `job ${id} cancelled`);
        return { outcome: 'cancelled' };
      }
      if (error instanceof UnrecoverableError) throw error;
      const lastAttempt = error instanceof DiffError || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      if (!lastAttempt) throw error; // BullMQ runs it again after its backoff
      await emit(errorEvent(id, error));
      log('error', `job ${id} failed: ${(error as Error).stack ?? String(error)}`);
      throw new UnrecoverableError((error as Error).message ?? String(error));
    } finally {
      running.delete(id);
    }
  };

  const worker = new Worker<GenerationJobData>(keys.name, processJob, {
    connection: redis,
    prefix: keys.prefix,
    concurrency,
    name: workerName,
    lockDuration: options.lockDurationMs ?? 30_000,
    stalledInterval: options.stalledIntervalMs ?? 30_000,
    maxStalledCount: options.maxStalledCount ?? 1,
  });
  worker.on('error', reportError);
  // Failures the processor could not report: a job that lost its worker more than maxStalledCount times.
  worker.on('failed', (job, error) => {
    if (!job?.id) return;
    const id = job.id;
    void (async () => {
      if ((await job.getState()) !== 'failed' || (await store.finalEventType(id)) !== undefined) return;
      await store.append(errorEvent(id, error, job.stalledCounter > 0 ? 'WORKER_LOST' : 'INTERNAL'), job.data.ttlSeconds);
      log('error', `job ${id} failed: ${error.message}`);
    })().catch(reportError);
  });

  await subscriber.subscribe(keys.control);
  await worker.waitUntilReady();
  await heartbeat();
  const beating = setInterval(() => void heartbeat(), HEARTBEAT_MS);
  log('info', `worker ${workerName} serving queue ${keys.name}: ${modelNames.join(', ')} (concurrency ${concurrency})`);

  let closing: Promise<void> | undefined;
  return {
    close() {
      closing ??= (async () => {
        clearInterval(beating);
        await worker.close();
        await pipelines.dispose();
        for (const client of [subscriber, redis]) await client.quit().catch(() => client.disconnect());
      })();
      return closing;
    },
  };
}

/**
 * The request's callbacks and what the worker adds: the Stop button first, a `preview` callback (the request's, or
 * one with its defaults) whose pictures go into the `step` events, and the reporter of those events. `reported`
 * resolves once every step event is stored (they are sent without holding up the loop).
 */
function createCallbacks(
  id: string,
  registry: CallbackRegistry,
  request: ResolvedRequest,
  stopButton: InterruptController,
  report: (event: Extract<GenerationEvent, { type: 'step' }>) => Promise<unknown>,
): { callbacks: (RegisteredCallback | LatentPreviewCallback)[]; reported: () => Promise<void> } {
  let latestPreview: { stepIndex: number; url: string } | undefined;
  const onPreview = async ({ stepIndex, images }: LatentPreview) => {
    latestPreview = { stepIndex, url: `data:image/png;base64,${(await encodePng(images[0])).toString('base64')}` };
  };
  const requested = request.callbacks ?? [];
  const callbacks = requested.map(({ name, options }) => registry.create(name, options, name === 'preview' ? { onPreview } : undefined));
  const preview = requested.some(({ name }) => name === 'preview') ? [] : [new LatentPreviewCallback({ onPreview })];
  let reports = Promise.resolve();
  let failure: { error: unknown } | undefined;
  // After the preview (both 'post', in list order), so a step's event carries the picture made at that step.
  const reporter: CallbackPlugin<never> = {
    specificationVersion: 'v1',
    name: 'QueueProgress',
    tensorInputs: [],
    enforce: 'post',
    onStepEnd: (pipeline, stepIndex) => {
      const preview = latestPreview?.stepIndex === stepIndex ? { preview: latestPreview.url } : {};
      const event = { type: 'step', id, stepIndex, numTimesteps: pipeline.numTimesteps, ...preview } as const;
      reports = reports.then(() => report(event)).then(
        () => undefined,
        (error: unknown) => void (failure ??= { error }),
      );
    },
  };
  const reported = async () => {
    await reports;
    if (failure) throw failure.error;
  };
  return { callbacks: [stopButton.callback, ...callbacks, ...preview, reporter], reported };
}
