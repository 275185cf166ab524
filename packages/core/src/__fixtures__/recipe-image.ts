import type { RawImage } from '../image-types.js';

// refs.json's picture recipes. The forms it uses:
//   "RGB WxH: r = EXPR; g = EXPR; b = EXPR"               one expression per channel
//   "RGB WxH: white (255) where COND, else black"         also "L mode WxH: 255 where COND, else 0"
// Expressions are Python's over the pixel's column x and row y: numbers, + - * / // %, ** and ^ (power, as the
// recipes write (x-32)^2), |…| (absolute value), round() (half to even), abs/min/max, chained comparisons,
// and/or/not, `A if C else B`, and the postfix `even` / `odd`. Anything else throws, so a new form fails loudly.

type PixelFn = (x: number, y: number) => number;

const TOKEN = /\s*(\d+(?:\.\d*)?|\.\d+|[A-Za-z_]\w*|\/\/|\*\*|<=|>=|==|!=|[-+*/%^()<>|,])/y;
const COMPARISONS: Record<string, (a: number, b: number) => boolean> = {
  '<': (a, b) => a < b,
  '<=': (a, b) => a <= b,
  '>': (a, b) => a > b,
  '>=': (a, b) => a >= b,
  '==': (a, b) => a === b,
  '!=': (a, b) => a !== b,
};

/** Python's round(): halves go to the even neighbour. */
function roundHalfEven(value: number): number {
  const floor = Math.floor(value);
  const fraction = value - floor;
  return fraction > 0.5 || (fraction === 0.5 && floor % 2 !== 0) ? floor + 1 : floor;
}

const FUNCTIONS: Record<string, (...args: number[]) => number> = {
  round: (v) => roundHalfEven(v),
  abs: Math.abs,
  min: Math.min,
  max: Math.max,
};

function tokenize(text: string): string[] {
  const tokens: string[] = [];
  TOKEN.lastIndex = 0;
  while (TOKEN.lastIndex < text.length) {
    if (/^\s*$/.test(text.slice(TOKEN.lastIndex))) break;
    const start = TOKEN.lastIndex;
    const match = TOKEN.exec(text);
    if (!match) throw new Error(`Cannot read the recipe expression "${text}" at "${text.slice(start)}".`);
    tokens.push(match[1]);
  }
  return tokens;
}

/** A recursive-descent parser over Python's precedence levels, giving a function of (x, y). */
function compileExpression(text: string): PixelFn {
  const tokens = tokenize(text);
  let at = 0;
  const peek = () => tokens[at];
  const take = (expected?: string) => {
    const token = tokens[at++];
    if (token === undefined || (expected !== undefined && token !== expected)) {
      throw new Error(`Recipe expression "${text}": expected ${expected ?? 'more'}, got ${token ?? 'the end'}.`);
    }
    return token;
  };
  const bool = (value: boolean) => (value ? 1 : 0);

  const conditional = (): PixelFn => {
    const then = or();
    if (peek() !== 'if') return then;
    take('if');
    const condition = or();
    take('else');
    const otherwise = conditional();
    return (x, y) => (condition(x, y) ? then(x, y) : otherwise(x, y));
  };
  const or = (): PixelFn => {
    let left = and();
    while (peek() === 'or') {
      take();
      const [a, b] = [left, and()];
      left = (x, y) => a(x, y) || b(x, y);
    }
    return left;
  };
  const and = (): PixelFn => {
    let left = not();
    while (peek() === 'and') {
      take();
      const [a, b] = [left, not()];
      left = (x, y) => a(x, y) && b(x, y);
    }
    return left;
  };
  const not = (): PixelFn => {
    if (peek() !== 'not') return comparison();
    take();
    const operand = not();
    return (x, y) => bool(!operand(x, y));
  };
  const comparison = (): PixelFn => {
    const first = sum();
    if (peek() === 'even' || peek() === 'odd') {
      const remainder = take() === 'even' ? 0 : 1;
      return (x, y) => bool(((first(x, y) % 2) + 2) % 2 === remainder);
    }
    // Python chains comparisons: a < b < c is a < b and b < c.
    const operands = [first];
    const operators: ((a: number, b: number) => boolean)[] = [];
    while (peek() in COMPARISONS) {
      operators.push(COMPARISONS[take()]);
      operands.push(sum());
    }
    if (operators.length === 0) return first;
    return (x, y) => {
      let left = operands[0](x, y);
      for (let k = 0; k < operators.length; k++) {
        const right = operands[k + 1](x, y);
        if (!operators[k](left, right)) return 0;
        left = right;
      }
      return 1;
    };
  };
  const binaryLevel = (next: () => PixelFn, operators: Record<string, (a: number, b: number) => number>) => (): PixelFn => {
    let left = next();
    while (peek() in operators) {
      const operate = operators[take()];
      const [a, b] = [left, next()];
      left = (x, y) => operate(a(x, y), b(x, y));
    }
    return left;
  };
  const power = (): PixelFn => {
    const base = primary();
    if (peek() !== '**' && peek() !== '^') return base;
    take();
    const exponent = unary();
    return (x, y) => base(x, y) ** exponent(x, y);
  };
  const unary = (): PixelFn => {
    if (peek() === '-' || peek() === '+') {
      const sign = take() === '-' ? -1 : 1;
      const operand = unary();
      return (x, y) => sign * operand(x, y);
    }
    return power();
  };
  const product = binaryLevel(unary, {
    '*': (a, b) => a * b,
    '/': (a, b) => a / b,
    '//': (a, b) => Math.floor(a / b),
    '%': (a, b) => a - b * Math.floor(a / b),
  });
  const sum = binaryLevel(product, { '+': (a, b) => a + b, '-': (a, b) => a - b });
  const primary = (): PixelFn => {
    const token = take();
    if (token === '(') {
      const inner = conditional();
      take(')');
      return inner;
    }
    if (token === '|') {
      const inner = sum();
      take('|');
      return (x, y) => Math.abs(inner(x, y));
    }
    if (/^[\d.]/.test(token)) {
      const value = Number(token);
      return () => value;
    }
    if (token === 'x') return (x) => x;
    if (token === 'y') return (_x, y) => y;
    const fn = FUNCTIONS[token];
    if (!fn) throw new Error(`Recipe expression "${text}": unknown name ${token}.`);
    take('(');
    const args = [conditional()];
    while (peek() === ',') {
      take();
      args.push(conditional());
    }
    take(')');
    return (x, y) => fn(...args.map((arg) => arg(x, y)));
  };

  const result = conditional();
  if (at !== tokens.length) throw new Error(`Recipe expression "${text}": unexpected ${tokens[at]}.`);
  return result;
}

