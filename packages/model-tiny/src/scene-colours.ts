import { COLORS, PALETTE, type Color } from './index.js';

/** 8-bit RGB pixels, row-major (what `@diff/core` pipelines return as `images`). */
export interface RgbPixels {
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
}

/** The rules of the quality check, fixed so that figures stay comparable across models. */
export const SCENE_CLASSIFIER = { borderPx: 2, farThreshold: 48, minShapePixels: 12 } as const;

/** The palette colour nearest to an RGB value (squared distance). */
export function nearestColor(rgb: readonly number[]): Color {
  let best: Color = COLORS[0];
  let bestDistance = Infinity;
  for (const color of COLORS) {
    const distance = PALETTE[color].reduce((sum, channel, i) => sum + (channel - rgb[i]) ** 2, 0);
    if (distance < bestDistance) [best, bestDistance] = [color, distance];
  }
  return best;
}

function channelMedians(pixels: readonly (readonly number[])[]): number[] {
  return [0, 1, 2].map((channel) => {
    const values = pixels.map((pixel) => pixel[channel]).sort((a, b) => a - b);
    const middle = values.length >> 1;
    return values.length % 2 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
  });
}

/**
 * The background and shape colours of a generated scene: the background is the per-channel median of the pixels
 * within 2 px of the border; the shape is the median of the pixels farther than 48 (RGB distance) from it —
 * `undefined` when fewer than 12 such pixels exist. Each is named by the nearest palette colour.
 */
export function classifySceneColors(image: RgbPixels): { background: Color; shape: Color | undefined } {
  const { data, width, height } = image;
  const { borderPx, farThreshold, minShapePixels } = SCENE_CLASSIFIER;
  const pixels: number[][] = [];
  const border: number[][] = [];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const offset = (y * width + x) * 3;
      const pixel = [data[offset], data[offset + 1], data[offset + 2]];
      pixels.push(pixel);
      if (x < borderPx || y < borderPx || x >= width - borderPx || y >= height - borderPx) border.push(pixel);
    }
  }
  const background = channelMedians(border);
  const shapePixels = pixels.filter((pixel) => Math.hypot(pixel[0] - background[0], pixel[1] - background[1], pixel[2] - background[2]) > farThreshold);
  return {
    background: nearestColor(background),
    shape: shapePixels.length >= minShapePixels ? nearestColor(channelMedians(shapePixels)) : undefined,
  };
}

/** One (prompt, seed) pair of the quality check and the colours its picture must show. */
export interface SceneCase {
  readonly prompt: string;
  readonly seed: number;
  readonly shapeColor: Color;
  readonly backgroundColor: Color;
}

/**
 * The share of cases whose picture shows the prompt's shape colour and background colour. `generate` makes the
 * picture for a prompt and seed (with whatever settings are being measured).
 */
export async function measureSceneAccuracy(
  cases: readonly SceneCase[],
  generate: (prompt: string, seed: number) => Promise<RgbPixels>,
): Promise<{ accuracy: number; shapeAccuracy: number; backgroundAccuracy: number; failures: string[] }> {
  let both = 0;
  let shapes = 0;
  let backgrounds = 0;
  const failures: string[] = [];
  for (const sceneCase of cases) {
    const seen = classifySceneColors(await generate(sceneCase.prompt, sceneCase.seed));
    const shapeOk = seen.shape === sceneCase.shapeColor;
    const backgroundOk = seen.background === sceneCase.backgroundColor;
    shapes += Number(shapeOk);
    backgrounds += Number(backgroundOk);
    both += Number(shapeOk && backgroundOk);
    if (!(shapeOk && backgroundOk)) failures.push(`"${sceneCase.prompt}" (seed ${sceneCase.seed}): saw ${seen.shape ?? 'no'} shape on ${seen.background}`);
  }
  return { accuracy: both / cases.length, shapeAccuracy: shapes / cases.length, backgroundAccuracy: backgrounds / cases.length, failures };
}
