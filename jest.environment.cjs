// A Jest environment for tests that run ONNX sessions. Two things break onnxruntime-node (1.29) under Jest, which
// evaluates modules afresh in a separate V8 context for every test file while native addons load once per process:
//
// 1. Typed arrays: the native binding builds output tensors from Node's own Float32Array & co. and hands them to
//    the Tensor class of the test context, whose `instanceof` checks reject them ("A float32 tensor's data must be
//    type of function Float32Array()"). Fix: the test context uses Node's typed-array classes.
// 2. Initialisation: each test file's copy of onnxruntime-node calls the binding's initOrtOnce again, and the second
//    call in one process aborts Node (a duplicate N-API cleanup hook; microsoft/onnxruntime#32464, fixed after
//    1.29.0). Fix: initialise once here, outside the test contexts, and make later calls no-ops.
//
// Every package's jest config uses it (jest.preset.cjs), so no test file needs to opt in.
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

const INITIALISED = Symbol.for('@diff/core onnxruntime initialised');

function initialiseOnnxRuntimeOnce() {
  // The native binding object is cached by Node for the whole process, so the marker survives every test file.
  const { binding, initOrt } = require('onnxruntime-node/dist/binding.js');
  if (binding[INITIALISED]) return;
  initOrt();
  binding.initOrtOnce = () => undefined;
  binding[INITIALISED] = true;
}

class OnnxTestEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const name of SHARED_CLASSES) this.global[name] = globalThis[name];
    initialiseOnnxRuntimeOnce();
  }
}

module.exports = OnnxTestEnvironment;
