import { jest } from '@jest/globals';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { toyWeights } from '../testing/onnx-graph.js';
import { TOY_SEQUENCE_LENGTH, writeToyPipeline } from '../testing/toy-models.js';
import { InvalidArgumentError, ModelLoadError, ModelRunError, UnsupportedError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { CUDA_INSTALL_COMMAND, cudaUnavailableReason } from './execution-providers.js';
import { OnnxModel, SessionPool } from './onnx-model.js';

const HIDDEN = 8;
let root: string;
const folder = (name: string) => join(root, name);
const modelPath = (pipeline: string, component: string) => join(root, pipeline, component, 'model.onnx');

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'diff-onnx-model-'));
  await writeToyPipeline(folder('sd'), 'sd');
  await writeToyPipeline(folder('sdxl'), 'sdxl');
  await writeToyPipeline(folder('sd-variant'), 'sd', { float16: true, inputIds: 'int64', timestep: 'int64' });
  await writeToyPipeline(folder('sd-onnx-data'), 'sd', { externalWeights: 'model.onnx_data' });
  await writeToyPipeline(folder('sd-weights-pb'), 'sd', { externalWeights: 'weights.pb' });
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function randomTensor(shape: number[], seed: number): Tensor<'float32'> {
  return new Tensor(toyWeights(shape.reduce((a, b) => a * b, 1), seed, 1), shape);
}

function meanPerBatch(tensor: Tensor): number[] {
  const per = tensor.size / tensor.shape[0];
  return Array.from({ length: tensor.shape[0] }, (_, b) => tensor.data.subarray(b * per, (b + 1) * per).reduce((s, v) => s + v, 0) / per);
}

/** The toy UNet's documented function: 0.1·sample + mean(encoder_hidden_states[b]) + 0.001·timestep[b] (+ extra[b]). */
function expectedUnet(sample: Tensor, timesteps: number[], context: Tensor, extra: number[] = [0, 0]): number[] {
  const per = sample.size / sample.shape[0];
  const contextMean = meanPerBatch(context);
  return Array.from(sample.data, (v, i) => {
    const b = Math.floor(i / per);
    return 0.1 * v + contextMean[b] + 0.001 * timesteps[b] + extra[b];
  });
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  expect(worst).toBeLessThanOrEqual(tolerance);
}

const sample = randomTensor([2, 4, 8, 8], 1);
const context = randomTensor([2, TOY_SEQUENCE_LENGTH, HIDDEN], 2);
const ids = { data: Int32Array.from({ length: 2 * TOY_SEQUENCE_LENGTH }, (_, i) => (i * 37) % 500), shape: [2, TOY_SEQUENCE_LENGTH] };

