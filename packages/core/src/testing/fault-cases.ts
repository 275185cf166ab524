// The fault cases shared by the reliability tests (src/reliability.test.ts: small and fast) and the soak benchmark
// (bench/soak.bench.mjs: thousands of them): random `generate` options for every pipeline kind, most of them valid and
// some wrong in every way a JavaScript caller can get them wrong, callbacks that misbehave, and corrupted model
// folders. A case passes when it either succeeds with a finite picture or fails with one of the project's errors
// (`DiffError`); a plain TypeError, a hang or a NaN picture is what these cases exist to find. Not part of the
// package (excluded from its files): it needs fast-check and the toy-model writer.
import { copyFile, mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, normalize } from 'node:path';
import fc from 'fast-check';
import type { CallbackKwargs, CallbackPipeline } from '../contract.js';
import { DiffError } from '../errors.js';
import { Generator } from '../random/generator.js';
import { SCHEDULER_NAMES } from '../schedulers/names.js';
import { Tensor } from '../tensor.js';
import { writeToyPipeline } from './toy-models.js';

/** What a pipeline needs besides a prompt: nothing, a picture, a picture and a mask, or a control picture. */
export type FuzzInputs = 'text' | 'image' | 'inpaint' | 'control';

/** A pipeline under test, loaded by the caller. */
export interface FuzzTarget {
  readonly name: string;
  readonly pipeline: { generate(options: Record<string, unknown>): Promise<{ images: unknown }> };
  readonly family: 'sd' | 'sdxl';
  readonly inputs: FuzzInputs;
  /** A valid picture side for this pipeline (a multiple of its VAE factor), kept small so cases run fast. */
  readonly side: number;
  readonly vaeScaleFactor: number;
}

/** The callbacks a case may install: well-behaved ones, and every way of misbehaving the loop must survive. */
export const CALLBACK_BEHAVIOURS = [
  'none', 'identity', 'async', 'interrupts', 'preview', 'cutsGuidance', 'throwsError', 'throwsString', 'returnsNumber', 'returnsString',
  'returnsArray', 'returnsNull', 'returnsJunkLatents', 'returnsWrongShape', 'returnsNaN', 'returnsInfinity', 'writesNaNInPlace',
  'assignsJunkInPlace', 'unknownName', 'neverResolvesThenAbort', 'setsGuidanceNaN', 'dropsGuidanceOnly', 'decodesJunk',
] as const;
export type CallbackBehaviour = (typeof CALLBACK_BEHAVIOURS)[number];

const BEGIN_BEHAVIOURS = ['none', 'identity', 'throwsError', 'returnsNumber', 'returnsNaN', 'neverResolvesThenAbort'] as const satisfies readonly CallbackBehaviour[];

/** Mostly valid, sometimes one of the wrong values: each case has a few faults, not only faults. */
function mostly<T>(valid: readonly T[], wrong: readonly T[]): fc.Arbitrary<T> {
  return fc.oneof({ weight: 25, arbitrary: fc.constantFrom(...valid) }, { weight: 1, arbitrary: fc.constantFrom(...wrong) });
}

const PROMPT_VALID = ['text', 'list', 'empty', 'huge'] as const;
const PROMPT_WRONG = ['number', 'null', 'object', 'emptyList', 'listWithNumber', 'absent'] as const;
type PromptTag = (typeof PROMPT_VALID)[number] | (typeof PROMPT_WRONG)[number];

/** A case as plain data (printable, replayable); `buildCase` turns it into options with fresh callbacks. */
export interface FaultCase {
  target: number;
  prompt: PromptTag;
  negativePrompt: PromptTag;
  numInferenceSteps: unknown;
  guidanceScale: unknown;
  guidanceRescale: unknown;
  numImagesPerPrompt: unknown;
  size: 'default' | 'valid' | 'zero' | 'negative' | 'odd' | 'huge' | 'nan' | 'infinite' | 'string';
  strength: unknown;
  eta: unknown;
  scheduler: unknown;
  generator: 'seeded' | 'absent' | 'object' | 'number';
  latents: 'absent' | 'valid' | 'wrongShape' | 'nan' | 'junk';
  promptEmbeds: 'absent' | 'junk' | 'nan' | 'wrongWidth';
  signal: 'absent' | 'fresh' | 'aborted' | 'abortsSoon' | 'junk';
  outputType: unknown;
  onStepEnd: readonly CallbackBehaviour[];
  onStepEndTensorInputs: 'absent' | 'latents' | 'string' | 'unknownName' | 'number' | 'withEmbeds';
  onStepBegin: (typeof BEGIN_BEHAVIOURS)[number];
  image: 'valid' | 'gray' | 'wrongSize' | 'junkBuffer' | 'missingFile' | 'badRaw' | 'number';
  mask: 'valid' | 'wrongSize' | 'junkBuffer' | 'number';
  controlScale: unknown;
  controlWindow: 'default' | 'valid' | 'reversed' | 'nan';
  microConditioning: 'default' | 'valid' | 'string' | 'nan' | 'short';
  seed: number;
}

