#!/usr/bin/env node
import { INTERRUPTED_STATUS, runCli, type CliIo } from './cli.js';

let interruptHandler: (() => boolean) | undefined;

/**
 * Ends the process by SIGINT itself once stdout and stderr are flushed: a shell running a script or a loop sees the
 * child "killed by Ctrl-C" and stops too, which an ordinary exit with status 130 would not tell it.
 */
async function exitBySigint(): Promise<void> {
  await Promise.all([process.stdout, process.stderr].map((stream) => new Promise((done) => stream.write('', done))));
  process.removeAllListeners('SIGINT');
  // Windows has no signal to end oneself with; Node would terminate the process with status 1 there.
  if (process.platform !== 'win32') process.kill(process.pid, 'SIGINT');
  process.exit(INTERRUPTED_STATUS);
}

process.on('SIGINT', () => {
  if (!interruptHandler?.()) void exitBySigint();
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
};

const status = await runCli(process.argv.slice(2), io);
if (status === INTERRUPTED_STATUS) await exitBySigint();
else process.exitCode = status;
