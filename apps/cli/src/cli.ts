import { readFileSync } from 'node:fs';
import { DiffError, SCHEDULER_NAMES } from '@diff/core';
import { DEFAULT_OUT, DEFAULT_STEPS, IMAGE_EXTENSIONS, UsageError, parseCommandLine, type CallbacksArgs, type HelpTopic } from './args.js';
import { CliRegistry, formatPlugins, listPlugins } from './callbacks.js';
import { INTERRUPTED_STATUS, runGenerate } from './generate.js';
import { runWorker } from './worker.js';

/** Where the command line writes, and how it hears Ctrl-C. `console` is enough for a plain run. */
export interface CliIo {
  /** A line on stdout: results (`wrote …`, the --json document). */
  log(line: string): void;
  /** A line on stderr: progress, notices, errors. */
  error(line: string): void;
  /** Set when stderr is a terminal: the progress bar redraws its line through it. */
  readonly terminal?: { write(text: string): void; columns(): number | undefined };
  /**
   * Subscribes to Ctrl-C; the handler returns false when it has nothing left to do (the caller then quits at once).
   * Returns the unsubscribe function.
   */
  onInterrupt?(handler: () => boolean): () => void;
  /** Subscribes to SIGTERM (a service manager stopping the process), as `onInterrupt`; without a subscriber SIGTERM ends the process. */
  onTerminate?(handler: () => boolean): () => void;
}

export { INTERRUPTED_STATUS };

const GENERATE_USAGE = 'Usage: diff-sd [generate] "<prompt>" [options]';
const CALLBACKS_USAGE = 'diff-sd callbacks [--plugin PACKAGE]… [--json]';
const WORKER_USAGE = 'diff-sd worker --redis URL [--model NAME=DIR]… [--concurrency N] [--cuda] [--queue NAME]';

const GENERATE_DETAILS = `Makes pictures with @diff/core from a diffusers ONNX pipeline folder, by default the embedded tiny model.

Picture
  --seed N                  seed of the noise, 0 to 2^64 − 1 (torch.Generator("cpu").manual_seed); default 0
  --steps N                 denoising steps; default ${DEFAULT_STEPS}
  --guidance X              classifier-free guidance scale (≤ 1: off); default the model's (SD 7.5, SDXL 5)
  --negative-prompt TEXT    what to steer away from
  --width N, --height N     picture size in pixels, multiples of 8; default the model's (or the input picture's)
  --scheduler NAME          ${SCHEDULER_NAMES.join(', ')}; default the model's
  --num-images N            pictures from one prompt; default 1
  --out FILE                ${IMAGE_EXTENSIONS.join(', ')}; default ${DEFAULT_OUT}; more pictures go to FILE-1, FILE-2, …

Input pictures (the pipeline follows: text-to-image, image-to-image, inpainting, ControlNet)
  --init-image FILE         image-to-image: start from this picture
  --strength X              how far to move away from it, 0 to 1; default the pipeline's (SD 0.8, SDXL 0.3;
                            inpainting: SD 1, SDXL 0.9999)
  --mask FILE               inpainting: repaint the white part of --init-image
  --control-image FILE      the control picture of a model folder with a ControlNet
  --ip-adapter-image FILE   condition on this picture (a model exported with an IP-Adapter)
  --ip-adapter-scale X      how strongly; default 1

Callbacks (diff-sd callbacks lists them with their options)
  --callback NAME[:key=value,…]   run a callback from the registry; repeatable, in order.
                            Values are read as the option's type; NAME:{"key": …} takes JSON.
  --plugin PACKAGE          load a callback package (installed here, or a path) and register its plugins; repeatable
  --preview-dir DIR         write a preview after every step into DIR (the preview plugin, through the VAE;
                            --callback preview:method=linear,every=5 for cheaper ones)

Model
  --model DIR               a diffusers ONNX pipeline folder (SD 1.x/2.x, SDXL); default @diff/model-tiny
  --cuda                    run on CUDA (falls back to the CPU with a notice)

Output
  --json                    one JSON document on stdout (files, seed, steps, timings, interruptedAtStep, model,
                            pipeline); everything else goes to stderr
  --quiet                   no progress and no notices on stderr
  --verbose                 errors with their stack trace
  -h, --help                this text; diff-sd callbacks --help, diff-sd worker --help
  --version                 the version

Ctrl-C stops after the current step and saves the picture so far; twice aborts and writes nothing.
Exit status: 0 done, 1 failed, 2 bad usage (or options the model cannot serve), 130 stopped by Ctrl-C.`;

