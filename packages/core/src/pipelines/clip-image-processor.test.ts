// CLIPImageProcessor: against transformers' own pixel_values (the shared refs.json, where present; within 1e-6) and
// on small cases checked by hand.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describedImage } from '@diff/test-fixtures';
import { SHARED_CONFORMANCE_DIR, readSharedRefs } from '../__fixtures__/shared-conformance.js';
import { ConfigError, InvalidArgumentError, ModelLoadError } from '../errors.js';
import {
  CLIPImageProcessor,
  resizeBicubicAntialias,
  resizeShortestEdge,
  shortestEdgeSize,
} from './clip-image-processor.js';
import type { RawImage } from './images.js';

function maxAbsDiff(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  expect(actual.length).toBe(expected.length);
  let max = 0;
  for (let k = 0; k < actual.length; k++) max = Math.max(max, Math.abs(actual[k] - expected[k]));
  return max;
}

// ---------------------------------------------------------------------------------------------------------------

interface ImageEncoderRef {
  id: string;
  model: string;
  image: string;
  pixel_values: { shape: number[]; data: number[] };
}

const encoderRefs = readSharedRefs<{ image_encoder?: ImageEncoderRef[] }>()?.image_encoder;
const describeShared = encoderRefs ? describe : describe.skip;

describeShared('CLIPImageProcessor against transformers 5 (refs.json image_encoder pixel_values)', () => {
  for (const entry of encoderRefs ?? []) {
    it(`${entry.id} (${entry.model}): within 1e-6`, async () => {
      const dir = join(SHARED_CONFORMANCE_DIR, entry.model, 'feature_extractor');
      const processor = await CLIPImageProcessor.fromPretrained(dir);
      const pixelValues = processor.preprocess(describedImage(entry.image));
      expect(pixelValues.shape).toEqual(entry.pixel_values.shape);
      expect(maxAbsDiff(pixelValues.data, entry.pixel_values.data)).toBeLessThanOrEqual(1e-6);
    });
  }
});

// ---------------------------------------------------------------------------------------------------------------

/** Deterministic 8-bit noise. */
function noiseImage(width: number, height: number, channels: 1 | 3 | 4, seed: number): RawImage {
  const data = new Uint8Array(width * height * channels);
  let state = seed;
  for (let k = 0; k < data.length; k++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    data[k] = state >>> 24;
  }
  return { data, width, height, channels };
}

/** A config that keeps pixels as they are after the 8-bit steps. */
const RAW_PIXELS = { do_rescale: false, do_normalize: false };

/** pixel_values [1, 3, H, W] of a raw-pixel processor → the interleaved 8-bit values. */
function toInterleaved(values: Float32Array, width: number, height: number): number[] {
  const plane = width * height;
  return Array.from({ length: plane * 3 }, (_, k) => values[(k % 3) * plane + Math.floor(k / 3)]);
}

describe('shortestEdgeSize', () => {
  it('scales the long edge to int(shortest · long / short)', () => {
    expect(shortestEdgeSize(64, 48, 32)).toEqual({ width: 42, height: 32 }); // 42.67
    expect(shortestEdgeSize(48, 64, 32)).toEqual({ width: 32, height: 42 });
    expect(shortestEdgeSize(96, 48, 32)).toEqual({ width: 64, height: 32 });
    expect(shortestEdgeSize(50, 50, 224)).toEqual({ width: 224, height: 224 });
    expect(shortestEdgeSize(3, 1000, 224)).toEqual({ width: 224, height: 74666 });
  });
});

