export { OnnxModel, SessionPool, type GraphOptimizationLevel, type RuntimeOptions } from './onnx-model.js';
export { CUDA_INSTALL_COMMAND, type ExecutionProviderName } from './execution-providers.js';
export type { FeedTensor, FeedValue, ModelFeeds, ModelValueType, ValueSpec } from './feeds.js';
