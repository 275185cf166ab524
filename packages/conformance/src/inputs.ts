import type { RawImage } from '@diff/core';

/**
 * Builds the input pictures the refs describe in words (`init_image`, `mask_image`, `control_image`), e.g.
 *   "gradient: r=x/63, g=y/63, b=0.5*(1-x/63)+0.5*y/63 over 64x64, as uint8 round(v*255)"
 *   "L mode 64x64: 255 where 8<=y<40 and 16<=x<48, else 0"
 *   "RGB 64x64: white (255) where (x-32)^2+(y-28)^2 <= 18^2, else black"
 * The formulas are read as arithmetic in x (column) and y (row).
 */
export function describedImage(description: string): RawImage {
  const gradient = /^gradient: r=(.+), g=(.+), b=(.+) over (\d+)x(\d+), as uint8 round\(v\*255\)$/.exec(description);
  if (gradient) {
    const [, red, green, blue, width, height] = gradient;
    const channels = [red, green, blue].map(formula);
    return render(Number(width), Number(height), 3, (x, y, c) => Math.round(channels[c](x, y) * 255));
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

/** `a<=y<b and …` and `^` powers → a JavaScript function of (x, y). Only digits, x, y and operators are allowed. */
function formula(text: string): (x: number, y: number) => number {
  if (!/^[\d\sxy+\-*/().<=>^and]*$/.test(text)) throw new Error(`Unsupported formula in a picture description: ${text}`);
  const source = text
    .replace(/\^/g, '**')
    .replace(/([\d.]+)\s*(<=?)\s*([xy])\s*(<=?)\s*([\d.]+)/g, '($1 $2 $3 && $3 $4 $5)')
    .replace(/\band\b/g, '&&');
  return new Function('x', 'y', `return Number(${source});`) as (x: number, y: number) => number;
}
