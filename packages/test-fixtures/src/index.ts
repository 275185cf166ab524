/**
 * The pictures refs.json describes in words, one parser for every package's tests and the conformance runner.
 * The forms:
 *   "RGB WxH: r = EXPR; g = EXPR; b = EXPR"                          one expression per channel, 0…255
 *   "RGB WxH: white (255) where COND, else black"                    also "L mode WxH: 255 where COND, else 0"
 *   "L mode WxH: EXPR"                                               one expression for the single channel
 *   "gradient: r=EXPR, g=EXPR, b=EXPR over WxH, as uint8 round(v*255)"  values 0…1, in numpy float32 arithmetic
 * Expressions are Python's over the pixel's column x and row y: numbers, + - * / // %, ** and ^ (power, as the
 * recipes write (x-32)^2), |…| (absolute value), round() (half to even), abs/min/max, chained comparisons,
 * and/or/not, `A if C else B`, and the postfix `even` / `odd`. Anything else throws, so a new form fails loudly.
 */

export { describeWithRedis, OutputProcess, RedisServer, startRedisServer } from './redis.js';

/** 8-bit pixels, row-major, interleaved channels: structurally a `RawImage` of @diff/core. */
export interface RecipeImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 1 | 3;
}

/** A recipe this parser cannot read, or one that gives a value that is no 8-bit pixel. */
export class PictureRecipeError extends Error {
  override name = 'PictureRecipeError';
}

export interface ExpressionOptions {
  /**
   * Round every constant and every operation's result to float32, as numpy does on float32 arrays (refs.json's
   * gradient was computed so: halves that float64 would miss decide the rounding of some pixels). Default: float64.
   */
  float32?: boolean;
}

/** A compiled expression: its value at column x, row y. */
export type PixelFunction = (x: number, y: number) => number;

const TOKEN = /\s*(\d+(?:\.\d*)?|\.\d+|[A-Za-z_]\w*|\/\/|\*\*|<=|>=|==|!=|[-+*/%^()<>|,])/y;
const COMPARISONS: Record<string, (a: number, b: number) => boolean> = {
  '<': (a, b) => a < b,
  '<=': (a, b) => a <= b,
  '>': (a, b) => a > b,
  '>=': (a, b) => a >= b,
  '==': (a, b) => a === b,
  '!=': (a, b) => a !== b,
};

/** Python's round() and numpy's np.round: halves go to the even neighbour. */
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
    if (!match) throw new PictureRecipeError(`Cannot read the recipe expression "${text}" at "${text.slice(start)}".`);
    tokens.push(match[1]);
  }
  return tokens;
}

