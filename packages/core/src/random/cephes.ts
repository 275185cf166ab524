/**
 * Float32 math exactly as PyTorch's AVX2 normal kernel computes it: the Cephes polynomials `log256_ps` and
 * `sincos256_ps` of aten/src/ATen/native/cpu/avx_mathfun.h, one lane at a time. Every step rounds to float32, and the
 * multiply-adds that GCC contracts into FMA instructions (torch is built with -mfma and fp-contract=fast) are fused
 * here too; without that about 1 % of the normals come out one ulp off.
 */

const f32 = Math.fround;

/** 2^28 + 1: the Veltkamp splitter that rounds a double to 53 - 28 = 25 significant bits. */
const SPLIT_TO_25_BITS = 268435457;

/**
 * Fused multiply-add in float32: a·b + c rounded once, for float32 inputs and a normal-range result.
 * a·b is exact in a double; the double sum may round, and rounding that sum again to float32 is wrong only when the
 * sum landed exactly on a midpoint between two floats while the exact value lies to one side of it.
 */
export function fmaFloat32(a: number, b: number, c: number): number {
  const product = a * b;
  const sum = product + c;
  const rounded = f32(sum);
  if (rounded === sum) return rounded;
  // A double that is not a float32 but has at most 25 significant bits is a midpoint.
  const scaled = sum * SPLIT_TO_25_BITS;
  if (scaled - (scaled - sum) !== sum) return rounded;
  // Two-sum: the exact error of product + c.
  const productPart = sum - c;
  const error = (product - productPart) + (c - (sum - productPart));
  if (error === 0) return rounded;
  const otherNeighbour = 2 * sum - rounded;
  return error > 0 ? Math.max(rounded, otherNeighbour) : Math.min(rounded, otherNeighbour);
}

const floatView = new Float32Array(1);
const bitsView = new Int32Array(floatView.buffer);

const EXPONENT_MASK = 0x7f800000;
const HALF_EXPONENT_BITS = 0x3f000000;
const SQRT_HALF = f32(Math.SQRT1_2);
const LOG_POLYNOMIAL = [
  7.0376836292e-2, -1.151461031e-1, 1.167699874e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
  2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1,
].map(f32);
const LOG_Q1 = f32(-2.1219444e-4);
const LOG_Q2 = f32(0.693359375);

/** `log256_ps` for one lane. The normal kernel only takes logs of 1 - u in (0, 1], so no NaN or denormal handling. */
export function logFloat32(x: number): number {
  floatView[0] = x;
  const bits = bitsView[0];
  let exponent = (bits >>> 23) - 126;
  // Keep the mantissa with the exponent of 0.5: m in [0.5, 1).
  bitsView[0] = (bits & ~EXPONENT_MASK) | HALF_EXPONENT_BITS;
  let m = floatView[0];
  if (m < SQRT_HALF) {
    exponent -= 1;
    m = m + m - 1; // exact
  } else {
    m = m - 1; // exact
  }
  const z = f32(m * m);
  let y = LOG_POLYNOMIAL[0];
  for (let k = 1; k < LOG_POLYNOMIAL.length; k++) y = fmaFloat32(y, m, LOG_POLYNOMIAL[k]);
  y = f32(y * m);
  // y·z + e·q1: GCC fuses the first product (it comes first); e·q1 is rounded on its own.
  y = fmaFloat32(y, z, f32(exponent * LOG_Q1));
  y = f32(y - z * 0.5); // z·0.5 is exact
  return f32(f32(m + y) + exponent * LOG_Q2); // e·q2 is exact: q2 has 9 significant bits, |e| < 32
}

const FOUR_OVER_PI = f32(1.27323954473516);
const MINUS_DP1 = f32(-0.78515625);
const MINUS_DP2 = f32(-2.4187564849853515625e-4);
const MINUS_DP3 = f32(-3.774894977445941e-8);
const SIN_P0 = f32(-1.9515295891e-4);
const SIN_P1 = f32(8.3321608736e-3);
const SIN_P2 = f32(-1.6666654611e-1);
const COS_P0 = f32(2.443315711809948e-5);
const COS_P1 = f32(-1.388731625493765e-3);
const COS_P2 = f32(4.166664568298827e-2);

/**
 * `sincos256_ps` for one lane, for 0 ≤ x < 8192 (the kernel passes 2π·u with u in [0, 1)).
 * Writes sin x to out[0] and cos x to out[1].
 */
export function sinCosFloat32(x: number, out: Float64Array): void {
  // Octant j, rounded up to even, then x reduced by j·π/4 in three parts ("extended precision modular arithmetic").
  const octant = (Math.trunc(f32(x * FOUR_OVER_PI)) + 1) & ~1;
  x = fmaFloat32(octant, MINUS_DP1, x);
  x = fmaFloat32(octant, MINUS_DP2, x);
  x = fmaFloat32(octant, MINUS_DP3, x);
  const z = f32(x * x);

  let cosPolynomial = fmaFloat32(COS_P0, z, COS_P1);
  cosPolynomial = fmaFloat32(cosPolynomial, z, COS_P2);
  cosPolynomial = f32(cosPolynomial * z);
  // y·z - z·0.5: GCC fuses y·z (it comes first); z·0.5 is exact.
  cosPolynomial = fmaFloat32(cosPolynomial, z, -z * 0.5);
  cosPolynomial = f32(cosPolynomial + 1);

  let sinPolynomial = fmaFloat32(SIN_P0, z, SIN_P1);
  sinPolynomial = fmaFloat32(sinPolynomial, z, SIN_P2);
  sinPolynomial = f32(sinPolynomial * z);
  sinPolynomial = fmaFloat32(sinPolynomial, x, x);

  const sinUsesSinPolynomial = (octant & 2) === 0;
  const sin = sinUsesSinPolynomial ? sinPolynomial : cosPolynomial;
  const cos = sinUsesSinPolynomial ? cosPolynomial : sinPolynomial;
  out[0] = (octant & 4) === 0 ? sin : -sin;
  out[1] = ((octant - 2) & 4) === 0 ? -cos : cos;
}
