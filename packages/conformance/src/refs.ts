import { readFile } from 'node:fs/promises';

/** The layout of a refs file, as described in ../shared/conformance/README.md. Every section is optional. */
export interface Refs {
  meta?: Record<string, unknown>;
  randn?: RandnRef[];
  tokenizer?: TokenizerRefs;
  schedulers?: SchedulerRef[];
  sd_runs?: RunRef[];
  sdxl_runs?: RunRef[];
  inpaint_runs?: RunRef[];
  controlnet_runs?: RunRef[];
  sdxl_inpaint_runs?: RunRef[];
  sdxl_controlnet_runs?: RunRef[];
  ipadapter_runs?: RunRef[];
  sdxl_ipadapter_runs?: RunRef[];
  image_encoder?: ImageEncoderRef[];
}

/** The IP-Adapter's feature extractor and image encoder on one picture. */
export interface ImageEncoderRef {
  id: string;
  model: string;
  /** How to build the picture (see `describedImage`). */
  image: string;
  pixel_values: { shape: number[]; data: number[] };
  image_embeds: { shape: number[]; data: number[] };
}

/** Seeds up to 2^64-1: large ones arrive as strings (see `readRefs`). */
export type Seed = number | string;

export interface RandnDraw {
  shape: number[];
  dtype?: 'float32' | 'float64';
  /** The whole draw, or for large ones the first and last 512 values and the sum of all. */
  data?: number[];
  head?: number[];
  tail?: number[];
  sum?: number;
}

export interface RandnRef {
  seed: Seed;
  shape: number[];
  /** torch.randn(shape) from a fresh generator; a float64 case may carry its draw under `float64` instead. */
  first?: RandnDraw;
  float64?: RandnDraw;
  /** The next torch.randn((5,)) from the same generator. */
  then5: RandnDraw;
}

export interface TokenizerCase {
  prompt: string;
  ids: number[];
  ids_untruncated: number[];
  ids_pad_bang: number[];
}

export interface TokenizerRefs {
  class?: string;
  cases: TokenizerCase[];
}

export interface SchedulerTrajectoryStep {
  scaled_input_sum: number;
  prev: number[];
}

export interface SchedulerRef {
  scheduler: string;
  config: Record<string, unknown>;
  steps: number;
  timesteps: number[];
  sigmas: number[] | null;
  init_noise_sigma: number;
  trajectory: SchedulerTrajectoryStep[];
}

export interface RunStepRef {
  step: number;
  timestep: number;
  guidance_scale: number;
  latents: number[];
  /** IP-Adapter runs: the scale after this step's callbacks (it applies from the next step on). */
  ip_adapter_scale_after?: number;
}

export interface RunRef {
  id: string;
  model: string;
  pipeline: string;
  scheduler: string;
  /** Absent where diffusers crashed (`diffusers_error`). */
  scheduler_config?: Record<string, unknown>;
  seed: Seed;
  kwargs: Record<string, unknown>;
  callback: string | null;
  callback_args: Record<string, unknown> | null;
  /** Absent where diffusers crashed (`diffusers_error`). */
  steps?: RunStepRef[];
  image?: { shape: number[]; data: number[] };
  init_image?: string;
  mask_image?: string;
  control_image?: string;
  ip_adapter_image?: string;
  /** The IP-Adapter scale set before the run. */
  ip_adapter_scale?: number;
  /** diffusers itself failed on this case; the project must run it to the end. */
  diffusers_error?: string;
}

/** The refs file is missing or not a refs file: a usage error, not a failed case. */
export class RefsError extends Error {
  override readonly name = 'RefsError';
}

// JSON numbers lose precision past 2^53, so seeds of 16 digits or more are quoted before parsing.
const LONG_SEED = /("seed"\s*:\s*)(\d{16,})(?=\s*[,}\]])/g;

export function parseRefs(text: string, source: string): Refs {
  let refs: unknown;
  try {
    refs = JSON.parse(text.replace(LONG_SEED, '$1"$2"'));
  } catch (error) {
    throw new RefsError(`${source} is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof refs !== 'object' || refs === null || Array.isArray(refs)) {
    throw new RefsError(`${source} does not hold a JSON object.`);
  }
  return refs as Refs;
}

export async function readRefs(path: string): Promise<Refs> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new RefsError(`cannot read refs file ${path}: ${(error as Error).message}`);
  }
  return parseRefs(text, path);
}

export function toSeed(seed: Seed): number | bigint {
  return typeof seed === 'string' ? BigInt(seed) : seed;
}

const NON_FINITE: Record<string, number> = { Infinity: Infinity, '-Infinity': -Infinity, NaN: NaN };

/** refs.json writes Python's non-finite config values as strings ("-Infinity", …): turn them back into numbers. */
export function reviveNonFinite<T>(value: T): T {
  if (typeof value === 'string' && Object.hasOwn(NON_FINITE, value)) return NON_FINITE[value] as T;
  if (Array.isArray(value)) return value.map((item) => reviveNonFinite(item)) as T;
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, reviveNonFinite(item)])) as T;
  }
  return value;
}
