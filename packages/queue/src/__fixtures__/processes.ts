/**
 * Test fixtures: a private `redis-server` on a free port of 127.0.0.1, and worker processes
 * (`node dist/worker-main.js`) whose output lines the tests read.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

const INSTALL_HINT = 'apt-get install -y redis-server';

/** The redis-server executable on PATH, if any. */
function findRedisServer(): string | undefined {
  const found = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  return found.status === 0 ? found.stdout.trim() : undefined;
}

const redisServer = findRedisServer();

/**
 * `describe` for tests that need Redis. Without redis-server they are skipped with a message, except under
 * `CI=true`, where a missing redis-server is a failure.
 */
export function describeWithRedis(name: string, body: () => void): void {
  if (redisServer) {
    describe(name, body);
  } else if (process.env.CI === 'true') {
    test(`${name}: redis-server is installed`, () => {
      throw new Error(`redis-server is missing and CI=true: install it (${INSTALL_HINT}).`);
    });
  } else {
    // Straight to stderr: Jest drops console output of a file whose tests are all skipped.
    process.stderr.write(`Skipping "${name}": redis-server is not installed. To run these tests: ${INSTALL_HINT}\n`);
    describe.skip(name, body);
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A child process whose output lines are kept, with waits on them. */
export class OutputProcess {
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  private readonly waiters = new Set<() => void>();

  constructor(readonly child: ChildProcess) {
    for (const stream of [child.stdout, child.stderr]) {
      let pending = '';
      stream?.setEncoding('utf8').on('data', (chunk: string) => {
        const parts = (pending + chunk).split('\n');
        pending = parts.pop() ?? '';
        this.lines.push(...parts);
        for (const wake of this.waiters) wake();
      });
    }
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  /** Resolves to the first line matching `pattern` (already printed or to come); rejects after `timeoutMs`. */
  waitForLine(pattern: RegExp, timeoutMs = 30_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const line = this.lines.find((each) => pattern.test(each));
        if (line === undefined) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(line);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`No line matched ${pattern} within ${timeoutMs} ms; output:\n${this.lines.join('\n')}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  count(pattern: RegExp): number {
    return this.lines.filter((line) => pattern.test(line)).length;
  }

  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}

/** A redis-server of the tests' own, without persistence: a restart starts it empty, as after a crash. */
export class TestRedis {
  private process?: OutputProcess;

  private constructor(readonly port: number) {}

  static async start(): Promise<TestRedis> {
    const redis = new TestRedis(await freePort());
    await redis.launch();
    return redis;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async stop(): Promise<void> {
    await this.process?.stop('SIGTERM');
    this.process = undefined;
  }

  /** Stops the server and starts a fresh one on the same port. */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  private async launch(): Promise<void> {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
    this.process = new OutputProcess(spawn(redisServer as string, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    await this.process.waitForLine(/Ready to accept connections/, 10_000);
  }
}

const WORKER_MAIN = fileURLToPath(new URL('../../dist/worker-main.js', import.meta.url));

/** Starts `node dist/worker-main.js` with `args` and waits until it serves the queue. */
export async function startWorkerProcess(args: readonly string[]): Promise<OutputProcess> {
  if (!existsSync(WORKER_MAIN)) throw new Error(`${WORKER_MAIN} is missing: build the package first (npm run build -w @diff/queue).`);
  const worker = new OutputProcess(spawn(process.execPath, [WORKER_MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
  await worker.waitForLine(/ serving queue /);
  return worker;
}

/**
 * Runs `check` until it passes (returns without throwing), for what other processes record a moment after the event
 * the test saw (BullMQ moves a job to completed after its `done` event, say). Rethrows its last failure at `timeoutMs`.
 */
export async function eventually(check: () => Promise<void>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
}