/** Random fault cases for `targetCount` targets. */
export function faultCaseArbitrary(targetCount: number): fc.Arbitrary<FaultCase> {
  return fc.record({
    target: fc.integer({ min: 0, max: targetCount - 1 }),
    prompt: mostly<PromptTag>(PROMPT_VALID, PROMPT_WRONG),
    negativePrompt: mostly<PromptTag>(['absent', 'absent', 'text', 'empty'], ['number', 'null', 'object', 'emptyList', 'listWithNumber', 'list', 'huge']),
    numInferenceSteps: mostly<unknown>([1, 2, 3], [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 1e9, '2', null]),
    guidanceScale: mostly<unknown>([undefined, 0, 1, 4, 7.5], [-3, Number.NaN, Number.POSITIVE_INFINITY, 1e30, '7', null]),
    guidanceRescale: mostly<unknown>([undefined, 0, 0.7], [Number.NaN, 2, -1, '0.5']),
    numImagesPerPrompt: mostly<unknown>([undefined, 1, 2], [0, -1, 1.5, Number.NaN, 1e6, 1e12, '2']),
    size: mostly<FaultCase['size']>(['default', 'valid', 'valid'], ['zero', 'negative', 'odd', 'huge', 'nan', 'infinite', 'string']),
    strength: mostly<unknown>([undefined, 0.5, 1], [0, -0.1, 1.5, Number.NaN, 'x']),
    eta: mostly<unknown>([undefined, 0, 1], [Number.NaN, -1, 'x']),
    scheduler: mostly<unknown>([undefined, ...SCHEDULER_NAMES], ['nonsense', 42, {}, null]),
    generator: mostly<FaultCase['generator']>(['seeded', 'absent'], ['object', 'number']),
    latents: mostly<FaultCase['latents']>(['absent', 'absent', 'valid'], ['wrongShape', 'nan', 'junk']),
    promptEmbeds: mostly<FaultCase['promptEmbeds']>(['absent'], ['junk', 'nan', 'wrongWidth']),
    signal: mostly<FaultCase['signal']>(['absent', 'fresh'], ['aborted', 'abortsSoon', 'junk']),
    outputType: mostly<unknown>(['np', 'np', 'latent', 'image'], ['bogus', 42]),
    onStepEnd: fc.array(fc.constantFrom(...CALLBACK_BEHAVIOURS), { minLength: 1, maxLength: 2 }),
    onStepEndTensorInputs: mostly<FaultCase['onStepEndTensorInputs']>(['absent', 'latents', 'withEmbeds'], ['string', 'unknownName', 'number']),
    onStepBegin: mostly<FaultCase['onStepBegin']>(['none', 'none', 'identity'], BEGIN_BEHAVIOURS),
    image: mostly<FaultCase['image']>(['valid', 'gray'], ['wrongSize', 'junkBuffer', 'missingFile', 'badRaw', 'number']),
    mask: mostly<FaultCase['mask']>(['valid'], ['wrongSize', 'junkBuffer', 'number']),
    controlScale: mostly<unknown>([undefined, 1, 0.5], [Number.NaN, [1, 2], 'x']),
    controlWindow: mostly<FaultCase['controlWindow']>(['default', 'valid'], ['reversed', 'nan']),
    microConditioning: mostly<FaultCase['microConditioning']>(['default', 'valid'], ['string', 'nan', 'short']),
    seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  });
}

