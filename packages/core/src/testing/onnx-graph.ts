// A minimal ONNX graph writer for test fixtures: declares inputs, outputs, initializers and nodes, and serialises
// the model with onnx-proto, optionally with the float initializers in an external weights file.
import onnxProto from 'onnx-proto';
import type { onnx } from 'onnx-proto';

const { onnx: proto } = onnxProto;

export type ElementType = 'float32' | 'float16' | 'int32' | 'int64';
/** A fixed size or a symbolic (dynamic) dimension name. */
export type Dim = number | string;
/** The attribute kinds the fixtures need: an integer, a string, or a list of integers. */
export type AttributeValue = number | string | readonly number[];

const ELEMENT_TYPE_CODE: Record<ElementType, number> = { float32: 1, int32: 6, int64: 7, float16: 10 };
const OPSET_VERSION = 17;
const IR_VERSION = 8;

export interface SerializedModel {
  model: Uint8Array;
  /** Bytes of the file named by `SerializeOptions.externalWeightsFile`, when some weights went there. */
  externalWeights?: Uint8Array;
}

export interface SerializeOptions {
  /**
   * Store the float weights in this file (a name next to the model, e.g. `model.onnx_data`). Like onnx's
   * `convert_model_to_external_data`, small tensors stay inline: ORT's shape inference must read constants such as
   * Resize scales from the model itself.
   */
  externalWeightsFile?: string;
}

const EXTERNAL_MIN_BYTES = 64;

interface Initializer {
  name: string;
  type: 'float32' | 'int64';
  dims: readonly number[];
  bytes: Uint8Array;
}

export class GraphBuilder {
  private readonly inputs: onnx.IValueInfoProto[] = [];
  private readonly outputs: onnx.IValueInfoProto[] = [];
  private readonly nodes: onnx.INodeProto[] = [];
  private readonly initializers: Initializer[] = [];
  private nextId = 0;

  constructor(private readonly name: string) {}

  input(name: string, type: ElementType, shape: readonly Dim[]): string {
    this.inputs.push(valueInfo(name, type, shape));
    return name;
  }

  /** Declares a graph output; some node must produce a value of this name. */
  output(name: string, type: ElementType, shape: readonly Dim[]): void {
    this.outputs.push(valueInfo(name, type, shape));
  }

  /** A float32 initializer (a weight), returned by name. */
  floats(values: ArrayLike<number>, dims: readonly number[]): string {
    const name = this.fresh('weight');
    const data = Float32Array.from(values);
    this.initializers.push({ name, type: 'float32', dims, bytes: new Uint8Array(data.buffer) });
    return name;
  }

  /** A float32 scalar constant (rank 0), broadcastable against anything. */
  scalar(value: number): string {
    return this.floats([value], []);
  }

  /** A 1-D int64 initializer (shapes, split sizes), returned by name. */
  ints(values: readonly number[]): string {
    const name = this.fresh('ints');
    const data = BigInt64Array.from(values, (v) => BigInt(v));
    this.initializers.push({ name, type: 'int64', dims: [values.length], bytes: new Uint8Array(data.buffer) });
    return name;
  }

  /** Adds a node and returns its output names (`outputs` names them, or a count asks for fresh names). */
  node(
    opType: string,
    inputs: readonly string[],
    attributes: Record<string, AttributeValue> = {},
    outputs: readonly string[] | number = 1,
  ): string[] {
    const outputNames = typeof outputs === 'number' ? Array.from({ length: outputs }, () => this.fresh(opType)) : [...outputs];
    this.nodes.push({
      opType,
      name: this.fresh(`${opType}_node`),
      input: [...inputs],
      output: outputNames,
      attribute: Object.entries(attributes).map(([name, value]) => attribute(name, value)),
    });
    return outputNames;
  }

  /** Shorthand for a one-output node. */
  op(opType: string, inputs: readonly string[], attributes: Record<string, AttributeValue> = {}): string {
    return this.node(opType, inputs, attributes)[0];
  }

  /** Routes `value` to the declared graph output `name`, casting when the output's type is not float32. */
  emit(value: string, name: string, type: ElementType = 'float32'): void {
    if (type === 'float32') this.node('Identity', [value], {}, [name]);
    else this.node('Cast', [value], { to: ELEMENT_TYPE_CODE[type] }, [name]);
  }

  /** A float32 view of a graph input of any declared type. */
  asFloat(value: string, type: ElementType): string {
    return type === 'float32' ? value : this.op('Cast', [value], { to: ELEMENT_TYPE_CODE.float32 });
  }

  serialize({ externalWeightsFile }: SerializeOptions = {}): SerializedModel {
    const externalParts: Uint8Array[] = [];
    let externalLength = 0;
    const initializer = this.initializers.map((init): onnx.ITensorProto => {
      const tensor: onnx.ITensorProto = { name: init.name, dataType: ELEMENT_TYPE_CODE[init.type], dims: [...init.dims] };
      if (externalWeightsFile === undefined || init.type !== 'float32' || init.bytes.length < EXTERNAL_MIN_BYTES) {
        return { ...tensor, rawData: init.bytes };
      }
      const offset = externalLength;
      externalParts.push(init.bytes);
      externalLength += init.bytes.length;
      return {
        ...tensor,
        dataLocation: proto.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: externalWeightsFile },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(init.bytes.length) },
        ],
      };
    });
    const model = proto.ModelProto.encode({
      irVersion: IR_VERSION,
      producerName: '@diff/core test fixtures',
      opsetImport: [{ domain: '', version: OPSET_VERSION }],
      graph: { name: this.name, input: this.inputs, output: this.outputs, node: this.nodes, initializer },
    }).finish();
    return externalParts.length === 0 ? { model } : { model, externalWeights: Buffer.concat(externalParts) };
  }

  private fresh(prefix: string): string {
    return `${prefix}_${this.nextId++}`;
  }
}

function valueInfo(name: string, type: ElementType, shape: readonly Dim[]): onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ELEMENT_TYPE_CODE[type],
        shape: { dim: shape.map((dim) => (typeof dim === 'number' ? { dimValue: dim } : { dimParam: dim })) },
      },
    },
  };
}

function attribute(name: string, value: AttributeValue): onnx.IAttributeProto {
  const { AttributeType } = proto.AttributeProto;
  if (typeof value === 'string') return { name, type: AttributeType.STRING, s: new TextEncoder().encode(value) };
  if (typeof value === 'number') return { name, type: AttributeType.INT, i: value };
  return { name, type: AttributeType.INTS, ints: [...value] };
}

/** Deterministic pseudo-random weights in [-scale, scale]: a fixed function of (seed, index). */
export function toyWeights(count: number, seed: number, scale = 0.5): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const x = Math.sin((i + 1) * 12.9898 + seed * 78.233) * 43758.5453;
    out[i] = (2 * (x - Math.floor(x)) - 1) * scale;
  }
  return out;
}
