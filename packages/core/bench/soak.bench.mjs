// Soak benchmark: does the engine keep working under load, faults and bad input? Prints one JSON object.
// Usage: npm run soak [-- --generations N --fuzz N --pipelines N --seed N]   (run with node --expose-gc)
//
// On the embedded tiny model (@diff/model-tiny) and toy SDXL / ControlNet pipelines:
// - generations: N generations on one pipeline, mixed schedulers and callbacks (CFG cut-off, preview, interrupt);
//   RSS and heap growth from after the warm-up to the end (goal: flat, ≤ 50 MB RSS, ≤ 10 MB heap);
// - pipelines: N pipelines created, used once and disposed; the same growth, and sessions left open (goal 0);
// - concurrency: 8 generations at once on one pipeline, each compared with its sequential run (goal: 0 mismatches);
// - fuzz: random options for every pipeline kind (src/testing/fault-cases.ts); anything but a DiffError, a hang or
//   a NaN picture is a failure (goal 0);
// - corrupt model folders: each must fail with a DiffError naming the broken file (goal 0 untyped).
// Exit status 1 when a goal is missed. Progress goes to stderr, the JSON alone to stdout.
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';
import fc from 'fast-check';
import {
  Generator,
  SCHEDULER_NAMES,
  StableDiffusionControlNetPipeline,
  StableDiffusionImg2ImgPipeline,
  StableDiffusionInpaintPipeline,
  StableDiffusionPipeline,
  StableDiffusionXLControlNetPipeline,
  StableDiffusionXLImg2ImgPipeline,
  StableDiffusionXLInpaintPipeline,
  StableDiffusionXLPipeline,
} from '@diff/core';
import { writeToyPipeline } from '@diff/core/testing';
import { modelDir } from '@diff/model-tiny';
import { SDCFGCutoffCallback } from '@diff/callback-cfg-cutoff';
import { InterruptCallback } from '@diff/callback-interrupt';
import { LatentPreviewCallback } from '@diff/callback-preview';
import {
  CORRUPT_MODEL_CASES,
  describeFailure,
  faultCaseArbitrary,
  isFailure,
  runCorruptModelCase,
  runFaultCase,
} from '../dist/testing/fault-cases.js';

const argument = (name, fallback) => {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? Number(process.argv[index + 1]) : fallback;
};
const settings = {
  generations: argument('generations', 1000),
  fuzz: argument('fuzz', 1000),
  pipelines: argument('pipelines', 50),
  concurrent: 8,
  seed: argument('seed', 20240514),
};
const GOALS = { rssGrowthMB: 50, heapGrowthMB: 10 };
const MB = 1024 * 1024;
const log = (message) => process.stderr.write(`soak: ${message}\n`);
const round = (value) => Math.round(value * 10) / 10;

/** Memory after a full collection (two passes: finalizers of the first free more in the second). */
function memory() {
  globalThis.gc?.();
  globalThis.gc?.();
  const { rss, heapUsed } = process.memoryUsage();
  return { rss: rss / MB, heap: heapUsed / MB };
}

const growth = (from, to) => ({ rssGrowthMB: round(to.rss - from.rss), heapGrowthMB: round(to.heap - from.heap) });

const COLORS = ['red', 'blue', 'green', 'yellow', 'purple'];
const SHAPES = ['circle', 'square', 'triangle', 'star'];
const cutoff = new SDCFGCutoffCallback({ cutoffStepRatio: 0.5 });
const interrupt = new InterruptCallback({ atStep: 1 });
const linearPreview = new LatentPreviewCallback({ onPreview: () => undefined });
const vaePreview = new LatentPreviewCallback({ onPreview: () => undefined, method: 'vae', every: 2 });

/** The i-th generation of the mix: scheduler, steps, guidance, callbacks and output type all vary with i. */
function generationOptions(index) {
  const callbacks = [[cutoff], [linearPreview], [interrupt], [cutoff, vaePreview, interrupt]][index % 4];
  return {
    prompt: `a ${COLORS[index % COLORS.length]} ${SHAPES[index % SHAPES.length]}`,
    scheduler: SCHEDULER_NAMES[index % SCHEDULER_NAMES.length],
    numInferenceSteps: 4 + (index % 2), // PNDM with PRK steps needs 4
    guidanceScale: index % 5 === 0 ? 1 : 7.5,
    generator: new Generator().manualSeed(index),
    callbackOnStepEnd: callbacks,
    outputType: index % 2 === 0 ? 'np' : 'image',
  };
}

function finitePicture({ images }) {
  if (Array.isArray(images)) return images.length > 0 && images.every((image) => image.data.length === image.width * image.height * 3);
  return images.data.every(Number.isFinite);
}