/** What running a case found. `untyped`, `hang` and `nonFinitePicture` are the failures these cases look for. */
export type FaultOutcome =
  | { kind: 'ok' }
  | { kind: 'typed'; code: string }
  | { kind: 'untyped'; error: unknown }
  | { kind: 'hang' }
  | { kind: 'nonFinitePicture'; detail: string };

export function isFailure(outcome: FaultOutcome): boolean {
  return outcome.kind === 'untyped' || outcome.kind === 'hang' || outcome.kind === 'nonFinitePicture';
}

/** Per-case state the misbehaving callbacks write, read back when the case settles. */
interface CaseState {
  wroteNonFiniteLatents: boolean;
  controller: AbortController;
}

const PROMPTS: Record<PromptTag, () => unknown> = {
  text: () => 'a red circle',
  list: () => ['a red circle', 'a blue square'],
  empty: () => '',
  huge: () => 'a red circle '.repeat(2000),
  number: () => 42,
  null: () => null,
  object: () => ({ text: 'a red circle' }),
  emptyList: () => [],
  listWithNumber: () => ['a red circle', 3],
  absent: () => undefined,
};

function rawPicture(width: number, height: number, channels: 1 | 3): { data: Uint8Array; width: number; height: number; channels: 1 | 3 } {
  const data = new Uint8Array(width * height * channels);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37) % 256;
  return { data, width, height, channels };
}

function filled(shape: readonly number[], value: number): Tensor<'float32'> {
  return new Tensor(new Float32Array(shape.reduce((product, dim) => product * dim, 1)).fill(value), shape);
}

/** One misbehaving (or well-behaved) step callback, named after its behaviour so errors can be traced back. */
function stepCallback(behaviour: CallbackBehaviour, state: CaseState) {
  type Kwargs = CallbackKwargs<'latents'> & Record<string, unknown>;
  const behaviours: Record<Exclude<CallbackBehaviour, 'none'>, (pipeline: CallbackPipeline, step: number, kwargs: Kwargs) => unknown> = {
    identity: (_p, _s, kwargs) => kwargs,
    async: async (_p, _s, kwargs) => {
      await new Promise((resolve) => setImmediate(resolve));
      return kwargs;
    },
    interrupts: (pipeline, step) => void (step === 1 && (pipeline.interrupt = true)),
    preview: async (pipeline, _s, kwargs) => void (await pipeline.decodeLatents(kwargs.latents)),
    cutsGuidance: (pipeline, step, kwargs) => (step === 0 ? pipeline.disableGuidance(kwargs as CallbackKwargs<'latents'>) : kwargs),
    throwsError: () => {
      throw new TypeError('callback bug');
    },
    throwsString: () => {
      throw 'a string, not an Error';
    },
    returnsNumber: () => 42,
    returnsString: () => 'latents',
    returnsArray: (_p, _s, kwargs) => [kwargs.latents],
    returnsNull: () => null,
    returnsJunkLatents: () => ({ latents: { data: [1, 2, 3], shape: [3] } }),
    returnsWrongShape: (_p, _s, kwargs) => ({ latents: filled([kwargs.latents.size], 0.5) }),
    returnsNaN: (_p, _s, kwargs) => {
      state.wroteNonFiniteLatents = true;
      return { latents: filled(kwargs.latents.shape, Number.NaN) };
    },
    returnsInfinity: (_p, _s, kwargs) => {
      state.wroteNonFiniteLatents = true;
      return { latents: filled(kwargs.latents.shape, Number.POSITIVE_INFINITY) };
    },
    writesNaNInPlace: (_p, _s, kwargs) => {
      if (!kwargs.latents) return;
      state.wroteNonFiniteLatents = true;
      kwargs.latents.data[0] = Number.NaN;
    },
    assignsJunkInPlace: (_p, _s, kwargs) => void (kwargs.latents = 'junk' as never),
    unknownName: (_p, _s, kwargs) => ({ ...kwargs, notATensorName: kwargs.latents }),
    neverResolvesThenAbort: () => {
      setTimeout(() => state.controller.abort(new Error('the caller gave up')), 1);
      return new Promise<never>(() => undefined);
    },
    setsGuidanceNaN: (pipeline) => void (pipeline.guidanceScale = Number.NaN),
    dropsGuidanceOnly: (pipeline) => void (pipeline.guidanceScale = 0),
    decodesJunk: async (pipeline) => void (await pipeline.decodeLatents({ data: 'x', shape: [1] } as never)),
  };
  if (behaviour === 'none') return undefined;
  const body = behaviours[behaviour];
  // A named function, so that CallbackErrors name the behaviour.
  return { [behaviour]: (pipeline: CallbackPipeline, step: number, _timestep: number, kwargs: Kwargs) => body(pipeline, step, kwargs) }[behaviour];
}

