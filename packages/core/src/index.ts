export * from './errors.js';
export * from './tensor.js';
export * from './random/index.js';
export * from './tokenizer/index.js';
export * from './schedulers/index.js';
export * from './runtime/index.js';
export { PipelineCallback, MultiPipelineCallbacks, type PipelineCallbackOptions } from './callbacks/index.js';
export * from './pipelines/index.js';
export type * from './contract.js';
