// Jest's node environment runs tests in a separate V8 context whose typed-array classes differ from Node's own.
// onnxruntime-node's native binding builds output tensors from Node's Float32Array & co. and hands them to the
// Tensor class loaded inside the test context, whose `instanceof` checks then reject them ("A float32 tensor's data
// must be type of function Float32Array()"). Sharing Node's typed-array classes with the test context removes the
// mismatch. Use it from any test that runs an ONNX session: `@jest-environment ./src/__fixtures__/onnx-test-environment.cjs`.
const { TestEnvironment } = require('jest-environment-node');

const SHARED_CLASSES = [
  'ArrayBuffer',
  'SharedArrayBuffer',
  'Int8Array',
  'Uint8Array',
  'Uint8ClampedArray',
  'Int16Array',
  'Uint16Array',
  'Int32Array',
  'Uint32Array',
  'Float32Array',
  'Float64Array',
  'BigInt64Array',
  'BigUint64Array',
];

class OnnxTestEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const name of SHARED_CLASSES) this.global[name] = globalThis[name];
  }
}

module.exports = OnnxTestEnvironment;
