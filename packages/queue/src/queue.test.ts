import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import sharp from 'sharp';
import { AutoPipelineForText2Image, Generator, InvalidRequestError, type GenerationEvent } from '@diff/core';
import { modelDir } from '@diff/model-tiny';
import { describeWithRedis, startRedisServer, type RedisServer } from '@diff/test-fixtures';
import { eventually } from './__fixtures__/processes.js';
import { GenerationFailedError, GenerationQueue, UnknownGenerationError, startWorker, type GenerationWorker } from './index.js';

const PROMPT = 'a large red circle at the top left on a blue background';

async function collect(events: AsyncIterable<GenerationEvent>): Promise<GenerationEvent[]> {
  const collected: GenerationEvent[] = [];
  for await (const event of events) collected.push(event);
  return collected;
}

/** Follows the events until one matches, then stops following. */
async function waitForEvent(events: AsyncIterable<GenerationEvent>, matches: (event: GenerationEvent) => boolean): Promise<GenerationEvent> {
  for await (const event of events) if (matches(event)) return event;
  throw new Error('The generation ended before the awaited event.');
}

const isStepAtLeast = (stepIndex: number) => (event: GenerationEvent) => event.type === 'step' && event.stepIndex >= stepIndex;
const types = (events: readonly GenerationEvent[]) => events.map((event) => event.type);

async function pngMetadata(dataUrlOrPng: string | Buffer) {
  const png = typeof dataUrlOrPng === 'string' ? Buffer.from(dataUrlOrPng.replace(/^data:image\/png;base64,/, ''), 'base64') : dataUrlOrPng;
  return sharp(png).metadata();
}