describe('resizeBicubicAntialias', () => {
  it('is the identity when the size does not change, and returns a copy', () => {
    const image = noiseImage(7, 5, 3, 1);
    const same = resizeBicubicAntialias(image, 7, 5);
    expect(same.data).toEqual(image.data);
    expect(same.data).not.toBe(image.data);
  });

  it('shrinks with the widened kernel (hand-computed: 4 → 2)', () => {
    // scale 2: kernel widened to support 4; output 0 has centre 1 and taps at 0…3 with cubic weights
    // k(.25), k(.25), k(.75), k(1.25) ∝ 0.8671875, 0.8671875, 0.2265625, −0.0703125 (sum 1.890625), so
    // [0, 0, 255, 255] → 255 · 0.15625 / 1.890625 = 21.07 → 21, and by symmetry 233.93 → 234. (Pillow agrees.)
    const row: RawImage = { data: Uint8Array.from([0, 0, 255, 255]), width: 4, height: 1, channels: 1 };
    for (const backend of ['torch', 'pil'] as const) {
      expect(Array.from(resizeBicubicAntialias(row, 2, 1, backend).data)).toEqual([21, 234]);
    }
  });

  it("differs from Pillow by one level where the exact value is a tie: torch's 14-bit weights vs Pillow's 22", () => {
    // 2 → 3: output 0 has weights 405/380 and −25/380, so [40, 154] gives exactly 32.5; output 2 gives 161.5.
    // Pillow's 22-bit weights land just above each half (33, 161); torch's weights (14 bits here, the most
    // for which the largest weight, 1.066, fits an int16) land below (32, 162). Pillow 9.4 gives [33, 97, 161].
    const row: RawImage = { data: Uint8Array.from([40, 40, 40, 154, 154, 154]), width: 2, height: 1, channels: 3 };
    const torch = resizeBicubicAntialias(row, 3, 1, 'torch');
    const pil = resizeBicubicAntialias(row, 3, 1, 'pil');
    expect(Array.from(torch.data)).toEqual([32, 32, 32, 97, 97, 97, 162, 162, 162]);
    expect(Array.from(pil.data)).toEqual([33, 33, 33, 97, 97, 97, 161, 161, 161]);
  });

  it('differs from Pillow by at most one level per pass (two passes can compound to two)', () => {
    let differing = 0;
    for (const [width, height, outWidth, outHeight] of [[37, 30, 96, 79], [64, 48, 42, 32], [22, 23, 60, 96]]) {
      const image = noiseImage(width, height, 3, width);
      const maxDiff = (outW: number, outH: number) => {
        const torch = resizeBicubicAntialias(image, outW, outH, 'torch');
        const pil = resizeBicubicAntialias(image, outW, outH, 'pil');
        let max = 0;
        for (let k = 0; k < torch.data.length; k++) {
          const diff = Math.abs(torch.data[k] - pil.data[k]);
          max = Math.max(max, diff);
          differing += diff;
        }
        return max;
      };
      expect(maxDiff(outWidth, height)).toBeLessThanOrEqual(1);
      expect(maxDiff(width, outHeight)).toBeLessThanOrEqual(1);
      // A one-level difference after the horizontal pass goes through vertical weights above 1 (the cubic's
      // overshoot) and can meet a rounding difference of its own.
      expect(maxDiff(outWidth, outHeight)).toBeLessThanOrEqual(2);
    }
    expect(differing).toBeGreaterThan(0);
  });

  it('resizes only the axis that changes', () => {
    const image = noiseImage(6, 4, 1, 2);
    const wider = resizeBicubicAntialias(image, 9, 4);
    const taller = resizeBicubicAntialias(image, 6, 7);
    // Columns of a width-only resize depend on their own row only: resizing one row alone gives the same.
    const row: RawImage = { data: image.data.slice(6, 12), width: 6, height: 1, channels: 1 };
    expect(Array.from(wider.data.subarray(9, 18))).toEqual(Array.from(resizeBicubicAntialias(row, 9, 1).data));
    expect(taller.width).toBe(6);
    expect(taller.data.length).toBe(42);
  });

  it('rejects bad sizes and backends', () => {
    const image = noiseImage(4, 4, 3, 3);
    expect(() => resizeBicubicAntialias(image, 0, 4)).toThrow(InvalidArgumentError);
    expect(() => resizeBicubicAntialias(image, 4, 2.5)).toThrow(/height must be a positive integer/);
    expect(() => resizeBicubicAntialias(image, 4, 4, 'cv2' as never)).toThrow(/'torch' or 'pil'/);
    expect(() => resizeShortestEdge(image, -1)).toThrow(/shortestEdge must be a positive integer/);
  });
});

