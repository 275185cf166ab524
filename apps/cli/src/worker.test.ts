import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { GenerationEvent } from '@diff/core';
import { GenerationQueue } from '@diff/queue';
import { runCli } from './cli.js';

const main = join(dirname(dirname(fileURLToPath(import.meta.url))), 'dist', 'main.js');
const INSTALL_HINT = 'apt-get install -y redis-server';
const redisServer = ((found) => (found.status === 0 ? found.stdout.trim() : undefined))(spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }));

/** As @diff/queue's tests: skipped without redis-server, except under CI=true, where that is a failure. */
function describeWithRedis(name: string, body: () => void): void {
  if (redisServer) {
    describe(name, body);
  } else if (process.env.CI === 'true') {
    test(`${name}: redis-server is installed`, () => {
      throw new Error(`redis-server is missing and CI=true: install it (${INSTALL_HINT}).`);
    });
  } else {
    process.stderr.write(`Skipping "${name}": redis-server is not installed. To run these tests: ${INSTALL_HINT}\n`);
    describe.skip(name, body);
  }
}

/** A child process's output (stdout and stderr together), with a wait for a line to appear. */
class Output {
  text = '';
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (this.text += chunk));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.text += chunk));
    this.exited = new Promise((resolve) => child.once('exit', resolve));
  }

  async waitFor(pattern: RegExp, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pattern.test(this.text)) {
      if (Date.now() > deadline || this.child.exitCode !== null) throw new Error(`No output matched ${pattern}; the output:\n${this.text}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

/** A redis-server of this test's own on a free port, without persistence. */
async function startRedis(): Promise<{ url: string; server: Output }> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  const server = new Output(spawn(redisServer as string, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  await server.waitFor(/Ready to accept connections/);
  return { url: `redis://127.0.0.1:${port}`, server };
}

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
  let redis: { url: string; server: Output };
  let queue: GenerationQueue;

  beforeAll(async () => {
    redis = await startRedis();
    queue = new GenerationQueue({ redis: redis.url });
  });
  afterAll(async () => {
    await queue?.close();
    redis?.server.child.kill('SIGTERM');
    await redis?.server.exited;
  });

  it('runs a queued generation on the tiny model, one line per job, and lets it finish on SIGTERM before exiting 0', async () => {
    expect({ built: existsSync(main), hint: 'build first: npm run build -w @diff/cli' }).toEqual({ built: true, hint: expect.any(String) });
    const worker = new Output(spawn(process.execPath, [main, 'worker', '--redis', redis.url], { stdio: ['ignore', 'pipe', 'pipe'] }));
    try {
      await worker.waitFor(/diff-sd worker: worker \S+ serving queue generations: tiny \(concurrency 1\)\n/);
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
      expect(worker.text.split('\n').slice(1)).toEqual([
        `diff-sd worker: job ${id} started (model tiny, attempt 1)`,
        'diff-sd worker: stopping: no new jobs; the running ones finish first (SIGTERM or Ctrl-C again to quit at once).',
        expect.stringMatching(new RegExp(`^diff-sd worker: job ${id} done in [\\d.]+ s$`)),
        '',
      ]);
    } finally {
      worker.child.kill('SIGKILL');
    }
  });
});
