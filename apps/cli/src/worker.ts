/**
 * `diff-sd worker`: runs the generations of a `@diff/queue` queue on this machine (`startWorker`), one line per job
 * on stderr, and stops gracefully on SIGTERM or Ctrl-C.
 */
import { resolve } from 'node:path';
import { modelDir as tinyModelDir } from '@diff/model-tiny';
import { UsageError, type WorkerArgs } from './args.js';
import type { CliIo } from './cli.js';
import { inspectModel } from './model.js';

/** Model name → absolute folder, each checked to be a text-to-image pipeline before anything connects. */
async function workerModels(args: WorkerArgs, cwd: string): Promise<Record<string, string>> {
  if (Object.keys(args.models).length === 0) return { tiny: tinyModelDir };
  const models: Record<string, string> = {};
  for (const [name, dir] of Object.entries(args.models)) {
    const model = await inspectModel(resolve(cwd, dir));
    if (model.controlNet || model.inpaintingUnet) {
      const kind = model.controlNet ? `a ControlNet pipeline (${model.className})` : 'an inpainting model (its UNet takes 9 input channels)';
      throw new UsageError(`--model ${name}=${dir}: ${model.dir} is ${kind}; queued generations are text-to-image, so give a text-to-image folder.`);
    }
    models[name] = model.dir;
  }
  return models;
}

/**
 * Serves the queue until SIGTERM or Ctrl-C: the first stops taking jobs and lets the running ones finish (exit
 * status 0), a second one quits at once (the handlers return false and main.ts ends the process; another worker
 * takes the job over).
 */
export async function runWorker(args: WorkerArgs, io: CliIo, cwd: string): Promise<number> {
  const models = await workerModels(args, cwd);
  // Imported here: BullMQ and ioredis load only for this command.
  const { startWorker } = await import('@diff/queue/worker');
  const worker = await startWorker({
    redis: args.redis,
    models,
    concurrency: args.concurrency,
    executionProviders: args.cuda ? ['cuda'] : undefined,
    name: args.queue,
    log: (level, message) => {
      // A failed job is logged with its stack: one line, as every CLI error, unless --verbose.
      if (level === 'error') io.error(`diff-sd worker: ${args.verbose ? message : message.split('\n')[0]}`);
      else if (!args.quiet) io.error(`diff-sd worker: ${message}`);
    },
  });
  return new Promise<number>((done, fail) => {
    let stopping = false;
    const stop = (): boolean => {
      if (stopping) return false;
      stopping = true;
      io.error('diff-sd worker: stopping: no new jobs; the running ones finish first (SIGTERM or Ctrl-C again to quit at once).');
      worker.close().then(() => {
        unsubscribe.forEach((each) => each?.());
        done(0);
      }, fail);
      return true;
    };
    const unsubscribe = [io.onInterrupt?.(stop), io.onTerminate?.(stop)];
  });
}
