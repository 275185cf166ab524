// Benchmark: the queue on the tiny SD model (@diff/model-tiny), against a private redis-server on a free port.
// Prints one JSON object:
// - `direct`: the same generation in this process without a queue (the pipeline's own cost, for comparison);
// - `throughput`: jobs per minute with 1, 2 and 4 worker processes (`node dist/worker-main.js`), all jobs added at
//   once after a warm-up (each worker's pipeline loaded);
// - `latency`: the queue's own delays with one idle worker, one job at a time: from `add` to the `started` event,
//   and from the last `step` event to `done` (which includes decoding the latents and encoding the PNG).
// Usage: npm run bench [-- --steps N --jobs N --workers 1,2,4 --latency-runs N]
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { AutoPipelineForText2Image, Generator } from '@diff/core';
import { modelDir } from '@diff/model-tiny';
import { GenerationQueue } from '../dist/index.js';

const argument = (name, fallback) => {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? process.argv[index + 1] : fallback;
};
const steps = Number(argument('steps', 20));
const jobs = Number(argument('jobs', 24));
const workerCounts = String(argument('workers', '1,2,4')).split(',').map(Number);
const latencyRuns = Number(argument('latency-runs', 15));
const request = (seed) => ({ prompt: 'a large red circle at the top left on a blue background', numInferenceSteps: steps, seed, model: 'tiny' });

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const percentile = (values, p) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * p))];
const round = (value, digits = 1) => Math.round(value * 10 ** digits) / 10 ** digits;

/** A child process and a promise of the first output line matching a pattern. */
function start(command, args, readyPattern) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const ready = new Promise((resolve, reject) => {
    const onData = (chunk) => {
      output += chunk;
      if (readyPattern.test(output)) resolve();
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    child.once('exit', (code) => reject(new Error(`${command} exited (${code}) before it was ready:\n${output}`)));
  });
  const stop = () => new Promise((resolve) => (child.exitCode !== null ? resolve() : (child.once('exit', resolve), child.kill('SIGTERM'))));
  return { ready, stop };
}

async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Follows a generation; resolves to when (performance.now()) each event arrived, by type (steps: the last one). */
async function timeline(queue, id) {
  const at = {};
  for await (const event of queue.events(id)) at[event.type] = performance.now();
  if (!at.done) throw new Error(`generation ${id} did not finish`);
  return at;
}

async function direct() {
  const pipeline = await AutoPipelineForText2Image.fromPretrained(modelDir);
  const run = async (seed) => {
    const started = performance.now();
    await pipeline.generate({ ...request(seed), generator: new Generator().manualSeed(seed) });
    return performance.now() - started;
  };
  await run(0);
  const times = [];
  for (let seed = 1; seed <= 7; seed++) times.push(await run(seed));
  await pipeline.dispose();
  const ms = median(times);
  return { msPerJob: round(ms), jobsPerMinute: round(60_000 / ms) };
}

const port = await freePort();
const redisUrl = `redis://127.0.0.1:${port}`;
const redis = start('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], /Ready to accept connections/);
await redis.ready;
const queue = new GenerationQueue({ redis: redisUrl });
const workerMain = fileURLToPath(new URL('../dist/worker-main.js', import.meta.url));
const startWorkers = async (count) => {
  const workers = Array.from({ length: count }, (_, index) =>
    start(process.execPath, [workerMain, '--redis', redisUrl, '--model', `tiny=${modelDir}`, '--name', `bench-${index + 1}`], / serving queue /),
  );
  await Promise.all(workers.map((worker) => worker.ready));
  return workers;
};
const runAll = async (seeds) => Promise.all(seeds.map(async (seed) => timeline(queue, (await queue.add(request(seed))).id)));

try {
  const baseline = await direct();
  const throughput = {};
  for (const count of workerCounts) {
    const workers = await startWorkers(count);
    await runAll(Array.from({ length: 2 * count }, (_, seed) => seed)); // warm-up: every worker loads its pipeline
    const started = performance.now();
    await runAll(Array.from({ length: jobs }, (_, seed) => 100 + seed));
    const seconds = (performance.now() - started) / 1000;
    throughput[`${count} worker${count > 1 ? 's' : ''}`] = { jobs, seconds: round(seconds, 2), jobsPerMinute: round((jobs / seconds) * 60) };
    await Promise.all(workers.map((worker) => worker.stop()));
  }

  const [worker] = await startWorkers(1);
  await runAll([0, 1]);
  const addToStarted = [];
  const lastStepToDone = [];
  for (let seed = 0; seed < latencyRuns; seed++) {
    const added = performance.now();
    const { id } = await queue.add(request(seed));
    const at = await timeline(queue, id);
    addToStarted.push(at.started - added);
    lastStepToDone.push(at.done - at.step);
  }
  await worker.stop();
  const summary = (values) => ({ medianMs: round(median(values), 2), p90Ms: round(percentile(values, 0.9), 2) });
  console.log(
    JSON.stringify(
      {
        model: '@diff/model-tiny (64×64, CPU)',
        steps,
        cpus: availableParallelism(),
        direct: baseline,
        throughput,
        latency: { runs: latencyRuns, addToStarted: summary(addToStarted), lastStepToDone: summary(lastStepToDone) },
      },
      null,
      2,
    ),
  );
} finally {
  await queue.close();
  await redis.stop();
}
