import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GraphBuilder } from '../testing/onnx-graph.js';
import { float16Bits, float16Value, fromFloat16Bits, toFloat16Bits } from './float16.js';
import { OnnxModel } from './onnx-model.js';

describe('float16Bits', () => {
  it.each([
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [0.1, 0x2e66],
    [65504, 0x7bff],
    [65519.99, 0x7bff],
    [65520, 0x7c00], // halfway to the next binade rounds to even: Infinity
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // halfway between 0 and 2^-24: ties to even
    [1.5 * 2 ** -25, 0x0001],
    [3 * 2 ** -25, 0x0002], // halfway between subnormals 1 and 2: ties to even
    [1 + 2 ** -11, 0x3c00], // halfway between 1 and the next half: ties to even
    [1 + 3 * 2 ** -11, 0x3c02], // halfway with an odd lower neighbour: rounds up
    [1 + 2 ** -11 + 2 ** -20, 0x3c01],
    [2047.5, 0x6800], // mantissa carry into the exponent (2048)
  ])('%p -> %p', (value, bits) => {
    expect(float16Bits(value)).toBe(bits);
  });

  it('keeps NaN a NaN', () => {
    expect(Number.isNaN(float16Value(float16Bits(NaN)))).toBe(true);
  });

  it('round-trips every float16 value exactly', () => {
    const mismatches: number[] = [];
    for (let bits = 0; bits < 0x10000; bits++) {
      const value = float16Value(bits);
      if (!Number.isNaN(value) && float16Bits(value) !== bits) mismatches.push(bits);
    }
    expect(mismatches).toEqual([]);
  });

  it('converts arrays both ways', () => {
    const values = [0.5, -1.25, 3.140625];
    expect(Array.from(fromFloat16Bits(toFloat16Bits(values)))).toEqual(values);
  });
});

describe('array conversions', () => {
  it('toFloat16Bits gives float16Bits of each value: every exponent, at the rounding boundaries, from any array', () => {
    const words: number[] = [];
    const mantissas = [0, 1, 0xfff, 0x1000, 0x1001, 0x2000, 0x2fff, 0x3000, 0x3001, 0x7fe000, 0x7ff000, 0x7fffff];
    for (let exponent = 0; exponent < 256; exponent++) {
      for (const mantissa of [...mantissas, (exponent * 7919 * 1031) & 0x7fffff]) {
        for (const sign of [0, 0x80000000]) words.push((sign | (exponent << 23) | mantissa) >>> 0);
      }
    }
    const floats = new Float32Array(Uint32Array.from(words).buffer);
    const expected = Array.from(floats, float16Bits);
    expect(Array.from(toFloat16Bits(floats))).toEqual(expected);
    expect(Array.from(toFloat16Bits(floats.subarray(5)))).toEqual(expected.slice(5));
    expect(Array.from(toFloat16Bits(Array.from(floats)))).toEqual(expected);
    expect(Array.from(toFloat16Bits(Float64Array.from(floats)))).toEqual(expected);
  });

  it('fromFloat16Bits gives float16Value of every bit pattern', () => {
    const widened = fromFloat16Bits(Uint16Array.from({ length: 0x10000 }, (_, bits) => bits));
    const mismatches = Array.from(widened).flatMap((value, bits) => (Object.is(value, float16Value(bits)) ? [] : [bits]));
    expect(mismatches).toEqual([]);
  });
});

describe('float16 conversion agrees with ONNX Runtime', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'diff-float16-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  // Values across the normal and subnormal range, including exact ties between neighbouring float16 values.
  const values = new Float32Array(4000);
  for (let i = 0; i < values.length; i++) {
    const magnitude = 2 ** ((i % 44) - 26) * (1 + ((i * 7919) % 1024) / 1024 + (i % 3 === 0 ? 2 ** -11 : 0));
    values[i] = i % 2 === 0 ? magnitude : -magnitude;
  }

  it('rounds float32 to float16 as ORT Cast does', async () => {
    const graph = new GraphBuilder('cast_to_half');
    graph.input('x', 'float32', ['n']);
    graph.output('y', 'float16', ['n']);
    graph.emit('x', 'y', 'float16');
    const path = join(dir, 'cast-to-half.onnx');
    await writeFile(path, graph.serialize().model);
    const model = new OnnxModel(path);

    // The model returns float16, which OnnxModel widens with float16Value: compare through the same decoder.
    const { y } = await model.run({ x: { data: values, shape: [values.length] } });
    const expected = fromFloat16Bits(toFloat16Bits(values));
    expect(Array.from(y.data)).toEqual(Array.from(expected));
    await model.release();
  });

  it('widens float16 to float32 as ORT Cast does', async () => {
    const graph = new GraphBuilder('cast_to_float');
    graph.input('x', 'float16', ['n']);
    graph.output('y', 'float32', ['n']);
    graph.emit(graph.asFloat('x', 'float16'), 'y');
    const path = join(dir, 'cast-to-float.onnx');
    await writeFile(path, graph.serialize().model);
    const model = new OnnxModel(path);

    const { y } = await model.run({ x: { data: values, shape: [values.length] } });
    expect(Array.from(y.data)).toEqual(Array.from(fromFloat16Bits(toFloat16Bits(values))));
    await model.release();
  });
});
