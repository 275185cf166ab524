/** An element passes when `|actual - expected| ≤ atol + rtol·|expected|` (numpy's `isclose`, as the README states). */
export interface Tolerance {
  atol: number;
  rtol: number;
}

export const EXACT: Tolerance = { atol: 0, rtol: 0 };

export interface Comparison {
  ok: boolean;
  /** Largest `|actual - expected|`; `Infinity` when the lengths differ or a value is non-finite where the other is not. */
  maxAbsDiff: number;
  /**
   * The element furthest beyond its bound (or closest to it when all pass); -1 when there are no elements; on a length
   * mismatch, the shorter length (the first index only one side has).
   */
  worstIndex: number;
  /** How many elements are outside their bound. */
  failures: number;
  actualLength: number;
  expectedLength: number;
}

function absDiff(actual: number, expected: number): number {
  // Equal non-finite values (same-signed infinities, NaN against NaN) match; any other non-finite pairing is a miss.
  if (Number.isNaN(actual) && Number.isNaN(expected)) return 0;
  if (actual === expected) return 0;
  const diff = Math.abs(actual - expected);
  return Number.isNaN(diff) ? Infinity : diff;
}

export function compareArrays(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: Tolerance): Comparison {
  const length = Math.min(actual.length, expected.length);
  const sameLength = actual.length === expected.length;
  let maxAbsDiff = sameLength ? 0 : Infinity;
  let worstIndex = sameLength ? -1 : length;
  let worstExcess = -Infinity;
  let failures = sameLength ? 0 : 1;
  for (let i = 0; i < length; i++) {
    const diff = absDiff(actual[i], expected[i]);
    // A bound grown infinite by a non-finite reference must not admit an infinite difference.
    const excess = diff === Infinity ? Infinity : diff - (tolerance.atol + tolerance.rtol * Math.abs(expected[i]));
    if (excess > 0) failures++;
    if (diff > maxAbsDiff) maxAbsDiff = diff;
    if (sameLength && excess > worstExcess) {
      worstExcess = excess;
      worstIndex = i;
    }
  }
  return { ok: failures === 0, maxAbsDiff, worstIndex, failures, actualLength: actual.length, expectedLength: expected.length };
}

/** One line saying where and how `actual` missed `expected`, for a report's detail column. */
export function describeMismatch(
  label: string,
  comparison: Comparison,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
): string {
  if (comparison.actualLength !== comparison.expectedLength) {
    return `${label}: ${comparison.actualLength} values, want ${comparison.expectedLength}`;
  }
  const i = comparison.worstIndex;
  const where = comparison.expectedLength === 1 ? label : `${label}[${i}]`;
  const count = comparison.expectedLength === 1 ? '' : ` (${comparison.failures} of ${comparison.expectedLength} off)`;
  return `${where} = ${actual[i]}, want ${expected[i]}${count}`;
}

/** One named comparison of a case. */
export interface Check {
  label: string;
  actual: ArrayLike<number>;
  expected: ArrayLike<number>;
  tolerance: Tolerance;
}

export interface CheckOutcome {
  ok: boolean;
  /** Over all checks; `null` when a length mismatch or a non-finite value makes it meaningless. */
  maxAbsDiff: number | null;
  detail: string;
}

const MISSES_SHOWN = 3;

/** Runs a case's checks; the detail names the first misses, or says `passDetail` when there are none. */
export function runChecks(checks: readonly Check[], passDetail: string): CheckOutcome {
  let maxAbsDiff = 0;
  const misses: string[] = [];
  for (const check of checks) {
    const comparison = compareArrays(check.actual, check.expected, check.tolerance);
    maxAbsDiff = Math.max(maxAbsDiff, comparison.maxAbsDiff);
    if (!comparison.ok) misses.push(describeMismatch(check.label, comparison, check.actual, check.expected));
  }
  const shown = misses.slice(0, MISSES_SHOWN);
  if (misses.length > MISSES_SHOWN) shown.push(`… ${misses.length - MISSES_SHOWN} more checks off`);
  return {
    ok: misses.length === 0,
    maxAbsDiff: Number.isFinite(maxAbsDiff) ? maxAbsDiff : null,
    detail: misses.length === 0 ? passDetail : shown.join('; '),
  };
}
