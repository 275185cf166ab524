import { request as httpRequest } from 'node:http';
import sharp from 'sharp';
import { GENERATION_REQUEST_JSON_SCHEMA } from '@diff/core';
import { modelDir } from '@diff/model-tiny';
import { startWorker, type GenerationWorker } from '@diff/queue';
import { describeWithRedis, startRedisServer, type RedisServer } from '@diff/test-fixtures';
import { runCli } from './cli.js';
import type { PlaygroundEvent } from './generations.js';
import { startPlayground, type Playground } from './playground.js';
import { SESSION_HEADER } from './sessions.js';

/** Reads a Server-Sent Events response one event at a time. */
class EventReader {
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  private buffer = '';
  /** The `id:` of each event read, in order. */
  readonly ids: number[] = [];

  constructor(response: Response) {
    this.reader = (response.body as ReadableStream<Uint8Array>).getReader();
  }

  async next(): Promise<PlaygroundEvent | undefined> {
    for (;;) {
      const end = this.buffer.indexOf('\n\n');
      if (end >= 0) {
        const fields = Object.fromEntries(this.buffer.slice(0, end).split('\n').map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 2)]));
        this.buffer = this.buffer.slice(end + 2);
        const event = JSON.parse(fields.data) as PlaygroundEvent;
        expect(fields.event).toBe(event.type);
        this.ids.push(Number(fields.id));
        return event;
      }
      const { value, done } = await this.reader.read();
      if (done) return undefined;
      this.buffer += this.decoder.decode(value, { stream: true });
    }
  }

  /** Reads until an event matches (failing if the stream ends first). */
  async until(matches: (event: PlaygroundEvent) => boolean): Promise<PlaygroundEvent> {
    for (let event = await this.next(); event; event = await this.next()) if (matches(event)) return event;
    throw new Error('the event stream ended before the expected event');
  }

  /** Every event up to the end of the stream. */
  async rest(): Promise<PlaygroundEvent[]> {
    const events: PlaygroundEvent[] = [];
    for (let event = await this.next(); event; event = await this.next()) events.push(event);
    return events;
  }

  cancel(): Promise<void> {
    return this.reader.cancel();
  }
}

/** Every field the API's JSON answers may hold: a started generation's, or an error's. */
interface Answer {
  id: string;
  session: string;
  request: Record<string, unknown>;
  error: { field?: string; message: string };
}
const answerOf = async (response: Response) => (await response.json()) as Answer;

/** The API of the playground at `base()`, for the tests. */
function apiOf(base: () => string) {
  const url = (path: string) => new URL(path, base());

  async function post(body: unknown, session?: string) {
    const response = await fetch(url('/api/generations'), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(session ? { [SESSION_HEADER]: session } : {}) },
      body: JSON.stringify(body),
    });
    return { status: response.status, headers: response.headers, body: await answerOf(response) };
  }

  /** A generation started in `session` (a new session when absent). */
  async function start(body: Record<string, unknown>, session?: string): Promise<Answer> {
    const { status, body: started } = await post({ prompt: 'a large red circle on a blue background', seed: 7, ...body }, session);
    expect(status).toBe(202);
    return started;
  }

  const sessionGet = (path: string, session: string, headers: Record<string, string> = {}) => fetch(url(path), { headers: { [SESSION_HEADER]: session, ...headers } });
  const sessionPost = (path: string, session: string) => fetch(url(path), { method: 'POST', headers: { [SESSION_HEADER]: session } });
  const events = async (id: string, session: string, headers: Record<string, string> = {}) => {
    const response = await sessionGet(`/api/generations/${id}/events`, session, headers);
    expect([response.status, response.headers.get('content-type')]).toEqual([200, 'text/event-stream; charset=utf-8']);
    return new EventReader(response);
  };
  /** A picture of a generation: its PNG's size. */
  const pictureSize = async (path: string, session: string) => {
    const image = await sessionGet(path, session);
    expect([image.status, image.headers.get('content-type')]).toEqual([200, 'image/png']);
    const { width, height, format } = await sharp(Buffer.from(await image.arrayBuffer())).metadata();
    return { width, height, format };
  };
  return { url, post, start, sessionGet, sessionPost, events, pictureSize };
}

