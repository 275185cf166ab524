import { extname } from 'node:path';
import { parseArgs } from 'node:util';
import { SCHEDULER_NAMES, type SchedulerName } from '@diff/core';

/** A command line that cannot run as written: exit status 2, the message says what is allowed. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** The options of `diff-sd generate`, checked and typed. */
export interface GenerateArgs {
  readonly prompt: string;
  readonly negativePrompt?: string;
  readonly seed: bigint;
  readonly steps: number;
  /** Absent: the pipeline's own default (7.5 for SD 1.x/2.x, 5 for SDXL). */
  readonly guidance?: number;
  readonly width?: number;
  readonly height?: number;
  readonly scheduler?: SchedulerName;
  readonly numImages: number;
  readonly out: string;
  readonly previewDir?: string;
  /** Absent: the embedded tiny model. */
  readonly model?: string;
  readonly cuda: boolean;
  readonly initImage?: string;
  readonly strength?: number;
  readonly mask?: string;
  readonly controlImage?: string;
  readonly ipAdapterImage?: string;
  readonly ipAdapterScale?: number;
  /** `NAME[:key=value,…]` specs, in the order given. */
  readonly callbacks: readonly string[];
  readonly plugins: readonly string[];
  readonly json: boolean;
  readonly quiet: boolean;
  readonly verbose: boolean;
}

export interface CallbacksArgs {
  readonly plugins: readonly string[];
  readonly json: boolean;
  readonly verbose: boolean;
}

/** The options of `diff-sd worker`, checked and typed. */
export interface WorkerArgs {
  /** A `redis://` or `rediss://` URL. */
  readonly redis: string;
  /** Model name → folder as given (relative to where the command runs), in the order given; empty: the embedded tiny model. */
  readonly models: Readonly<Record<string, string>>;
  readonly concurrency: number;
  readonly cuda: boolean;
  /** The queue's name; absent: `@diff/queue`'s default. */
  readonly queue?: string;
  readonly quiet: boolean;
  readonly verbose: boolean;
}

export type HelpTopic = 'main' | 'generate' | 'callbacks' | 'worker';

export type Command =
  | { readonly command: 'generate'; readonly args: GenerateArgs }
  | { readonly command: 'callbacks'; readonly args: CallbacksArgs }
  | { readonly command: 'worker'; readonly args: WorkerArgs }
  | { readonly command: 'help'; readonly topic: HelpTopic }
  | { readonly command: 'version' };

export const COMMANDS = ['generate', 'callbacks', 'worker'] as const;
export const DEFAULT_STEPS = 25;
export const DEFAULT_OUT = 'out/image.png';
export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp'] as const;
const MAX_SEED = 2n ** 64n - 1n;

// Every single-valued string option is parsed as `multiple` so that a repeated one is an error, not a silent override.
const single = { type: 'string', multiple: true } as const;
const repeatable = { type: 'string', multiple: true } as const;
const flag = { type: 'boolean' } as const;

const GENERATE_OPTIONS = {
  seed: single,
  steps: single,
  guidance: single,
  width: single,
  height: single,
  scheduler: single,
  'negative-prompt': single,
  'num-images': single,
  out: single,
  'preview-dir': single,
  model: single,
  cuda: flag,
  'init-image': single,
  strength: single,
  mask: single,
  'control-image': single,
  'ip-adapter-image': single,
  'ip-adapter-scale': single,
  callback: repeatable,
  plugin: repeatable,
  json: flag,
  quiet: flag,
  verbose: flag,
} as const;
const CALLBACKS_OPTIONS = ['plugin', 'json', 'verbose'] as const;
const WORKER_OPTIONS = { redis: single, model: repeatable, concurrency: single, cuda: flag, queue: single, quiet: flag, verbose: flag } as const;
const ALL_OPTIONS = { ...GENERATE_OPTIONS, ...WORKER_OPTIONS, help: { type: 'boolean', short: 'h' }, version: flag } as const;
/** A model's name on the queue, as requests give it. */
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

type Values = ReturnType<typeof parseArgs<{ options: typeof ALL_OPTIONS; allowPositionals: true }>>['values'];

