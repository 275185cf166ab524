export { PipelineCallback, MultiPipelineCallbacks, type PipelineCallbackOptions } from './pipeline-callback.js';
export { resolveCallbacks, GenerationCallbacks } from './resolve.js';
export { GenerationContext, type CfgLayout } from './context.js';
