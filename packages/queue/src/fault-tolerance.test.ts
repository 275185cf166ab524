import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { GenerationEvent } from '@diff/core/plugin';
import { modelDir } from '@diff/model-tiny';
import { describeWithRedis, startRedisServer, type OutputProcess, type RedisServer } from '@diff/test-fixtures';
import { eventually, startWorkerProcess } from './__fixtures__/processes.js';
import { GenerationQueue } from './index.js';

const PROMPT = 'a small green square at the bottom right on a white background';

async function collect(events: AsyncIterable<GenerationEvent>): Promise<GenerationEvent[]> {
  const collected: GenerationEvent[] = [];
  for await (const event of events) collected.push(event);
  return collected;
}

const types = (events: readonly GenerationEvent[]) => events.map((event) => event.type);
const count = (events: readonly GenerationEvent[], type: GenerationEvent['type']) => events.filter((event) => event.type === type).length;
const doneLine = (id: string) => new RegExp(`^job ${id} done`);
const startedLine = (id: string) => new RegExp(`^job ${id} started`);

describeWithRedis('worker processes', () => {
  let redis: RedisServer;
  let queue: GenerationQueue;
  let bullConnection: Redis;
  let bullQueue: Queue;
  let scratch: string;
  let brokenModelDir: string;
  /** Every worker started, the stopped ones too: their output shows who finished what. */
  const workers: OutputProcess[] = [];

  // Short locks, so that a killed worker's job is taken over in about 3 to 5 seconds instead of a minute.
  const startWorker = async (name: string) => {
    const worker = await startWorkerProcess([
      '--redis', redis.url, '--model', `tiny=${modelDir}`, '--model', `broken=${brokenModelDir}`,
      '--name', name, '--lock-duration', '3000', '--stalled-interval', '1000',
    ]);
    workers.push(worker);
    return worker;
  };
  const finishedBy = (id: string) => workers.filter((worker) => worker.count(doneLine(id)) > 0);
  /** The worker whose output has a line matching `pattern` (polled: it may not be printed yet). */
  const workerWithLine = async (pattern: RegExp): Promise<OutputProcess> => {
    for (;;) {
      const worker = workers.find((each) => each.count(pattern) > 0);
      if (worker) return worker;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'diff-queue-'));
    brokenModelDir = join(scratch, 'broken');
    await cp(modelDir, brokenModelDir, { recursive: true });
    await writeFile(join(brokenModelDir, 'unet', 'model.onnx'), 'not an ONNX model');
    redis = await startRedisServer();
    queue = new GenerationQueue({ redis: redis.url });
    bullConnection = new Redis(redis.url);
    bullQueue = new Queue('generations', { connection: bullConnection, prefix: 'diff' });
    bullQueue.on('error', () => undefined); // while Redis restarts
    await Promise.all([startWorker('w1'), startWorker('w2')]);
  });

  afterAll(async () => {
    await Promise.all(workers.map((worker) => worker.stop('SIGKILL')));
    await queue?.close();
    await bullQueue?.close();
    await bullConnection?.quit();
    await redis?.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  it('runs 10 jobs on 2 workers, each exactly once', async () => {
    const ids = await Promise.all(Array.from({ length: 10 }, (_, seed) => queue.add({ prompt: PROMPT, numInferenceSteps: 10, seed, model: 'tiny' }).then(({ id }) => id)));
    const logs = await Promise.all(ids.map((id) => collect(queue.events(id))));
    for (const events of logs) {
      expect(events.at(-1)?.type).toBe('done');
      expect(count(events, 'started')).toBe(1);
      expect(count(events, 'step')).toBe(10);
    }
    for (const id of ids) await workerWithLine(doneLine(id));
    for (const id of ids) expect(finishedBy(id)).toHaveLength(1);
    expect(workers.map((worker) => worker.count(/^job \S+ done/) > 0)).toEqual([true, true]); // both took jobs
    await eventually(async () => expect(await bullQueue.getJobCounts('completed', 'failed', 'waiting', 'active')).toEqual({ completed: 10, failed: 0, waiting: 0, active: 0 }));
  });

  it('fails a job whose model file is broken with the error, once, without retrying', async () => {
    const { id } = await queue.add({ prompt: PROMPT, numInferenceSteps: 4, model: 'broken' });
    const events = await collect(queue.events(id));
    expect(types(events)).toEqual(['queued', 'started', 'error']);
    expect(events[2]).toMatchObject({ code: 'MODEL_LOAD', message: expect.stringContaining(join(brokenModelDir, 'unet', 'model.onnx')) });
    await expect(queue.result(id)).rejects.toMatchObject({ code: 'MODEL_LOAD' });
    await eventually(async () => expect(await bullQueue.getJobState(id)).toBe('failed'));
    expect((await bullQueue.getJob(id))?.attemptsMade).toBe(1);
    expect(workers.reduce((sum, worker) => sum + worker.count(startedLine(id)), 0)).toBe(1);
  });

  it('hands the job of a worker killed mid-job (SIGKILL) to another one, which finishes it once', async () => {
    const { id } = await queue.add({ prompt: PROMPT, numInferenceSteps: 300, guidanceScale: 1, model: 'tiny' });
    const events = queue.events(id);
    const victim = await workerWithLine(startedLine(id));
    for await (const event of queue.events(id)) if (event.type === 'step' && event.stepIndex >= 20) break;
    await victim.stop('SIGKILL');

    const seen = await collect(events);
    expect(seen.at(-1)?.type).toBe('done');
    expect(count(seen, 'done')).toBe(1);
    expect(count(seen, 'started')).toBe(2); // the killed attempt and the one that finished
    expect(await workerWithLine(doneLine(id))).not.toBe(victim);
    expect(finishedBy(id)).toHaveLength(1);
    const logged = await bullConnection.lrange(`diff:generations:gen:${id}:events`, 0, -1);
    expect(logged.filter((entry) => entry.includes('"type":"done"'))).toHaveLength(1);
    expect((await queue.result(id)).png.length).toBeGreaterThan(0);
    await eventually(async () => expect(await bullQueue.getJobState(id)).toBe('completed'));
    workers.splice(workers.indexOf(victim), 1);
    await startWorker('w3');
  });

  it('finishes the running job on SIGTERM, then exits', async () => {
    const { id } = await queue.add({ prompt: PROMPT, numInferenceSteps: 150, guidanceScale: 1, model: 'tiny' });
    const worker = await workerWithLine(startedLine(id));
    for await (const event of queue.events(id)) if (event.type === 'step') break;
    worker.child.kill('SIGTERM');
    const events = await collect(queue.events(id));
    expect(events.at(-1)).toMatchObject({ type: 'done' });
    expect(events.at(-1)).not.toHaveProperty('interruptedAtStep');
    expect(count(events, 'started')).toBe(1);
    expect(await worker.exited).toBe(0);
    workers.splice(workers.indexOf(worker), 1);
  });

  it('keeps working after Redis restarts: workers reconnect and take new jobs', async () => {
    await redis.restart(); // empty: without persistence, as after a crash
    const { id } = await queue.add({ prompt: PROMPT, numInferenceSteps: 4, model: 'tiny' });
    const events = await collect(queue.events(id));
    expect(types(events)).toEqual(['queued', 'started', 'step', 'step', 'step', 'step', 'done']);
    expect(await queue.models()).toEqual(['broken', 'tiny']);
  });
});