describe('the playground server', () => {
  let playground: Playground;
  const errors: string[] = [];
  const { url, post, start, sessionGet, sessionPost, events, pictureSize } = apiOf(() => playground.url);

  beforeAll(async () => {
    playground = await startPlayground({ port: 0, maxQueued: 2, logError: (message) => errors.push(message) });
  });
  afterAll(async () => {
    await playground.close();
    expect(errors.filter((message) => !message.startsWith('The page is not built'))).toEqual([]);
  });

  it('lists its models, the callbacks with their JSON Schemas, and the request schema', async () => {
    expect(await (await fetch(url('/api/models'))).json()).toEqual({ models: [{ name: 'tiny', default: true }] });
    const { callbacks } = (await (await fetch(url('/api/callbacks'))).json()) as { callbacks: { name: string; optionsJsonSchema: { type: string } }[] };
    expect(callbacks.map(({ name }) => name)).toEqual(['cfg-cutoff', 'guidance-interval', 'interrupt', 'ipadapter', 'ipadapter-schedule', 'preview']);
    for (const { optionsJsonSchema } of callbacks) expect(optionsJsonSchema.type).toBe('object');
    expect(await (await fetch(url('/api/schema'))).json()).toEqual(GENERATION_REQUEST_JSON_SCHEMA);
  });

  it('answers a bad request with 400 naming the field and what is allowed', async () => {
    const cases: [unknown, string, RegExp][] = [
      [{}, 'prompt', /prompt must be a string, got nothing/],
      [{ prompt: 'x', numInferenceSteps: 0 }, 'numInferenceSteps', /integer from 1 to 1000, got 0/],
      [{ prompt: 'x', scheduler: 'fast' }, 'scheduler', /must be one of pndm, ddim, euler/],
      [{ prompt: 'x', width: 100 }, 'width', /a multiple of 8/],
      [{ prompt: 'x', colour: 'red' }, 'colour', /is not a request field; allowed: prompt, negativePrompt/],
      [{ prompt: 'x', model: '/etc' }, 'model', /model must be one of tiny, got "\/etc"/],
      [{ prompt: 'x', callbacks: [{ name: 'sharpen' }] }, 'callbacks.0', /Unknown callback plugin "sharpen". Known: cfg-cutoff, guidance-interval/],
      [{ prompt: 'x', callbacks: [{ name: 'cfg-cutoff', options: { cutoffStepRatio: 2 } }] }, 'callbacks.0', /cutoffStepRatio/],
      // Valid JSON options that only the callback's constructor can judge (the interrupt callback needs a condition).
      [{ prompt: 'x', callbacks: [{ name: 'preview' }, { name: 'interrupt', options: {} }] }, 'callbacks.1', /needs at least one condition/],
    ];
    for (const [body, field, message] of cases) {
      const { status, body: answer } = await post(body);
      expect({ body, status, field: answer.error.field }).toEqual({ body, status: 400, field });
      expect(answer.error.message).toMatch(message);
    }
  });

  it('refuses bodies that are not JSON, not sent as JSON, or too large', async () => {
    const send = (body: string, type = 'application/json') => fetch(url('/api/generations'), { method: 'POST', headers: { 'Content-Type': type }, body });
    const notJson = await send('{prompt');
    expect([notJson.status, (await answerOf(notJson)).error.field]).toEqual([400, 'body']);
    const form = await send('prompt=x', 'application/x-www-form-urlencoded');
    expect([form.status, (await answerOf(form)).error.field]).toEqual([415, 'Content-Type']);
    const huge = await send(JSON.stringify({ prompt: 'x'.repeat(70_000) }));
    expect([huge.status, (await answerOf(huge)).error.message]).toEqual([413, 'The body must be at most 65536 bytes.']);
  });

  it('serves each picture of a generation; answers unknown generations, pictures and routes with 404, and requests without a session with 401', async () => {
    const { id, session } = await start({ numInferenceSteps: 2, numImagesPerPrompt: 2 });
    expect((await (await events(id, session)).rest()).at(-1)).toMatchObject({ type: 'done', images: [0, 1].map((index) => `/api/generations/${id}/image/${index}`) });
    expect((await sessionGet(`/api/generations/${id}/image/1`, session)).status).toBe(200);
    for (const path of ['/api/generations/00000000-0000-0000-0000-000000000000/events', `/api/generations/${id}/image/2`, '/api/nothing']) {
      const response = await sessionGet(path, session);
      expect([path, response.status]).toEqual([path, 404]);
      expect((await answerOf(response)).error.message).toEqual(expect.any(String));
    }
    const anonymous = await fetch(url(`/api/generations/${id}/events`));
    expect([anonymous.status, (await answerOf(anonymous)).error.field]).toEqual([401, SESSION_HEADER]);
    const forged = await sessionGet(`/api/generations/${id}/events`, `${session.split('.')[0]}.${'A'.repeat(43)}`);
    expect(forged.status).toBe(401);
    expect((await fetch(url('/api/models'), { method: 'DELETE' })).status).toBe(405);
  });

  it('streams a generation as events, replays them to later subscribers, and serves the PNG', async () => {
    const { id, session, request } = await start({ numInferenceSteps: 4, guidanceScale: 3, scheduler: 'euler' });
    expect(request).toEqual({ prompt: 'a large red circle on a blue background', seed: 7, numInferenceSteps: 4, guidanceScale: 3, scheduler: 'euler', model: 'tiny' });
    const live = await (await events(id, session)).rest();
    expect(live.map((event) => event.type)).toEqual(['queued', 'started', 'step', 'step', 'step', 'step', 'done']);
    expect(live[0]).toEqual({ type: 'queued', id, position: 1 });
    const steps = live.filter((event) => event.type === 'step');
    steps.forEach((event, index) => expect(event).toMatchObject({ stepIndex: index, numTimesteps: 4, preview: expect.stringMatching(/^data:image\/png;base64,/) }));
    const done = live.at(-1);
    expect(done).toEqual({ type: 'done', id, image: `/api/generations/${id}/image/0`, images: [`/api/generations/${id}/image/0`] });

    // A later subscriber gets the same events; only the latest preview is kept.
    const replay = await events(id, session);
    const replayed = await replay.rest();
    expect(replayed.map((event) => event.type)).toEqual(live.map((event) => event.type));
    expect(replayed.filter((event) => event.type === 'step' && event.preview).map((event) => event.type === 'step' && event.stepIndex)).toEqual([3]);
    // With Last-Event-ID (an EventSource reconnecting), only the events after it.
    const resumed = await (await events(id, session, { 'Last-Event-ID': String(replay.ids.at(-2)) })).rest();
    expect(resumed).toEqual([done]);

    for (const path of [`/api/generations/${id}/image`, `/api/generations/${id}/image/0`]) {
      expect(await pictureSize(path, session)).toEqual({ width: 64, height: 64, format: 'png' });
    }
  });

  it('Stop (interrupt) ends a running generation after the current step and keeps its partial picture', async () => {
    const { id, session } = await start({ numInferenceSteps: 500 });
    const stream = await events(id, session);
    await stream.until((event) => event.type === 'step' && event.stepIndex >= 3);
    expect((await sessionPost(`/api/generations/${id}/interrupt`, session)).status).toBe(202);
    const done = await stream.until((event) => event.type === 'done');
    expect(done.type === 'done' && done.interruptedAtStep).toBeGreaterThanOrEqual(3);
    expect(done.type === 'done' && done.interruptedAtStep).toBeLessThan(499);
    expect(await pictureSize(`/api/generations/${id}/image`, session)).toEqual({ width: 64, height: 64, format: 'png' });
  });

  it('Cancel aborts a running generation: a cancelled event and no picture', async () => {
    const { id, session } = await start({ numInferenceSteps: 500 });
    const stream = await events(id, session);
    await stream.until((event) => event.type === 'step');
    expect((await sessionPost(`/api/generations/${id}/cancel`, session)).status).toBe(202);
    const rest = await stream.rest();
    expect(rest.at(-1)).toEqual({ type: 'cancelled', id });
    expect(new Set(rest.slice(0, -1).map((event) => event.type))).toEqual(new Set(rest.length > 1 ? ['step'] : [])); // steps already in flight
    expect((await sessionGet(`/api/generations/${id}/image`, session)).status).toBe(404);
  });

  it("keeps one session from reading, stopping or cancelling another's generation", async () => {
    const first = await start({ numInferenceSteps: 500 });
    const second = await start({ numInferenceSteps: 1 });
    expect(second.session).not.toBe(first.session);
    // A session token sent back keeps the session: the same page's second generation.
    const again = await start({ numInferenceSteps: 1 }, second.session);
    expect(again.session).toBe(second.session);
    for (const [method, path] of [
      ['GET', 'events'],
      ['GET', 'image'],
      ['POST', 'interrupt'],
      ['POST', 'cancel'],
    ]) {
      const response = await fetch(url(`/api/generations/${first.id}/${path}`), { method, headers: { [SESSION_HEADER]: second.session } });
      expect([path, response.status]).toEqual([path, 404]);
    }
    const stream = await events(first.id, first.session);
    await stream.until((event) => event.type === 'step');
    await sessionPost(`/api/generations/${first.id}/cancel`, first.session);
    expect((await stream.rest()).at(-1)?.type).toBe('cancelled');
    for (const { id, session } of [second, again]) expect((await (await events(id, session)).rest()).at(-1)?.type).toBe('done');
  });

  it('queues generations one at a time per model, reports positions as the queue moves, and refuses more than the limit with 429', async () => {
    const running = await start({ numInferenceSteps: 500 });
    const runningEvents = await events(running.id, running.session);
    await runningEvents.until((event) => event.type === 'step');
    const second = await start({ numInferenceSteps: 1 }, running.session);
    const third = await start({ numInferenceSteps: 1 }, running.session);
    const refused = await post({ prompt: 'x' });
    expect([refused.status, refused.headers.get('retry-after'), refused.body.error.message]).toEqual([
      429,
      '5',
      '2 generations are already waiting; try again when one has finished.',
    ]);

    const thirdEvents = await events(third.id, third.session);
    expect(await thirdEvents.next()).toEqual({ type: 'queued', id: third.id, position: 2 });
    // Closing the page (its event stream) cancels its waiting generation; the ones behind move up.
    const secondEvents = await events(second.id, second.session);
    expect(await secondEvents.next()).toEqual({ type: 'queued', id: second.id, position: 1 });
    await secondEvents.cancel();
    expect(await thirdEvents.next()).toEqual({ type: 'queued', id: third.id, position: 1 });
    expect((await (await events(second.id, second.session)).rest()).map((event) => event.type)).toEqual(['queued', 'cancelled']);

    await sessionPost(`/api/generations/${running.id}/cancel`, running.session);
    expect((await runningEvents.rest()).at(-1)?.type).toBe('cancelled');
    expect((await thirdEvents.rest()).map((event) => event.type)).toEqual(['started', 'step', 'done']);
  });

  it('refuses a Host it does not serve (DNS rebinding)', async () => {
    const status = await new Promise<number | undefined>((resolve, reject) => {
      const { port } = new URL(playground.url);
      httpRequest({ host: '127.0.0.1', port, path: '/api/models', headers: { Host: `attacker.example:${port}` } }, (response) => {
        response.resume();
        resolve(response.statusCode);
      })
        .on('error', reject)
        .end();
    });
    expect(status).toBe(403);
  });

  it('serves the page with a content security policy', async () => {
    const page = await fetch(url('/'));
    expect([page.status, page.headers.get('content-type')]).toEqual([200, 'text/html; charset=utf-8']);
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'self'/);
    expect(await page.text()).toMatch(/<script type="module" src="\/app.js">/);
  });
});

