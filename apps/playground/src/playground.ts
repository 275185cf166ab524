/**
 * The playground's HTTP server: the page's static files and the JSON + Server-Sent Events API (README.md lists the
 * routes). Node's `http` only.
 */
import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GENERATION_REQUEST_JSON_SCHEMA, InvalidArgumentError, InvalidRequestError } from '@diff/core/plugin';
import { modelDir as tinyModelDir } from '@diff/model-tiny';
import type { GenerationQueueOptions } from '@diff/queue';
import { BackendUnavailableError, type GenerationBackend } from './backend.js';
import { FINAL_EVENT_TYPES, Generations, QueueFullError, type Generation } from './generations.js';
import { SESSION_HEADER, Sessions } from './sessions.js';

export interface PlaygroundOptions {
  /** Default 127.0.0.1. Any other address lets other machines use the playground. */
  host?: string;
  /** Default 7860; 0 picks a free port (read `url`). */
  port?: number;
  /** Model name → diffusers ONNX folder; the first is the page's default. Default: the embedded tiny model as `tiny`. */
  models?: ReadonlyMap<string, string>;
  /**
   * Run the generations on the workers of this `@diff/queue` queue (`redis`, and `name` when not the default) instead
   * of in this process; the page then offers the models the workers offer, so `models` does not apply.
   */
  queue?: GenerationQueueOptions;
  /** Waiting generations (of this server) beyond which new ones get 429. Default 16. */
  maxQueued?: number;
  /** Finished generations whose events and pictures are kept. Default 64. */
  maxFinished?: number;
  /** Largest request body in bytes (413 beyond). Default 64 KiB. */
  maxBodyBytes?: number;
  /** Where unexpected failures are reported. Default: stderr. */
  logError?: (message: string) => void;
}

export interface Playground {
  /** `http://host:port/` */
  readonly url: string;
  readonly server: Server;
  /** Stops listening, cancels every generation that has not ended and frees the models (or the queue's connections). */
  close(): Promise<void>;
}

export const DEFAULT_PORT = 7860;
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '::1']);

/** The package folder: this file is in src/ (tests) or dist/ (built), one level below. */
const packageDir = fileURLToPath(new URL('..', import.meta.url));

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.png': 'image/png',
};

/** URL path → file: the hand-written public/ files and the page's compiled modules, listed once at start-up. */
function staticFiles(): Map<string, string> {
  const files = new Map<string, string>();
  for (const dir of [join(packageDir, 'public'), join(packageDir, 'dist', 'page')]) {
    let names: string[] = [];
    try {
      names = readdirSync(dir);
    } catch {
      // dist/page is missing until the page is built; the start-up message says so.
    }
    for (const name of names) if (CONTENT_TYPES[extname(name)]) files.set(`/${name}`, join(dir, name));
  }
  const index = files.get('/index.html');
  if (index) files.set('/', index);
  return files;
}

const PAGE_HEADERS = {
  'Content-Security-Policy': "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
  'X-Frame-Options': 'DENY',
};

/** An HTTP error with the JSON body `{ error: { field?, message } }`. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Readonly<Record<string, string>> = {}): void {
  const text = JSON.stringify(body, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value));
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store', ...headers });
  res.end(text);
}

async function readJsonBody(req: IncomingMessage, maxBytes: number): Promise<unknown> {
  const type = req.headers['content-type'] ?? '';
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    throw new HttpError(415, `The body must be JSON sent as Content-Type: application/json, got ${JSON.stringify(type)}.`, 'Content-Type');
  }
  const tooLarge = new HttpError(413, `The body must be at most ${maxBytes} bytes.`, 'body', { Connection: 'close' });
  if (Number(req.headers['content-length'] ?? 0) > maxBytes) throw tooLarge;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw tooLarge;
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (error) {
    throw new HttpError(400, `The body is not valid JSON: ${(error as Error).message}`, 'body');
  }
}

type Handler = (req: IncomingMessage, res: ServerResponse, params: readonly string[]) => Promise<void> | void;
interface Route {
  readonly method: 'GET' | 'POST';
  readonly path: RegExp;
  readonly handler: Handler;
}

/**
 * The queue's or the local one, each imported only when used: a playground on a queue loads no ONNX Runtime, a local
 * one no Redis client.
 */
