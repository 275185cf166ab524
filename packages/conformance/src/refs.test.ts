import { RefsError, parseRefs, reviveNonFinite, toSeed } from './refs.js';

describe('parseRefs', () => {
  it('keeps seeds past 2^53 exact by reading them as strings', () => {
    const refs = parseRefs('{"randn": [{"seed": 18446744073709551615, "shape": [1]}, {"seed": 42, "shape": [1]}]}', 'x');
    expect(refs.randn?.[0].seed).toBe('18446744073709551615');
    expect(refs.randn?.[1].seed).toBe(42);
    expect(toSeed(refs.randn![0].seed)).toBe(18446744073709551615n);
  });

  it('rejects text that is not JSON or not an object', () => {
    expect(() => parseRefs('{"randn": [', 'refs.json')).toThrow(RefsError);
    expect(() => parseRefs('[1, 2]', 'refs.json')).toThrow(/does not hold a JSON object/);
  });
});

describe('toSeed', () => {
  it('passes numbers through and reads strings as bigint', () => {
    expect(toSeed(7)).toBe(7);
    expect(toSeed('7')).toBe(7n);
  });
});

describe('reviveNonFinite', () => {
  it('turns the strings Python wrote for non-finite numbers back into numbers, at any depth', () => {
    const config = { lambda_min_clipped: '-Infinity', nested: { values: ['Infinity', 'NaN', 1] }, name: 'linspace' };
    expect(reviveNonFinite(config)).toEqual({
      lambda_min_clipped: -Infinity,
      nested: { values: [Infinity, NaN, 1] },
      name: 'linspace',
    });
  });

  it('leaves other strings, including inherited property names, alone', () => {
    expect(reviveNonFinite({ a: 'constructor', b: 'toString', c: null })).toEqual({ a: 'constructor', b: 'toString', c: null });
  });
});
