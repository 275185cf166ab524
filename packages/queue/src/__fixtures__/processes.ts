/**
 * Test fixtures: worker processes (`node dist/worker-main.js`) whose output lines the tests read, and a wait for what
 * other processes record. Redis itself comes from @diff/test-fixtures.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { OutputProcess } from '@diff/test-fixtures';

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