describe('OnnxModel', () => {
  it('reads inputs and outputs from the session metadata', async () => {
    const unet = new OnnxModel(modelPath('sdxl', 'unet'));
    expect(await unet.inputs()).toEqual([
      { name: 'sample', type: 'float32', shape: ['batch', 4, 'height', 'width'] },
      { name: 'timestep', type: 'int64', shape: [] },
      { name: 'encoder_hidden_states', type: 'float32', shape: ['batch', 'sequence', 2 * HIDDEN] },
      { name: 'text_embeds', type: 'float32', shape: ['batch', HIDDEN] },
      { name: 'time_ids', type: 'float32', shape: ['batch', 6] },
    ]);
    expect(await unet.outputNames()).toEqual(['out_sample']);
    await unet.pool.dispose();
  });

  it('runs a model and returns float32 Tensors', async () => {
    const unet = new OnnxModel(modelPath('sd', 'unet'));
    const timestep = new Tensor(new Float32Array([981, 1]), [2]);
    const { out_sample } = await unet.run({ sample, timestep, encoder_hidden_states: context });
    expect(out_sample.shape).toEqual([2, 4, 8, 8]);
    expect(out_sample.dtype).toBe('float32');
    expectClose(out_sample.data, expectedUnet(sample, [981, 1], context), 1e-5);
    await unet.release();
  });

  it("feeds SDXL's int64 scalar timestep from an all-equal [B] tensor, truncating like numpy", async () => {
    const unet = new OnnxModel(modelPath('sdxl', 'unet'));
    const textEmbeds = randomTensor([2, HIDDEN], 3);
    const timeIds = new Tensor(new Float32Array([64, 64, 0, 0, 64, 64, 64, 64, 0, 0, 64, 64]), [2, 6]);
    const wideContext = randomTensor([2, TOY_SEQUENCE_LENGTH, 2 * HIDDEN], 4);
    const { out_sample } = await unet.run({
      sample,
      timestep: new Tensor(new Float32Array([500.75, 500.75]), [2]),
      encoder_hidden_states: wideContext,
      text_embeds: textEmbeds,
      time_ids: timeIds,
    });
    const extra = meanPerBatch(textEmbeds).map((m, b) => 0.01 * m + 0.0001 * meanPerBatch(timeIds)[b]);
    expectClose(out_sample.data, expectedUnet(sample, [500, 500], wideContext, extra), 1e-5);
    await unet.release();
  });

  it('returns only the outputs asked for', async () => {
    const encoder = new OnnxModel(modelPath('sd', 'text_encoder'));
    const outputs = await encoder.run({ input_ids: ids }, ['hidden_states.2', 'pooler_output']);
    expect(Object.keys(outputs).sort()).toEqual(['hidden_states.2', 'pooler_output']);
    expect(outputs['hidden_states.2'].shape).toEqual([2, TOY_SEQUENCE_LENGTH, HIDDEN]);
    await expect(encoder.run({ input_ids: ids }, ['text_embeds'])).rejects.toThrow(
      /has no output text_embeds\. Its outputs: last_hidden_state: float32 \[batch, 77, 8\]/,
    );
    await encoder.release();
  });

  it('adapts feeds to float16, int64 ids and int64 [B] timesteps, matching the float32 model', async () => {
    const pool = new SessionPool();
    const reference = await pool.run(modelPath('sd', 'text_encoder'), { input_ids: ids });
    const variant = await pool.run(modelPath('sd-variant', 'text_encoder'), { input_ids: ids });
    expect(variant.last_hidden_state.dtype).toBe('float32');
    // int64 ids select the same rows; float16 outputs round the same float32 values.
    expectClose(variant.last_hidden_state.data, reference.last_hidden_state.data, 1e-3);

    const timestep = new Tensor(new Float32Array([958.6, 12.2]), [2]);
    const { out_sample } = await pool.run(modelPath('sd-variant', 'unet'), { sample, timestep, encoder_hidden_states: context });
    expectClose(out_sample.data, expectedUnet(sample, [958, 12], context), 5e-3);
    await pool.dispose();
  });

  it.each(['sd-onnx-data', 'sd-weights-pb'])('loads weights stored externally (%s)', async (pipeline) => {
    const weightsFile = pipeline === 'sd-onnx-data' ? 'model.onnx_data' : 'weights.pb';
    const inlineSize = (await stat(modelPath('sd', 'text_encoder'))).size;
    expect((await stat(modelPath(pipeline, 'text_encoder'))).size).toBeLessThan(inlineSize / 4);
    expect((await stat(join(root, pipeline, 'text_encoder', weightsFile))).size).toBeGreaterThan(0);

    const pool = new SessionPool();
    const reference = await pool.run(modelPath('sd', 'text_encoder'), { input_ids: ids });
    const external = await pool.run(modelPath(pipeline, 'text_encoder'), { input_ids: ids });
    expect(external.last_hidden_state.data).toEqual(reference.last_hidden_state.data);
    const { sample: image } = await pool.run(modelPath(pipeline, 'vae_decoder'), { latent_sample: sample });
    expect(image.shape).toEqual([2, 3, 64, 64]);
    await pool.dispose();
  });

  it('names the model file when it is missing, a folder, malformed, or lacks its external weights', async () => {
    const expectLoadError = async (path: string, pattern: RegExp) => {
      const error = await new OnnxModel(path).inputs().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ModelLoadError);
      expect((error as ModelLoadError).code).toBe('MODEL_LOAD');
      expect((error as ModelLoadError).path).toBe(path);
      expect((error as Error).message).toMatch(pattern);
    };
    await expectLoadError(join(root, 'nowhere', 'model.onnx'), /no such file; expected an ONNX model file/);
    await expectLoadError(folder('sd'), /is a folder; expected the path of an ONNX model file/);
    const garbage = join(root, 'garbage.onnx');
    await writeFile(garbage, 'not a protobuf');
    await expectLoadError(garbage, /ONNX Runtime could not load it \(.*\)\. Expected an ONNX model/);

    const lonely = join(root, 'lonely');
    await mkdir(lonely);
    const lonelyModel = join(lonely, 'model.onnx');
    await writeFile(lonelyModel, await readFile(modelPath('sd-onnx-data', 'text_encoder')));
    await writeFile(join(lonely, 'elsewhere.onnx_data'), await readFile(join(root, 'sd-onnx-data', 'text_encoder', 'model.onnx_data')));
    await expectLoadError(lonelyModel, /model\.onnx_data.*weights stored externally/);
  });

  it('retries a load that failed, once the file is there', async () => {
    const path = join(root, 'late', 'model.onnx');
    const model = new OnnxModel(path);
    await expect(model.inputs()).rejects.toThrow(ModelLoadError);
    await mkdir(join(root, 'late'));
    await writeFile(path, await readFile(modelPath('sd', 'vae_encoder')));
    expect((await model.inputs()).map((input) => input.name)).toEqual(['sample']);
    await model.release();
  });

  it('reports a failing run as a ModelRunError that lists what was fed', async () => {
    const unet = new OnnxModel(modelPath('sd', 'unet'));
    const mismatched = unet.run({ sample, timestep: 1, encoder_hidden_states: randomTensor([3, TOY_SEQUENCE_LENGTH, HIDDEN], 5) });
    await expect(mismatched).rejects.toThrow(ModelRunError);
    await expect(mismatched).rejects.toThrow(/Fed sample: float32 \[2, 4, 8, 8\]; timestep: float32 \[1\]; encoder_hidden_states: float32 \[3, 77, 8\]/);
    await unet.release();
  });

  it('refuses feeds that do not fit, listing the inputs', async () => {
    const unet = new OnnxModel(modelPath('sd', 'unet'));
    await expect(unet.run({ sample, encoder_hidden_states: context })).rejects.toThrow(InvalidArgumentError);
    await expect(unet.run({ sample, encoder_hidden_states: context })).rejects.toThrow(
      /missing timestep\)\. The model's inputs: sample: float32 \[batch, 4, height, width\]; timestep: float32 \[batch\]/,
    );
    await unet.release();
  });

  it('re-creates a released session on the next run', async () => {
    const vae = new OnnxModel(modelPath('sd', 'vae_encoder'));
    const image = randomTensor([1, 3, 64, 64], 6);
    const first = await vae.run({ sample: image });
    expect(vae.pool.loadedModels).toEqual([vae.path]);
    await vae.release();
    expect(vae.pool.loadedModels).toEqual([]);
    const second = await vae.run({ sample: image });
    expect(second.latent_parameters.shape).toEqual([1, 8, 8, 8]);
    expect(second.latent_parameters.data).toEqual(first.latent_parameters.data);
    await vae.release();
  });

  it('lets running calls finish before releasing', async () => {
    const vae = new OnnxModel(modelPath('sd', 'vae_decoder'));
    const running = vae.run({ latent_sample: sample });
    await vae.release();
    expect((await running).sample.shape).toEqual([2, 3, 64, 64]);
    expect(vae.pool.loadedModels).toEqual([]);
  });
});

