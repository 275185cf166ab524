// What a pipeline feeds its ONNX models: records of each run of a model, for the tests that check the feeds.
import type { ModelFeeds } from '../runtime/feeds.js';
import type { OnnxModel } from '../runtime/onnx-model.js';
import type { Tensor } from '../tensor.js';

export interface ModelCall {
  feeds: ModelFeeds;
  outputs: Record<string, Tensor>;
}

const restorers: Array<() => void> = [];

/** Records every run of `model` (its feeds and outputs) until `restoreModelRuns`. */
export function recordRuns(model: OnnxModel): ModelCall[] {
  const calls: ModelCall[] = [];
  const run = model.run.bind(model);
  model.run = async (feeds, outputNames) => {
    const outputs = await run(feeds, outputNames);
    calls.push({ feeds, outputs });
    return outputs;
  };
  restorers.push(() => Reflect.deleteProperty(model, 'run'));
  return calls;
}

/** Ends every recording `recordRuns` started: `afterEach(restoreModelRuns)` in a file that records. */
export function restoreModelRuns(): void {
  restorers.splice(0).forEach((restore) => restore());
}

/** The tensor a model run was fed as `name`. */
export const tensorFeed = (call: ModelCall, name: string) => call.feeds[name] as Tensor;

/** How many rows each run was fed as `name`. */
export const rowsFed = (calls: readonly ModelCall[], name: string) => calls.map((call) => tensorFeed(call, name).shape[0]);
