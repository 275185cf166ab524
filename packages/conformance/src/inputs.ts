import type { RawImage } from '@diff/core';

/**
 * Builds the input pictures the refs describe in words (`init_image`, `mask_image`, `control_image`), e.g.
 *   "gradient: r=x/63, g=y/63, b=0.5*(1-x/63)+0.5*y/63 over 64x64, as uint8 round(v*255)"
 *   "L mode 64x64: 255 where 8<=y<40 and 16<=x<48, else 0"
 *   "RGB 64x64: white (255) where (x-32)^2+(y-28)^2 <= 18^2, else black"
 *   "RGB 64x64: white (255) where |x-32| <= 14 and |y-30| <= 10, else black"
 * The formulas are read as arithmetic in x (column) and y (row).
 */
export function describedImage(description: string): RawImage {
  const gradient = /^gradient: r=(.+), g=(.+), b=(.+) over (\d+)x(\d+), as uint8 round\(v\*255\)$/.exec(description);
  if (gradient) {
    const [, red, green, blue, width, height] = gradient;
    const channels = [red, green, blue].map(formula);
    // numpy float32 arithmetic, then np.round (half to even) of v·255
    return render(Number(width), Number(height), 3, (x, y, c) => roundHalfEven(Math.fround(channels[c](x, y) * 255)));
  }
  const masked = /^(L mode|RGB) (\d+)x(\d+): (\w+)(?: \((\d+)\))? where (.+), else (\w+)$/.exec(description);
  if (masked) {
    const [, mode, width, height, inside, insideValue, condition, outside] = masked;
    const level = (word: string, value?: string) => (value !== undefined ? Number(value) : word === 'white' ? 255 : word === 'black' ? 0 : Number(word));
    const [on, off] = [level(inside, insideValue), level(outside)];
    const test = formula(condition);
    return render(Number(width), Number(height), mode === 'RGB' ? 3 : 1, (x, y) => (test(x, y) ? on : off));
  }
  throw new Error(`Unrecognised input picture description: ${description}`);
}

function render(width: number, height: number, channels: 1 | 3, value: (x: number, y: number, channel: number) => number): RawImage {
  const data = new Uint8Array(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) data[(y * width + x) * channels + c] = value(x, y, c);
    }
  }
  return { data, width, height, channels };
}

function roundHalfEven(value: number): number {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction !== 0.5) return Math.round(value);
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * Parses a formula in x (column) and y (row): numbers, + − · /, `^` powers, parentheses, `|…|` absolute values,
 * comparisons (chained as in Python: `8<=y<40`) and `and`. Arithmetic is rounded to float32 after every operation,
 * as numpy does on float32 arrays, so that pixel values that fall on .5 round as they did for the reference.
 */
function formula(text: string): (x: number, y: number) => number {
  const tokens = text.match(/\d+(?:\.\d+)?|[xy]|and|<=|>=|==|[-+*/^()<>|]/g) ?? [];
  if (tokens.join('') !== text.replace(/\s+/g, '')) throw new Error(`Unsupported formula in a picture description: ${text}`);
  type Node = (x: number, y: number) => number;
  let position = 0;
  const peek = () => tokens[position];
  const take = () => tokens[position++];
  const f32 = Math.fround;
  const arithmetic: Record<string, (a: number, b: number) => number> = {
    '+': (a, b) => f32(a + b),
    '-': (a, b) => f32(a - b),
    '*': (a, b) => f32(a * b),
    '/': (a, b) => f32(a / b),
    '^': (a, b) => f32(a ** b),
  };
  const compare: Record<string, (a: number, b: number) => boolean> = {
    '<': (a, b) => a < b, '<=': (a, b) => a <= b, '>': (a, b) => a > b, '>=': (a, b) => a >= b, '==': (a, b) => a === b,
  };
  const atom = (): Node => {
    const token = take();
    if (token === '(') {
      const inner = conjunction();
      if (take() !== ')') throw new Error(`Unbalanced parentheses in: ${text}`);
      return inner;
    }
    if (token === '|') {
      const inner = sum();
      if (take() !== '|') throw new Error(`Unbalanced |…| in: ${text}`);
      return (x, y) => Math.abs(inner(x, y));
    }
    if (token === '-') {
      const operand = atom();
      return (x, y) => -operand(x, y);
    }
    if (token === 'x') return (x) => x;
    if (token === 'y') return (_x, y) => y;
    if (token !== undefined && /^\d/.test(token)) {
      const value = Number(token);
      return () => value;
    }
    throw new Error(`Unexpected "${token ?? 'end'}" in: ${text}`);
  };
  const binary = (next: () => Node, operators: string[]) => (): Node => {
    let left = next();
    while (operators.includes(peek())) {
      const apply = arithmetic[take()];
      const [l, r] = [left, next()];
      left = (x, y) => apply(l(x, y), r(x, y));
    }
    return left;
  };
  const power: () => Node = () => {
    const base = atom();
    if (peek() !== '^') return base;
    take();
    const exponent = power();
    return (x, y) => arithmetic['^'](base(x, y), exponent(x, y));
  };
  const product = binary(power, ['*', '/']);
  const sum = binary(product, ['+', '-']);
  const comparison = (): Node => {
    const operands = [sum()];
    const operators: string[] = [];
    while (peek() in compare) {
      operators.push(take());
      operands.push(sum());
    }
    if (operators.length === 0) return operands[0];
    return (x, y) => Number(operators.every((op, i) => compare[op](operands[i](x, y), operands[i + 1](x, y))));
  };
  const conjunction = (): Node => {
    const parts = [comparison()];
    while (peek() === 'and') {
      take();
      parts.push(comparison());
    }
    return parts.length === 1 ? parts[0] : (x, y) => Number(parts.every((part) => part(x, y)));
  };
  const root = conjunction();
  if (position !== tokens.length) throw new Error(`Unexpected "${peek()}" in: ${text}`);
  return root;
}
