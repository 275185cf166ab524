// GPU benchmark of a whole text-to-image generation: where the time of each step goes, end to end. Plain node, no
// npm or turbo needed where it runs (it imports the built ../dist). Prints one JSON object (an `error` field and exit
// status 1 when the run failed, so that a script running several levers keeps the others).
//
//   node packages/core/bench/gpu.bench.mjs --model DIR [--cuda] [--steps 25] [--width W --height H] [--runs 5]
//        [--graph-optimization disabled|basic|extended|layout|all] [--provider-option KEY=VALUE …]
//        [--session-config KEY=VALUE …] [--guidance 7.5] [--output-type np|image|latent] [--label NAME]
//
// Measured: the first generation (loading, session creation, first run) apart from the steady state; per run of the
// steady state (median of --runs) the wall time, the time inside ONNX Runtime's `run` per model (the pool's own
// timers), the rest (overhead: tokenizing, scheduler, guidance, tensor copies and the float16 conversions) and what
// the float16 conversions at the model boundary cost, timed on arrays of the sizes the models exchanged.
//
// @diff/core has no provider options: the levers are applied by wrapping `InferenceSession.create`, which the pool
// calls, so that each can be measured before it becomes a RuntimeOptions option. `--provider-option` keys go into the
// 'cuda' entry of executionProviders as they are; `--session-config` entries go into the session options' `extra`
// (ONNX Runtime session config keys such as session.intra_op.allow_spinning).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';
import { AutoPipelineForText2Image, Generator } from '../dist/index.js';
import { fromFloat16Bits, toFloat16Bits } from '../dist/runtime/float16.js';

const GOAL = { msPerStep: 12, overheadPercent: 3 };
const USAGE =
  'usage: node packages/core/bench/gpu.bench.mjs --model DIR [--cuda] [--steps 25] [--width W --height H] [--runs 5] ' +
  '[--graph-optimization LEVEL] [--provider-option KEY=VALUE …] [--session-config KEY=VALUE …] [--guidance 7.5] ' +
  '[--output-type np|image|latent] [--label NAME]';

let args;
try {
  args = parseArgs({
    options: {
      model: { type: 'string' },
      cuda: { type: 'boolean', default: false },
      steps: { type: 'string', default: '25' },
      width: { type: 'string' },
      height: { type: 'string' },
      runs: { type: 'string', default: '5' },
      'graph-optimization': { type: 'string' },
      'provider-option': { type: 'string', multiple: true, default: [] },
      'session-config': { type: 'string', multiple: true, default: [] },
      guidance: { type: 'string', default: '7.5' },
      'output-type': { type: 'string', default: 'np' },
      prompt: { type: 'string', default: 'a photo of an astronaut riding a horse on mars' },
      label: { type: 'string' },
    },
  }).values;
  if (args.model === undefined) throw new Error('--model DIR is required');
} catch (error) {
  console.error(`${error.message}\n${USAGE}`);
  process.exit(2);
}

const modelDir = resolve(args.model);
const settings = {
  numInferenceSteps: positiveInteger('steps'),
  runs: positiveInteger('runs'),
  guidanceScale: Number(args.guidance),
  outputType: args['output-type'],
  ...(args.width !== undefined && { width: positiveInteger('width') }),
  ...(args.height !== undefined && { height: positiveInteger('height') }),
};
const levers = {
  executionProviders: args.cuda ? ['cuda'] : ['cpu'],
  graphOptimizationLevel: args['graph-optimization'] ?? null,
  providerOptions: Object.fromEntries(args['provider-option'].map((entry) => keyValue(entry, parseOptionValue))),
  sessionConfig: Object.fromEntries(args['session-config'].map((entry) => keyValue(entry, String))),
};
const report = { benchmark: 'gpu', label: args.label ?? null, model: modelDir, environment: environment(), settings, levers, notes: [] };