const TENSOR_INPUTS: Record<FaultCase['onStepEndTensorInputs'], unknown> = {
  absent: undefined,
  latents: ['latents'],
  withEmbeds: ['latents', 'promptEmbeds'],
  string: 'latents',
  unknownName: ['latents', 'notATensorName'],
  number: [1],
};

/** The `generate` options of a case, with fresh callbacks and signal. */
export function buildCase(target: FuzzTarget, spec: FaultCase, scratchDir: string): { options: Record<string, unknown>; state: CaseState } {
  const state: CaseState = { wroteNonFiniteLatents: false, controller: new AbortController() };
  const { side, vaeScaleFactor } = target;
  const sizes: Record<FaultCase['size'], unknown> = {
    default: undefined, valid: side, zero: 0, negative: -vaeScaleFactor, odd: side + 1, huge: 100_000 * vaeScaleFactor,
    nan: Number.NaN, infinite: Number.POSITIVE_INFINITY, string: String(side),
  };
  const prompt = PROMPTS[spec.prompt]();
  const promptCount = Array.isArray(prompt) ? prompt.length : 1;
  const perPrompt = spec.numImagesPerPrompt === 2 ? 2 : 1;
  const images = promptCount * perPrompt;
  const latentSide = side / vaeScaleFactor;
  const latents: Record<FaultCase['latents'], unknown> = {
    absent: undefined,
    valid: filled([images, 4, latentSide, latentSide], 0.1),
    wrongShape: filled([images, 4, latentSide + 1, latentSide], 0.1),
    nan: filled([images, 4, latentSide, latentSide], Number.NaN),
    junk: [1, 2, 3],
  };
  const promptEmbeds: Record<FaultCase['promptEmbeds'], unknown> = {
    absent: undefined, junk: 'embeddings', nan: filled([1, 77, 8], Number.NaN), wrongWidth: filled([1, 77, 3], 0.1),
  };
  const signals: Record<FaultCase['signal'], () => unknown> = {
    absent: () => undefined,
    fresh: () => state.controller.signal,
    aborted: () => AbortSignal.abort(),
    abortsSoon: () => {
      setTimeout(() => state.controller.abort(), 2);
      return state.controller.signal;
    },
    junk: () => ({ aborted: false }),
  };
  const onStepEnd = spec.onStepEnd.map((behaviour) => stepCallback(behaviour, state));
  const picture = (tag: FaultCase['image'] | FaultCase['mask']): unknown => {
    switch (tag) {
      case 'valid': return rawPicture(side, side, 3);
      case 'gray': return rawPicture(side, side, 1);
      case 'wrongSize': return rawPicture(side + vaeScaleFactor, side, 3);
      case 'junkBuffer': return Buffer.from('not a picture');
      case 'missingFile': return join(scratchDir, 'no-such-picture.png');
      case 'badRaw': return { data: new Uint8Array(5), width: side, height: side, channels: 3 };
      case 'number': return 7;
    }
  };
  const micro: Record<FaultCase['microConditioning'], Record<string, unknown>> = {
    default: {},
    valid: { originalSize: [side, side], cropsCoordsTopLeft: [0, 0], targetSize: [side, side] },
    string: { originalSize: 'big' },
    nan: { cropsCoordsTopLeft: [Number.NaN, 0] },
    short: { targetSize: [side] },
  };
  const windows: Record<FaultCase['controlWindow'], Record<string, unknown>> = {
    default: {}, valid: { controlGuidanceStart: 0.2, controlGuidanceEnd: 0.9 },
    reversed: { controlGuidanceStart: 0.8, controlGuidanceEnd: 0.2 }, nan: { controlGuidanceStart: Number.NaN },
  };
  const needsSignal = spec.onStepEnd.includes('neverResolvesThenAbort') || spec.onStepBegin === 'neverResolvesThenAbort';
  const options: Record<string, unknown> = {
    prompt: spec.promptEmbeds === 'absent' ? prompt : undefined,
    negativePrompt: PROMPTS[spec.negativePrompt](),
    numInferenceSteps: spec.numInferenceSteps,
    guidanceScale: spec.guidanceScale,
    guidanceRescale: spec.guidanceRescale,
    numImagesPerPrompt: spec.numImagesPerPrompt,
    height: sizes[spec.size],
    width: sizes[spec.size],
    eta: spec.eta,
    scheduler: spec.scheduler,
    generator: { seeded: new Generator().manualSeed(spec.seed), absent: undefined, object: {}, number: spec.seed }[spec.generator],
    latents: latents[spec.latents],
    promptEmbeds: promptEmbeds[spec.promptEmbeds],
    signal: needsSignal ? state.controller.signal : signals[spec.signal](),
    outputType: spec.outputType,
    callbackOnStepEnd: onStepEnd.length === 1 ? onStepEnd[0] : onStepEnd,
    callbackOnStepEndTensorInputs: TENSOR_INPUTS[spec.onStepEndTensorInputs],
    callbackOnStepBegin: stepCallback(spec.onStepBegin, state),
  };
  if (target.inputs !== 'text') options.strength = spec.strength;
  if (target.inputs === 'image' || target.inputs === 'inpaint' || target.inputs === 'control') options.image = picture(spec.image);
  if (target.inputs === 'inpaint') options.maskImage = picture(spec.mask);
  if (target.inputs === 'control') Object.assign(options, { controlnetConditioningScale: spec.controlScale, ...windows[spec.controlWindow] });
  if (target.family === 'sdxl') Object.assign(options, micro[spec.microConditioning]);
  for (const [key, value] of Object.entries(options)) if (value === undefined) delete options[key];
  return { options, state };
}

