import { existsSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { modelDir as tinyModelDir } from '@diff/model-tiny';
import { DEFAULT_PORT, startPlayground, type Playground } from './playground.js';

export const USAGE = `Usage: diff-playground [options]   (from the repository: npm run playground -- [options])

Options:
  --port N            the port, default ${DEFAULT_PORT}; 0 picks a free one
  --host ADDRESS      where to listen, default 127.0.0.1 (this machine only); another address lets other
                      machines use the playground, which has no authentication
  --model [NAME=]DIR  a diffusers ONNX pipeline folder the page offers as NAME (default: the folder's name);
                      repeat for several, the first is the default. Default: the embedded tiny model as "tiny";
                      --model tiny adds it beside others
  --redis URL         run no pipeline here: queue the generations on this Redis (redis:// or rediss://) for the
                      workers of @diff/queue (diff-sd worker --redis URL) and offer the models they offer
  --queue NAME        with --redis: the queue, default generations
  --max-queued N      waiting generations beyond which new ones are refused (HTTP 429), default 16
  -h, --help          this text`;

export interface CliIo {
  log(line: string): void;
  error(line: string): void;
}

class UsageError extends Error {}

const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** The queue's settings from --redis and --queue; undefined without --redis. */
function parseQueue(redis: string | undefined, name: string | undefined, models: readonly string[] | undefined): { redis: string; name?: string } | undefined {
  if (redis === undefined) {
    if (name !== undefined) throw new UsageError('--queue names the queue of --redis: give --redis URL too.');
    return undefined;
  }
  if (!/^rediss?:\/\/[^/]/.test(redis) || !URL.canParse(redis)) throw new UsageError(`--redis takes a redis:// or rediss:// URL, e.g. redis://127.0.0.1:6379, got "${redis}".`);
  if (models !== undefined) throw new UsageError('--model does not apply with --redis: the page offers the models of the queue\'s workers (diff-sd worker --model NAME=DIR).');
  if (name === '') throw new UsageError('--queue takes the name of a queue, got "".');
  return { redis, ...(name === undefined ? {} : { name }) };
}

/** The URL without its password, for messages. */
function redacted(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.href;
}

/** `NAME=DIR`, `DIR` or `tiny` → [name, absolute folder]; relative folders are read from where npm was run. */
function parseModel(value: string, cwd: string): [string, string] {
  if (value === 'tiny' && !existsSync(resolve(cwd, value))) return ['tiny', tinyModelDir];
  const isDir = (path: string) => existsSync(path) && statSync(path).isDirectory();
  const equals = value.indexOf('=');
  const [name, dir] = isDir(resolve(cwd, value)) || equals < 0 ? [basename(resolve(cwd, value)), value] : [value.slice(0, equals), value.slice(equals + 1)];
  if (!MODEL_NAME.test(name)) throw new UsageError(`--model: the name "${name}" must be letters, digits, ".", "_" or "-".`);
  const folder = resolve(cwd, dir);
  if (!existsSync(join(folder, 'model_index.json'))) throw new UsageError(`--model ${value}: ${folder} has no model_index.json (a diffusers ONNX pipeline folder).`);
  return [name, folder];
}

function integerOption(name: string, text: string | undefined, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) > max) throw new UsageError(`--${name} takes an integer from 0 to ${max}, got "${text}".`);
  return Number(text);
}

/**
 * Parses the command line and starts the server. `status`: 0 started (or printed the usage), 1 failed to start,
 * 2 bad usage.
 */
export async function runCli(
  argv: readonly string[],
  io: CliIo,
  cwd = process.env.INIT_CWD ?? process.cwd(),
): Promise<{ status: number; playground?: Playground }> {
  try {
    const { values } = parseArgs({
      args: [...argv],
      options: {
        port: { type: 'string' },
        host: { type: 'string', default: '127.0.0.1' },
        model: { type: 'string', multiple: true },
        redis: { type: 'string' },
        queue: { type: 'string' },
        'max-queued': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    if (values.help) {
      io.log(USAGE);
      return { status: 0 };
    }
    const queue = parseQueue(values.redis, values.queue, values.model);
    const models = queue ? undefined : new Map((values.model ?? ['tiny']).map((value) => parseModel(value, cwd)));
    const host = values.host;
    const playground = await startPlayground({
      host,
      port: integerOption('port', values.port, DEFAULT_PORT, 65_535),
      models,
      queue,
      maxQueued: integerOption('max-queued', values['max-queued'], 16),
      logError: io.error,
    });
    if (!['127.0.0.1', 'localhost', '::1'].includes(host)) {
      io.error(`Warning: listening on ${host}: anyone who can reach this address can run generations (the playground has no authentication).`);
    }
    const serves = models
      ? `models: ${[...models.keys()].join(', ')}`
      : `workers of ${queue?.name === undefined ? 'the queue' : `queue ${queue.name}`} on ${redacted(values.redis as string)}`;
    io.log(`Playground: ${playground.url} (${serves})`);
    return { status: 0, playground };
  } catch (error) {
    const usage = error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    io.error(usage ? `${(error as Error).message}\n\n${USAGE}` : `Could not start the playground: ${(error as Error).message}`);
    return { status: usage ? 2 : 1 };
  }
}
