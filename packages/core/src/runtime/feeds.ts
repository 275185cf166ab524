// Converting caller feeds to what a model declares, and model outputs back to float32 Tensors. Real exports differ
// in dtypes (int32 vs int64 ids, float vs int64 timesteps, float16 weights) and ranks (SDXL's scalar timestep), so
// the pipeline code feeds one form and this module adapts it to each session's input metadata.
import ort from 'onnxruntime-node';
import type { Tensor as OrtTensor } from 'onnxruntime-node';
import { InvalidArgumentError, UnsupportedError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { fromFloat16Bits, toFloat16Bits } from './float16.js';

/**
 * An element type as ONNX Runtime names it. Spelled out rather than taken from onnxruntime's types, whose
 * declarations need the DOM library: apps type-checking @diff/core with `skipLibCheck: false` must not need it.
 */
export type ModelValueType =
  | 'float32' | 'float16' | 'float64'
  | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64'
  | 'int4' | 'uint4' | 'bool' | 'string';

/** One model input or output, from the session's metadata. `null` marks a dynamic dimension without a name. */
export interface ValueSpec {
  readonly name: string;
  readonly type: ModelValueType;
  readonly shape: readonly (number | string | null)[];
}

/** Data in any layout-compatible form; converted to the model's declared element type. */
export interface FeedTensor {
  readonly data: Float32Array | Int32Array | BigInt64Array | Float64Array | readonly number[];
  readonly shape: readonly number[];
}

export type FeedValue = Tensor | FeedTensor | number;
/** Model inputs by name; a number is a scalar (fed as rank 0 or [1], whichever the model declares). */
export type ModelFeeds = Readonly<Record<string, FeedValue>>;

type FeedData = FeedTensor['data'];

export function describeValues(specs: readonly ValueSpec[]): string {
  return specs.map((spec) => `${spec.name}: ${spec.type} [${spec.shape.map((dim) => dim ?? '?').join(', ')}]`).join('; ');
}

/** Checks `feeds` against the model's inputs and converts each to an ORT tensor of the declared type and rank. */
/** @internal */
export function toOrtFeeds(inputs: readonly ValueSpec[], feeds: ModelFeeds, modelPath: string): Record<string, OrtTensor> {
  const declared = new Set(inputs.map((spec) => spec.name));
  const unknown = Object.keys(feeds).filter((name) => !declared.has(name));
  const missing = inputs.filter((spec) => !(spec.name in feeds)).map((spec) => spec.name);
  if (unknown.length > 0 || missing.length > 0) {
    const problems = [
      ...(missing.length > 0 ? [`missing ${missing.join(', ')}`] : []),
      ...(unknown.length > 0 ? [`unknown ${unknown.join(', ')}`] : []),
    ];
    throw new InvalidArgumentError(
      `Feeds for ${modelPath} do not match its inputs (${problems.join('; ')}). The model's inputs: ${describeValues(inputs)}.`,
    );
  }
  const converted: Record<string, OrtTensor> = {};
  for (const spec of inputs) converted[spec.name] = toOrtTensor(spec, feeds[spec.name], inputs, modelPath);
  return converted;
}

function toOrtTensor(spec: ValueSpec, value: FeedValue, inputs: readonly ValueSpec[], modelPath: string): OrtTensor {
  const fail = (problem: string): never => {
    throw new InvalidArgumentError(`Input '${spec.name}' of ${modelPath}: ${problem}. The model's inputs: ${describeValues(inputs)}.`);
  };
  const declaredRank = spec.shape.length;
  let data: FeedData;
  let shape: readonly number[];
  if (typeof value === 'number') {
    if (declaredRank > 1) fail(`a number was fed, but the input has rank ${declaredRank}`);
    data = [value];
    shape = declaredRank === 0 ? [] : [1];
  } else {
    data = value.data;
    shape = value.shape;
    const size = shape.reduce((product, dim) => product * dim, 1);
    if (data.length !== size) fail(`${data.length} values were fed for shape [${shape.join(', ')}] (${size})`);
  }

  if (shape.length !== declaredRank) {
    // A per-batch [B] timestep for a model that takes one scalar (SDXL UNet exports), or a scalar for a [1] input.
    if (declaredRank === 0 && shape.length === 1 && data.length >= 1) {
      if (!allEqual(data)) fail(`the model takes a scalar, but the fed [${shape.join(', ')}] values differ`);
      data = data.slice(0, 1);
      shape = [];
    } else if (declaredRank === 1 && shape.length === 0) {
      shape = [1];
    } else {
      fail(`expected rank ${declaredRank}, got shape [${shape.join(', ')}]`);
    }
  }
  spec.shape.forEach((dim, axis) => {
    if (typeof dim === 'number' && shape[axis] !== dim) fail(`dimension ${axis} must be ${dim}, got shape [${shape.join(', ')}]`);
  });
  return new ort.Tensor(spec.type, convertData(data, spec.type, fail), shape);
}

// Compile-time check that the spelled-out union stays onnxruntime's own.
const SAME_TYPES: [ModelValueType, OrtTensor.Type] extends [OrtTensor.Type, ModelValueType] ? true : never = true;
void SAME_TYPES;

function convertData(data: FeedData, type: ModelValueType, fail: (problem: string) => never): OrtTensor.DataType {
  switch (type) {
    case 'float32':
      return data instanceof Float32Array ? data : Float32Array.from(numbers(data));
    case 'float64':
      return data instanceof Float64Array ? data : Float64Array.from(numbers(data));
    case 'float16':
      return toFloat16Bits(numbers(data));
    case 'int32':
      return data instanceof Int32Array ? data : Int32Array.from(integers(data, 2 ** 31, fail));
    case 'int64':
      return data instanceof BigInt64Array ? data : BigInt64Array.from(integers(data, 2 ** 63, fail), (v) => BigInt(v));
    default:
      throw new UnsupportedError(`Inputs of type ${type} are not supported; supported: float32, float16, float64, int32, int64.`);
  }
}

function numbers(data: FeedData): ArrayLike<number> {
  return data instanceof BigInt64Array ? Array.from(data, Number) : data;
}

/** Truncates toward zero like numpy's astype, which is how diffusers' ONNX pipelines cast timesteps to int64. */
function integers(data: FeedData, limit: number, fail: (problem: string) => never): number[] {
  return Array.from(numbers(data), (value, index) => {
    if (!Number.isFinite(value) || value >= limit || value < -limit) fail(`value ${value} at index ${index} does not fit an integer input`);
    return Math.trunc(value);
  });
}

function allEqual(data: FeedData): boolean {
  for (let i = 1; i < data.length; i++) if (data[i] !== data[0]) return false;
  return true;
}

/** An output as a float32 Tensor; float32 data is wrapped without copying, other numeric types are converted. */
/** @internal */
export function fromOrtTensor(output: OrtTensor, name: string, modelPath: string): Tensor<'float32'> {
  const { data, dims } = output;
  switch (output.type) {
    case 'float32':
      return new Tensor(data as Float32Array, dims);
    case 'float16':
      return new Tensor(fromFloat16Bits(data as Uint16Array), dims);
    case 'int64':
    case 'uint64':
      return new Tensor(Float32Array.from(data as BigInt64Array, Number), dims);
    case 'float64':
    case 'int32':
    case 'uint32':
    case 'int16':
    case 'uint16':
    case 'int8':
    case 'uint8':
      return new Tensor(Float32Array.from(data as ArrayLike<number>), dims);
    default:
      throw new UnsupportedError(`Output '${name}' of ${modelPath} has type ${output.type}; only numeric outputs are supported.`);
  }
}
