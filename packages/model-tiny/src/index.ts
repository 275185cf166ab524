import { fileURLToPath } from 'node:url';

/**
 * Absolute path of the embedded model folder: a diffusers Stable Diffusion 1.5 ONNX export layout
 * (model_index.json, tokenizer/, text_encoder/, unet/, vae_decoder/, vae_encoder/, scheduler/).
 * Load it with `StableDiffusionPipeline.fromPretrained(modelDir)`.
 */
export const modelDir: string = fileURLToPath(new URL('../model', import.meta.url));

/** Colour words of the prompt grammar, with the RGB values the training images used. */
export const COLORS = ['red', 'orange', 'yellow', 'green', 'blue', 'purple', 'white', 'black'] as const;
export type Color = (typeof COLORS)[number];

export const PALETTE: Readonly<Record<Color, readonly [number, number, number]>> = {
  red: [220, 40, 40],
  orange: [250, 140, 30],
  yellow: [250, 220, 40],
  green: [40, 170, 70],
  blue: [40, 80, 220],
  purple: [140, 60, 190],
  white: [245, 245, 245],
  black: [25, 25, 25],
};

export const SHAPES = ['circle', 'square', 'triangle', 'star'] as const;
export type Shape = (typeof SHAPES)[number];

export const SIZES = ['small', 'medium', 'large'] as const;
export type Size = (typeof SIZES)[number];

export const POSITIONS = [
  'left',
  'right',
  'top',
  'bottom',
  'center',
  'top left',
  'top right',
  'bottom left',
  'bottom right',
] as const;
export type Position = (typeof POSITIONS)[number];

/** Every word of the grammar (each is a single token of the model's tokenizer). */
export const VOCABULARY: readonly string[] = [
  ...new Set([
    ...COLORS,
    ...SHAPES,
    ...SIZES,
    ...POSITIONS.flatMap((p) => p.split(' ')),
    'a',
    'an',
    'on',
    'the',
    'at',
    'in',
    'corner',
    'background',
  ]),
].sort();

/** Output size and the sampling settings the model was evaluated with. */
export const DEFAULTS = { width: 64, height: 64, numInferenceSteps: 20, guidanceScale: 7.5 } as const;

export interface Scene {
  color: Color;
  shape: Shape;
  size?: Size;
  position?: Position;
  background?: Color;
}

const article = (word: string) => (/^[aeiou]/.test(word) ? 'an' : 'a');

/** "on the left", "at the top", "in the center", "in the top left corner". */
export function positionPhrase(position: Position): string {
  if (position === 'left' || position === 'right') return `on the ${position}`;
  if (position === 'top' || position === 'bottom') return `at the ${position}`;
  if (position === 'center') return 'in the center';
  return `in the ${position} corner`;
}

/** The grammar's canonical prompt, e.g. "a small red circle on the left on a blue background". */
export function scenePrompt({ color, shape, size, position, background }: Scene): string {
  const head = [size, color, shape].filter(Boolean).join(' ');
  const parts = [`${article(head)} ${head}`];
  if (position) parts.push(positionPhrase(position));
  if (background) parts.push(`on ${article(background)} ${background} background`);
  return parts.join(' ');
}
