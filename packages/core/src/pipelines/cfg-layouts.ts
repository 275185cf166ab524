/** Each pipeline family's CFG layout: which callback tensors are doubled under guidance, and how (see `CfgRows`). */
import type { CfgLayout } from '../callbacks/context.js';

/** The CFG layout of the SD 1.x prompt embeddings: `[negative; positive]`, the negative rows also on their own. */
export const SD_CFG_LAYOUT: CfgLayout = { promptEmbeds: { kind: 'negativeFirst', negative: 'negativePromptEmbeds' } };
/** SDXL: prompt and pooled embeddings `[negative; positive]`; the time ids as diffusers tiles them, a pair per image. */
export const SDXL_CFG_LAYOUT: CfgLayout = {
  promptEmbeds: { kind: 'negativeFirst' },
  addTextEmbeds: { kind: 'negativeFirst' },
  addTimeIds: { kind: 'pairTiled' },
};
/** SDXL image-to-image and inpainting: diffusers stacks their time ids too, every negative row before the positive ones. */
export const SDXL_IMAGE_CFG_LAYOUT: CfgLayout = { ...SDXL_CFG_LAYOUT, addTimeIds: { kind: 'negativeFirst' } };
/** The inpainting conditioning, doubled as diffusers does (`torch.cat([mask] * 2)`). */
export const INPAINT_CFG_LAYOUT: CfgLayout = { mask: { kind: 'duplicated' }, maskedImageLatents: { kind: 'duplicated' } };
