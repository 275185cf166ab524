/**
 * Double-precision log, sin and cos rounded correctly, for torch's float64 normals. torch calls glibc's libm, which
 * rounds these correctly for all but about 0.1 % of arguments; V8's Math.log, Math.sin and Math.cos (fdlibm) differ
 * from glibc for 3–7 % of them. Each value is computed in double-double arithmetic (about 100 bits) and rounded once.
 */

/** 2^27 + 1: the Veltkamp splitter that cuts a double into two 26-bit halves. */
const SPLITTER = 134217729;

// The double-double helpers leave their result here instead of allocating a pair.
let resultHigh = 0;
let resultLow = 0;

/** The rounding error of a·b (where p = fl(a·b)), exactly, by Dekker's product. */
function productError(a: number, b: number, p: number): number {
  let t = SPLITTER * a;
  const aHigh = t - (t - a);
  const aLow = a - aHigh;
  t = SPLITTER * b;
  const bHigh = t - (t - b);
  const bLow = b - bHigh;
  return aHigh * bHigh - p + aHigh * bLow + aLow * bHigh + aLow * bLow;
}

/** (aHigh + aLow) + (bHigh + bLow), accurate to about 2^-104 of the result even under cancellation. */
function add(aHigh: number, aLow: number, bHigh: number, bLow: number): void {
  let sum = aHigh + bHigh;
  let bVirtual = sum - aHigh;
  let error = aHigh - (sum - bVirtual) + (bHigh - bVirtual);
  let low = aLow + bLow;
  bVirtual = low - aLow;
  const lowError = aLow - (low - bVirtual) + (bLow - bVirtual);
  error += low;
  low = sum + error;
  error -= low - sum;
  sum = low;
  error += lowError;
  resultHigh = sum + error;
  resultLow = error - (resultHigh - sum);
}

function multiply(aHigh: number, aLow: number, bHigh: number, bLow: number): void {
  const product = aHigh * bHigh;
  const error = productError(aHigh, bHigh, product) + (aHigh * bLow + aLow * bHigh);
  resultHigh = product + error;
  resultLow = error - (resultHigh - product);
}

/**
 * Horner's rule over double-double coefficients (highs and lows, highest degree first), starting from `start`.
 * The multiply and add are written out with locals: this loop is where the time goes.
 */
function horner(zHigh: number, zLow: number, start: number, highs: Float64Array, lows: Float64Array): void {
  let t = SPLITTER * zHigh;
  const zSplitHigh = t - (t - zHigh);
  const zSplitLow = zHigh - zSplitHigh;
  let high = start;
  let low = 0;
  for (let k = 0; k < highs.length; k++) {
    // (high, low) · (zHigh, zLow)
    const product = high * zHigh;
    t = SPLITTER * high;
    const splitHigh = t - (t - high);
    const splitLow = high - splitHigh;
    const roundingError =
      splitHigh * zSplitHigh - product + splitHigh * zSplitLow + splitLow * zSplitHigh + splitLow * zSplitLow;
    const error = roundingError + (high * zLow + low * zHigh);
    const productHigh = product + error;
    const productLow = error - (productHigh - product);
    // + (highs[k], lows[k]); a Horner step of these series never cancels much.
    const sum = productHigh + highs[k];
    const virtual = sum - productHigh;
    const sumError = productHigh - (sum - virtual) + (highs[k] - virtual) + (productLow + lows[k]);
    high = sum + sumError;
    low = sumError - (high - sum);
  }
  resultHigh = high;
  resultLow = low;
}

/** Plain-double Horner for the tail terms, which lie below 2^-53 of the sum and need no extra precision. */
function hornerDouble(z: number, coefficients: readonly number[]): number {
  let y = 0;
  for (const coefficient of coefficients) y = y * z + coefficient;
  return y;
}

/** Double-double (highs, lows) of the ratios numerator / denominator of exact doubles. */
function doubleDoubleRatios(ratios: readonly (readonly [number, number])[]): [Float64Array, Float64Array] {
  const highs = new Float64Array(ratios.length);
  const lows = new Float64Array(ratios.length);
  ratios.forEach(([numerator, denominator], k) => {
    const quotient = numerator / denominator;
    const remainder = numerator - quotient * denominator - productError(quotient, denominator, quotient * denominator);
    highs[k] = quotient;
    lows[k] = remainder / denominator;
  });
  return [highs, lows];
}

function factorial(n: number): number {
  let product = 1;
  for (let k = 2; k <= n; k++) product *= k;
  return product;
}

const LN2_HIGH = 0.6931471805599453;
const LN2_LOW = 2.3190468138462996e-17;

// log m = 2s·Σ s^2k / (2k + 1), s = (m - 1) / (m + 1), |s| ≤ 0.172: terms k ≤ 10 in double-double, to k = 20 in all.
const [LOG_HIGHS, LOG_LOWS] = doubleDoubleRatios(Array.from({ length: 10 }, (_, i) => [1, 2 * (10 - i) + 1] as const));
const LOG_TAIL = Array.from({ length: 10 }, (_, i) => 1 / (2 * (20 - i) + 1));

