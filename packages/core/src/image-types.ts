/**
 * Picture types shared by the pipelines and the callback contract. A leaf module: it imports nothing, so the
 * contract can name pictures without pulling in the image code (and sharp).
 */

/** 8-bit pixels, row-major, interleaved channels: what `sharp(data, { raw })` reads. */
export interface RawImage {
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
  readonly channels: 1 | 3 | 4;
}

/** A generated picture: RGB, ready for `sharp(image.data, { raw: image }).png().toFile(path)` or `saveImage`. */
export interface RgbImage extends RawImage {
  readonly channels: 3;
}
