/**
 * Seeded noise bit-exact with PyTorch's CPU generator (`torch.Generator("cpu")`, `torch.randn`, `torch.rand`), so a
 * seed gives the same latents here as in diffusers. Ported from aten/src/ATen/core/MT19937RNGEngine.h,
 * CPUGeneratorImpl.cpp, DistributionsHelper.h, TransformationHelper.h and native/cpu/DistributionTemplates.h.
 */
import { InvalidArgumentError } from '../errors.js';
import { Tensor, type FloatDType } from '../tensor.js';
import { logFloat32, sinCosFloat32 } from './cephes.js';
import { logDouble, sinCosDouble } from './libm.js';

/** torch's default_rng_seed_val: what a fresh `torch.Generator()` is seeded with. */
const DEFAULT_SEED = 67280421310721n;
const MAX_SEED = (1n << 64n) - 1n;

const STATE_WORDS = 624;
const SHIFT_WORDS = 397;
const MATRIX_A = 0x9908b0df;
const UPPER_BIT = 0x80000000;
const LOWER_BITS = 0x7fffffff;

const TWO_POW_MINUS_24 = 2 ** -24;
const TWO_POW_MINUS_53 = 2 ** -53;
const TWO_POW_32 = 2 ** 32;
const TWO_PI = 2 * Math.PI;
const TWO_PI_FLOAT32 = Math.fround(TWO_PI);
/** torch's vectorised normal kernel works on blocks of 16: 8 Box–Muller pairs (d[j], d[j + 8]). */
const BLOCK = 16;

/** A snapshot of a Generator; treat it as opaque and hand it back to `setState` to replay. */
export interface GeneratorState {
  readonly initialSeed: bigint;
  /** The 624 MT19937 state words. */
  readonly mt: Uint32Array;
  /** How many words of the current state have been used; 624 means the next draw twists first. */
  readonly index: number;
  /** The second normal of the last scalar Box–Muller pair (r·sin θ), waiting for the next scalar draw. */
  readonly cachedNormal: number | null;
}

export interface RandomOptions {
  generator?: Generator;
  dtype?: 'float32' | 'float64';
}

/** Scratch for the (sin, cos) pairs the math helpers write, so no draw allocates. */
const sinCos = new Float64Array(2);

/** MT19937 with torch's seeding, plus the cached normal that torch keeps in the generator. */
class TorchCpuEngine {
  readonly mt = new Uint32Array(STATE_WORDS);
  index = STATE_WORDS;
  cachedNormal: number | null = null;

  reseed(seed32: number): void {
    const mt = this.mt;
    mt[0] = seed32;
    for (let j = 1; j < STATE_WORDS; j++) {
      const previous = mt[j - 1];
      mt[j] = Math.imul(1812433253, previous ^ (previous >>> 30)) + j;
    }
    this.index = STATE_WORDS;
    this.cachedNormal = null;
  }

  nextUint32(): number {
    if (this.index === STATE_WORDS) this.twist();
    let y = this.mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** uniform_real_distribution<float>(0, 1): 24 random bits. */
  nextFloatUniform(): number {
    return (this.nextUint32() & 0xffffff) * TWO_POW_MINUS_24;
  }

  /** uniform_real_distribution<double>(0, 1): the low 53 bits of (first draw << 32 | second draw). */
  nextDoubleUniform(): number {
    const high = this.nextUint32() & 0x1fffff;
    const low = this.nextUint32();
    return (high * TWO_POW_32 + low) * TWO_POW_MINUS_53;
  }

  /** normal_distribution<double>: Box–Muller in double, caching r·sin θ for the next call. */
  nextScalarNormal(): number {
    if (this.cachedNormal !== null) {
      const cached = this.cachedNormal;
      this.cachedNormal = null;
      return cached;
    }
    const u1 = this.nextDoubleUniform();
    const u2 = this.nextDoubleUniform();
    // V8's log1p is fdlibm's, as is glibc's; sin and cos need correct rounding to agree with glibc.
    const radius = Math.sqrt(-2 * Math.log1p(-u2));
    sinCosDouble(TWO_PI * u1, sinCos);
    // torch applies x·std + mean (std 1, mean 0) to both values, which turns −0 into +0.
    this.cachedNormal = radius * sinCos[0] + 0;
    return radius * sinCos[1] + 0;
  }

  private twist(): void {
    const mt = this.mt;
    let k = 0;
    for (; k < STATE_WORDS - SHIFT_WORDS; k++) mt[k] = mt[k + SHIFT_WORDS] ^ mixed(mt[k], mt[k + 1]);
    for (; k < STATE_WORDS - 1; k++) mt[k] = mt[k + SHIFT_WORDS - STATE_WORDS] ^ mixed(mt[k], mt[k + 1]);
    mt[k] = mt[SHIFT_WORDS - 1] ^ mixed(mt[k], mt[0]);
    this.index = 0;
  }
}

function mixed(current: number, next: number): number {
  const y = (current & UPPER_BIT) | (next & LOWER_BITS);
  return (y >>> 1) ^ (next & 1 ? MATRIX_A : 0);
}

/** Gives randn/rand the engine of a Generator without making it part of the Generator's public surface. */
let engineOf: (generator: Generator) => TorchCpuEngine;

/** A CPU random generator that draws exactly what `torch.Generator("cpu")` draws. */
export class Generator {
  #initialSeed = DEFAULT_SEED;
  readonly #engine = new TorchCpuEngine();