/** Whether every value of a float array is finite. */
function allFinite(data: ArrayLike<number>): boolean {
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) return false;
  return true;
}

/**
 * Runs one case on its target: a hang is a case that neither settles nor gets aborted within `hangMs`; a resolved
 * case must give finite pictures and must not have kept latents a callback made non-finite.
 */
export async function runFaultCase(target: FuzzTarget, spec: FaultCase, settings: { scratchDir: string; hangMs: number }): Promise<FaultOutcome> {
  const { options, state } = buildCase(target, spec, settings.scratchDir);
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<'hang'>((resolve) => {
    timer = setTimeout(() => resolve('hang'), settings.hangMs);
  });
  try {
    const result = await Promise.race([target.pipeline.generate(options), hang]);
    if (result === 'hang') return { kind: 'hang' };
    if (state.wroteNonFiniteLatents) return { kind: 'nonFinitePicture', detail: 'a callback wrote NaN/Infinity latents and the generation still succeeded' };
    const { images } = result;
    if (images instanceof Tensor && !allFinite(images.data)) return { kind: 'nonFinitePicture', detail: `${options.outputType as string} output holds NaN/Infinity` };
    return { kind: 'ok' };
  } catch (error) {
    return error instanceof DiffError ? { kind: 'typed', code: error.code } : { kind: 'untyped', error };
  } finally {
    clearTimeout(timer);
  }
}

/** A failed case as one line: the target, what went wrong and the case (to replay it). */
export function describeFailure(target: FuzzTarget, spec: FaultCase, outcome: FaultOutcome): string {
  const what = outcome.kind === 'untyped'
    ? `${outcome.error instanceof Error ? `${outcome.error.name}: ${outcome.error.message}` : String(outcome.error)}`
    : outcome.kind === 'nonFinitePicture' ? outcome.detail : outcome.kind;
  return `${target.name}: ${what} — ${JSON.stringify(spec, (_key, value: unknown) => (typeof value === 'number' && !Number.isFinite(value) ? String(value) : value))}`;
}

/** A model folder broken one way; `files` are the paths (relative to the folder) the error must name. */
export interface CorruptModelCase {
  readonly name: string;
  readonly files: readonly string[];
  corrupt(dir: string): Promise<void>;
}

async function truncate(path: string): Promise<void> {
  const bytes = await readFile(path);
  await writeFile(path, bytes.subarray(0, Math.floor(bytes.length / 2)));
}