describe('CLIPImageProcessor', () => {
  it("defaults to transformers' CLIPImageProcessor settings", () => {
    const processor = new CLIPImageProcessor();
    expect(processor.settings).toEqual({
      doResize: true,
      size: { shortestEdge: 224 },
      doCenterCrop: true,
      cropSize: { height: 224, width: 224 },
      doRescale: true,
      rescaleFactor: 1 / 255,
      doNormalize: true,
      imageMean: [0.48145466, 0.4578275, 0.40821073],
      imageStd: [0.26862954, 0.26130258, 0.27577711],
      doConvertRgb: true,
      resampleBackend: 'torch',
    });
    expect(processor.preprocess(noiseImage(300, 200, 3, 4)).shape).toEqual([1, 3, 224, 224]);
    expect(new CLIPImageProcessor({ size: 16, crop_size: 8, image_mean: null }).settings).toMatchObject({
      size: { shortestEdge: 16 },
      cropSize: { height: 8, width: 8 },
      imageMean: [0.48145466, 0.4578275, 0.40821073],
    });
  });

  it('normalises (x − mean) / std per channel, CHW, close to the real-valued formula', () => {
    const image = noiseImage(4, 4, 3, 5);
    const processor = new CLIPImageProcessor({ size: { shortest_edge: 4 }, crop_size: { height: 4, width: 4 } });
    const { data, shape } = processor.preprocess(image);
    expect(shape).toEqual([1, 3, 4, 4]);
    const { imageMean, imageStd } = processor.settings;
    for (let c = 0; c < 3; c++) {
      for (let pixel = 0; pixel < 16; pixel++) {
        const expected = (image.data[pixel * 3 + c] / 255 - imageMean[c]) / imageStd[c];
        expect(Math.abs(data[c * 16 + pixel] - expected)).toBeLessThan(1e-6);
      }
    }
  });

  it('rescales alone by float32(rescale_factor), and keeps pixels as they are with neither step', () => {
    const image = noiseImage(2, 2, 3, 6);
    const rescaled = new CLIPImageProcessor({ do_resize: false, do_center_crop: false, do_normalize: false }).preprocess(image);
    const raw = new CLIPImageProcessor({ do_resize: false, do_center_crop: false, ...RAW_PIXELS }).preprocess(image);
    const interleaved = toInterleaved(raw.data, 2, 2);
    expect(interleaved).toEqual(Array.from(image.data));
    expect(toInterleaved(rescaled.data, 2, 2)).toEqual(interleaved.map((v) => Math.fround(v * Math.fround(1 / 255))));
  });

  it('centre-crops at top = (h − ch) // 2, left = (w − cw) // 2', () => {
    // Pixel (x, y) holds 10·y + x on every channel.
    const width = 6;
    const height = 5;
    const data = new Uint8Array(width * height * 3).map((_, k) => {
      const pixel = Math.floor(k / 3);
      return 10 * Math.floor(pixel / width) + (pixel % width);
    });
    const processor = new CLIPImageProcessor({ do_resize: false, crop_size: { height: 2, width: 3 }, ...RAW_PIXELS });
    const { data: out, shape } = processor.preprocess({ data, width, height, channels: 3 });
    expect(shape).toEqual([1, 3, 2, 3]);
    // top = (5 − 2) // 2 = 1, left = (6 − 3) // 2 = 1.
    expect(Array.from(out.subarray(0, 6))).toEqual([11, 12, 13, 21, 22, 23]);
  });

  it('pads with zeros before cropping when the picture is smaller than the crop', () => {
    const image: RawImage = { data: new Uint8Array(2 * 3 * 3).fill(200), width: 2, height: 3, channels: 3 };
    const processor = new CLIPImageProcessor({ do_resize: false, crop_size: { height: 4, width: 4 }, ...RAW_PIXELS });
    const { data } = processor.preprocess(image);
    // Width 2 → 4: one column each side; height 3 → 4: (4 − 3) // 2 = 0 rows above, one below.
    expect(Array.from(data.subarray(0, 16))).toEqual([0, 200, 200, 0, 0, 200, 200, 0, 0, 200, 200, 0, 0, 0, 0, 0]);
    // Normalised, the padding is (0 − mean) / std.
    const normalised = new CLIPImageProcessor({ do_resize: false, crop_size: 4 }).preprocess(image);
    expect(normalised.data[0]).toBeCloseTo(-0.48145466 / 0.26862954, 6);
  });

  it('expands grey to RGB and drops alpha (PIL convert("RGB"))', () => {
    const processor = new CLIPImageProcessor({ size: 8, crop_size: 8 });
    const grey = noiseImage(12, 9, 1, 7);
    const greyAsRgb: RawImage = { ...grey, data: Uint8Array.from(Array.from(grey.data).flatMap((v) => [v, v, v])), channels: 3 };
    expect(processor.preprocess(grey).data).toEqual(processor.preprocess(greyAsRgb).data);

    const rgba = noiseImage(9, 12, 4, 8);
    const rgb: RawImage = { ...rgba, data: rgba.data.filter((_, k) => k % 4 !== 3), channels: 3 };
    expect(processor.preprocess(rgba).data).toEqual(processor.preprocess(rgb).data);

    expect(() => new CLIPImageProcessor({ do_convert_rgb: false }).preprocess(grey)).toThrow(/do_convert_rgb false/);
  });

  it('batches images of any size into [B, 3, crop_h, crop_w], each as it is alone', () => {
    const processor = new CLIPImageProcessor({ size: 16, crop_size: 16 });
    const images = [noiseImage(40, 20, 3, 9), noiseImage(17, 33, 4, 10)];
    const batch = processor.preprocess(images);
    expect(batch.shape).toEqual([2, 3, 16, 16]);
    expect(batch.data.subarray(768)).toEqual(processor.preprocess(images[1]).data);
  });

  it('uses the PIL resampling when asked, which moves results by at most one level', () => {
    const row: RawImage = { data: Uint8Array.from([40, 40, 40, 154, 154, 154]), width: 2, height: 1, channels: 3 };
    const config = { size: { height: 1, width: 3 }, do_center_crop: false, ...RAW_PIXELS };
    const torch = new CLIPImageProcessor(config).preprocess(row);
    const pil = new CLIPImageProcessor(config, { resampleBackend: 'pil' }).preprocess(row);
    expect(Array.from(torch.data.subarray(0, 3))).toEqual([32, 97, 162]);
    expect(Array.from(pil.data.subarray(0, 3))).toEqual([33, 97, 161]);
  });

  it('loads preprocessor_config.json from a feature extractor folder', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'clip-processor-'));
    try {
      await writeFile(join(dir, 'preprocessor_config.json'), JSON.stringify({ size: { shortest_edge: 32 }, crop_size: { height: 32, width: 32 } }));
      const processor = await CLIPImageProcessor.fromPretrained(dir, { resampleBackend: 'pil' });
      expect(processor.settings).toMatchObject({ size: { shortestEdge: 32 }, resampleBackend: 'pil' });
      await expect(CLIPImageProcessor.fromPretrained(join(dir, 'missing'))).rejects.toThrow(ModelLoadError);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('rejects bad images with InvalidArgumentError', () => {
    const processor = new CLIPImageProcessor({ size: 4, crop_size: 4 });
    const bad: [unknown, RegExp][] = [
      [[], /at least one image/],
      [{ data: new Uint8Array(8), width: 2, height: 2, channels: 2 }, /1 \(grey\), 3 \(RGB\) or 4 \(RGBA\)/],
      [{ data: new Uint8Array(11), width: 2, height: 2, channels: 3 }, /got 11 bytes for 2×2×3/],
      [{ data: new Uint8Array(0), width: 0, height: 2, channels: 3 }, /positive integer width and height/],
      [{ data: [1, 2, 3], width: 1, height: 1, channels: 3 }, /must be a raw image/],
      [null, /must be a raw image/],
    ];
    for (const [input, message] of bad) {
      expect(() => processor.preprocess(input as RawImage)).toThrow(InvalidArgumentError);
      expect(() => processor.preprocess(input as RawImage)).toThrow(message);
    }
    const unequal = new CLIPImageProcessor({ size: 4, do_center_crop: false });
    expect(() => unequal.preprocess([noiseImage(4, 4, 3, 1), noiseImage(8, 4, 3, 2)])).toThrow(/a batch needs one size/);
    expect(() => new CLIPImageProcessor({}, { resampleBackend: 'lanczos' as never })).toThrow(InvalidArgumentError);
  });

  it('rejects bad configs with ConfigError naming the key', () => {
    const bad: [Record<string, unknown>, string][] = [
      [{ size: { longest_edge: 10 } }, 'size'],
      [{ size: { shortest_edge: 0 } }, 'size'],
      [{ crop_size: { height: 4 } }, 'crop_size'],
      [{ resample: 2 }, 'resample'],
      [{ do_resize: 'yes' }, 'do_resize'],
      [{ rescale_factor: 0 }, 'rescale_factor'],
      [{ image_mean: [0.5, 0.5] }, 'image_mean'],
      [{ image_std: [0.2, 0, 0.3] }, 'image_std'],
    ];
    for (const [config, key] of bad) {
      expect(() => new CLIPImageProcessor(config)).toThrow(ConfigError);
      expect(() => new CLIPImageProcessor(config)).toThrow(new RegExp(`\\b${key} =`));
    }
    expect(() => new CLIPImageProcessor([] as never)).toThrow(ConfigError);
  });
});
