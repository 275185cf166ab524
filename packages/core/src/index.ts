export * from './random/index.js';
export * from './tokenizer/index.js';
export * from './schedulers/index.js';
export * from './runtime/index.js';
export * from './plugin.js';
export * from './pipelines/index.js';