/** A UNet exported for another text encoder width, copied over the folder's own. */
async function foreignUnet(dir: string): Promise<void> {
  const other = await mkdtemp(join(tmpdir(), 'diff-foreign-unet-'));
  try {
    await writeToyPipeline(other, 'sd', { hiddenSize: 24 });
    await copyFile(join(other, 'unet', 'model.onnx'), join(dir, 'unet', 'model.onnx'));
    await copyFile(join(other, 'unet', 'config.json'), join(dir, 'unet', 'config.json'));
  } finally {
    await rm(other, { recursive: true, force: true });
  }
}

export const CORRUPT_MODEL_CASES: readonly CorruptModelCase[] = [
  { name: 'truncated UNet', files: ['unet/model.onnx'], corrupt: (dir) => truncate(join(dir, 'unet', 'model.onnx')) },
  { name: 'garbage text encoder', files: ['text_encoder/model.onnx'], corrupt: (dir) => writeFile(join(dir, 'text_encoder', 'model.onnx'), 'not an ONNX model') },
  { name: 'empty VAE decoder', files: ['vae_decoder/model.onnx'], corrupt: (dir) => writeFile(join(dir, 'vae_decoder', 'model.onnx'), '') },
  { name: 'missing UNet', files: ['unet/model.onnx'], corrupt: (dir) => unlink(join(dir, 'unet', 'model.onnx')) },
  { name: 'model_index.json not JSON', files: ['model_index.json'], corrupt: (dir) => writeFile(join(dir, 'model_index.json'), '{ "_class_name": ') },
  { name: 'scheduler config not JSON', files: ['scheduler/scheduler_config.json'], corrupt: (dir) => writeFile(join(dir, 'scheduler', 'scheduler_config.json'), 'beta_start = 0.00085') },
  { name: 'UNet config not JSON', files: ['unet/config.json'], corrupt: (dir) => writeFile(join(dir, 'unet', 'config.json'), '<html>404</html>') },
  { name: 'VAE scaling factor NaN', files: ['vae_decoder/config.json'], corrupt: (dir) => writeFile(join(dir, 'vae_decoder', 'config.json'), '{ "scaling_factor": NaN }') },
  { name: 'tokenizer vocab not JSON', files: ['tokenizer/vocab.json'], corrupt: (dir) => writeFile(join(dir, 'tokenizer', 'vocab.json'), '{"a": 1,') },
  { name: 'tokenizer vocab of the wrong kind', files: ['tokenizer/vocab.json'], corrupt: (dir) => writeFile(join(dir, 'tokenizer', 'vocab.json'), '["a", "b"]') },
  { name: 'tokenizer merges missing', files: ['tokenizer/merges.txt'], corrupt: (dir) => unlink(join(dir, 'tokenizer', 'merges.txt')) },
  { name: 'UNet for another text encoder', files: ['unet/model.onnx', 'text_encoder/model.onnx'], corrupt: foreignUnet },
];

/**
 * Prepares a good folder (`prepare`), breaks it, then loads it and runs one generation (`load`, `generate`): the case
 * passes when that fails with a `DiffError` whose message names every file of the case. Returns what went wrong, if anything.
 */
export async function runCorruptModelCase(
  modelCase: CorruptModelCase,
  settings: {
    prepare(dir: string): Promise<void>;
    load(dir: string): Promise<{ generate(options: Record<string, unknown>): Promise<unknown>; dispose(): Promise<void> }>;
    generateOptions: Record<string, unknown>;
  },
): Promise<string | undefined> {
  const dir = await mkdtemp(join(tmpdir(), 'diff-corrupt-'));
  try {
    await settings.prepare(dir);
    await modelCase.corrupt(dir);
    let error: unknown;
    try {
      const pipeline = await settings.load(dir);
      try {
        await pipeline.generate(settings.generateOptions);
      } finally {
        await pipeline.dispose();
      }
    } catch (caught) {
      error = caught;
    }
    if (error === undefined) return `${modelCase.name}: loaded and generated without an error`;
    if (!(error instanceof DiffError)) return `${modelCase.name}: untyped ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`;
    const unnamed = modelCase.files.filter((file) => !error.message.includes(normalize(file)));
    return unnamed.length > 0 ? `${modelCase.name}: the error does not name ${unnamed.join(', ')}: ${error.message}` : undefined;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
