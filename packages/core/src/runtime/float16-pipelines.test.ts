// Whole generations on float16 models: the pipelines feed and read float32, the conversion happens at the model
// boundary (feeds.ts) once per call, and the scheduler's latents stay float32 — as diffusers keeps them when it runs
// a float16 UNet. ONNX Runtime's CPU provider runs the float16 graphs used here (Cast, Add, Identity).
import { jest } from '@jest/globals';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StableDiffusionXLPipeline } from '../pipelines/stable-diffusion-xl.js';
import { StableDiffusionPipeline } from '../pipelines/stable-diffusion.js';
import { Generator } from '../random/generator.js';
import { GraphBuilder } from '../testing/onnx-graph.js';
import { writeToyPipeline } from '../testing/toy-models.js';
import type { Tensor } from '../tensor.js';
import { OnnxModel, SessionPool } from './onnx-model.js';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'diff-float16-pipelines-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function maxAbsDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

describe('a float16 graph', () => {
  it('computes in float16 on the CPU provider and returns float32 Tensors', async () => {
    const graph = new GraphBuilder('add_in_half');
    graph.input('x', 'float16', ['n']);
    graph.input('y', 'float16', ['n']);
    graph.output('sum', 'float16', ['n']);
    graph.output('same', 'float16', ['n']);
    graph.emit(graph.op('Add', ['x', 'y']), 'sum', 'float16');
    graph.emit(graph.op('Identity', ['x']), 'same', 'float16');
    const path = join(root, 'add-in-half.onnx');
    await writeFile(path, graph.serialize().model);
    const model = new OnnxModel(path);

    // 1 + 2^-11 is a tie between 1 and the next float16 (1 + 2^-10): float16 arithmetic gives 1, float32 would not.
    const x = new Float32Array([1, 0.1, 70000, 3]);
    const y = new Float32Array([2 ** -11, 0.2, 0, -3]);
    const { sum, same } = await model.run({ x: { data: x, shape: [4] }, y: { data: y, shape: [4] } });
    expect(sum.dtype).toBe('float32');
    expect(sum.data).toBeInstanceOf(Float32Array);
    expect(sum.data[0]).toBe(1);
    // 0.1 and 0.2 are rounded to float16 on the way in (0.0999755859375, 0.199951171875) and their sum rounded again
    // (a tie, to even); float32 would give 0.30000001192092896.
    expect(sum.data[1]).toBe(0.2998046875);
    expect(sum.data[2]).toBe(Infinity); // beyond float16's range
    expect(sum.data[3]).toBe(0);
    expect(Array.from(same.data)).toEqual([1, 0.0999755859375, Infinity, 3]);
    await model.release();
  });
});

const KINDS = [
  ['sd', StableDiffusionPipeline],
  ['sdxl', StableDiffusionXLPipeline],
] as const;

describe.each(KINDS)('%s on float16 models', (kind, Pipeline) => {
  let float32: StableDiffusionPipeline | StableDiffusionXLPipeline;
  let float16: StableDiffusionPipeline | StableDiffusionXLPipeline;
  beforeAll(async () => {
    await writeToyPipeline(join(root, `${kind}-float32`), kind);
    await writeToyPipeline(join(root, `${kind}-float16`), kind, { float16: true });
    float32 = await Pipeline.fromPretrained(join(root, `${kind}-float32`));
    float16 = await Pipeline.fromPretrained(join(root, `${kind}-float16`));
  });
  afterAll(async () => {
    await float32.dispose();
    await float16.dispose();
  });

  const settings = { prompt: 'a red cat', numInferenceSteps: 4, height: 32, width: 32 } as const;

  /** One generation's picture and the latents after each step, as the step-end callback sees them. */
  async function generate(pipeline: StableDiffusionPipeline | StableDiffusionXLPipeline) {
    const steps: Tensor[] = [];
    const { images } = await (pipeline as StableDiffusionPipeline).generate({
      ...settings,
      outputType: 'np',
      generator: new Generator().manualSeed(3),
      callbackOnStepEndTensorInputs: ['latents'],
      callbackOnStepEnd: (_state, _step, _timestep, kwargs) => void steps.push(kwargs.latents),
    });
    return { images, steps };
  }

  it('has float16 inputs and outputs wherever the float32 models have float32 ones', async () => {
    const pool = float16.components.pool;
    for (const model of [float16.components.unet, float16.components.vaeDecoder]) {
      const values = [...(await pool.inputs(model.path)), ...(await pool.outputs(model.path))];
      const floats = values.filter((value) => value.name !== 'timestep');
      expect(floats.map((value) => value.type)).toEqual(floats.map(() => 'float16'));
    }
  });

  it('generates what the float32 models generate, within float16 rounding, as float32 Tensors', async () => {
    const reference = await generate(float32);
    const half = await generate(float16);
    expect(half.images.dtype).toBe('float32');
    expect(half.images.data).toBeInstanceOf(Float32Array);
    expect(half.images.shape).toEqual(reference.images.shape);
    expect(maxAbsDifference(half.images.data, reference.images.data)).toBeLessThan(5e-3);
    // float16 rounding did happen: the float16 pipeline is not the float32 one run twice.
    expect(maxAbsDifference(half.images.data, reference.images.data)).toBeGreaterThan(0);
  });

  it('keeps the latents float32 from step to step, following the float32 run', async () => {
    const reference = await generate(float32);
    const half = await generate(float16);
    expect(half.steps).toHaveLength(reference.steps.length);
    half.steps.forEach((latents, step) => {
      expect(latents.dtype).toBe('float32');
      expect(latents.data).toBeInstanceOf(Float32Array);
      // Relative to the latents' size: Euler's first sigma makes SDXL's start at about 15.
      const scale = Math.max(...Array.from(reference.steps[step].data, Math.abs));
      expect(maxAbsDifference(latents.data, reference.steps[step].data) / scale).toBeLessThan(5e-3);
    });
  });

  it('hands the models float32 data, one run per call, fetching only the outputs it uses', async () => {
    const run = jest.spyOn(SessionPool.prototype, 'run');
    try {
      const { steps } = await generate(float16);
      const calls = run.mock.calls.map(([path, feeds, outputNames]) => ({ model: path.split(/[\\/]/).at(-2), feeds, outputNames }));
      // The conversion to float16 is feeds.ts's, at the boundary: nothing upstream converts.
      for (const { feeds } of calls) {
        for (const value of Object.values(feeds)) {
          if (typeof value === 'number' || value.data instanceof Int32Array || value.data instanceof BigInt64Array) continue;
          expect(value.data).toBeInstanceOf(Float32Array);
        }
      }
      const results = await Promise.all(run.mock.results.map((entry) => entry.value as ReturnType<SessionPool['run']>));
      for (const result of results) {
        for (const tensor of Object.values(result)) expect(tensor.data).toBeInstanceOf(Float32Array);
      }
      const count = (model: string) => calls.filter((call) => call.model === model).length;
      expect(count('unet')).toBe(steps.length); // one guided batch per step, not one call per half
      expect(count('vae_decoder')).toBe(1);
      // Text encoders: only the hidden state and pooled output the pipeline reads, not all their outputs.
      for (const call of calls.filter(({ model }) => model?.startsWith('text_encoder'))) {
        expect(call.outputNames?.length).toBeLessThanOrEqual(2);
      }
    } finally {
      run.mockRestore();
    }
  });
});