// What the wrapped sessions saw: creation times, and per model the calls and the bytes exchanged.
const sessionCreations = [];
const traffic = new Map();
/** Milliseconds of one float16 conversion, by direction and size. */
const conversionTimes = new Map();
instrumentSessions();

try {
  if (!existsSync(join(modelDir, 'model_index.json'))) throw new Error(`no pipeline at ${modelDir} (no model_index.json)`);
  await run();
} catch (error) {
  report.error = `${error.name}: ${error.message}`;
  process.exitCode = 1;
}
console.log(JSON.stringify(report, null, 2));

async function run() {
  const notices = [];
  const started = performance.now();
  const pipeline = await AutoPipelineForText2Image.fromPretrained(modelDir, {
    executionProviders: levers.executionProviders,
    strictExecutionProviders: args.cuda,
    onNotice: (message) => notices.push(message),
  });
  const loadMs = performance.now() - started;
  const { pool } = pipeline.components;
  const models = onnxModels(pipeline.components);
  report.pipeline = pipeline.constructor.name;

  const generate = () =>
    pipeline.generate({
      prompt: args.prompt,
      numInferenceSteps: settings.numInferenceSteps,
      guidanceScale: settings.guidanceScale,
      outputType: settings.outputType,
      ...(settings.width !== undefined && { width: settings.width }),
      ...(settings.height !== undefined && { height: settings.height }),
      generator: new Generator().manualSeed(0),
    });

  const first = await measure(generate, pool, models);
  report.firstGeneration = {
    totalMs: round(loadMs + first.wallMs),
    loadMs: round(loadMs),
    generateMs: round(first.wallMs),
    sessionCreateMs: Object.fromEntries(sessionCreations.map(({ model, ms }) => [model, round(ms)])),
    sessionCreateTotalMs: round(sum(sessionCreations.map(({ ms }) => ms))),
    firstRunOnnxRuntimeMs: round(first.ortMs),
  };
  report.effectiveExecutionProviders = pool.executionProviders;
  // Only the models a generation ran (asking another's types would load its session).
  const used = Object.fromEntries(Object.entries(models).filter(([name]) => name in first.calls));
  report.modelTypes = Object.fromEntries(
    await Promise.all(Object.entries(used).map(async ([name, model]) => [name, await valueTypes(pool, model.path)])),
  );

  const samples = [];
  for (let index = 0; index < settings.runs; index++) samples.push(await measure(generate, pool, used));
  const last = samples[samples.length - 1];
  const unetCalls = last.calls.unet?.calls ?? 0;
  const wallMs = median(samples.map((s) => s.wallMs));
  const ortMs = median(samples.map((s) => s.ortMs));
  const overheadMs = median(samples.map((s) => s.wallMs - s.ortMs));
  const conversion = float16ConversionCost(last.calls);
  report.steadyState = {
    wallMsPerRun: round(wallMs),
    wallMsPerRunSamples: samples.map((s) => round(s.wallMs)),
    wallMsPerStep: round(wallMs / settings.numInferenceSteps),
    unetCallsPerRun: unetCalls,
    onnxRuntimeMsPerRun: round(ortMs),
    onnxRuntimeMsPerRunByModel: Object.fromEntries(
      Object.keys(used).map((name) => [name, round(median(samples.map((s) => s.ortMsByModel[name])))]),
    ),
    unetMsPerCall: unetCalls > 0 ? round(median(samples.map((s) => s.ortMsByModel.unet)) / unetCalls) : null,
    overheadMsPerRun: round(overheadMs),
    overheadMsPerStep: round(overheadMs / settings.numInferenceSteps),
    overheadPercent: round((100 * overheadMs) / wallMs),
    modelCalls: Object.fromEntries(Object.entries(last.calls).map(([name, seen]) => [name, perCall(seen)])),
    float16Conversion: {
      ...conversion,
      msPerStep: round(conversion.msPerRun / settings.numInferenceSteps),
      percentOfWall: round((100 * conversion.msPerRun) / wallMs),
    },
    nonFiniteOutputValues: last.nonFinite,
  };
  report.goal = {
    ...GOAL,
    msPerStepMet: wallMs / settings.numInferenceSteps <= GOAL.msPerStep,
    overheadMet: (100 * overheadMs) / wallMs <= GOAL.overheadPercent,
  };
  report.notices = notices;
  noteIgnoredProviderOptions();
  await pipeline.dispose();
}