const CALLBACKS_HELP = `Usage: ${CALLBACKS_USAGE}

Lists the callback plugins --callback can use, with their options, types and defaults: the official ones
(@diff/callback-cfg-cutoff, -interrupt, -ipadapter, -preview), the callback packages installed where you run it
(package.json keyword "diff-callback"), and those --plugin loads.

  --plugin PACKAGE   also load this package (installed here, or a path); repeatable
  --json             the list as JSON: name, description, package and the options' JSON Schema
  --verbose          errors with their stack trace`;

const WORKER_HELP = `Usage: ${WORKER_USAGE}

Runs the generations of a @diff/queue job queue on this machine: takes jobs from Redis, runs them on its models
(loaded on their first job), reports their steps and stores their pictures there, for the API processes (the
playground with --redis, GenerationQueue of @diff/queue) that queued them. Start one on each machine with a GPU.

  --redis URL            the queue's Redis: redis://[:password@]host[:port][/db], or rediss:// for TLS
  --model NAME=DIR       offer the diffusers ONNX text-to-image folder DIR as NAME (the name requests give);
                         repeatable, the first serves requests without a model. Default: the embedded tiny model
                         as "tiny". Every worker of a queue must offer the same models.
  --concurrency N        generations at once on this machine; default 1 (one GPU runs one at a time)
  --cuda                 run on CUDA
  --queue NAME           the queue to serve; default generations (one queue per set of models)
  --quiet                no line per job (started, done, cancelled); errors still show
  --verbose              failed jobs and errors with their stack trace

One line per job on stderr: started, then done (with its time) or cancelled, or failed. SIGTERM or Ctrl-C: no new
jobs, the running ones finish, then exit status 0; a second one quits at once (another worker runs the job again).
Exit status: 0 stopped, 1 failed, 2 bad usage; a second signal ends the process by that signal (130 for Ctrl-C).`;

const HELP: Readonly<Record<HelpTopic, string>> = {
  main: `${GENERATE_USAGE}\n       ${CALLBACKS_USAGE}   (lists the callback plugins: diff-sd callbacks --help)\n       ${WORKER_USAGE}   (serves a job queue: diff-sd worker --help)\n\n${GENERATE_DETAILS}`,
  generate: `${GENERATE_USAGE}\n\n${GENERATE_DETAILS}`,
  callbacks: CALLBACKS_HELP,
  worker: WORKER_HELP,
};

function version(): string {
  return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/**
 * Runs the command line; resolves to the exit status: 0 done, 1 failed, 2 bad usage, 130 stopped by Ctrl-C.
 * `cwd` is where relative paths, `--plugin` packages and installed callback packages are looked up.
 */
export async function runCli(argv: readonly string[], io: CliIo, options: { cwd?: string } = {}): Promise<number> {
  const cwd = options.cwd ?? process.cwd();
  const verbose = argv.includes('--verbose');
  try {
    const command = parseCommandLine(argv);
    switch (command.command) {
      case 'help':
        io.log(HELP[command.topic]);
        return 0;
      case 'version':
        io.log(version());
        return 0;
      case 'callbacks':
        return await listCallbacks(command.args, io, cwd);
      case 'generate':
        return await runGenerate(command.args, io, cwd);
      case 'worker':
        return await runWorker(command.args, io, cwd);
    }
  } catch (error) {
    return reportError(error, io, verbose);
  }
}

async function listCallbacks(args: CallbacksArgs, io: CliIo, cwd: string): Promise<number> {
  const registry = new CliRegistry();
  await registry.discover(cwd);
  for (const plugin of args.plugins) await registry.loadPlugin(plugin, cwd);
  const plugins = listPlugins(registry);
  io.log(args.json ? JSON.stringify(plugins) : formatPlugins(plugins));
  for (const shadowed of registry.shadowed) io.error(`diff-sd: not listed: ${shadowed}.`);
  return 0;
}

/** One line `diff-sd: message` (with the stack and causes under --verbose); the exit status for the error. */
function reportError(error: unknown, io: CliIo, verbose: boolean): number {
  const aborted = error instanceof DiffError && error.code === 'ABORTED';
  const usage = error instanceof UsageError || (error instanceof DiffError && error.code === 'INVALID_ARGUMENT');
  const message = aborted ? 'aborted: no picture written.' : error instanceof Error ? error.message : String(error);
  io.error(`diff-sd: ${message}`);
  if (verbose) {
    for (let cause: unknown = error; cause instanceof Error; cause = cause.cause) io.error(cause.stack ?? String(cause));
  }
  return aborted ? INTERRUPTED_STATUS : usage ? 2 : 1;
}
