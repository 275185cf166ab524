export { CLIPTokenizer } from './clip-tokenizer.js';
export type { CLIPEncodeOptions, CLIPTokenizerFiles } from './clip-tokenizer.js';
