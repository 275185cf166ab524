export { PipelineCallback, MultiPipelineCallbacks, type PipelineCallbackOptions } from './pipeline-callback.js';
export { resolveStepEndCallbacks, StepEndCallbacks } from './step-end.js';
export { GenerationContext } from './context.js';