/** Many generations on one pipeline: memory growth after the warm-up. */
async function soakGenerations(pipeline) {
  const warmUp = Math.min(100, Math.max(10, Math.floor(settings.generations / 10)));
  let errors = 0;
  let baseline;
  const samples = { rssSamplesMB: [], heapSamplesMB: [] };
  for (let index = 0; index < settings.generations; index++) {
    if (index === warmUp) baseline = memory();
    try {
      if (!finitePicture(await pipeline.generate(generationOptions(index)))) errors++;
    } catch (error) {
      errors++;
      log(`generation ${index} failed: ${error.message}`);
    }
    if ((index + 1) % Math.max(1, Math.floor(settings.generations / 10)) === 0) {
      const { rss, heap } = memory();
      samples.rssSamplesMB.push(round(rss));
      samples.heapSamplesMB.push(round(heap));
      log(`${index + 1}/${settings.generations} generations`);
    }
  }
  return { generations: settings.generations, generationErrors: errors, warmUpGenerations: warmUp, ...growth(baseline ?? memory(), memory()), ...samples };
}

/** Pipelines created, used once and disposed: memory growth, and sessions still open after dispose. */
async function soakPipelines() {
  const warmUp = Math.min(5, settings.pipelines);
  let baseline;
  let sessionsLeftOpen = 0;
  for (let index = 0; index < settings.pipelines; index++) {
    if (index === warmUp) baseline = memory();
    const pipeline = await StableDiffusionPipeline.fromPretrained(modelDir);
    await pipeline.generate({ prompt: 'a red circle', numInferenceSteps: 2, generator: new Generator().manualSeed(index), outputType: 'np' });
    await pipeline.dispose();
    sessionsLeftOpen += pipeline.components.pool.loadedModels.length;
  }
  log(`${settings.pipelines} pipelines created and disposed`);
  const { rssGrowthMB, heapGrowthMB } = growth(baseline ?? memory(), memory());
  return { pipelinesCreated: settings.pipelines, pipelineRssGrowthMB: rssGrowthMB, pipelineHeapGrowthMB: heapGrowthMB, sessionsLeftOpen };
}

/** Generations at once on one pipeline, each compared with the same generation run alone. */
async function concurrency(pipeline) {
  const indices = Array.from({ length: settings.concurrent }, (_, k) => 1000 + k);
  const run = (index) => pipeline.generate({ ...generationOptions(index), outputType: 'np' });
  const sequential = [];
  for (const index of indices) sequential.push(await run(index));
  const concurrent = await Promise.all(indices.map(run));
  const same = (a, b) => a.interruptedAtStep === b.interruptedAtStep && a.images.data.length === b.images.data.length && a.images.data.every((value, i) => value === b.images.data[i]);
  const concurrentMismatches = concurrent.filter((output, k) => !same(output, sequential[k])).length;
  log(`${settings.concurrent} concurrent generations compared`);
  return { concurrentGenerations: settings.concurrent, concurrentMismatches };
}

/** Every pipeline kind: the tiny model's SD 1.5 pipelines, and toy SDXL and ControlNet ones. */
async function fuzzTargets(scratch) {
  const toy = async (kind) => {
    const dir = join(scratch, kind);
    await writeToyPipeline(dir, kind);
    return dir;
  };
  const sd = await StableDiffusionPipeline.fromPretrained(modelDir);
  const xl = await StableDiffusionXLPipeline.fromPretrained(await toy('sdxl'));
  const control = await StableDiffusionControlNetPipeline.fromPretrained(await toy('sd-controlnet'));
  const xlControl = await StableDiffusionXLControlNetPipeline.fromPretrained(await toy('sdxl-controlnet'));
  const tiny = (name, pipeline, inputs) => ({ name, pipeline, family: 'sd', inputs, side: 32, vaeScaleFactor: 8 });
  const toyTarget = (name, pipeline, family, inputs) => ({ name, pipeline, family, inputs, side: 16, vaeScaleFactor: 8 });
  return {
    targets: [
      tiny('StableDiffusionPipeline (tiny)', sd, 'text'),
      tiny('StableDiffusionImg2ImgPipeline (tiny)', StableDiffusionImg2ImgPipeline.fromPipe(sd), 'image'),
      tiny('StableDiffusionInpaintPipeline (tiny)', StableDiffusionInpaintPipeline.fromPipe(sd), 'inpaint'),
      toyTarget('StableDiffusionControlNetPipeline (toy)', control, 'sd', 'control'),
      toyTarget('StableDiffusionXLPipeline (toy)', xl, 'sdxl', 'text'),
      toyTarget('StableDiffusionXLImg2ImgPipeline (toy)', StableDiffusionXLImg2ImgPipeline.fromPipe(xl), 'sdxl', 'image'),
      toyTarget('StableDiffusionXLInpaintPipeline (toy)', StableDiffusionXLInpaintPipeline.fromPipe(xl), 'sdxl', 'inpaint'),
      toyTarget('StableDiffusionXLControlNetPipeline (toy)', xlControl, 'sdxl', 'control'),
    ],
    dispose: () => Promise.all([sd, xl, control, xlControl].map((pipeline) => pipeline.dispose())),
  };
}