/** Reads the command line; throws a `UsageError` that says what is wrong and what is allowed. */
export function parseCommandLine(argv: readonly string[]): Command {
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args: [...argv], options: ALL_OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    const help = argv.find((arg) => arg === '--help' || arg === '-h');
    if (help) return { command: 'help', topic: COMMANDS.find((command) => argv.includes(command)) ?? 'main' };
    throw new UsageError(describeParseError(error as Error & { code?: string }));
  }
  const { values, positionals } = parsed;
  const [first, ...rest] = positionals;
  const command = (COMMANDS as readonly string[]).includes(first) ? (first as (typeof COMMANDS)[number]) : undefined;
  if (values.help) return { command: 'help', topic: command ?? 'main' };
  if (values.version) return { command: 'version' };

  if (command === 'callbacks' || command === 'worker') {
    const allowed = command === 'callbacks' ? CALLBACKS_OPTIONS : Object.keys(WORKER_OPTIONS);
    checkOptionsApply(command, values, allowed);
    if (rest.length > 0) throw new UsageError(`diff-sd ${command} takes no arguments, got "${rest.join(' ')}".`);
    if (command === 'worker') return { command, args: workerArgs(values) };
    return { command, args: { plugins: values.plugin ?? [], json: values.json ?? false, verbose: values.verbose ?? false } };
  }
  checkOptionsApply('generate', values, Object.keys(GENERATE_OPTIONS));
  let prompt: string;
  if (command === 'generate') {
    if (rest.length === 0) throw new UsageError('generate needs a prompt: diff-sd generate "<prompt>" [options].');
    prompt = rest.join(' ');
  } else if (positionals.length === 1) {
    prompt = first;
  } else if (positionals.length === 0) {
    throw new UsageError('give a prompt: diff-sd "<prompt>" [options] (diff-sd --help lists the options and commands).');
  } else {
    throw new UsageError(`unknown command "${first}"; the commands are ${COMMANDS.slice(0, -1).join(', ')} and ${COMMANDS.at(-1)}. A prompt of several words goes in quotes: diff-sd "${positionals.join(' ')}".`);
  }
  return { command: 'generate', args: generateArgs(prompt, values) };
}

/** An option of another command is an error, not silently ignored. */
function checkOptionsApply(command: string, values: Values, allowed: readonly string[]): void {
  const misplaced = Object.keys(values).find((name) => !allowed.includes(name));
  if (misplaced === undefined) return;
  // The options generate lacks are the worker's; the other commands take few enough to list.
  if (command === 'generate') throw new UsageError(`--${misplaced} is an option of diff-sd worker, not of generate (diff-sd worker --help lists its options).`);
  throw new UsageError(`--${misplaced} does not apply to diff-sd ${command}, which takes ${allowed.map((name) => `--${name}`).join(', ')}.`);
}

/** The value of a single-valued option; given twice is an error. */
function one(values: Values, name: keyof Values): string | undefined {
  const given = values[name] as string[] | undefined;
  if (given && given.length > 1) throw new UsageError(`--${name} was given ${given.length} times (${given.map((value) => JSON.stringify(value)).join(', ')}); give it once.`);
  return given?.[0];
}

function workerArgs(values: Values): WorkerArgs {
  const redis = one(values, 'redis');
  if (redis === undefined) throw new UsageError('worker needs the queue\'s Redis: give --redis URL, e.g. --redis redis://127.0.0.1:6379.');
  if (!/^rediss?:\/\/[^/]/.test(redis) || !URL.canParse(redis)) throw new UsageError(`--redis takes a redis:// or rediss:// URL, e.g. redis://127.0.0.1:6379, got "${redis}".`);
  const queue = one(values, 'queue');
  if (queue === '') throw new UsageError('--queue takes the name of a queue, got "".');
  return {
    redis,
    models: workerModels(values.model ?? []),
    concurrency: positiveInteger('concurrency', one(values, 'concurrency')) ?? 1,
    cuda: values.cuda ?? false,
    queue,
    quiet: values.quiet ?? false,
    verbose: values.verbose ?? false,
  };
}

/** `--model NAME=DIR` specs → { name: folder }, each name once. */
function workerModels(specs: readonly string[]): Record<string, string> {
  const models: Record<string, string> = {};
  for (const spec of specs) {
    const equals = spec.indexOf('=');
    const [name, dir] = [spec.slice(0, equals), spec.slice(equals + 1)];
    if (equals < 0 || dir === '') throw new UsageError(`--model takes NAME=DIR for diff-sd worker (the name requests give, a diffusers ONNX folder), got "${spec}".`);
    if (!MODEL_NAME.test(name)) throw new UsageError(`--model ${spec}: the name "${name}" must start with a letter or digit, then letters, digits, ".", "_" or "-".`);
    if (Object.hasOwn(models, name)) throw new UsageError(`--model ${spec}: the name "${name}" was given twice; give each model once.`);
    models[name] = dir;
  }
  return models;
}

