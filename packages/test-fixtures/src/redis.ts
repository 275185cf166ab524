/**
 * Tests against a real Redis: `describeWithRedis` (skipped without redis-server, a failure under CI=true), a private
 * redis-server on a free port of 127.0.0.1 (`startRedisServer`), and `OutputProcess`, a child process whose output
 * lines the tests wait for. Uses Jest's global `describe` and `test`: call it from test files only.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';

const INSTALL_HINT = 'apt-get install -y redis-server';

let redisServerLookup: { path?: string } | undefined;

/** The redis-server executable on PATH, if any; looked up on first use, not when the package is imported. */
function redisServer(): string | undefined {
  if (!redisServerLookup) {
    const found = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
    redisServerLookup = { path: found.status === 0 ? found.stdout.trim() : undefined };
  }
  return redisServerLookup.path;
}

/**
 * `describe` for tests that need Redis. Without redis-server they are skipped with a message, except under
 * `CI=true`, where a missing redis-server is a failure.
 */
export function describeWithRedis(name: string, body: () => void): void {
  if (redisServer()) {
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

/** A child process whose output lines (stdout and stderr together) are kept, with waits on them. */
export class OutputProcess {
  readonly lines: string[] = [];
  /** Its exit code (null when a signal ended it), once it has exited and its output is read to the end. */
  readonly exited: Promise<number | null>;
  private closed = false;
  private readonly waiters = new Set<() => void>();

  constructor(readonly child: ChildProcess) {
    for (const stream of [child.stdout, child.stderr]) {
      let pending = '';
      stream?.setEncoding('utf8').on('data', (chunk: string) => {
        const parts = (pending + chunk).split('\n');
        pending = parts.pop() ?? '';
        this.lines.push(...parts);
        this.wakeWaiters();
      });
    }
    this.exited = new Promise((resolve) =>
      child.once('close', (code) => {
        this.closed = true;
        this.wakeWaiters();
        resolve(code);
      }),
    );
  }

  /**
   * Resolves to the first line matching `pattern` (already printed or to come); rejects after `timeoutMs`, or as soon
   * as the process has ended without printing one.
   */
  waitForLine(pattern: RegExp, timeoutMs = 30_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const settle = (outcome: () => void) => {
        this.waiters.delete(check);
        clearTimeout(timer);
        outcome();
      };
      const check = () => {
        const line = this.lines.find((each) => pattern.test(each));
        if (line !== undefined) settle(() => resolve(line));
        else if (this.closed) settle(() => reject(new Error(`The process ended without a line matching ${pattern}; output:\n${this.lines.join('\n')}`)));
      };
      const timer = setTimeout(() => settle(() => reject(new Error(`No line matched ${pattern} within ${timeoutMs} ms; output:\n${this.lines.join('\n')}`))), timeoutMs);
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

  private wakeWaiters(): void {
    for (const wake of this.waiters) wake();
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A redis-server of the tests' own, without persistence: a restart starts it empty, as after a crash. */
export class RedisServer {
  private process?: OutputProcess;

  constructor(readonly port: number) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts the server (again, after `stop`) and waits until it accepts connections. */
  async start(): Promise<void> {
    const executable = redisServer();
    if (!executable) throw new Error(`redis-server is not installed: ${INSTALL_HINT}`);
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
    this.process = new OutputProcess(spawn(executable, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    await this.process.waitForLine(/Ready to accept connections/, 10_000);
  }

  async stop(): Promise<void> {
    await this.process?.stop('SIGTERM');
    this.process = undefined;
  }

  /** Stops the server and starts a fresh, empty one on the same port. */
  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

/** Starts a redis-server on a free port of 127.0.0.1; `stop()` it in `afterAll`. */
export async function startRedisServer(): Promise<RedisServer> {
  const server = new RedisServer(await freePort());
  await server.start();
  return server;
}