/** Compiles a Python expression over x and y (see the module comment) by recursive descent over Python's precedence. */
export function compileExpression(text: string, { float32 = false }: ExpressionOptions = {}): PixelFunction {
  const tokens = tokenize(text);
  // Every constant and every arithmetic result passes through here: float32 rounds it as numpy would.
  const number = float32 ? Math.fround : (value: number) => value;
  let at = 0;
  const peek = () => tokens[at];
  const take = (expected?: string) => {
    const token = tokens[at++];
    if (token === undefined || (expected !== undefined && token !== expected)) {
      throw new PictureRecipeError(`Recipe expression "${text}": expected ${expected ?? 'more'}, got ${token ?? 'the end'}.`);
    }
    return token;
  };
  const bool = (value: boolean) => (value ? 1 : 0);

  const conditional = (): PixelFunction => {
    const then = or();
    if (peek() !== 'if') return then;
    take('if');
    const condition = or();
    take('else');
    const otherwise = conditional();
    return (x, y) => (condition(x, y) ? then(x, y) : otherwise(x, y));
  };
  const or = (): PixelFunction => {
    let left = and();
    while (peek() === 'or') {
      take();
      const [a, b] = [left, and()];
      left = (x, y) => a(x, y) || b(x, y);
    }
    return left;
  };
  const and = (): PixelFunction => {
    let left = not();
    while (peek() === 'and') {
      take();
      const [a, b] = [left, not()];
      left = (x, y) => a(x, y) && b(x, y);
    }
    return left;
  };
  const not = (): PixelFunction => {
    if (peek() !== 'not') return comparison();
    take();
    const operand = not();
    return (x, y) => bool(!operand(x, y));
  };
  const comparison = (): PixelFunction => {
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
  const binaryLevel = (next: () => PixelFunction, operators: Record<string, (a: number, b: number) => number>) => (): PixelFunction => {
    let left = next();
    while (peek() in operators) {
      const operate = operators[take()];
      const [a, b] = [left, next()];
      left = (x, y) => number(operate(a(x, y), b(x, y)));
    }
    return left;
  };
  const power = (): PixelFunction => {
    const base = primary();
    if (peek() !== '**' && peek() !== '^') return base;
    take();
    const exponent = unary();
    return (x, y) => number(base(x, y) ** exponent(x, y));
  };
  const unary = (): PixelFunction => {
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
  const primary = (): PixelFunction => {
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
      const value = number(Number(token));
      return () => value;
    }
    if (token === 'x') return (x) => x;
    if (token === 'y') return (_x, y) => y;
    const fn = FUNCTIONS[token];
    if (!fn) {
      throw new PictureRecipeError(`Recipe expression "${text}": unknown name ${token} (allowed: x, y, ${Object.keys(FUNCTIONS).join(', ')}).`);
    }
    take('(');
    const args = [conditional()];
    while (peek() === ',') {
      take();
      args.push(conditional());
    }
    take(')');
    return (x, y) => number(fn(...args.map((arg) => arg(x, y))));
  };

  const result = conditional();
  if (at !== tokens.length) throw new PictureRecipeError(`Recipe expression "${text}": unexpected ${tokens[at]}.`);
  return result;
}

/** A rule's value: "white (255)", "white", "black" or an expression. */
function compileValue(text: string): PixelFunction {
  const named = /^(white|black)(?:\s*\((\d+)\))?$/.exec(text.trim());
  if (named) {
    const value = named[2] !== undefined ? Number(named[2]) : named[1] === 'white' ? 255 : 0;
    return () => value;
  }
  return compileExpression(text);
}

/** "r = EXPR", "g = EXPR", "b = EXPR" in any order, each once: the channels' functions in r, g, b order. */
function channelFunctions(recipe: string, assignments: string[], options: ExpressionOptions): PixelFunction[] {
  const byChannel = new Map<string, PixelFunction>();
  for (const part of assignments) {
    const assignment = /^\s*([rgb])\s*=\s*(.+?)\s*$/s.exec(part);
    if (!assignment) throw new PictureRecipeError(`Recipe "${recipe}": expected "r = …", "g = …" or "b = …", got "${part.trim()}".`);
    if (byChannel.has(assignment[1])) throw new PictureRecipeError(`Recipe "${recipe}" gives the ${assignment[1]} channel twice.`);
    byChannel.set(assignment[1], compileExpression(assignment[2], options));
  }
  return ['r', 'g', 'b'].map((name) => {
    const fn = byChannel.get(name);
    if (!fn) throw new PictureRecipeError(`Recipe "${recipe}" gives no ${name} channel.`);
    return fn;
  });
}

function render(recipe: string, width: number, height: number, channelFns: PixelFunction[]): RecipeImage {
  const channels = channelFns.length as 1 | 3;
  const data = new Uint8Array(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      channelFns.forEach((fn, c) => {
        const value = fn(x, y);
        if (!Number.isInteger(value) || value < 0 || value > 255) {
          throw new PictureRecipeError(`Recipe "${recipe}" gives ${value} at x=${x}, y=${y}; pixels must be integers 0…255.`);
        }
        data[(y * width + x) * channels + c] = value;
      });
    }
  }
  return { data, width, height, channels };
}

const GRADIENT = /^gradient:\s*(.+?)\s+over\s+(\d+)x(\d+),\s*as uint8 round\(v\*255\)$/s;
const PICTURE = /^(RGB|L mode|L)\s+(\d+)x(\d+):\s*(.+)$/s;
const RULE = /^(.+?)\s+where\s+(.+?),\s*else\s+(.+)$/s;

/** The picture a refs.json recipe describes (see the module comment for the forms), as 8-bit pixels. */
export function describedImage(recipe: string): RecipeImage {
  const text = recipe.trim();
  const gradient = GRADIENT.exec(text);
  if (gradient) {
    // Channels split at the comma before the next "g=" / "b=", so expressions may hold commas of their own.
    const fns = channelFunctions(recipe, gradient[1].split(/,(?=\s*[rgb]\s*=)/), { float32: true });
    const scaled = fns.map((fn): PixelFunction => (x, y) => roundHalfEven(Math.fround(fn(x, y) * 255)));
    return render(recipe, Number(gradient[2]), Number(gradient[3]), scaled);
  }
  const header = PICTURE.exec(text);
  if (!header) {
    throw new PictureRecipeError(
      `Unknown picture recipe form: "${recipe}". Allowed: "RGB WxH: r = …; g = …; b = …", "RGB WxH: V where COND, else W", ` +
        `"L mode WxH: …" and "gradient: r=…, g=…, b=… over WxH, as uint8 round(v*255)".`,
    );
  }
  const channels = header[1] === 'RGB' ? 3 : 1;
  const [width, height, body] = [Number(header[2]), Number(header[3]), header[4].trim()];
  const rule = RULE.exec(body);
  if (rule) {
    const [inside, condition, outside] = [compileValue(rule[1]), compileExpression(rule[2]), compileValue(rule[3])];
    const fn: PixelFunction = (x, y) => (condition(x, y) ? inside(x, y) : outside(x, y));
    return render(recipe, width, height, Array.from({ length: channels }, () => fn));
  }
  return render(recipe, width, height, channels === 3 ? channelFunctions(recipe, body.split(';'), {}) : [compileExpression(body)]);
}
export { REFERENCE_SCHEDULER_CLASSES } from './schedulers.js';