describe('SessionPool', () => {
  it('shares one session per model path and counts the time inside session.run', async () => {
    const pool = new SessionPool();
    const a = pool.model(modelPath('sd', 'unet'));
    const b = new OnnxModel(join(root, 'sd', 'unet', '..', 'unet', 'model.onnx'), pool);
    const encoder = pool.model(modelPath('sd', 'text_encoder'));
    const feeds = { sample, timestep: 1, encoder_hidden_states: context };
    await Promise.all([a.run(feeds), b.run(feeds), encoder.run({ input_ids: ids })]);
    expect([...pool.loadedModels].sort()).toEqual([modelPath('sd', 'text_encoder'), modelPath('sd', 'unet')].sort());
    expect(pool.runCount).toBe(3);
    expect(a.runTimeMs).toBeGreaterThan(0);
    expect(a.runTimeMs).toBe(b.runTimeMs);
    expect(pool.runTimeMs).toBeCloseTo(a.runTimeMs + encoder.runTimeMs, 6);
    await pool.dispose();
    expect(pool.loadedModels).toEqual([]);
  });

  it('with offload, keeps only the model in use loaded', async () => {
    const pool = new SessionPool({ offload: true });
    const encoder = pool.model(modelPath('sd', 'text_encoder'));
    const unet = pool.model(modelPath('sd', 'unet'));
    const vae = pool.model(modelPath('sd', 'vae_decoder'));
    const { last_hidden_state } = await encoder.run({ input_ids: ids });
    expect(pool.loadedModels).toEqual([encoder.path]);
    const timestep = new Tensor(new Float32Array([3, 3]), [2]);
    const [denoised, image] = await Promise.all([
      unet.run({ sample, timestep, encoder_hidden_states: last_hidden_state }),
      vae.run({ latent_sample: sample }),
    ]);
    expect(pool.loadedModels).toEqual([vae.path]);
    expectClose(denoised.out_sample.data, expectedUnet(sample, [3, 3], last_hidden_state), 1e-5);
    expect(image.sample.shape).toEqual([2, 3, 64, 64]);
    await pool.dispose();
  });

  it('validates its options', () => {
    expect(() => new SessionPool({ executionProviders: [] })).toThrow(InvalidArgumentError);
    expect(() => new SessionPool({ executionProviders: ['tpu' as 'cpu'] })).toThrow(/one or more of cpu, cuda; got \[tpu\]/);
    expect(() => new SessionPool({ intraOpNumThreads: 1.5 })).toThrow(/intraOpNumThreads must be a non-negative integer/);
    expect(() => new SessionPool({ graphOptimizationLevel: 'max' as 'all' })).toThrow(/graphOptimizationLevel must be one of/);
  });

  it('applies session options', async () => {
    const pool = new SessionPool({ intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'disabled' });
    const { out_sample } = await pool.run(modelPath('sd', 'unet'), { sample, timestep: 7, encoder_hidden_states: context });
    expectClose(out_sample.data, expectedUnet(sample, [7, 7], context), 1e-5);
    await pool.dispose();
  });
});

