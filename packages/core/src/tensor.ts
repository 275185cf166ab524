import { InvalidArgumentError } from './errors.js';

export type FloatDType = 'float32' | 'float64';
export type FloatData<D extends FloatDType = FloatDType> = D extends 'float64' ? Float64Array : Float32Array;

function sizeOf(shape: readonly number[]): number {
  let size = 1;
  for (const dim of shape) {
    if (!Number.isInteger(dim) || dim < 0) {
      throw new InvalidArgumentError(`Tensor shape [${shape.join(', ')}] must hold non-negative integers.`);
    }
    size *= dim;
  }
  return size;
}

/**
 * A dense, row-major float tensor: the currency of pipelines, schedulers and callbacks.
 * Deliberately small — the heavy math runs in ONNX Runtime; this only carries data and offers the few reshaping
 * operations callbacks need (`chunk`, `cat`), with torch's semantics.
 */
export class Tensor<D extends FloatDType = 'float32'> {
  readonly data: FloatData<D>;
  readonly shape: readonly number[];

  constructor(data: FloatData<D>, shape: readonly number[]) {
    const size = sizeOf(shape);
    if (data.length !== size) {
      throw new InvalidArgumentError(
        `Tensor data has ${data.length} elements but shape [${shape.join(', ')}] needs ${size}.`,
      );
    }
    this.data = data;
    this.shape = Object.freeze([...shape]);
  }

  static zeros(shape: readonly number[], dtype: 'float64'): Tensor<'float64'>;
  static zeros(shape: readonly number[], dtype?: 'float32'): Tensor<'float32'>;
  static zeros(shape: readonly number[], dtype: FloatDType = 'float32'): Tensor<FloatDType> {
    const size = sizeOf(shape);
    return dtype === 'float64' ? new Tensor<'float64'>(new Float64Array(size), shape) : new Tensor(new Float32Array(size), shape);
  }

  get dtype(): D {
    return (this.data instanceof Float64Array ? 'float64' : 'float32') as D;
  }

  get size(): number {
    return this.data.length;
  }

  clone(): Tensor<D> {
    return new Tensor(this.data.slice() as FloatData<D>, this.shape);
  }

  reshape(shape: readonly number[]): Tensor<D> {
    return new Tensor(this.data, shape);
  }

  /** torch.chunk: splits `dim` into `chunks` pieces of ceil(size / chunks) (the last may be smaller). Copies. */
  chunk(chunks: number, dim = 0): Tensor<D>[] {
    const axis = this.axis(dim);
    if (!Number.isInteger(chunks) || chunks < 1) {
      throw new InvalidArgumentError(`chunk() needs a positive integer number of chunks, got ${chunks}.`);
    }
    const length = this.shape[axis];
    const step = Math.ceil(length / chunks);
    const pieces: Tensor<D>[] = [];
    for (let start = 0; start < length; start += step) pieces.push(this.narrow(axis, start, Math.min(step, length - start)));
    return pieces;
  }

  /** torch.narrow: `length` entries of `dim` from `start`, as a new tensor. */
  narrow(dim: number, start: number, length: number): Tensor<D> {
    const axis = this.axis(dim);
    if (!Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 0 || start + length > this.shape[axis]) {
      throw new InvalidArgumentError(
        `narrow(${dim}, ${start}, ${length}) is out of range for a dimension of size ${this.shape[axis]}.`,
      );
    }
    const outer = sizeOf(this.shape.slice(0, axis));
    const inner = sizeOf(this.shape.slice(axis + 1));
    const shape = [...this.shape];
    shape[axis] = length;
    const out = new (this.data.constructor as Float32ArrayConstructor)(outer * length * inner) as FloatData<D>;
    for (let o = 0; o < outer; o++) {
      const from = (o * this.shape[axis] + start) * inner;
      out.set(this.data.subarray(from, from + length * inner), o * length * inner);
    }
    return new Tensor(out, shape);
  }

  /** torch.cat along `dim`; all other dimensions must agree. */
  static cat<D extends FloatDType>(tensors: readonly Tensor<D>[], dim = 0): Tensor<D> {
    if (tensors.length === 0) throw new InvalidArgumentError('cat() needs at least one tensor.');
    const first = tensors[0];
    const axis = first.axis(dim);
    for (const tensor of tensors) {
      const same = tensor.shape.length === first.shape.length && tensor.shape.every((d, i) => i === axis || d === first.shape[i]);
      if (!same || tensor.dtype !== first.dtype) {
        throw new InvalidArgumentError(
          `cat() along dim ${dim} needs equal ${first.dtype} shapes elsewhere: [${first.shape.join(', ')}] vs ` +
            `${tensor.dtype} [${tensor.shape.join(', ')}].`,
        );
      }
    }
    const outer = sizeOf(first.shape.slice(0, axis));
    const inner = sizeOf(first.shape.slice(axis + 1));
    const total = tensors.reduce((sum, t) => sum + t.shape[axis], 0);
    const shape = [...first.shape];
    shape[axis] = total;
    const out = new (first.data.constructor as Float32ArrayConstructor)(outer * total * inner) as FloatData<D>;
    let offset = 0;
    for (let o = 0; o < outer; o++) {
      for (const tensor of tensors) {
        const block = tensor.shape[axis] * inner;
        out.set(tensor.data.subarray(o * block, (o + 1) * block), offset);
        offset += block;
      }
    }
    return new Tensor(out, shape);
  }

  private axis(dim: number): number {
    const rank = this.shape.length;
    const axis = dim < 0 ? dim + rank : dim;
    if (!Number.isInteger(axis) || axis < 0 || axis >= rank) {
      throw new InvalidArgumentError(`Dimension ${dim} is out of range for a tensor of rank ${rank}.`);
    }
    return axis;
  }
}
