#!/usr/bin/env node
import { runCli } from './cli.js';

const { status, playground } = await runCli(process.argv.slice(2), { log: console.log, error: console.error });
process.exitCode = status;
if (playground) {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void playground.close());
}