// This machine has no CUDA provider library (onnxruntime-node does not bundle it), so 'cuda' must fall back.
const describeWithoutCuda = cudaUnavailableReason() === undefined ? describe.skip : describe;
describeWithoutCuda('CUDA where its provider is not installed', () => {
  it('falls back to CPU with one notice per pool that says how to enable CUDA', async () => {
    const notices: string[] = [];
    const pool = new SessionPool({ executionProviders: ['cuda'], onNotice: (message) => notices.push(message) });
    const feeds = { sample, timestep: 5, encoder_hidden_states: context };
    const { out_sample } = await pool.run(modelPath('sd', 'unet'), feeds);
    await pool.run(modelPath('sd', 'text_encoder'), { input_ids: ids });
    expect(notices).toHaveLength(1);
    expect(notices[0]).toContain('running on cpu instead of cuda');
    expect(notices[0]).toContain('libonnxruntime_providers_cuda.so');
    expect(notices[0]).toContain(CUDA_INSTALL_COMMAND);
    expect(CUDA_INSTALL_COMMAND).toBe('ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node');
    expect(pool.executionProviders).toEqual(['cpu']);
    expectClose(out_sample.data, expectedUnet(sample, [5, 5], context), 1e-5);
    await pool.dispose();
  });

  it('prints the notice with console.warn by default', async () => {
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      const model = new OnnxModel(modelPath('sd', 'vae_encoder'), { executionProviders: ['cuda', 'cpu'] });
      await model.inputs();
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0][0])).toContain(CUDA_INSTALL_COMMAND);
      await model.release();
    } finally {
      warn.mockRestore();
    }
  });

  it('throws instead when strict, for every model of the pool', async () => {
    const notices: string[] = [];
    const pool = new SessionPool({ executionProviders: ['cuda'], strictExecutionProviders: true, onNotice: (m) => notices.push(m) });
    for (const component of ['unet', 'vae_decoder']) {
      const error = await pool.inputs(modelPath('sd', component)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(UnsupportedError);
      expect((error as Error).message).toMatch(/^Execution provider 'cuda' cannot be used: the CUDA execution provider is not installed/);
      expect((error as Error).message).toContain(CUDA_INSTALL_COMMAND);
    }
    expect(notices).toEqual([]);
    expect(pool.loadedModels).toEqual([]);
  });
});