async function createBackend(options: PlaygroundOptions, logError: (message: string) => void): Promise<GenerationBackend> {
  if (options.queue) {
    if (options.models) throw new InvalidArgumentError('startPlayground: give models or queue, not both: with a queue, the page offers the models its workers offer.');
    const { QueueBackend } = await import('./queue-backend.js');
    return new QueueBackend(options.queue, logError);
  }
  const { LocalBackend } = await import('./local-backend.js');
  return new LocalBackend({ models: options.models ?? new Map([['tiny', tinyModelDir]]), logError });
}

export async function startPlayground(options: PlaygroundOptions = {}): Promise<Playground> {
  const {
    host = '127.0.0.1',
    port = DEFAULT_PORT,
    maxQueued = 16,
    maxFinished = 64,
    maxBodyBytes = 64 * 1024,
    logError = (message: string) => process.stderr.write(`${message}\n`),
  } = options;
  const backend = await createBackend(options, logError);
  const generations = new Generations({ backend, maxQueued, maxFinished, logError });
  const sessions = new Sessions();
  const files = staticFiles();
  if (!files.has('/app.js')) logError(`The page is not built (${join(packageDir, 'dist', 'page')} is missing): run npm run build -w @diff/playground.`);
  let allowedHosts: ReadonlySet<string> | undefined;

  /** The requester's session: its verified token (401 without one). */
  const sessionOf = (req: IncomingMessage): string => {
    const token = req.headers[SESSION_HEADER];
    if (typeof token !== 'string' || !sessions.verify(token)) {
      throw new HttpError(401, `Send the ${SESSION_HEADER} header the generation's POST returned; tokens end when the server restarts.`, SESSION_HEADER);
    }
    return token;
  };
  /** The requester's own generation: others' look missing. */
  const generationOf = (req: IncomingMessage, id: string): Generation => {
    const generation = generations.get(id, sessionOf(req));
    if (!generation) throw new HttpError(404, `No generation ${id} in this session (unknown, of another page, or forgotten: the server keeps the latest ${maxFinished}).`, 'id');
    return generation;
  };

  const routes: Route[] = [
    {
      method: 'GET',
      path: /^\/api\/models$/,
      handler: async (_req, res) => sendJson(res, 200, { models: (await backend.models()).map((name, index) => ({ name, default: index === 0 })) }),
    },
    { method: 'GET', path: /^\/api\/callbacks$/, handler: (_req, res) => sendJson(res, 200, { callbacks: backend.registry.list() }) },
    { method: 'GET', path: /^\/api\/schema$/, handler: (_req, res) => sendJson(res, 200, GENERATION_REQUEST_JSON_SCHEMA) },
    {
      method: 'POST',
      path: /^\/api\/generations$/,
      handler: async (req, res) => {
        // A page's first generation starts its session; later ones must send the token back.
        const session = req.headers[SESSION_HEADER] === undefined ? sessions.issue() : sessionOf(req);
        const body = await readJsonBody(req, maxBodyBytes);
        let generation: Generation;
        try {
          generation = await generations.submit(body, session);
        } catch (error) {
          if (error instanceof InvalidRequestError) throw new HttpError(400, error.message, error.field);
          if (error instanceof QueueFullError) throw new HttpError(429, error.message, undefined, { 'Retry-After': '5' });
          if (error instanceof BackendUnavailableError) throw new HttpError(503, error.message, undefined, { 'Retry-After': '5' });
          throw error;
        }
        const { id, request } = generation;
        sendJson(res, 202, { id, session, request, events: `/api/generations/${id}/events` }, { [SESSION_HEADER]: session });
      },
    },
    {
      method: 'GET',
      path: /^\/api\/generations\/([^/]+)\/events$/,
      handler: (req, res, [id]) => {
        const generation = generationOf(req, id);
        const lastEventId = Number(req.headers['last-event-id']);
        res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', 'X-Accel-Buffering': 'no' });
        const unsubscribe = generations.subscribe(
          generation,
          (event, index) => {
            res.write(`id: ${index}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
            if (FINAL_EVENT_TYPES.has(event.type)) res.end();
          },
          Number.isInteger(lastEventId) ? lastEventId : -1,
        );
        res.on('close', unsubscribe);
      },
    },
    {
      method: 'POST',
      path: /^\/api\/generations\/([^/]+)\/interrupt$/,
      handler: async (req, res, [id]) => {
        await generations.interrupt(generationOf(req, id));
        sendJson(res, 202, { id });
      },
    },
    {
      method: 'POST',
      path: /^\/api\/generations\/([^/]+)\/cancel$/,
      handler: async (req, res, [id]) => {
        await generations.cancel(generationOf(req, id));
        sendJson(res, 202, { id });
      },
    },
    {
      method: 'GET',
      path: /^\/api\/generations\/([^/]+)\/image(?:\/(\d+))?$/,
      handler: async (req, res, [id, index = '0']) => {
        const generation = generationOf(req, id);
        const picture = await generations.image(generation, Number(index));
        if (!picture) {
          const why = generation.finished ? `it has ${generation.pictureCount} picture(s)` : 'it has not finished';
          throw new HttpError(404, `Generation ${id} has no picture ${index}: ${why}.`, 'image');
        }
        res.writeHead(200, { 'Content-Type': 'image/png', 'Content-Length': picture.length, 'Cache-Control': 'private, max-age=3600' });
        res.end(picture);
      },
    },
  ];

  const serveStatic = async (path: string, res: ServerResponse): Promise<boolean> => {
    const file = files.get(path);
    if (!file) return false;
    const content = await readFile(file);
    res.writeHead(200, { 'Content-Type': CONTENT_TYPES[extname(file)], 'Cache-Control': 'no-cache', ...(file.endsWith('.html') ? PAGE_HEADERS : {}) });
    res.end(content);
    return true;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    // On loopback, a foreign Host means DNS rebinding: another site's page talking to this server as if same-origin.
    if (allowedHosts && !allowedHosts.has(req.headers.host ?? '')) {
      throw new HttpError(403, `This playground answers to ${[...allowedHosts].join(', ')} only.`, 'Host');
    }
    const path = new URL(req.url ?? '/', 'http://playground').pathname;
    const matching = routes.filter((route) => route.path.test(path));
    const route = matching.find((candidate) => candidate.method === req.method);
    if (route) return route.handler(req, res, (route.path.exec(path) as RegExpExecArray).slice(1));
    if (matching.length > 0) throw new HttpError(405, `${path} takes ${matching.map((each) => each.method).join(', ')}.`, 'method', { Allow: matching.map((each) => each.method).join(', ') });
    if (req.method === 'GET' && (await serveStatic(path, res))) return;
    throw new HttpError(404, `Nothing at ${path}.`);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!(error instanceof HttpError)) logError(`${req.method} ${req.url} failed: ${(error as Error).stack ?? String(error)}`);
      const { status, message, field, headers } = error instanceof HttpError ? error : new HttpError(500, 'The server failed; its log says why.');
      if (res.headersSent) res.end();
      else sendJson(res, status, { error: { ...(field === undefined ? {} : { field }), message } }, headers);
    });
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
  } catch (error) {
    await generations.close(); // the queue's connections would keep the process alive
    throw error;
  }
  const { port: boundPort } = server.address() as AddressInfo;
  if (LOOPBACK_HOSTS.has(host)) allowedHosts = new Set(['127.0.0.1', 'localhost', '[::1]'].map((name) => `${name}:${boundPort}`));
  const urlHost = host.includes(':') ? `[${host}]` : host;

  return {
    url: `http://${urlHost}:${boundPort}/`,
    server,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await generations.close();
      await closed;
    },
  };
}