  static {
    engineOf = (generator) => generator.#engine;
  }

  /** Seeded with torch's default seed 67280421310721, like `torch.Generator("cpu")`. */
  constructor() {
    this.manualSeed(DEFAULT_SEED);
  }

  /**
   * Seeds like `manual_seed`: any integer in [0, 2^64 - 1], of which MT19937 uses the low 32 bits (so 2^32 + 5 draws
   * what 5 draws, though `initialSeed` tells them apart). Drops the cached normal.
   */
  manualSeed(seed: number | bigint): this {
    this.#initialSeed = toSeed(seed);
    this.#engine.reseed(Number(this.#initialSeed & 0xffffffffn));
    return this;
  }

  initialSeed(): bigint {
    return this.#initialSeed;
  }

  getState(): GeneratorState {
    const { mt, index, cachedNormal } = this.#engine;
    return { initialSeed: this.#initialSeed, mt: mt.slice(), index, cachedNormal };
  }

  setState(state: GeneratorState): this {
    if (!isGeneratorState(state)) {
      throw new InvalidArgumentError(
        'setState() needs a state from getState(): { initialSeed: bigint in [0, 2^64 - 1], mt: Uint32Array of ' +
          `${STATE_WORDS} words, index: integer in [0, ${STATE_WORDS}], cachedNormal: finite number or null }.`,
      );
    }
    this.#initialSeed = state.initialSeed;
    this.#engine.mt.set(state.mt);
    this.#engine.index = state.index;
    this.#engine.cachedNormal = state.cachedNormal;
    return this;
  }

  /** An independent generator in the same state. */
  clone(): Generator {
    return new Generator().setState(this.getState());
  }
}

function isGeneratorState(state: unknown): state is GeneratorState {
  if (typeof state !== 'object' || state === null) return false;
  const { initialSeed, mt, index, cachedNormal } = state as Record<string, unknown>;
  return (
    typeof initialSeed === 'bigint' &&
    initialSeed >= 0n &&
    initialSeed <= MAX_SEED &&
    mt instanceof Uint32Array &&
    mt.length === STATE_WORDS &&
    typeof index === 'number' &&
    Number.isInteger(index) &&
    index >= 0 &&
    index <= STATE_WORDS &&
    (cachedNormal === null || Number.isFinite(cachedNormal))
  );
}

function toSeed(seed: number | bigint): bigint {
  if (typeof seed === 'number' && Number.isInteger(seed) && seed >= 0 && seed <= Number(MAX_SEED)) {
    // 2^64 itself rounds onto Number(MAX_SEED); the bigint check below rejects it.
    seed = BigInt(seed);
  }
  if (typeof seed !== 'bigint' || seed < 0n || seed > MAX_SEED) {
    throw new InvalidArgumentError(
      `Generator seed must be an integer in [0, 2^64 - 1] (a number or a bigint), got ${String(seed)}.`,
    );
  }
  return seed;
}

/**
 * The generator randn and rand use when none is given, like torch's default CPU generator (seed it with manualSeed,
 * as torch.manual_seed does). It starts from the default seed 67280421310721, where torch seeds its own at random.
 */
export const defaultGenerator = new Generator();

function resolveOptions(
  name: string,
  shape: readonly number[],
  options: RandomOptions | undefined,
): { engine: TorchCpuEngine; dtype: 'float32' | 'float64'; size: number } {
  if (!Array.isArray(shape) || !shape.every((dim) => Number.isInteger(dim) && dim >= 0)) {
    const given = Array.isArray(shape) ? `[${shape.join(', ')}]` : String(shape);
    throw new InvalidArgumentError(`${name}() shape must be an array of non-negative integers, got ${given}.`);
  }
  const { generator = defaultGenerator, dtype = 'float32' } = options ?? {};
  if (!(generator instanceof Generator)) {
    throw new InvalidArgumentError(`${name}() options.generator must be a Generator, got ${String(generator)}.`);
  }
  if (dtype !== 'float32' && dtype !== 'float64') {
    throw new InvalidArgumentError(`${name}() dtype must be 'float32' or 'float64', got ${String(dtype)}.`);
  }
  return { engine: engineOf(generator), dtype, size: shape.reduce((product, dim) => product * dim, 1) };
}

/**
 * torch.randn on the CPU. Tensors of 16 or more elements take torch's vectorised path (uniforms first, then Box–Muller
 * on blocks of 16, the last partial block redrawn); smaller ones draw scalar normals and share the cached one.
 * float32 matches torch bit for bit; float64 does wherever glibc's log, sin and cos round correctly (all but ~0.1 %).
 */
export function randn(shape: readonly number[], options: RandomOptions & { dtype: 'float64' }): Tensor<'float64'>;
export function randn(shape: readonly number[], options?: RandomOptions & { dtype?: 'float32' }): Tensor<'float32'>;
export function randn(shape: readonly number[], options?: RandomOptions): Tensor<FloatDType>;
export function randn(shape: readonly number[], options?: RandomOptions): Tensor<FloatDType> {
  const { engine, dtype, size } = resolveOptions('randn', shape, options);
  if (dtype === 'float64') {
    const data = new Float64Array(size);
    if (size >= BLOCK) fillNormalBlocks(data, () => engine.nextDoubleUniform(), boxMullerFloat64);
    else for (let i = 0; i < size; i++) data[i] = engine.nextScalarNormal();
    return new Tensor<'float64'>(data, shape);
  }
  const data = new Float32Array(size);
  if (size >= BLOCK) fillNormalBlocks(data, () => engine.nextFloatUniform(), boxMullerFloat32);
  else for (let i = 0; i < size; i++) data[i] = engine.nextScalarNormal();
  return new Tensor(data, shape);
}

/** torch.rand on the CPU: uniforms in [0, 1), 24 random bits for float32 and 53 for float64. */
export function rand(shape: readonly number[], options: RandomOptions & { dtype: 'float64' }): Tensor<'float64'>;
export function rand(shape: readonly number[], options?: RandomOptions & { dtype?: 'float32' }): Tensor<'float32'>;
export function rand(shape: readonly number[], options?: RandomOptions): Tensor<FloatDType>;
export function rand(shape: readonly number[], options?: RandomOptions): Tensor<FloatDType> {
  const { engine, dtype, size } = resolveOptions('rand', shape, options);
  if (dtype === 'float64') {
    const data = new Float64Array(size);
    for (let i = 0; i < size; i++) data[i] = engine.nextDoubleUniform();
    return new Tensor<'float64'>(data, shape);
  }
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = engine.nextFloatUniform();
  return new Tensor(data, shape);
}

/** normal_fill: all uniforms first, Box–Muller per block of 16, then the last partial block redrawn and redone. */
function fillNormalBlocks<Data extends Float32Array | Float64Array>(
  data: Data,
  nextUniform: () => number,
  boxMuller16: (data: Data, offset: number) => void,
): void {
  const size = data.length;
  for (let i = 0; i < size; i++) data[i] = nextUniform();
  for (let offset = 0; offset + BLOCK <= size; offset += BLOCK) boxMuller16(data, offset);
  if (size % BLOCK !== 0) {
    for (let i = size - BLOCK; i < size; i++) data[i] = nextUniform();
    boxMuller16(data, size - BLOCK);
  }
}

/** normal_fill_16_AVX2: u1 = 1 - d[j] (exact), u2 = d[j + 8], all in float32 with torch's Cephes log and sincos. */
function boxMullerFloat32(data: Float32Array, offset: number): void {
  for (let j = 0; j < BLOCK / 2; j++) {
    const u1 = 1 - data[offset + j];
    const u2 = data[offset + j + BLOCK / 2];
    const radius = Math.fround(Math.sqrt(-2 * logFloat32(u1))); // -2·log is exact in float32
    sinCosFloat32(Math.fround(TWO_PI_FLOAT32 * u2), sinCos);
    // The kernel ends with fmadd(n, std = 1, mean = 0), which turns −0 into +0; the store rounds the exact product.
    data[offset + j] = radius * sinCos[1] + 0;
    data[offset + j + BLOCK / 2] = radius * sinCos[0] + 0;
  }
}

/** normal_fill_16<double>: the same transform in double; correctly rounded log, sin and cos stand in for glibc's. */
function boxMullerFloat64(data: Float64Array, offset: number): void {
  for (let j = 0; j < BLOCK / 2; j++) {
    const u1 = 1 - data[offset + j];
    const u2 = data[offset + j + BLOCK / 2];
    const radius = Math.sqrt(-2 * logDouble(u1));
    sinCosDouble(TWO_PI * u2, sinCos);
    data[offset + j] = radius * sinCos[1] + 0;
    data[offset + j + BLOCK / 2] = radius * sinCos[0] + 0;
  }
}
