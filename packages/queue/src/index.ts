/**
 * Generation jobs on many machines through BullMQ on Redis. This entry point is what API processes need — it loads
 * no ONNX Runtime; the worker that runs the pipelines is `@diff/queue/worker` (`startWorker` here loads it on call).
 */
import type { GenerationWorker, StartWorkerOptions } from './worker.js';

export {
  DEFAULT_PREFIX,
  DEFAULT_QUEUE_NAME,
  DEFAULT_RESULT_TTL_SECONDS,
  GenerationFailedError,
  GenerationQueue,
  UnknownGenerationError,
  type GenerationJobData,
  type GenerationQueueOptions,
} from './queue.js';
export { OFFICIAL_PLUGINS, createRegistry, type AnyCallbackPluginDescriptor } from './plugins.js';
export {
  FINAL_EVENT_TYPES,
  MAX_LOGGED_EVENTS,
  RedisResultStore,
  type GenerationResult,
  type RedisConnection,
  type ResolvedRequest,
  type ResultStore,
} from './redis.js';
export type { GenerationWorker, StartWorkerOptions } from './worker.js';

/** `startWorker` of `@diff/queue/worker`, imported on first call so that queue-only processes never load ONNX Runtime. */
export async function startWorker(options: StartWorkerOptions): Promise<GenerationWorker> {
  const worker = await import('./worker.js');
  return worker.startWorker(options);
}
