/**
 * `@diff/core/plugin`: the runtime values callback packages need, and nothing else — no ONNX Runtime, no sharp —
 * so that a callback package stays cheap to import (in a job queue's API process, a web server, a test).
 */
export { PipelineCallback, MultiPipelineCallbacks, pipelineCallbackOptions, type PipelineCallbackOptions } from './callbacks/pipeline-callback.js';
export { Tensor, type FloatDType, type FloatData } from './tensor.js';
export * from './errors.js';
export {
  CallbackRegistry,
  createCallback,
  defaultCallbackRegistry,
  isCallbackPluginDescriptor,
  listCallbackPlugins,
  registerCallbackPlugin,
  withConstructorRules,
} from './plugins/registry.js';
export { CALLBACK_PACKAGE_KEYWORD, discoverCallbackPlugins, type DiscoveredCallbackPackage } from './plugins/discover.js';
export type * from './contract.js';
export {
  GENERATION_REQUEST_JSON_SCHEMA,
  GENERATION_REQUEST_LIMITS,
  InvalidRequestError,
  generationOptions,
  generationRequestSchema,
  parseGenerationRequest,
  type CallbackRequest,
  type GenerationEvent,
  type GenerationEventType,
  type GenerationRequest,
  type RequestGenerationOptions,
} from './requests.js';
export { SCHEDULER_NAMES, type SchedulerName } from './schedulers/names.js';