function generateArgs(prompt: string, values: Values): GenerateArgs {
  const option = (name: keyof typeof GENERATE_OPTIONS & keyof Values) => one(values, name);
  const seedText = option('seed');
  const scheduler = option('scheduler');
  if (scheduler !== undefined && !(SCHEDULER_NAMES as readonly string[]).includes(scheduler)) {
    throw new UsageError(`--scheduler takes one of ${SCHEDULER_NAMES.join(', ')}, got "${scheduler}".`);
  }
  const out = option('out') ?? DEFAULT_OUT;
  if (!(IMAGE_EXTENSIONS as readonly string[]).includes(extname(out).toLowerCase())) {
    throw new UsageError(`--out names a picture file ending in ${IMAGE_EXTENSIONS.join(', ')}, got "${out}".`);
  }
  const args: GenerateArgs = {
    prompt,
    negativePrompt: option('negative-prompt'),
    seed: seedText === undefined ? 0n : parseSeed(seedText),
    steps: positiveInteger('steps', option('steps')) ?? DEFAULT_STEPS,
    guidance: number('guidance', option('guidance'), { min: 0 }),
    width: positiveInteger('width', option('width')),
    height: positiveInteger('height', option('height')),
    scheduler: scheduler as SchedulerName | undefined,
    numImages: positiveInteger('num-images', option('num-images')) ?? 1,
    out,
    previewDir: option('preview-dir'),
    model: option('model'),
    cuda: values.cuda ?? false,
    initImage: option('init-image'),
    strength: number('strength', option('strength'), { min: 0, max: 1 }),
    mask: option('mask'),
    controlImage: option('control-image'),
    ipAdapterImage: option('ip-adapter-image'),
    ipAdapterScale: number('ip-adapter-scale', option('ip-adapter-scale'), {}),
    callbacks: values.callback ?? [],
    plugins: values.plugin ?? [],
    json: values.json ?? false,
    quiet: values.quiet ?? false,
    verbose: values.verbose ?? false,
  };
  checkCombinations(args);
  return args;
}

/** Options that only make sense together. */
function checkCombinations(args: GenerateArgs): void {
  if (args.mask !== undefined && args.initImage === undefined) throw new UsageError('--mask needs the picture to repaint: give --init-image FILE too.');
  if (args.strength !== undefined && args.initImage === undefined) {
    throw new UsageError('--strength applies to a starting picture: give --init-image FILE (image-to-image), with --mask FILE for inpainting.');
  }
  if (args.controlImage !== undefined && args.initImage !== undefined) {
    throw new UsageError('--control-image runs text-to-image with a ControlNet; it does not combine with --init-image or --mask.');
  }
  if (args.ipAdapterScale !== undefined && args.ipAdapterImage === undefined) throw new UsageError('--ip-adapter-scale needs --ip-adapter-image FILE.');
}

function parseSeed(text: string): bigint {
  if (!/^\d{1,20}$/.test(text) || BigInt(text) > MAX_SEED) {
    throw new UsageError(`--seed takes an integer from 0 to ${MAX_SEED} (2^64 − 1), got "${text}".`);
  }
  return BigInt(text);
}

function positiveInteger(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < 1) throw new UsageError(`--${name} takes an integer ≥ 1, got "${text}".`);
  return value;
}

function number(name: string, text: string | undefined, range: { min?: number; max?: number }): number | undefined {
  if (text === undefined) return undefined;
  const value = text.trim() === '' ? NaN : Number(text);
  const { min, max } = range;
  if (!Number.isFinite(value) || (min !== undefined && value < min) || (max !== undefined && value > max)) {
    const allowed = min !== undefined && max !== undefined ? `a number from ${min} to ${max}` : min !== undefined ? `a number ≥ ${min}` : 'a number';
    throw new UsageError(`--${name} takes ${allowed}, got "${text}".`);
  }
  return value;
}

/** node:util's parse errors, reworded: the option, what it needs, and the nearest known option for a typo. */
function describeParseError(error: Error & { code?: string }): string {
  const option = /'(--?[^' ]+)/.exec(error.message)?.[1];
  if (error.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && option) {
    const nearest = nearestOption(option.replace(/^-+/, ''));
    return `unknown option ${option}${nearest ? `; did you mean --${nearest}?` : ''} (diff-sd --help lists the options).`;
  }
  if (error.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && option) {
    const name = option.replace(/^-+/, '');
    if (ALL_OPTIONS[name as keyof typeof ALL_OPTIONS]?.type === 'boolean') return `${option} is a switch and takes no value.`;
    if (error.message.includes('ambiguous')) return `${option} needs a value; write a value that starts with "-" as ${option}=VALUE.`;
    return `${option} needs a value.`;
  }
  return error.message;
}

function nearestOption(name: string): string | undefined {
  const scored = Object.keys(ALL_OPTIONS).map((known) => ({ known, distance: editDistance(name, known) }));
  const best = scored.sort((a, b) => a.distance - b.distance)[0];
  return best && best.distance <= Math.max(1, Math.floor(name.length / 3)) ? best.known : undefined;
}

/** Levenshtein distance. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = current;
  }
  return previous[b.length];
}
