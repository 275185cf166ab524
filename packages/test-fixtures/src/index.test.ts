// describedImage: every form checked by hand on a few pixels, float32 against float64 arithmetic, bad recipes, and every
// recipe of the shared refs.json (where present).
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PictureRecipeError, compileExpression, describedImage, type RecipeImage } from './index.js';

const REFS_PATH = fileURLToPath(new URL('../../../../shared/conformance/refs.json', import.meta.url));

const pixel = (image: RecipeImage, x: number, y: number) =>
  Array.from(image.data.subarray((y * image.width + x) * image.channels, (y * image.width + x + 1) * image.channels));

const GRADIENT = 'gradient: r=x/63, g=y/63, b=0.5*(1-x/63)+0.5*y/63 over 64x64, as uint8 round(v*255)';

describe('describedImage', () => {
  it('reads "RGB WxH: r = …; g = …; b = …"', () => {
    const image = describedImage('RGB 3x2: r = 255 if (x//2 + y) even else 40; g = round(255*y/2); b = |x-1|^2');
    expect(image).toMatchObject({ width: 3, height: 2, channels: 3 });
    // g: round(127.5) is 128 (half to even); b: |x−1|² is 1, 0, 1.
    expect(Array.from(image.data)).toEqual([255, 0, 1, 255, 0, 0, 40, 0, 1, 40, 128, 1, 40, 128, 0, 255, 128, 1]);
  });

  it('reads the IP-Adapter picture of refs.json (checkerboard of 8×8 cells, vertical and horizontal ramps)', () => {
    const image = describedImage('RGB 64x64: r = 255 if (x//8 + y//8) even else 40; g = round(255*y/63); b = round(255*(63-x)/63)');
    expect(pixel(image, 0, 0)).toEqual([255, 0, 255]);
    expect(pixel(image, 8, 0)).toEqual([40, 0, 223]); // 255·55/63 = 222.6
    expect(pixel(image, 10, 20)).toEqual([40, 81, 215]); // cell (1, 2); 255·20/63 = 80.95; 255·53/63 = 214.5
    expect(pixel(image, 63, 63)).toEqual([255, 255, 0]);
  });

  it('reads "V where COND, else W" in RGB and L mode', () => {
    const mask = describedImage('L mode 4x2: 255 where 1<=x<3 and y == 1, else 0');
    expect(mask).toMatchObject({ width: 4, height: 2, channels: 1 });
    expect(Array.from(mask.data)).toEqual([0, 0, 0, 0, 0, 255, 255, 0]);
    const disc = describedImage('RGB 2x1: white (255) where (x-1)^2 <= 0, else black');
    expect(Array.from(disc.data)).toEqual([0, 0, 0, 255, 255, 255]);
    const box = describedImage('RGB 4x3: white where |x-2| <= 1 and |y-1| <= 0, else black');
    expect(Array.from(box.data.filter((_, k) => k % 3 === 0))).toEqual([0, 0, 0, 0, 0, 255, 255, 255, 0, 0, 0, 0]);
    const grey = describedImage('L mode 3x1: white (200) where x == 1, else 7 * x');
    expect(Array.from(grey.data)).toEqual([0, 200, 14]);
  });

  it('reads refs.json\'s rule pictures (the inpainting mask, the ControlNet disc and rectangle)', () => {
    const mask = describedImage('L mode 64x64: 255 where 8<=y<40 and 16<=x<48, else 0');
    expect([pixel(mask, 16, 8), pixel(mask, 47, 39), pixel(mask, 15, 8), pixel(mask, 16, 40), pixel(mask, 48, 20)]).toEqual([[255], [255], [0], [0], [0]]);
    const disc = describedImage('RGB 64x64: white (255) where (x-32)^2+(y-28)^2 <= 18^2, else black');
    expect([pixel(disc, 32, 10), pixel(disc, 32, 9), pixel(disc, 50, 28), pixel(disc, 51, 28)]).toEqual([[255, 255, 255], [0, 0, 0], [255, 255, 255], [0, 0, 0]]);
    const rectangle = describedImage('RGB 64x64: white (255) where |x-32| <= 14 and |y-30| <= 10, else black');
    expect([pixel(rectangle, 18, 20), pixel(rectangle, 17, 20), pixel(rectangle, 46, 40), pixel(rectangle, 46, 41)]).toEqual([[255, 255, 255], [0, 0, 0], [255, 255, 255], [0, 0, 0]]);
  });

  it('reads "L mode WxH: EXPR"', () => {
    expect(Array.from(describedImage('L mode 3x2: 10*x + 100*y').data)).toEqual([0, 10, 20, 100, 110, 120]);
  });

  it('reads the gradient form in numpy float32 arithmetic, rounding v·255 half to even', () => {
    const image = describedImage(GRADIENT);
    expect(image).toMatchObject({ width: 64, height: 64, channels: 3 });
    expect(pixel(image, 0, 0)).toEqual([0, 0, 128]); // b = 0.5: 127.5 goes to the even 128
    expect(pixel(image, 1, 0)).toEqual([4, 0, 125]); // 255/63 = 4.05; 127.5·62/63 = 125.48
    expect(pixel(image, 20, 10)).toEqual([81, 40, 107]);
    expect(pixel(image, 63, 63)).toEqual([255, 255, 128]);
    // numpy: b at (42, 0) is float32 0.16666666 · 255 = 42.499996, so 42; float64 reaches 42.50000000000001, so 43.
    expect(pixel(image, 42, 0)[2]).toBe(42);
  });

  it('float32 arithmetic moves 30 blue values of the gradient from what float64 gives', () => {
    const float32 = describedImage(GRADIENT);
    const float64 = describedImage('RGB 64x64: r = round(x/63*255); g = round(y/63*255); b = round((0.5*(1-x/63)+0.5*y/63)*255)');
    expect(pixel(float64, 42, 0)[2]).toBe(43);
    const moved = float32.data.filter((value, k) => value !== float64.data[k]);
    expect(moved.length).toBe(30);
  });

  it('channels may come in any order, and expressions may hold commas', () => {
    const image = describedImage('gradient: b=0, g=min(x, 1)/2, r=max(x, y)/4 over 2x2, as uint8 round(v*255)');
    expect(Array.from(image.data)).toEqual([0, 0, 0, 64, 128, 0, 64, 0, 0, 64, 128, 0]);
  });

  it('rejects what it cannot read, naming the problem', () => {
    expect(() => describedImage('gradient over 4x4')).toThrow(/Unknown picture recipe form.*Allowed/);
    expect(() => describedImage('RGB 2x2: r = sin(x); g = 0; b = 0')).toThrow(/unknown name sin/);
    expect(() => describedImage('RGB 2x2: r = x; g = 0')).toThrow(/gives no b channel/);
    expect(() => describedImage('RGB 2x2: r = x; r = 0; b = 0')).toThrow(/r channel twice/);
    expect(() => describedImage('RGB 2x2: r = x; 0; b = 0')).toThrow(/expected "r = …"/);
    expect(() => describedImage('RGB 2x2: r = (x; g = 0; b = 0')).toThrow(/expected \)/);
    expect(() => describedImage('RGB 2x2: r = x $ 1; g = 0; b = 0')).toThrow(/Cannot read the recipe expression/);
    expect(() => describedImage('L mode 2x1: x / 2')).toThrow(/gives 0.5 at x=1, y=0; pixels must be integers 0…255/);
    expect(() => describedImage('L mode 2x1: 256 where x == 1, else 0')).toThrow(PictureRecipeError);
    expect(() => describedImage('gradient: r=x+1, g=0, b=0 over 2x1, as uint8 round(v*255)')).toThrow(/gives 510 at x=1, y=0/);
  });
});