describeWithRedis('the playground on the workers of a queue (--redis)', () => {
  let redis: RedisServer;
  let worker: GenerationWorker;
  let playground: Playground;
  const errors: string[] = [];
  const { url, post, start, sessionPost, events, pictureSize } = apiOf(() => playground.url);

  beforeAll(async () => {
    redis = await startRedisServer();
    worker = await startWorker({ redis: redis.url, models: { tiny: modelDir }, log: (level, message) => level === 'error' && errors.push(message) });
    playground = await startPlayground({ port: 0, queue: { redis: redis.url }, logError: (message) => errors.push(message) });
  });
  afterAll(async () => {
    await playground?.close();
    await worker?.close();
    await redis?.stop();
    expect(errors.filter((message) => !message.startsWith('The page is not built'))).toEqual([]);
  });

  it("offers the workers' models, runs a generation on a worker, streams its events and serves its picture", async () => {
    expect(await (await fetch(url('/api/models'))).json()).toEqual({ models: [{ name: 'tiny', default: true }] });
    const { id, session, request } = await start({ numInferenceSteps: 3 });
    expect(request).toEqual({ prompt: 'a large red circle on a blue background', seed: 7, numInferenceSteps: 3, model: 'tiny' });
    const live = await (await events(id, session)).rest();
    expect(live.map((event) => event.type)).toEqual(['queued', 'started', 'step', 'step', 'step', 'done']);
    expect(live.filter((event) => event.type === 'step').every((event) => event.type === 'step' && event.preview?.startsWith('data:image/png;base64,'))).toBe(true);
    expect(live.at(-1)).toEqual({ type: 'done', id, image: `/api/generations/${id}/image/0`, images: [`/api/generations/${id}/image/0`] });
    expect(await pictureSize(`/api/generations/${id}/image`, session)).toEqual({ width: 64, height: 64, format: 'png' });

    const unknownModel = await post({ prompt: 'x', model: 'sdxl' });
    expect([unknownModel.status, unknownModel.body.error.field, unknownModel.body.error.message]).toEqual([400, 'model', 'Invalid generation request: model must be one of tiny, got "sdxl".']);
  });

  it('Stop (interrupt) ends the generation on its worker after the current step and keeps its partial picture', async () => {
    const { id, session } = await start({ numInferenceSteps: 500 });
    const stream = await events(id, session);
    await stream.until((event) => event.type === 'step' && event.stepIndex >= 2);
    expect((await sessionPost(`/api/generations/${id}/interrupt`, session)).status).toBe(202);
    const done = await stream.until((event) => event.type === 'done');
    expect(done.type === 'done' && done.interruptedAtStep).toBeGreaterThanOrEqual(2);
    expect(done.type === 'done' && done.interruptedAtStep).toBeLessThan(499);
    expect(await pictureSize(`/api/generations/${id}/image`, session)).toEqual({ width: 64, height: 64, format: 'png' });
  });

  it('answers 503 while no worker serves the queue (diff-playground --redis URL --queue NAME)', async () => {
    const lines: string[] = [];
    const { status, playground: idle } = await runCli(['--port', '0', '--redis', redis.url, '--queue', 'nobody'], { log: (line) => lines.push(line), error: (line) => errors.push(line) });
    if (!idle) throw new Error(`diff-playground did not start (status ${status})`);
    expect(lines).toEqual([`Playground: ${idle.url} (workers of queue nobody on ${redis.url})`]);
    try {
      const response = await fetch(new URL('/api/generations', idle.url), { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ prompt: 'x' }) });
      expect([response.status, response.headers.get('retry-after'), (await answerOf(response)).error.message]).toEqual([
        503,
        '5',
        'No worker serves queue "nobody" now: start one (diff-sd worker --redis URL), or wait for one to come back.',
      ]);
      expect(await (await fetch(new URL('/api/models', idle.url))).json()).toEqual({ models: [] });
    } finally {
      await idle.close();
    }
  });
});

