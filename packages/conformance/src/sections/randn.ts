import { Generator, randn } from '@diff/core';
import { EXACT, runChecks, type Check } from '../compare.js';
import { toSeed, type RandnDraw, type RandnRef } from '../refs.js';
import { settleCase, type CaseOutcome, type CaseResult } from '../report.js';

// The reference gives only a sum for the middle of large draws; it was summed in double, so only the order of
// summation separates a bit-exact draw from it.
const SUM_RTOL = 1e-10;

function drawChecks(label: string, actual: Float32Array | Float64Array, expected: RandnDraw): Check[] {
  if (expected.data) return [{ label, actual, expected: expected.data, tolerance: EXACT }];
  const head = expected.head ?? [];
  const tail = expected.tail ?? [];
  const checks: Check[] = [
    { label: `${label}.head`, actual: actual.subarray(0, head.length), expected: head, tolerance: EXACT },
    { label: `${label}.tail`, actual: actual.subarray(actual.length - tail.length), expected: tail, tolerance: EXACT },
  ];
  if (expected.sum !== undefined) {
    let sum = 0;
    let absSum = 0;
    for (const value of actual) {
      sum += value;
      absSum += Math.abs(value);
    }
    checks.push({ label: `${label}.sum`, actual: [sum], expected: [expected.sum], tolerance: { atol: SUM_RTOL * absSum, rtol: 0 } });
  }
  return checks;
}

/** The first draw of an entry and its dtype: `first` (float32 unless it says otherwise) or `float64`. */
function firstDrawOf(entry: RandnRef): { draw: RandnDraw | undefined; dtype: 'float32' | 'float64' } {
  if (entry.first) return { draw: entry.first, dtype: entry.first.dtype ?? 'float32' };
  return { draw: entry.float64, dtype: entry.float64?.dtype ?? 'float64' };
}

function checkRandnCase(entry: RandnRef): CaseOutcome {
  const { draw: first, dtype } = firstDrawOf(entry);
  if (!first) throw new Error('the entry has neither "first" nor "float64"');
  const generator = new Generator().manualSeed(toSeed(entry.seed));
  const firstDraw = randn(first.shape ?? entry.shape, { generator, dtype });
  const then5Draw = randn(entry.then5.shape ?? [5], { generator, dtype: entry.then5.dtype ?? 'float32' });
  return runChecks(
    [...drawChecks('first', firstDraw.data, first), ...drawChecks('then5', then5Draw.data, entry.then5)],
    `bit-exact: ${firstDraw.size} + ${then5Draw.size} values`,
  );
}

function caseId(entry: RandnRef): string {
  return `seed ${entry.seed} [${(entry.shape ?? []).join(',')}] ${firstDrawOf(entry).dtype}`;
}

export async function checkRandnSection(entries: readonly RandnRef[]): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  for (const entry of entries) results.push(await settleCase('randn', caseId(entry), () => checkRandnCase(entry)));
  return results;
}
