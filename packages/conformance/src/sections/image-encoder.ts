import { join } from 'node:path';
import { CLIPImageProcessor, OnnxModel, SessionPool } from '@diff/core';
import { runChecks, type Tolerance } from '../compare.js';
import { describedImage } from '../inputs.js';
import type { ImageEncoderRef } from '../refs.js';
import { settleCase, type CaseResult } from '../report.js';

/** The README's bounds: the 8-bit resize is reproduced exactly, the encoder within float32 round-off. */
const PIXEL_VALUES_TOLERANCE: Tolerance = { atol: 1e-6, rtol: 0 };
const IMAGE_EMBEDS_TOLERANCE: Tolerance = { atol: 1e-4, rtol: 1e-4 };

/** Each picture through the model folder's `feature_extractor` (transformers' CLIPImageProcessor) and `image_encoder`. */
export async function checkImageEncoderSection(entries: readonly ImageEncoderRef[], modelsDir: string): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  for (const entry of entries) {
    results.push(
      await settleCase('image_encoder', entry.id, async () => {
        const dir = join(modelsDir, entry.model);
        const processor = await CLIPImageProcessor.fromPretrained(join(dir, 'feature_extractor'));
        const pixelValues = processor.preprocess(describedImage(entry.image));
        const pool = new SessionPool();
        try {
          const encoder = new OnnxModel(join(dir, 'image_encoder', 'model.onnx'), pool);
          const { image_embeds: imageEmbeds } = await encoder.run({ pixel_values: pixelValues }, ['image_embeds']);
          return runChecks(
            [
              { label: 'pixel_values', actual: pixelValues.data, expected: entry.pixel_values.data, tolerance: PIXEL_VALUES_TOLERANCE },
              { label: 'image_embeds', actual: imageEmbeds.data, expected: entry.image_embeds.data, tolerance: IMAGE_EMBEDS_TOLERANCE },
            ],
            'pixel_values and image_embeds within tolerance',
          );
        } finally {
          await pool.dispose();
        }
      }),
    );
  }
  return results;
}
