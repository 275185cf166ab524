#!/usr/bin/env node
/**
 * A worker process: `node dist/worker-main.js --redis URL --model NAME=DIR [--model NAME=DIR …] [--concurrency N]
 * [--cuda] [--queue NAME] [--name WORKER] [--lock-duration MS] [--stalled-interval MS]`. SIGTERM or SIGINT: finish
 * the running jobs, then exit; a second one exits at once (another worker takes the job over).
 */
import { parseArgs } from 'node:util';
import { startWorker } from './worker.js';

const USAGE = 'usage: worker-main --redis URL --model NAME=DIR [--model NAME=DIR …] [--concurrency N] [--cuda] [--queue NAME] [--name WORKER] [--lock-duration MS] [--stalled-interval MS]';

function integer(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (!Number.isInteger(parsed)) throw new Error(`--${flag} takes an integer, got ${JSON.stringify(value)}.`);
  return parsed;
}

function parseModels(specs: readonly string[]): Record<string, string> {
  if (specs.length === 0) throw new Error('give at least one --model NAME=DIR.');
  return Object.fromEntries(
    specs.map((spec) => {
      const at = spec.indexOf('=');
      if (at <= 0 || at === spec.length - 1) throw new Error(`--model takes NAME=DIR, got ${JSON.stringify(spec)}.`);
      return [spec.slice(0, at), spec.slice(at + 1)];
    }),
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      redis: { type: 'string' },
      model: { type: 'string', multiple: true, default: [] },
      concurrency: { type: 'string' },
      cuda: { type: 'boolean', default: false },
      queue: { type: 'string' },
      name: { type: 'string' },
      'lock-duration': { type: 'string' },
      'stalled-interval': { type: 'string' },
    },
  });
  if (values.redis === undefined) throw new Error('give --redis URL, e.g. redis://127.0.0.1:6379.');
  const worker = await startWorker({
    redis: values.redis,
    models: parseModels(values.model),
    concurrency: integer('concurrency', values.concurrency),
    executionProviders: values.cuda ? ['cuda'] : undefined,
    name: values.queue,
    workerName: values.name,
    lockDurationMs: integer('lock-duration', values['lock-duration']),
    stalledIntervalMs: integer('stalled-interval', values['stalled-interval']),
    log: (level, message) => (level === 'error' ? console.error(message) : console.log(message)),
  });
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(1);
    stopping = true;
    console.log(`${signal}: finishing the running jobs (${signal} again to quit at once)`);
    worker.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error: unknown) => {
  console.error(`worker-main: ${error instanceof Error ? error.message : String(error)}\n${USAGE}`);
  process.exit(2);
});
