import ort from 'onnxruntime-node';
import { InvalidArgumentError, UnsupportedError } from '../errors.js';
import { Tensor } from '../tensor.js';
import { fromOrtTensor, toOrtFeeds, type ValueSpec } from './feeds.js';
import { toFloat16Bits } from './float16.js';

const SD_UNET: ValueSpec[] = [
  { name: 'sample', type: 'float32', shape: ['batch', 4, 'height', 'width'] },
  { name: 'timestep', type: 'float32', shape: ['batch'] },
  { name: 'encoder_hidden_states', type: 'float32', shape: ['batch', 'sequence', 8] },
];
const SDXL_TIMESTEP: ValueSpec[] = [{ name: 'timestep', type: 'int64', shape: [] }];
const PATH = '/models/unet/model.onnx';

function unetFeeds(timestep: Tensor | number = new Tensor(new Float32Array([10, 10]), [2])) {
  return { sample: Tensor.zeros([2, 4, 8, 8]), timestep, encoder_hidden_states: Tensor.zeros([2, 77, 8]) };
}

describe('toOrtFeeds', () => {
  it('passes float32 data through without copying', () => {
    const feeds = unetFeeds();
    const converted = toOrtFeeds(SD_UNET, feeds, PATH);
    expect(converted.sample.data).toBe(feeds.sample.data);
    expect(converted.sample.dims).toEqual([2, 4, 8, 8]);
    expect(converted.sample.type).toBe('float32');
  });

  it('converts float64 tensors and plain arrays to float32', () => {
    const converted = toOrtFeeds(
      SD_UNET,
      { ...unetFeeds(), timestep: new Tensor<'float64'>(new Float64Array([999.5, 1]), [2]), encoder_hidden_states: { data: new Array(2 * 77 * 8).fill(0.25), shape: [2, 77, 8] } },
      PATH,
    );
    expect(converted.timestep.data).toEqual(new Float32Array([999.5, 1]));
    expect(converted.encoder_hidden_states.data).toBeInstanceOf(Float32Array);
  });

  it('converts token ids between int32 and int64', () => {
    const int64Ids: ValueSpec[] = [{ name: 'input_ids', type: 'int64', shape: ['batch', 3] }];
    const int32Ids: ValueSpec[] = [{ name: 'input_ids', type: 'int32', shape: ['batch', 3] }];
    const wide = toOrtFeeds(int64Ids, { input_ids: { data: new Int32Array([5, 6, 7]), shape: [1, 3] } }, PATH);
    expect(wide.input_ids.data).toEqual(new BigInt64Array([5n, 6n, 7n]));
    const narrow = toOrtFeeds(int32Ids, { input_ids: { data: new BigInt64Array([5n, 6n, 7n]), shape: [1, 3] } }, PATH);
    expect(narrow.input_ids.data).toEqual(new Int32Array([5, 6, 7]));
  });

  it('makes an all-equal [B] timestep the rank-0 int64 scalar SDXL UNets take, truncating like numpy', () => {
    const converted = toOrtFeeds(SDXL_TIMESTEP, { timestep: new Tensor(new Float32Array([958.75, 958.75]), [2]) }, PATH);
    expect(converted.timestep.dims).toEqual([]);
    expect(converted.timestep.data).toEqual(new BigInt64Array([958n]));
  });

  it('refuses a [B] timestep with differing values for a scalar input', () => {
    expect(() => toOrtFeeds(SDXL_TIMESTEP, { timestep: { data: [1, 2], shape: [2] } }, PATH)).toThrow(
      /takes a scalar.*timestep: int64 \[\]/,
    );
  });

  it('feeds a number as a scalar or as [1], per the declared rank', () => {
    expect(toOrtFeeds(SDXL_TIMESTEP, { timestep: 501 }, PATH).timestep.dims).toEqual([]);
    const perBatch = toOrtFeeds(SD_UNET, { ...unetFeeds(501), sample: Tensor.zeros([1, 4, 8, 8]) }, PATH);
    expect(perBatch.timestep.dims).toEqual([1]);
    expect(perBatch.timestep.data).toEqual(new Float32Array([501]));
  });

  it('converts float feeds to float16 bit patterns', () => {
    const half: ValueSpec[] = [{ name: 'x', type: 'float16', shape: [3] }];
    const converted = toOrtFeeds(half, { x: new Tensor(new Float32Array([1, 0.1, -2]), [3]) }, PATH);
    expect(converted.x.type).toBe('float16');
    expect(converted.x.data).toEqual(toFloat16Bits([1, 0.1, -2]));
  });

  it('names missing and unknown inputs and lists the model inputs', () => {
    const { timestep: _timestep, ...withoutTimestep } = unetFeeds();
    const call = () => toOrtFeeds(SD_UNET, { ...withoutTimestep, latents: Tensor.zeros([1]) }, PATH);
    expect(call).toThrow(InvalidArgumentError);
    expect(call).toThrow(
      'Feeds for /models/unet/model.onnx do not match its inputs (missing timestep; unknown latents). The model\'s inputs: ' +
        'sample: float32 [batch, 4, height, width]; timestep: float32 [batch]; encoder_hidden_states: float32 [batch, sequence, 8].',
    );
  });

  it('refuses a wrong rank, a wrong fixed dimension, and data that does not fill the shape', () => {
    expect(() => toOrtFeeds(SD_UNET, { ...unetFeeds(), sample: Tensor.zeros([4, 8, 8]) }, PATH)).toThrow(
      /Input 'sample' .*expected rank 4, got shape \[4, 8, 8\]/,
    );
    expect(() => toOrtFeeds(SD_UNET, { ...unetFeeds(), encoder_hidden_states: Tensor.zeros([2, 77, 16]) }, PATH)).toThrow(
      /dimension 2 must be 8/,
    );
    expect(() => toOrtFeeds(SD_UNET, { ...unetFeeds(), timestep: { data: [1, 2, 3], shape: [2] } }, PATH)).toThrow(
      /3 values were fed for shape \[2\]/,
    );
    expect(() => toOrtFeeds(SD_UNET, { ...unetFeeds(), sample: 3 }, PATH)).toThrow(/a number was fed, but the input has rank 4/);
  });

  it('refuses values that are no integers for integer inputs', () => {
    expect(() => toOrtFeeds(SDXL_TIMESTEP, { timestep: NaN }, PATH)).toThrow(/value NaN at index 0/);
  });

  it('reports input types it cannot produce', () => {
    const boolInput: ValueSpec[] = [{ name: 'flag', type: 'bool', shape: [] }];
    expect(() => toOrtFeeds(boolInput, { flag: 1 }, PATH)).toThrow(UnsupportedError);
  });
});

describe('fromOrtTensor', () => {
  it('wraps float32 output data without copying', () => {
    const data = new Float32Array([1, 2, 3, 4]);
    const tensor = fromOrtTensor(new ort.Tensor('float32', data, [2, 2]), 'out', PATH);
    expect(tensor.data).toBe(data);
    expect(tensor.shape).toEqual([2, 2]);
  });

  it('widens float16 and int64 outputs to float32', () => {
    expect(fromOrtTensor(new ort.Tensor('float16', toFloat16Bits([0.5, -3]), [2]), 'out', PATH).data).toEqual(new Float32Array([0.5, -3]));
    expect(fromOrtTensor(new ort.Tensor('int64', new BigInt64Array([7n]), [1]), 'out', PATH).data).toEqual(new Float32Array([7]));
  });

  it('refuses non-numeric outputs', () => {
    expect(() => fromOrtTensor(new ort.Tensor('bool', new Uint8Array([1]), [1]), 'mask', PATH)).toThrow(/Output 'mask'.*bool/);
  });
});
