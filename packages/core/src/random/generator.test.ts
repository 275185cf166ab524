import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError } from '../errors.js';
import { fmaFloat32 } from './cephes.js';
import { Generator, defaultGenerator, rand, randn } from './generator.js';
import { logDouble, sinCosDouble } from './libm.js';
import { readSharedRefs } from '../__fixtures__/shared-conformance.js';

interface Case {
  seed: string;
  shape: number[];
  dtype: 'float32' | 'float64';
  head: number[];
  tail?: number[];
  then5?: number[];
}
interface Fixture {
  randn: Case[];
  rand: Case[];
  sequence: { seed: string; calls: (Omit<Case, 'seed' | 'head'> & { op: 'randn' | 'rand'; data: number[] })[] };
}

const fixture = JSON.parse(
  readFileSync(fileURLToPath(new URL('./__fixtures__/torch-cpu-random.json', import.meta.url)), 'utf8'),
) as Fixture;

/** The reference values as the dtype stores them, so toEqual compares bit for bit. */
function stored(values: readonly number[], dtype: 'float32' | 'float64'): Float32Array | Float64Array {
  return dtype === 'float32' ? Float32Array.from(values) : Float64Array.from(values);
}

function seeded(seed: number | bigint | string): Generator {
  return new Generator().manualSeed(typeof seed === 'string' ? BigInt(seed) : seed);
}

function expectMatches(data: Float32Array | Float64Array, expected: Case): void {
  expect(data.subarray(0, expected.head.length)).toEqual(stored(expected.head, expected.dtype));
  if (expected.tail) expect(data.subarray(data.length - expected.tail.length)).toEqual(stored(expected.tail, expected.dtype));
}

describe('randn matches torch bit for bit', () => {
  it.each(fixture.randn.map((c) => [`seed ${c.seed} ${c.dtype} [${c.shape.join(', ')}]`, c] as const))('%s', (_, c) => {
    const generator = seeded(c.seed);
    const noise = randn(c.shape, { generator, dtype: c.dtype });
    expect(noise.shape).toEqual(c.shape);
    expect(noise.dtype).toBe(c.dtype);
    expectMatches(noise.data, c);
    if (c.then5) expect(randn([5], { generator }).data).toEqual(stored(c.then5, 'float32'));
  });

  it('depends on the element count only, not the shape', () => {
    expect(randn([3, 5], { generator: seeded(0) }).data).toEqual(randn([15], { generator: seeded(0) }).data);
    expect(randn([1, 4, 9, 7], { generator: seeded(1) }).data).toEqual(randn([252], { generator: seeded(1) }).data);
  });

  it('draws a single scalar normal for an empty shape and nothing for a zero-size one', () => {
    expect(randn([], { generator: seeded(0) }).data).toEqual(randn([1], { generator: seeded(0) }).data);
    const generator = seeded(0);
    expect(randn([2, 0], { generator }).size).toBe(0);
    expect(generator.getState()).toEqual(seeded(0).getState());
  });
});

describe('rand matches torch bit for bit', () => {
  it.each(fixture.rand.map((c) => [`seed ${c.seed} ${c.dtype}`, c] as const))('%s', (_, c) => {
    const uniforms = rand(c.shape, { generator: seeded(c.seed), dtype: c.dtype });
    expectMatches(uniforms.data, c);
    expect(uniforms.data.every((u) => u >= 0 && u < 1)).toBe(true);
  });
});

describe('Generator', () => {
  it('carries its state across calls like torch, cached normal included', () => {
    // torch: randn(3), randn(20), randn(1), rand(4), randn(3, float64), randn(2) from one generator.
    const generator = seeded(fixture.sequence.seed);
    for (const call of fixture.sequence.calls) {
      const draw = call.op === 'randn' ? randn : rand;
      expect(draw(call.shape, { generator, dtype: call.dtype }).data).toEqual(stored(call.data, call.dtype));
    }
  });

  it('hands out the cached r·sin θ as the next scalar normal, across vectorised draws, until manualSeed', () => {
    const pair = randn([2], { dtype: 'float64', generator: seeded(3) }).data;
    const generator = seeded(3);
    expect(randn([1], { generator, dtype: 'float64' }).data[0]).toBe(pair[0]);
    randn([32], { generator });
    rand([3], { generator });
    expect(generator.getState().cachedNormal).toBe(pair[1]);
    expect(randn([1], { generator, dtype: 'float64' }).data[0]).toBe(pair[1]);
    expect(generator.getState().cachedNormal).toBeNull();

    randn([1], { generator: generator.manualSeed(3) });
    expect(generator.getState().cachedNormal).not.toBeNull();
    expect(generator.manualSeed(3).getState().cachedNormal).toBeNull();
  });

  it('starts from torch default seed 67280421310721', () => {
    const generator = new Generator();
    expect(generator.initialSeed()).toBe(67280421310721n);
    expect(randn([20], { generator }).data).toEqual(randn([20], { generator: seeded(67280421310721) }).data);
  });

  it('takes number and bigint seeds alike, and uses the low 32 bits of seeds up to 2^64 - 1', () => {
    expect(randn([17], { generator: seeded(42) }).data).toEqual(randn([17], { generator: seeded(42n) }).data);
    const largest = seeded(2n ** 64n - 1n);
    expect(largest.initialSeed()).toBe(18446744073709551615n);
    expect(largest.getState().mt).toEqual(seeded(0xffffffff).getState().mt);
    expect(randn([40], { generator: largest }).data).toEqual(randn([40], { generator: seeded(0xffffffff) }).data);
    expect(seeded(2 ** 32 + 5).initialSeed()).toBe(4294967301n);
    expect(rand([9], { generator: seeded(2 ** 32 + 5) }).data).toEqual(rand([9], { generator: seeded(5) }).data);
  });

  it('replays from getState/setState, and snapshots are copies', () => {
    const generator = seeded(11);
    randn([1], { generator }); // leaves a cached normal
    randn([700], { generator }); // and a partly used MT state
    const draws = () => [randn([1], { generator }).data, randn([40], { generator }).data, rand([5], { generator }).data];
    const state = generator.getState();
    generator.getState().mt.fill(0); // a snapshot does not alias the generator
    const first = draws();
    generator.setState(state);
    state.mt.fill(0); // nor does the generator keep the snapshot it was given
    expect(draws()).toEqual(first);
    expect(new Generator().setState(seeded(99).getState()).initialSeed()).toBe(99n);
  });

  it('clones into an independent generator in the same state', () => {
    const generator = seeded(5);
    randn([3], { generator });
    const copy = generator.clone();
    const fromCopy = randn([50], { generator: copy }).data;
    randn([10], { generator: copy });
    expect(randn([50], { generator }).data).toEqual(fromCopy);
    expect(copy.initialSeed()).toBe(5n);
  });

  it('is the default generator of randn and rand', () => {
    const expected = defaultGenerator.clone();
    expect(randn([20]).data).toEqual(randn([20], { generator: expected }).data);
    expect(rand([3], { dtype: 'float64' }).data).toEqual(rand([3], { generator: expected, dtype: 'float64' }).data);
  });
});

