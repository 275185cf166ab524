import { EXACT, compareArrays, describeMismatch, runChecks } from './compare.js';

describe('compareArrays', () => {
  it('passes equal arrays exactly, with a zero difference', () => {
    const result = compareArrays(new Float32Array([1.5, -2, 0]), [1.5, -2, -0], EXACT);
    expect(result).toMatchObject({ ok: true, maxAbsDiff: 0, failures: 0 });
  });

  it('applies abs ≤ atol + rtol·|ref| per element', () => {
    const tolerance = { atol: 1e-4, rtol: 1e-2 };
    // bound at ref 10 is 0.1001, at ref 0 it is 1e-4
    expect(compareArrays([10.1], [10], tolerance).ok).toBe(true);
    expect(compareArrays([10.2], [10], tolerance).ok).toBe(false);
    expect(compareArrays([0.00009], [0], tolerance).ok).toBe(true);
    expect(compareArrays([0.00011], [0], tolerance).ok).toBe(false);
  });

  it('reports the max abs diff and the element furthest beyond its bound', () => {
    // index 0 has the larger difference but a large bound; index 2 is the one out of tolerance
    const result = compareArrays([100.5, 1, 0.01], [100, 1, 0], { atol: 1e-3, rtol: 1e-2 });
    expect(result.ok).toBe(false);
    expect(result.maxAbsDiff).toBeCloseTo(0.5);
    expect(result.worstIndex).toBe(2);
    expect(result.failures).toBe(1);
  });

  it('fails a length mismatch with an infinite difference', () => {
    const result = compareArrays([1, 2], [1, 2, 3], EXACT);
    expect(result).toMatchObject({ ok: false, maxAbsDiff: Infinity, worstIndex: 2, actualLength: 2, expectedLength: 3 });
  });

  it('matches equal non-finite values and misses the others', () => {
    expect(compareArrays([NaN, -Infinity], [NaN, -Infinity], EXACT).ok).toBe(true);
    expect(compareArrays([NaN], [0], { atol: 1, rtol: 1 })).toMatchObject({ ok: false, maxAbsDiff: Infinity });
    expect(compareArrays([Infinity], [-Infinity], { atol: 1, rtol: 1 }).ok).toBe(false);
  });

  it('handles empty arrays', () => {
    expect(compareArrays([], [], EXACT)).toMatchObject({ ok: true, maxAbsDiff: 0, worstIndex: -1 });
  });
});

describe('describeMismatch', () => {
  it('names the worst element and how many are off', () => {
    const actual = [1, 2.5, 3];
    const expected = [1, 2, 3];
    expect(describeMismatch('prev@3', compareArrays(actual, expected, EXACT), actual, expected)).toBe(
      'prev@3[1] = 2.5, want 2 (1 of 3 off)',
    );
  });

  it('shows a single value without an index and a length mismatch as counts', () => {
    expect(describeMismatch('sum', compareArrays([2], [1], EXACT), [2], [1])).toBe('sum = 2, want 1');
    expect(describeMismatch('ids', compareArrays([1], [1, 2], EXACT), [1], [1, 2])).toBe('ids: 1 values, want 2');
  });
});

describe('runChecks', () => {
  it('passes with the pass detail and the largest difference over all checks', () => {
    const outcome = runChecks(
      [
        { label: 'a', actual: [1.001], expected: [1], tolerance: { atol: 0.01, rtol: 0 } },
        { label: 'b', actual: [2.003], expected: [2], tolerance: { atol: 0.01, rtol: 0 } },
      ],
      'all good',
    );
    expect(outcome.ok).toBe(true);
    expect(outcome.detail).toBe('all good');
    expect(outcome.maxAbsDiff).toBeCloseTo(0.003);
  });

  it('lists the first misses and counts the rest', () => {
    const checks = [0, 1, 2, 3, 4].map((i) => ({ label: `c${i}`, actual: [1], expected: [0], tolerance: EXACT }));
    const outcome = runChecks(checks, 'unused');
    expect(outcome.ok).toBe(false);
    expect(outcome.detail).toBe('c0 = 1, want 0; c1 = 1, want 0; c2 = 1, want 0; … 2 more checks off');
  });

  it('gives no max abs diff when a length mismatch makes it infinite', () => {
    expect(runChecks([{ label: 'x', actual: [], expected: [1], tolerance: EXACT }], '').maxAbsDiff).toBeNull();
  });
});