/** A recipe value: "white (255)", "white", "black" or an expression. */
function compileValue(text: string): PixelFn {
  const named = /^(white|black)(?:\s*\((\d+)\))?$/.exec(text.trim());
  if (named) {
    const value = named[2] !== undefined ? Number(named[2]) : named[1] === 'white' ? 255 : 0;
    return () => value;
  }
  return compileExpression(text);
}

/** The picture a refs.json recipe describes, as 8-bit pixels. */
export function buildRecipeImage(recipe: string): RawImage {
  const header = /^(RGB|L mode|L)\s+(\d+)x(\d+):\s*(.+)$/s.exec(recipe.trim());
  if (!header) throw new Error(`Unknown picture recipe form: "${recipe}".`);
  const channels = header[1] === 'RGB' ? 3 : 1;
  const [width, height] = [Number(header[2]), Number(header[3])];
  const body = header[4].trim();

  let channelFns: PixelFn[];
  const rule = /^(.+?)\s+where\s+(.+?),\s*else\s+(.+)$/s.exec(body);
  if (rule) {
    const [inside, condition, outside] = [compileValue(rule[1]), compileExpression(rule[2]), compileValue(rule[3])];
    const fn: PixelFn = (x, y) => (condition(x, y) ? inside(x, y) : outside(x, y));
    channelFns = Array.from({ length: channels }, () => fn);
  } else if (channels === 3) {
    const assignments = new Map(
      body.split(';').map((part) => {
        const assignment = /^\s*([rgb])\s*=\s*(.+?)\s*$/s.exec(part);
        if (!assignment) throw new Error(`Recipe "${recipe}": expected "r = …; g = …; b = …", got "${part}".`);
        return [assignment[1], compileExpression(assignment[2])] as const;
      }),
    );
    channelFns = ['r', 'g', 'b'].map((name) => {
      const fn = assignments.get(name);
      if (!fn) throw new Error(`Recipe "${recipe}" gives no ${name} channel.`);
      return fn;
    });
  } else {
    channelFns = [compileExpression(body)];
  }

  const data = new Uint8Array(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      channelFns.forEach((fn, c) => {
        const value = fn(x, y);
        if (!Number.isInteger(value) || value < 0 || value > 255) {
          throw new Error(`Recipe "${recipe}" gives ${value} at x=${x}, y=${y}; pixels must be integers 0…255.`);
        }
        data[(y * width + x) * channels + c] = value;
      });
    }
  }
  return { data, width, height, channels: channels as 1 | 3 };
}
