import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import ort from 'onnxruntime-node';
import type { InferenceSession } from 'onnxruntime-node';
import { InvalidArgumentError, ModelLoadError, ModelRunError, UnsupportedError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import {
  EXECUTION_PROVIDER_NAMES,
  cudaUnavailableReason,
  type ExecutionProviderName,
} from './execution-providers.js';
import { describeValues, fromOrtTensor, toOrtFeeds, type ModelFeeds, type ValueSpec } from './feeds.js';

export type GraphOptimizationLevel = 'disabled' | 'basic' | 'extended' | 'all';
const GRAPH_OPTIMIZATION_LEVELS: readonly GraphOptimizationLevel[] = ['disabled', 'basic', 'extended', 'all'];

export interface RuntimeOptions {
  /** In order of preference; CPU is always the last resort. Default ['cpu']; ['cuda'] means CUDA, then CPU. */
  executionProviders?: readonly ExecutionProviderName[];
  /** Make a provider that cannot be used an error instead of a fallback to the next one. */
  strictExecutionProviders?: boolean;
  intraOpNumThreads?: number;
  interOpNumThreads?: number;
  /** ONNX Runtime's graph optimizations; its default is 'all'. */
  graphOptimizationLevel?: GraphOptimizationLevel;
  /** Keep only one session loaded at a time: loading one releases the others (like diffusers' model CPU offload). */
  offload?: boolean;
  /** Receives the one notice a pool gives when it falls back from a provider. Default console.warn. */
  onNotice?: (message: string) => void;
}

interface ModelSpecs {
  inputs: readonly ValueSpec[];
  outputs: readonly ValueSpec[];
}

interface OpenSession {
  session: Promise<InferenceSession>;
  /** Calls using this session; it is released only after they settle. */
  inFlight: Set<Promise<unknown>>;
}

/**
 * The ONNX Runtime sessions of one pipeline, by model path: created on first use with the pool's options, released
 * one by one, all at once (`dispose`), or — with `offload` — whenever another model is loaded. Counts the time spent
 * inside `session.run`. A pool that is disposed can still be used; it loads sessions again.
 */
export class SessionPool {
  readonly options: Readonly<RuntimeOptions>;
  #providers: ExecutionProviderName[];
  /** Requested providers found unusable, with the reason; CUDA's library is looked for once, on first load. */
  readonly #unusable = new Map<ExecutionProviderName, string>();
  #cudaLibraryChecked = false;
  #noticeGiven = false;
  readonly #sessions = new Map<string, OpenSession>();
  readonly #specs = new Map<string, ModelSpecs>();
  readonly #runTimeMsByPath = new Map<string, number>();
  #runTimeMs = 0;
  #runCount = 0;
  /** With `offload`, every use of a session waits for the previous one, so releasing the others is safe. */
  #turn: Promise<unknown> = Promise.resolve();

  constructor(options: RuntimeOptions = {}) {
    validateOptions(options);
    this.options = Object.freeze({ ...options });
    const requested = options.executionProviders ?? ['cpu'];
    this.#providers = [...new Set<ExecutionProviderName>([...requested, 'cpu'])];
  }

  /** The providers new sessions are created with: the requested ones, less those found unusable, then CPU. */
  get executionProviders(): readonly ExecutionProviderName[] {
    return this.#providers;
  }

  /** Paths of the models whose session is loaded (or loading) now. */
  get loadedModels(): readonly string[] {
    return [...this.#sessions.keys()];
  }

  /** Milliseconds spent inside `session.run`, over all models of the pool. */
  get runTimeMs(): number {
    return this.#runTimeMs;
  }

  get runCount(): number {
    return this.#runCount;
  }

  runTimeMsOf(path: string): number {
    return this.#runTimeMsByPath.get(resolve(path)) ?? 0;
  }

  model(path: string): OnnxModel {
    return new OnnxModel(path, this);
  }

  async inputs(path: string): Promise<readonly ValueSpec[]> {
    return (await this.#specsOf(resolve(path))).inputs;
  }

  async outputs(path: string): Promise<readonly ValueSpec[]> {
    return (await this.#specsOf(resolve(path))).outputs;
  }

  /** Runs the model at `path`; returns the requested outputs (default: all) as float32 Tensors. */
  async run(path: string, feeds: ModelFeeds, outputNames?: readonly string[]): Promise<Record<string, Tensor<'float32'>>> {
    const modelPath = resolve(path);
    return this.#withSession(modelPath, async (session) => {
      const { inputs, outputs } = this.#specs.get(modelPath)!;
      const fetches = outputNames ?? outputs.map((spec) => spec.name);
      const unknown = fetches.filter((name) => !outputs.some((spec) => spec.name === name));
      if (unknown.length > 0) {
        throw new InvalidArgumentError(
          `${modelPath} has no output ${unknown.join(', ')}. Its outputs: ${describeValues(outputs)}.`,
        );
      }
      const ortFeeds = toOrtFeeds(inputs, feeds, modelPath);
      const started = performance.now();
      let results: InferenceSession.ReturnType;
      try {
        results = await session.run(ortFeeds, fetches);
      } catch (error) {
        const fed = Object.entries(ortFeeds).map(([name, tensor]) => `${name}: ${tensor.type} [${tensor.dims.join(', ')}]`);
        throw new ModelRunError(
          modelPath,
          `ONNX Runtime failed: ${messageOf(error)}. Fed ${fed.join('; ')}. The model's inputs: ${describeValues(inputs)}.`,
          { cause: error },
        );
      } finally {
        const elapsed = performance.now() - started;
        this.#runTimeMs += elapsed;
        this.#runCount += 1;
        this.#runTimeMsByPath.set(modelPath, (this.#runTimeMsByPath.get(modelPath) ?? 0) + elapsed);
      }
      return Object.fromEntries(fetches.map((name) => [name, fromOrtTensor(results[name], name, modelPath)]));
    });
  }

  /** Frees the session of the model at `path` once its running calls settle; a later use creates it again. */
  async release(path: string): Promise<void> {
    const modelPath = resolve(path);
    const open = this.#sessions.get(modelPath);
    if (open === undefined) return;
    this.#sessions.delete(modelPath);
    await Promise.allSettled(open.inFlight);
    const session = await open.session.catch(() => undefined);
    await session?.release();
  }

  /** Frees every session of the pool. */
  async dispose(): Promise<void> {
    await Promise.all([...this.#sessions.keys()].map((path) => this.release(path)));
  }

  async #specsOf(modelPath: string): Promise<ModelSpecs> {
    const known = this.#specs.get(modelPath);
    if (known) return known;
    await this.#withSession(modelPath, async () => undefined);
    return this.#specs.get(modelPath)!;
  }

  #withSession<T>(modelPath: string, task: (session: InferenceSession) => Promise<T>): Promise<T> {
    if (!this.options.offload) return this.#use(modelPath, task);
    const turn = this.#turn.then(async () => {
      await Promise.all([...this.#sessions.keys()].filter((path) => path !== modelPath).map((path) => this.release(path)));
      return this.#use(modelPath, task);
    });
    this.#turn = turn.catch(() => undefined);
    return turn;
  }

  async #use<T>(modelPath: string, task: (session: InferenceSession) => Promise<T>): Promise<T> {
    let open = this.#sessions.get(modelPath);
    if (open === undefined) {
      const created: OpenSession = { session: this.#createSession(modelPath), inFlight: new Set() };
      // A failed load is forgotten, so a later call tries again (e.g. once the file exists).
      created.session.catch(() => {
        if (this.#sessions.get(modelPath) === created) this.#sessions.delete(modelPath);
      });
      this.#sessions.set(modelPath, created);
      open = created;
    }
    const call = open.session.then(task);
    open.inFlight.add(call);
    try {
      return await call;
    } finally {
      open.inFlight.delete(call);
    }
  }

  async #createSession(modelPath: string): Promise<InferenceSession> {
    await assertModelFile(modelPath);
    const session = await this.#openWithFallback(modelPath, this.#usableProviders());
    try {
      this.#specs.set(modelPath, readSpecs(session, modelPath));
    } catch (error) {
      await session.release();
      throw error;
    }
    return session;
  }

  async #openWithFallback(modelPath: string, providers: readonly ExecutionProviderName[]): Promise<InferenceSession> {
    try {
      return await ort.InferenceSession.create(modelPath, this.#sessionOptions(providers));
    } catch (error) {
      if (!providers.includes('cuda')) throw loadError(modelPath, error);
      // CUDA could not start, or the model itself is bad: a CPU session tells which.
      let session: InferenceSession;
      try {
        session = await ort.InferenceSession.create(modelPath, this.#sessionOptions(['cpu']));
      } catch (cpuError) {
        throw loadError(modelPath, cpuError);
      }
      this.#markUnusable('cuda', `the CUDA execution provider failed to start: ${messageOf(error)}`);
      const strictError = this.#strictProviderError();
      if (strictError !== undefined) {
        await session.release();
        throw strictError;
      }
      return session;
    }
  }

  /** The providers to create a session with; throws when strict and a requested one is unusable. */
  #usableProviders(): readonly ExecutionProviderName[] {
    if (!this.#cudaLibraryChecked && this.#providers.includes('cuda')) {
      this.#cudaLibraryChecked = true;
      const reason = cudaUnavailableReason();
      if (reason !== undefined) this.#markUnusable('cuda', reason);
    }
    const strictError = this.#strictProviderError();
    if (strictError !== undefined) throw strictError;
    return this.#providers;
  }

  #strictProviderError(): UnsupportedError | undefined {
    const [unusable] = this.#unusable;
    if (unusable === undefined || !this.options.strictExecutionProviders) return undefined;
    const [provider, reason] = unusable;
    return new UnsupportedError(`Execution provider '${provider}' cannot be used: ${reason}.`);
  }

  /** Drops a provider for every later session of the pool, with one notice per pool (none when strict). */
  #markUnusable(provider: ExecutionProviderName, reason: string): void {
    this.#unusable.set(provider, reason);
    this.#providers = this.#providers.filter((name) => name !== provider);
    if (this.#noticeGiven || this.options.strictExecutionProviders) return;
    this.#noticeGiven = true;
    const notice =
      `@diff/core: running on ${this.#providers.join(', ')} instead of ${provider}: ${reason}. ` +
      'Set strictExecutionProviders to make this an error.';
    (this.options.onNotice ?? console.warn)(notice);
  }

  #sessionOptions(providers: readonly ExecutionProviderName[]): InferenceSession.SessionOptions {
    const { intraOpNumThreads, interOpNumThreads, graphOptimizationLevel } = this.options;
    return {
      executionProviders: providers,
      // ORT's warnings (e.g. memcpy nodes added for CUDA) are advice for model authors, not for users: errors only.
      logSeverityLevel: 3,
      ...(intraOpNumThreads !== undefined && { intraOpNumThreads }),
      ...(interOpNumThreads !== undefined && { interOpNumThreads }),
      ...(graphOptimizationLevel !== undefined && { graphOptimizationLevel }),
    };
  }
}