describe('errors', () => {
  it.each([-1, 1.5, Number.NaN, Infinity, 2 ** 64, -1n, 2n ** 64n, '5'])('rejects the seed %p', (seed) => {
    expect(() => new Generator().manualSeed(seed as number)).toThrow(InvalidArgumentError);
    expect(() => new Generator().manualSeed(seed as number)).toThrow(/integer in \[0, 2\^64 - 1\]/);
  });

  it('rejects bad shapes, dtypes and generators', () => {
    expect(() => randn([2, -1])).toThrow(/randn\(\) shape must be an array of non-negative integers, got \[2, -1\]/);
    expect(() => rand([1.5])).toThrow(InvalidArgumentError);
    expect(() => randn(4 as unknown as number[])).toThrow(InvalidArgumentError);
    expect(() => randn([2], { dtype: 'float16' as 'float32' })).toThrow(/'float32' or 'float64', got float16/);
    expect(() => rand([2], { generator: {} as Generator })).toThrow(/must be a Generator/);
  });

  it('rejects states that did not come from getState', () => {
    const state = seeded(1).getState();
    expect(() => new Generator().setState({ ...state, mt: new Uint32Array(3) })).toThrow(InvalidArgumentError);
    expect(() => new Generator().setState({ ...state, index: 625 })).toThrow(/index: integer in \[0, 624\]/);
    expect(() => new Generator().setState(null as unknown as typeof state)).toThrow(InvalidArgumentError);
  });
});

describe('float math helpers', () => {
  it('fmaFloat32 rounds a·b + c once, even where the double sum lands on a float32 midpoint', () => {
    // a·b + c = 1 + 2^-23 + 2^-24 - 2^-60: the double sum rounds to the midpoint 1 + 3·2^-24, which ties to even.
    const a = 2 ** -12 * (1 + 2 ** -18);
    const b = 2 ** -12 * (1 - 2 ** -18);
    expect(Math.fround(a * b + (1 + 2 ** -23))).toBe(1 + 2 ** -22);
    expect(fmaFloat32(a, b, 1 + 2 ** -23)).toBe(1 + 2 ** -23);
    expect(fmaFloat32(-a, b, -(1 + 2 ** -23))).toBe(-(1 + 2 ** -23));
    expect(fmaFloat32(1.5, 2.5, 0.25)).toBe(4);
  });

  it('logDouble, sinCosDouble round correctly where V8 does not', () => {
    // Correctly rounded values (checked with mpmath) that glibc returns and Math.cos / Math.sin / Math.log miss.
    const sinCos = new Float64Array(2);
    sinCosDouble(3.6526727257972182, sinCos);
    expect(sinCos[1]).toBe(-0.8722167320190003);
    sinCosDouble(5.4254454431849926, sinCos);
    expect(sinCos[0]).toBe(-0.7563660311271699);
    expect(logDouble(0.19174396244571879)).toBe(-1.651594325823868);
    expect(logDouble(0.3609316839530121)).toBe(-1.0190665796850078);
    expect(logDouble(1)).toBe(0);
    expect(logDouble(2 ** -53)).toBe(-36.7368005696771);
  });
});

// The full conformance references, where this checkout has them (CI may not).
const sharedRefs = readSharedRefs<{ randn: Reference[] }>();
interface Reference {
  seed: number;
  shape: number[];
  first: { data?: number[]; head?: number[]; tail?: number[] };
  then5: { data: number[] };
}
(sharedRefs ? describe : describe.skip)('shared/conformance/refs.json randn', () => {
  it('matches every case bit for bit', () => {
    for (const reference of sharedRefs!.randn) {
      const generator = seeded(reference.seed);
      const noise = randn(reference.shape, { generator }).data;
      const { data, head = data ?? [], tail = [] } = reference.first;
      expectMatches(noise, { seed: String(reference.seed), shape: reference.shape, dtype: 'float32', head, tail });
      expect(randn([5], { generator }).data).toEqual(stored(reference.then5.data, 'float32'));
    }
    expect(sharedRefs!.randn.length).toBeGreaterThanOrEqual(27);
  });
});