describe('compileExpression', () => {
  it('follows Python: precedence, floor division and modulo, chained comparisons, and/or/not, conditionals', () => {
    const at = (text: string, x = 0, y = 0) => compileExpression(text)(x, y);
    expect(at('2 + 3 * 4 ** 2')).toBe(50);
    expect(at('-2 ** 2')).toBe(-4);
    expect(at('-7 // 2')).toBe(-4);
    expect(at('-7 % 3')).toBe(2);
    expect(at('1 < x <= 3', 3)).toBe(1);
    expect(at('1 < x <= 3', 4)).toBe(0);
    expect(at('not x or y', 1, 5)).toBe(5);
    expect(at('1 if x > 0 else 2 if y > 0 else 3', 0, 1)).toBe(2);
    expect(at('x odd and y even', 3, 4)).toBe(1);
    expect(at('round(2.5) + round(3.5) + abs(-1) + min(4, y) + max(x, 1)', 7, 2)).toBe(2 + 4 + 1 + 2 + 7);
  });

  it('rounds every constant and operation to float32 when asked', () => {
    expect(compileExpression('0.1 + 0.2')(0, 0)).toBe(0.1 + 0.2);
    expect(compileExpression('0.1 + 0.2', { float32: true })(0, 0)).toBe(Math.fround(Math.fround(0.1) + Math.fround(0.2)));
    expect(compileExpression('x / 3 * 3', { float32: true })(1, 0)).toBe(Math.fround(Math.fround(1 / 3) * 3));
  });
});

(existsSync(REFS_PATH) ? describe : describe.skip)('the shared refs.json', () => {
  it('every picture recipe in it parses', () => {
    const recipes = new Set<string>();
    const collect = (value: unknown, key: string) => {
      if (typeof value === 'string' && /(^|_)image$/.test(key)) recipes.add(value);
      else if (Array.isArray(value)) value.forEach((item) => collect(item, key));
      else if (value && typeof value === 'object') Object.entries(value).forEach(([k, v]) => collect(v, k));
    };
    collect(JSON.parse(readFileSync(REFS_PATH, 'utf8')), '');
    expect(recipes.size).toBeGreaterThan(0);
    for (const recipe of recipes) {
      const image = describedImage(recipe);
      expect(image.data.length).toBe(image.width * image.height * image.channels);
    }
  });
});