/** One generation: wall time, time inside ONNX Runtime (all models and each), the calls each model received. */
async function measure(generate, pool, models) {
  traffic.clear();
  const ortBefore = pool.runTimeMs;
  const byModelBefore = Object.fromEntries(Object.entries(models).map(([name, model]) => [name, model.runTimeMs]));
  const started = performance.now();
  const output = await generate();
  const wallMs = performance.now() - started;
  const data = output.images.data ?? new Float32Array();
  let nonFinite = 0;
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) nonFinite++;
  const calls = {};
  for (const [name, model] of Object.entries(models)) {
    const seen = traffic.get(model.path);
    if (seen) calls[name] = seen;
  }
  return {
    wallMs,
    ortMs: pool.runTimeMs - ortBefore,
    ortMsByModel: Object.fromEntries(Object.entries(models).map(([name, model]) => [name, model.runTimeMs - byModelBefore[name]])),
    calls,
    nonFinite,
  };
}

/** What one call of a model exchanged, averaged over the run's calls. */
function perCall({ calls, inputBytes, outputBytes, toFloat16Sizes, fromFloat16Sizes }) {
  return {
    calls,
    inputBytesPerCall: Math.round(inputBytes / calls),
    outputBytesPerCall: Math.round(outputBytes / calls),
    float16InputElementsPerCall: Math.round(sum(toFloat16Sizes) / calls),
    float16OutputElementsPerCall: Math.round(sum(fromFloat16Sizes) / calls),
  };
}

/**
 * @diff/core converts float feeds to float16 bit patterns (toFloat16Bits) and float16 outputs back (fromFloat16Bits),
 * once per model call. Their cost, timed here on arrays of the sizes the last run exchanged.
 */
function float16ConversionCost(calls) {
  const byModel = {};
  let total = 0;
  for (const [name, seen] of Object.entries(calls)) {
    const toMs = sum(seen.toFloat16Sizes.map((size) => conversionMs(size, 'to')));
    const fromMs = sum(seen.fromFloat16Sizes.map((size) => conversionMs(size, 'from')));
    if (seen.toFloat16Sizes.length + seen.fromFloat16Sizes.length === 0) continue;
    byModel[name] = {
      toFloat16ElementsPerRun: sum(seen.toFloat16Sizes),
      fromFloat16ElementsPerRun: sum(seen.fromFloat16Sizes),
      toFloat16MsPerRun: round(toMs),
      fromFloat16MsPerRun: round(fromMs),
    };
    total += toMs + fromMs;
  }
  return { msPerRun: round(total), byModel };
}

function conversionMs(size, direction) {
  const key = `${direction}:${size}`;
  if (!conversionTimes.has(key)) {
    const values = Float32Array.from({ length: size }, (_, i) => Math.sin(i) * 4);
    const bits = toFloat16Bits(values);
    const convert = direction === 'to' ? () => toFloat16Bits(values) : () => fromFloat16Bits(bits);
    for (let i = 0; i < 3; i++) convert();
    const times = [];
    const deadline = performance.now() + 50;
    while (times.length < 5 || (times.length < 200 && performance.now() < deadline)) {
      const started = performance.now();
      convert();
      times.push(performance.now() - started);
    }
    conversionTimes.set(key, median(times));
  }
  return conversionTimes.get(key);
}