const float64View = new Float64Array(1);
const wordsView = new Uint32Array(float64View.buffer);
const HIGH_WORD = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;

/** log x for a positive normal double, rounded correctly. */
export function logDouble(x: number): number {
  // x = 2^exponent · m with m in [√½, √2).
  float64View[0] = x;
  let exponent = (wordsView[HIGH_WORD] >>> 20) - 1023;
  wordsView[HIGH_WORD] = (wordsView[HIGH_WORD] & 0x800fffff) | 0x3ff00000;
  let m = float64View[0];
  if (m > Math.SQRT2) {
    m /= 2;
    exponent += 1;
  }
  // s = (m - 1) / (m + 1) in double-double; m - 1 is exact.
  const numerator = m - 1;
  const denominatorHigh = m + 1;
  const denominatorLow = m - (denominatorHigh - 1);
  const s = numerator / denominatorHigh;
  multiply(s, 0, denominatorHigh, denominatorLow);
  add(numerator, 0, -resultHigh, -resultLow);
  const sLow = resultHigh / denominatorHigh;

  multiply(s, sLow, s, sLow);
  const zHigh = resultHigh;
  const zLow = resultLow;
  horner(zHigh, zLow, hornerDouble(zHigh, LOG_TAIL), LOG_HIGHS, LOG_LOWS);
  multiply(resultHigh, resultLow, zHigh, zLow);
  add(resultHigh, resultLow, 1, 0);
  multiply(resultHigh, resultLow, 2 * s, 2 * sLow);
  const logMHigh = resultHigh;
  const logMLow = resultLow;

  const scaledHigh = exponent * LN2_HIGH;
  add(scaledHigh, productError(exponent, LN2_HIGH, scaledHigh) + exponent * LN2_LOW, logMHigh, logMLow);
  return resultHigh + resultLow;
}

// π/2 in 33-bit pieces (fdlibm's pio2_1, pio2_2, pio2_3 and the rest): k·piece is exact for |k| < 2^20.
const PI_OVER_2_PIECES = [
  1.5707963267341256, 6.077100506303966e-11, 2.0222662487111665e-21, 8.4784276603689e-32,
] as const;

// sin r = r·Σ (-r²)^k / (2k + 1)!, cos r = Σ (-r²)^k / (2k)!, |r| ≤ π/4: double-double while terms exceed 2^-53.
const [SIN_HIGHS, SIN_LOWS] = doubleDoubleRatios(
  Array.from({ length: 7 }, (_, i) => [(-1) ** (7 - i), factorial(2 * (7 - i) + 1)] as const),
);
const SIN_TAIL = Array.from({ length: 6 }, (_, i) => (-1) ** (13 - i) / factorial(2 * (13 - i) + 1));
const [COS_HIGHS, COS_LOWS] = doubleDoubleRatios(
  Array.from({ length: 8 }, (_, i) => [(-1) ** (8 - i), factorial(2 * (8 - i))] as const),
);
const COS_TAIL = Array.from({ length: 6 }, (_, i) => (-1) ** (14 - i) / factorial(2 * (14 - i)));

/** sin x and cos x, rounded correctly, for |x| < 2^19; writes them to out[0] and out[1]. */
export function sinCosDouble(x: number, out: Float64Array): void {
  // r = x - k·π/2 in double-double; the first subtraction is exact (Sterbenz).
  const quadrant = Math.round(x / (Math.PI / 2));
  add(x - quadrant * PI_OVER_2_PIECES[0], 0, -quadrant * PI_OVER_2_PIECES[1], 0);
  add(resultHigh, resultLow, -quadrant * PI_OVER_2_PIECES[2], -quadrant * PI_OVER_2_PIECES[3]);
  const rHigh = resultHigh;
  const rLow = resultLow;
  multiply(rHigh, rLow, rHigh, rLow);
  const zHigh = resultHigh;
  const zLow = resultLow;

  horner(zHigh, zLow, hornerDouble(zHigh, SIN_TAIL), SIN_HIGHS, SIN_LOWS);
  multiply(resultHigh, resultLow, zHigh, zLow);
  add(resultHigh, resultLow, 1, 0);
  multiply(resultHigh, resultLow, rHigh, rLow);
  const sinR = resultHigh + resultLow;

  horner(zHigh, zLow, hornerDouble(zHigh, COS_TAIL), COS_HIGHS, COS_LOWS);
  multiply(resultHigh, resultLow, zHigh, zLow);
  add(resultHigh, resultLow, 1, 0);
  const cosR = resultHigh + resultLow;

  switch (quadrant & 3) {
    case 0:
      out[0] = sinR;
      out[1] = cosR;
      break;
    case 1:
      out[0] = cosR;
      out[1] = -sinR;
      break;
    case 2:
      out[0] = -sinR;
      out[1] = -cosR;
      break;
    default:
      out[0] = -cosR;
      out[1] = sinR;
  }
}