/** One ONNX model file. Its session lives in a `SessionPool` (shared by a pipeline's components, or its own). */
export class OnnxModel {
  readonly path: string;
  readonly pool: SessionPool;

  /** `runtime`: the pipeline's shared pool, or options for a pool of this model alone. */
  constructor(path: string, runtime: SessionPool | RuntimeOptions = {}) {
    this.path = resolve(path);
    this.pool = runtime instanceof SessionPool ? runtime : new SessionPool(runtime);
  }

  inputs(): Promise<readonly ValueSpec[]> {
    return this.pool.inputs(this.path);
  }

  async outputNames(): Promise<readonly string[]> {
    return (await this.pool.outputs(this.path)).map((spec) => spec.name);
  }

  run(feeds: ModelFeeds, outputNames?: readonly string[]): Promise<Record<string, Tensor<'float32'>>> {
    return this.pool.run(this.path, feeds, outputNames);
  }

  release(): Promise<void> {
    return this.pool.release(this.path);
  }

  /** Milliseconds this model spent inside `session.run`. */
  get runTimeMs(): number {
    return this.pool.runTimeMsOf(this.path);
  }
}

function validateOptions(options: RuntimeOptions): void {
  const providers = options.executionProviders;
  if (providers !== undefined) {
    const unknown = providers.filter((name) => !EXECUTION_PROVIDER_NAMES.includes(name));
    if (providers.length === 0 || unknown.length > 0) {
      throw new InvalidArgumentError(
        `executionProviders must list one or more of ${EXECUTION_PROVIDER_NAMES.join(', ')}; got [${providers.join(', ')}].`,
      );
    }
  }
  for (const key of ['intraOpNumThreads', 'interOpNumThreads'] as const) {
    const value = options[key];
    if (value !== undefined && !(Number.isInteger(value) && value >= 0)) {
      throw new InvalidArgumentError(`${key} must be a non-negative integer (0 lets ONNX Runtime choose); got ${value}.`);
    }
  }
  const level = options.graphOptimizationLevel;
  if (level !== undefined && !GRAPH_OPTIMIZATION_LEVELS.includes(level)) {
    throw new InvalidArgumentError(
      `graphOptimizationLevel must be one of ${GRAPH_OPTIMIZATION_LEVELS.join(', ')}; got ${String(level)}.`,
    );
  }
}

