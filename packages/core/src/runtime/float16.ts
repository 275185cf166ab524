// IEEE 754 binary16 <-> binary32 bit conversions. Node 20 has no Float16Array, so ONNX Runtime exchanges float16
// tensors as Uint16Array bit patterns.

const scratchFloat = new Float32Array(1);
const scratchBits = new Uint32Array(scratchFloat.buffer);

/** The float16 bit pattern nearest to `value` (round to nearest, ties to even; overflow gives ±Infinity). */
export function float16Bits(value: number): number {
  scratchFloat[0] = value;
  const bits = scratchBits[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;

  if (exponent === 0xff) return mantissa === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mantissa >>> 13);
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    // Subnormal result: the value in units of 2^-24, rounded. Below half the smallest subnormal it is ±0.
    if (halfExponent < -10) return sign;
    const shift = 14 - halfExponent;
    const significand = mantissa | 0x800000;
    const truncated = significand >>> shift;
    const remainder = significand & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    const roundUp = remainder > halfway || (remainder === halfway && (truncated & 1) === 1);
    return sign | (truncated + (roundUp ? 1 : 0));
  }
  const truncated = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  // A carry out of the mantissa bumps the exponent, which is exactly right (up to Infinity).
  const roundUp = remainder > 0x1000 || (remainder === 0x1000 && (truncated & 1) === 1);
  return sign | (truncated + (roundUp ? 1 : 0));
}

/** The value of a float16 bit pattern. */
export function float16Value(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  return sign * (1024 + mantissa) * 2 ** (exponent - 25);
}

/** (127 - 15) << 23: float32's exponent bias minus float16's, in place. */
const EXPONENT_REBIAS = 0x38000000;
/** |x| of float32 bits from 2^-14 (float16's smallest normal) up to 65520 (which rounds to Infinity). */
const NORMAL_LOW = 0x38800000;
const NORMAL_HIGH = 0x477ff000;

/**
 * `float16Bits` of every value (each first rounded to float32, as there). Runs once per model call on every float16
 * input — a UNet step's latents and prompt embeddings — so values with a normal float16 result, nearly all, are
 * converted inline on the float32 bits; the rest go through `float16Bits`.
 */
export function toFloat16Bits(values: ArrayLike<number>): Uint16Array {
  const floats = values instanceof Float32Array ? values : Float32Array.from(values);
  const words = new Uint32Array(floats.buffer, floats.byteOffset, floats.length);
  const out = new Uint16Array(floats.length);
  for (let i = 0; i < words.length; i++) {
    const word = words[i];
    const magnitude = word & 0x7fffffff;
    if (magnitude >= NORMAL_LOW && magnitude < NORMAL_HIGH) {
      // Drop 13 mantissa bits, rounding to nearest, ties to even; a carry bumps the exponent, which is right.
      const rounded = magnitude - EXPONENT_REBIAS + 0xfff + ((magnitude >>> 13) & 1);
      out[i] = ((word >>> 16) & 0x8000) | (rounded >>> 13);
    } else {
      out[i] = float16Bits(floats[i]);
    }
  }
  return out;
}

/** Every float16 value as float32, by bit pattern: built on first use (256 KiB). */
let float16Table: Float32Array | undefined;

/** `float16Value` of every bit pattern: a table lookup, since it runs once per model call on every float16 output. */
export function fromFloat16Bits(bits: Uint16Array): Float32Array {
  float16Table ??= Float32Array.from({ length: 0x10000 }, (_, pattern) => float16Value(pattern));
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = float16Table[bits[i]];
  return out;
}
