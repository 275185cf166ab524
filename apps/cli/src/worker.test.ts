import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { GenerationEvent } from '@diff/core';
import { GenerationQueue } from '@diff/queue';
import { describeWithRedis, OutputProcess, startRedisServer, type RedisServer } from '@diff/test-fixtures';
import { runCli } from './cli.js';

const main = join(dirname(dirname(fileURLToPath(import.meta.url))), 'dist', 'main.js');

describe('diff-sd worker', () => {
  it('prints its help, and refuses a model folder that is not a text-to-image pipeline before connecting', async () => {
    const lines: string[] = [];
    const io = { log: (line: string) => lines.push(line), error: (line: string) => lines.push(line) };
    expect(await runCli(['worker', '--help'], io)).toBe(0);
    expect(lines[0]).toMatch(/^Usage: diff-sd worker --redis URL \[--model NAME=DIR\]… \[--concurrency N\] \[--cuda\] \[--queue NAME\]\n/);
    for (const option of ['--redis', '--model', '--concurrency', '--cuda', '--queue', '--quiet', '--verbose']) expect(lines[0]).toContain(`  ${option} `);
    lines.length = 0;
    // Port 1: nothing listens there, and nothing may try — the folder is checked first.
    expect(await runCli(['worker', '--redis', 'redis://127.0.0.1:1', '--model', 'sd=/nowhere'], io)).toBe(1);
    expect(lines).toEqual(['diff-sd: /nowhere/model_index.json is missing; --model takes a diffusers ONNX pipeline folder, with a model_index.json naming the pipeline\'s _class_name.']);
  });
});

describeWithRedis('diff-sd worker (the built command) with a redis-server', () => {
  let redis: RedisServer;
  let queue: GenerationQueue;

  beforeAll(async () => {
    redis = await startRedisServer();
    queue = new GenerationQueue({ redis: redis.url });
  });
  afterAll(async () => {
    await queue?.close();
    await redis?.stop();
  });

  it('runs a queued generation on the tiny model, one line per job, and lets it finish on SIGTERM before exiting 0', async () => {
    expect({ built: existsSync(main), hint: 'build first: npm run build -w @diff/cli' }).toEqual({ built: true, hint: expect.any(String) });
    const worker = new OutputProcess(spawn(process.execPath, [main, 'worker', '--redis', redis.url], { stdio: ['ignore', 'pipe', 'pipe'] }));
    try {
      await worker.waitForLine(/^diff-sd worker: worker \S+ serving queue generations: tiny \(concurrency 1\)$/);
      expect(await queue.models()).toEqual(['tiny']);
      const { id } = await queue.add({ prompt: 'a large red circle on a blue background', numInferenceSteps: 100, seed: 3 });
      const events: GenerationEvent[] = [];
      for await (const event of queue.events(id)) {
        events.push(event);
        if (event.type === 'step' && event.stepIndex === 0) worker.child.kill('SIGTERM'); // mid-job: it must finish
      }
      expect(events.at(-1)).toEqual({ type: 'done', id, image: expect.stringMatching(/^data:image\/png;base64,/) }); // no interruptedAtStep
      expect(events.filter((event) => event.type === 'step')).toHaveLength(100);
      expect(await worker.exited).toBe(0);
      expect(worker.lines.slice(1)).toEqual([
        `diff-sd worker: job ${id} started (model tiny, attempt 1)`,
        'diff-sd worker: stopping: no new jobs; the running ones finish first (SIGTERM or Ctrl-C again to quit at once).',
        expect.stringMatching(new RegExp(`^diff-sd worker: job ${id} done in [\\d.]+ s$`)),
      ]);
    } finally {
      await worker.stop();
    }
  });
});
