#!/usr/bin/env node
import { INTERRUPTED_STATUS, runCli, type CliIo } from './cli.js';

let interruptHandler: (() => boolean) | undefined;

/**
 * Ends the process by `signal` itself once stdout and stderr are flushed: a shell running a script or a loop sees the
 * child "killed by Ctrl-C" and stops too, which an ordinary exit with status 130 would not tell it.
 */
async function exitBySignal(signal: 'SIGINT' | 'SIGTERM'): Promise<void> {
  await Promise.all([process.stdout, process.stderr].map((stream) => new Promise((done) => stream.write('', done))));
  process.removeAllListeners(signal);
  // Windows has no signal to end oneself with; Node would terminate the process with status 1 there.
  if (process.platform !== 'win32') process.kill(process.pid, signal);
  process.exit(signal === 'SIGINT' ? INTERRUPTED_STATUS : 128 + 15);
}

process.on('SIGINT', () => {
  if (!interruptHandler?.()) void exitBySignal('SIGINT');
});

const io: CliIo = {
  log: (line) => process.stdout.write(`${line}\n`),
  error: (line) => process.stderr.write(`${line}\n`),
  terminal: process.stderr.isTTY ? { write: (text) => process.stderr.write(text), columns: () => process.stderr.columns } : undefined,
  onInterrupt(handler) {
    interruptHandler = handler;
    return () => {
      if (interruptHandler === handler) interruptHandler = undefined;
    };
  },
  onTerminate(handler) {
    // Listening only while subscribed: otherwise SIGTERM keeps its default, ending the process at once.
    const listener = () => {
      if (!handler()) void exitBySignal('SIGTERM');
    };
    process.on('SIGTERM', listener);
    return () => process.off('SIGTERM', listener);
  },
};

const status = await runCli(process.argv.slice(2), io);
if (status === INTERRUPTED_STATUS) await exitBySignal('SIGINT');
else process.exitCode = status;