describe('diff-playground (the command line)', () => {
  function capture() {
    const lines = { log: [] as string[], error: [] as string[] };
    return { lines, io: { log: (line: string) => lines.log.push(line), error: (line: string) => lines.error.push(line) } };
  }

  it('prints the usage, and refuses bad options with status 2', async () => {
    const help = capture();
    expect(await runCli(['--help'], help.io)).toEqual({ status: 0 });
    expect(help.lines.log[0]).toMatch(/^Usage: diff-playground/);
    for (const [argv, message] of [
      [['--port', 'high'], /--port takes an integer from 0 to 65535, got "high"/],
      [['--model', 'big=/nowhere'], /--model big=\/nowhere: \/nowhere has no model_index.json/],
      [['--model', 'a b=/tmp'], /the name "a b" must be letters/],
      [['--colour'], /Unknown option '--colour'/],
      [['--redis', 'localhost:6379'], /--redis takes a redis:\/\/ or rediss:\/\/ URL, e\.g\. redis:\/\/127\.0\.0\.1:6379, got "localhost:6379"/],
      [['--redis', 'redis://127.0.0.1:6379', '--model', 'tiny'], /--model does not apply with --redis: the page offers the models of the queue's workers/],
      [['--queue', 'sdxl'], /--queue names the queue of --redis: give --redis URL too/],
    ] as const) {
      const { lines, io } = capture();
      expect(await runCli(argv, io)).toEqual({ status: 2 });
      expect(lines.error.join('\n')).toMatch(message);
    }
  });

  it('starts on a free port with --port 0, and warns when listening beyond this machine', async () => {
    const { lines, io } = capture();
    const { status, playground } = await runCli(['--port', '0', '--host', '127.0.0.2', '--model', 'tiny'], io);
    try {
      expect(status).toBe(0);
      expect(lines.log).toEqual([expect.stringMatching(/^Playground: http:\/\/127\.0\.0\.2:\d+\/ \(models: tiny\)$/)]);
      expect(lines.error.filter((line) => line.startsWith('Warning'))).toEqual([expect.stringMatching(/listening on 127\.0\.0\.2: anyone who can reach/)]);
      expect((await fetch(new URL('/api/models', playground?.url))).status).toBe(200);
    } finally {
      await playground?.close();
    }
  });
});