describeWithRedis('GenerationQueue with a worker in this process', () => {
  let redis: RedisServer;
  let queue: GenerationQueue;
  /** Another process's view of the same queue (an API server, say). */
  let otherQueue: GenerationQueue;
  let worker: GenerationWorker;
  /** BullMQ's view, to check what became of the jobs. */
  let bullQueue: Queue;
  let bullConnection: Redis;

  beforeAll(async () => {
    redis = await startRedisServer();
    queue = new GenerationQueue({ redis: redis.url });
    otherQueue = new GenerationQueue({ redis: redis.url });
    worker = await startWorker({ redis: redis.url, models: { tiny: modelDir }, workerName: 'in-process', log: () => undefined });
    bullConnection = new Redis(redis.url);
    bullQueue = new Queue('generations', { connection: bullConnection, prefix: 'diff' });
  });

  afterAll(async () => {
    await worker?.close();
    await queue?.close();
    await otherQueue?.close();
    await bullQueue?.close();
    await bullConnection?.quit();
    await redis?.stop();
  });

  it('rejects a bad request at once, naming the field', async () => {
    const rejects = async (body: unknown, field: string) => {
      const error = await queue.add(body).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(InvalidRequestError);
      expect((error as InvalidRequestError).field).toBe(field);
    };
    await rejects({ numInferenceSteps: 4 }, 'prompt');
    await rejects({ prompt: PROMPT, numInferenceSteps: 0 }, 'numInferenceSteps');
    await rejects({ prompt: PROMPT, width: 65 }, 'width');
    await rejects({ prompt: PROMPT, model: 15 }, 'model');
    await rejects({ prompt: PROMPT, steps: 4 }, 'steps');
    await rejects({ prompt: PROMPT, callbacks: [{ name: 'no-such-callback' }] }, 'callbacks.0');
    await rejects({ prompt: PROMPT, callbacks: [{ name: 'interrupt', options: {} }, { name: 'cfg-cutoff', options: { cutoffStepRatio: 2 } }] }, 'callbacks.1');
    expect(await bullQueue.getJobCounts()).toMatchObject({ waiting: 0, active: 0, completed: 0 });
  });

  it('reports queued, started, a step with a PNG preview per step, done; result() gives the picture of the seed', async () => {
    const { id } = await queue.add({ prompt: PROMPT, numInferenceSteps: 4, seed: 7, model: 'tiny' });
    const events = await collect(queue.events(id));
    expect(types(events)).toEqual(['queued', 'started', 'step', 'step', 'step', 'step', 'done']);
    expect(events[0]).toEqual({ type: 'queued', id, position: 1 });
    const steps = events.filter((event) => event.type === 'step');
    expect(steps.map((event) => [event.stepIndex, event.numTimesteps])).toEqual([[0, 4], [1, 4], [2, 4], [3, 4]]);
    for (const step of steps) expect(await pngMetadata(step.preview as string)).toMatchObject({ format: 'png', width: 8, height: 8 });

    const result = await otherQueue.result(id);
    expect(result.request).toEqual({ prompt: PROMPT, numInferenceSteps: 4, seed: 7, model: 'tiny' });
    expect(result.interruptedAtStep).toBeUndefined();
    const done = events.at(-1) as Extract<GenerationEvent, { type: 'done' }>;
    expect(done.image).toBe(`data:image/png;base64,${result.png.toString('base64')}`);
    const pipeline = await AutoPipelineForText2Image.fromPretrained(modelDir);
    const [expected] = (await pipeline.generate({ prompt: PROMPT, numInferenceSteps: 4, generator: new Generator().manualSeed(7) })).images;
    await pipeline.dispose();
    const { data, info } = await sharp(result.png).raw().toBuffer({ resolveWithObject: true });
    expect(info).toMatchObject({ width: 64, height: 64, channels: 3 });
    expect(new Uint8Array(data)).toEqual(expected.data);

    // A late subscriber gets the same events; only the latest step keeps its preview.
    const replayed = await collect(otherQueue.events(id));
    expect(types(replayed)).toEqual(types(events));
    expect(replayed.filter((event) => event.type === 'step' && event.preview !== undefined)).toEqual([steps[3]]);
  });

  it('fills in the seed, runs the request’s callbacks and its preview settings', async () => {
    const { id } = await queue.add({
      prompt: PROMPT,
      numInferenceSteps: 6,
      callbacks: [{ name: 'preview', options: { every: 2 } }, { name: 'interrupt', options: { atStep: 3 } }],
    });
    const events = await collect(queue.events(id));
    const steps = events.filter((event) => event.type === 'step');
    expect(steps.map((event) => [event.stepIndex, event.preview !== undefined])).toEqual([[0, false], [1, true], [2, false], [3, true]]);
    expect(events.at(-1)).toMatchObject({ type: 'done', interruptedAtStep: 3 });
    const { request, interruptedAtStep } = await queue.result(id);
    expect(interruptedAtStep).toBe(3);
    expect(request.model).toBe('tiny');
    expect(Number.isSafeInteger(request.seed)).toBe(true);
  });

  it('ends a request for a model no worker offers with an error event, without a job', async () => {
    expect(await queue.models()).toEqual(['tiny']);
    const { id } = await queue.add({ prompt: PROMPT, model: 'sdxl' });
    const events = await collect(queue.events(id));
    expect(events).toEqual([{ type: 'error', id, code: 'UNKNOWN_MODEL', message: 'No worker offers model "sdxl"; the workers offer: tiny.' }]);
    await expect(queue.result(id)).rejects.toMatchObject({ name: 'GenerationFailedError', code: 'UNKNOWN_MODEL' });
    await expect(collect(queue.events('no-such-id'))).rejects.toBeInstanceOf(UnknownGenerationError);
  });

  it('queues for a model while no worker is live; a worker without it fails the job once, without retrying', async () => {
    const lonelyQueue = new GenerationQueue({ redis: redis.url, name: 'lonely', attempts: 3 });
    let lonelyWorker: GenerationWorker | undefined;
    try {
      expect(await lonelyQueue.models()).toEqual([]);
      const { id } = await lonelyQueue.add({ prompt: PROMPT, model: 'sdxl' });
      lonelyWorker = await startWorker({ redis: redis.url, name: 'lonely', models: { tiny: modelDir }, log: () => undefined });
      const events = await collect(lonelyQueue.events(id));
      expect(types(events)).toEqual(['queued', 'error']);
      expect(events[1]).toMatchObject({ code: 'UNKNOWN_MODEL', message: expect.stringContaining('not model "sdxl"') });
      const lonelyJobs = new Queue('lonely', { connection: bullConnection, prefix: 'diff' });
      await eventually(async () => expect(await lonelyJobs.getJobState(id)).toBe('failed'));
      expect((await lonelyJobs.getJob(id))?.attemptsMade).toBe(1);
      await lonelyJobs.close();
    } finally {
      await lonelyWorker?.close();
      await lonelyQueue.close();
    }
  });

  it('interrupts a running generation from another queue instance: the partial picture is the result', async () => {
    const { id } = await queue.add({ prompt: PROMPT, numInferenceSteps: 300, guidanceScale: 1 });
    const events = queue.events(id);
    await waitForEvent(otherQueue.events(id), isStepAtLeast(2));
    expect(await otherQueue.interrupt(id)).toBe(true);
    const rest = await collect(events);
    const done = rest.at(-1) as Extract<GenerationEvent, { type: 'done' }>;
    expect(done.type).toBe('done');
    expect(done.interruptedAtStep).toBeGreaterThanOrEqual(2);
    expect(done.interruptedAtStep).toBeLessThan(100);
    // Within one step: the step event of the stop step is the last one.
    expect(rest.filter((event) => event.type === 'step').at(-1)).toMatchObject({ stepIndex: done.interruptedAtStep });
    expect((await queue.result(id)).interruptedAtStep).toBe(done.interruptedAtStep);
    expect(await otherQueue.interrupt(id)).toBe(false);
  });

  it('cancels a running generation and removes a waiting one', async () => {
    const running = await queue.add({ prompt: PROMPT, numInferenceSteps: 300, guidanceScale: 1 });
    await waitForEvent(queue.events(running.id), isStepAtLeast(2));
    const waiting = await queue.add({ prompt: PROMPT, numInferenceSteps: 4 });

    expect(await otherQueue.cancel(waiting.id)).toBe(true);
    expect(await collect(queue.events(waiting.id))).toEqual([{ type: 'queued', id: waiting.id, position: 1 }, { type: 'cancelled', id: waiting.id }]);
    expect(await bullQueue.getJob(waiting.id)).toBeUndefined();

    expect(await otherQueue.cancel(running.id)).toBe(true);
    const events = await collect(queue.events(running.id));
    expect(events.at(-1)).toEqual({ type: 'cancelled', id: running.id });
    expect(events.filter((event) => event.type === 'step').length).toBeLessThan(100);
    await expect(queue.result(running.id)).rejects.toEqual(new GenerationFailedError(running.id, 'CANCELLED', `Generation ${running.id} was cancelled.`));
    await eventually(async () => expect(await bullQueue.getJobState(running.id)).toBe('completed'));
  });
});