async function assertModelFile(modelPath: string): Promise<void> {
  const stats = await stat(modelPath).catch(() => undefined);
  if (stats === undefined) throw new ModelLoadError(modelPath, 'no such file; expected an ONNX model file (model.onnx).');
  if (stats.isDirectory()) {
    throw new ModelLoadError(modelPath, 'is a folder; expected the path of an ONNX model file such as model.onnx inside it.');
  }
}

function loadError(modelPath: string, error: unknown): ModelLoadError {
  return new ModelLoadError(
    modelPath,
    `ONNX Runtime could not load it (${messageOf(error)}). Expected an ONNX model; weights stored externally ` +
      '(model.onnx_data, weights.pb) must sit next to it under the name the model records.',
    { cause: error },
  );
}

function readSpecs(session: InferenceSession, modelPath: string): ModelSpecs {
  const toSpecs = (metadata: readonly InferenceSession.ValueMetadata[]): ValueSpec[] =>
    metadata.map((value) => {
      if (!value.isTensor) {
        throw new ModelLoadError(modelPath, `'${value.name}' is not a tensor; only tensor inputs and outputs are supported.`);
      }
      return { name: value.name, type: value.type, shape: value.shape.map((dim) => (dim === '' ? null : dim)) };
    });
  return { inputs: toSpecs(session.inputMetadata), outputs: toSpecs(session.outputMetadata) };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