function instrumentSessions() {
  const { InferenceSession } = ort;
  const create = InferenceSession.create.bind(InferenceSession);
  InferenceSession.create = async (path, options = {}) => {
    const executionProviders = (options.executionProviders ?? []).map((provider) =>
      provider === 'cuda' && Object.keys(levers.providerOptions).length > 0 ? { name: 'cuda', ...levers.providerOptions } : provider,
    );
    const patched = {
      ...options,
      executionProviders,
      ...(levers.graphOptimizationLevel !== null && { graphOptimizationLevel: levers.graphOptimizationLevel }),
      ...(Object.keys(levers.sessionConfig).length > 0 && { extra: levers.sessionConfig }),
    };
    const started = performance.now();
    const session = await create(path, patched);
    sessionCreations.push({ model: componentName(path), ms: performance.now() - started });
    const runSession = session.run.bind(session);
    session.run = async (feeds, fetches, runOptions) => {
      const seen = traffic.get(resolve(path)) ?? { calls: 0, inputBytes: 0, outputBytes: 0, toFloat16Sizes: [], fromFloat16Sizes: [] };
      traffic.set(resolve(path), seen);
      seen.calls += 1;
      for (const tensor of Object.values(feeds)) {
        seen.inputBytes += tensor.data.byteLength;
        if (tensor.type === 'float16') seen.toFloat16Sizes.push(tensor.size);
      }
      const results = await runSession(feeds, fetches, runOptions);
      for (const tensor of Object.values(results)) {
        seen.outputBytes += tensor.data.byteLength;
        if (tensor.type === 'float16') seen.fromFloat16Sizes.push(tensor.size);
      }
      return results;
    };
    return session;
  };
}

/** The pipeline's ONNX models by component folder name (text_encoder, unet, vae_decoder, …). */
function onnxModels(components) {
  return Object.fromEntries(
    Object.values(components)
      .filter((value) => value !== null && typeof value === 'object' && typeof value.path === 'string' && 'runTimeMs' in value)
      .map((model) => [componentName(model.path), model]),
  );
}

async function valueTypes(pool, path) {
  const describe = (specs) => Object.fromEntries(specs.map((spec) => [spec.name, spec.type]));
  return { inputs: describe(await pool.inputs(path)), outputs: describe(await pool.outputs(path)) };
}

function noteIgnoredProviderOptions() {
  const ignored = Object.keys(levers.providerOptions).filter((key) => key !== 'deviceId');
  if (ignored.length === 0 || !args.cuda) return;
  report.notes.push(
    `onnxruntime-node ${ort.env.versions.node ?? ''} reads only deviceId from a 'cuda' executionProviders entry ` +
      `(its session_options_helper.cc): ${ignored.join(', ')} had no effect. See docs/benchmarks/README.md.`,
  );
}

function environment() {
  let gpu = null;
  try {
    gpu = execFileSync('nvidia-smi', ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'], { encoding: 'utf8', timeout: 10_000 }).trim();
  } catch {
    // No NVIDIA driver here: a CPU run.
  }
  return { node: process.version, platform: `${process.platform}/${process.arch}`, cpu: cpus()[0]?.model ?? null, cpuCount: cpus().length, gpu, onnxruntime: ort.env.versions };
}

function componentName(path) {
  return basename(dirname(resolve(path)));
}

function positiveInteger(name) {
  const value = Number(args[name]);
  if (!Number.isInteger(value) || value < 1) {
    console.error(`--${name} must be a positive integer; got ${args[name]}\n${USAGE}`);
    process.exit(2);
  }
  return value;
}

function keyValue(entry, parseValue) {
  const at = entry.indexOf('=');
  if (at <= 0) {
    console.error(`expected KEY=VALUE, got ${entry}\n${USAGE}`);
    process.exit(2);
  }
  return [entry.slice(0, at), parseValue(entry.slice(at + 1))];
}

/** Provider option values as the binding would want them: numbers and booleans typed, the rest strings. */
function parseOptionValue(text) {
  if (text === 'true' || text === 'false') return text === 'true';
  return /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function sum(values) {
  return values.reduce((total, value) => total + value, 0);
}

function round(value) {
  return Math.round(value * 1000) / 1000;
}