async function fuzz(scratch) {
  const { targets, dispose } = await fuzzTargets(scratch);
  const outcomes = {};
  const failures = [];
  try {
    const cases = fc.sample(faultCaseArbitrary(targets.length), { numRuns: settings.fuzz, seed: settings.seed });
    for (const [index, spec] of cases.entries()) {
      const outcome = await runFaultCase(targets[spec.target], spec, { scratchDir: scratch, hangMs: 10_000 });
      const key = outcome.kind === 'typed' ? outcome.code : outcome.kind;
      outcomes[key] = (outcomes[key] ?? 0) + 1;
      if (isFailure(outcome)) failures.push(describeFailure(targets[spec.target], spec, outcome));
      if ((index + 1) % Math.max(1, Math.floor(settings.fuzz / 5)) === 0) log(`${index + 1}/${settings.fuzz} fuzz cases`);
    }
  } finally {
    await dispose();
  }
  return { fuzzCases: settings.fuzz, fuzzUntypedErrors: failures.length, fuzzOutcomes: outcomes, fuzzFailures: failures.slice(0, 10) };
}

async function corruptModels() {
  const failures = [];
  for (const modelCase of CORRUPT_MODEL_CASES) {
    const problem = await runCorruptModelCase(modelCase, {
      prepare: (dir) => cp(modelDir, dir, { recursive: true }),
      load: (dir) => StableDiffusionPipeline.fromPretrained(dir),
      generateOptions: { prompt: 'a red circle', numInferenceSteps: 1, outputType: 'np' },
    });
    if (problem !== undefined) failures.push(problem);
  }
  log(`${CORRUPT_MODEL_CASES.length} corrupt model folders`);
  return { corruptModelCases: CORRUPT_MODEL_CASES.length, corruptModelUntypedErrors: failures.length, corruptModelFailures: failures };
}

const started = performance.now();
const scratch = await mkdtemp(join(tmpdir(), 'diff-soak-'));
let result;
try {
  const timingsS = {};
  const timed = async (name, part) => {
    const partStarted = performance.now();
    const partResult = await part();
    timingsS[name] = round((performance.now() - partStarted) / 1000);
    return partResult;
  };
  const pipeline = await StableDiffusionPipeline.fromPretrained(modelDir);
  const generations = await timed('generations', () => soakGenerations(pipeline));
  const concurrent = await timed('concurrency', () => concurrency(pipeline));
  await pipeline.dispose();
  const pipelines = await timed('pipelines', soakPipelines);
  const fuzzed = await timed('fuzz', () => fuzz(scratch));
  const corrupt = await timed('corruptModels', corruptModels);
  result = { timingsS, ...generations, ...pipelines, ...concurrent, ...fuzzed, ...corrupt };
} finally {
  await rm(scratch, { recursive: true, force: true });
}

const goals = {
  rssGrowthMB: result.rssGrowthMB <= GOALS.rssGrowthMB,
  heapGrowthMB: result.heapGrowthMB <= GOALS.heapGrowthMB,
  pipelineRssGrowthMB: result.pipelineRssGrowthMB <= GOALS.rssGrowthMB,
  pipelineHeapGrowthMB: result.pipelineHeapGrowthMB <= GOALS.heapGrowthMB,
  generationErrors: result.generationErrors === 0,
  sessionsLeftOpen: result.sessionsLeftOpen === 0,
  concurrentMismatches: result.concurrentMismatches === 0,
  fuzzCases: result.fuzzCases >= Math.min(1000, settings.fuzz),
  fuzzUntypedErrors: result.fuzzUntypedErrors === 0,
  corruptModelCases: result.corruptModelCases >= 5,
  corruptModelUntypedErrors: result.corruptModelUntypedErrors === 0,
};
const goalsMet = Object.values(goals).every(Boolean);
console.log(
  JSON.stringify(
    {
      benchmark: 'soak',
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, memoryGB: round(totalmem() / 1024 ** 3), node: process.version, gcExposed: typeof globalThis.gc === 'function' },
      settings,
      durationS: round((performance.now() - started) / 1000),
      ...result,
      goals,
      goalsMet,
    },
    null,
    2,
  ),
);
if (!goalsMet) process.exitCode = 1;
