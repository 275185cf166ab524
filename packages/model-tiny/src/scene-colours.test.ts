import { classifySceneColors, nearestColor } from './scene-colours.js';
import { PALETTE } from './index.js';

/** A 64×64 scene: `background` everywhere, `shapePixels` pixels of `shape` in a block away from the border. */
function scene(background: readonly number[], shape: readonly number[], shapePixels: number) {
  const data = new Uint8Array(64 * 64 * 3);
  for (let i = 0; i < 64 * 64; i++) data.set(background, i * 3);
  for (let k = 0; k < shapePixels; k++) data.set(shape, ((20 + Math.floor(k / 20)) * 64 + 20 + (k % 20)) * 3);
  return { data, width: 64, height: 64 };
}

describe('classifySceneColors', () => {
  it('names the background from the border and the shape from the far pixels', () => {
    expect(classifySceneColors(scene(PALETTE.blue, PALETTE.red, 200))).toEqual({ background: 'blue', shape: 'red' });
    expect(classifySceneColors(scene([235, 235, 235], [30, 30, 20], 50))).toEqual({ background: 'white', shape: 'black' });
  });

  it('reports no shape when fewer than 12 pixels stand out', () => {
    expect(classifySceneColors(scene(PALETTE.green, PALETTE.yellow, 11)).shape).toBeUndefined();
  });

  it('picks the nearest palette colour', () => {
    expect(nearestColor([250, 150, 20])).toBe('orange');
    expect(nearestColor([130, 70, 200])).toBe('purple');
  });
});
