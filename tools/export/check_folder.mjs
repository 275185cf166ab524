#!/usr/bin/env node
// Loads an exported pipeline folder the way an app would — with @diff/core's pipeline class for its model_index.json
// `_class_name` — and prints one JSON report: the class that loaded it, every component's ONNX inputs and outputs as
// ONNX Runtime reports them (`name:type[dims]`, the format of the conformance README) and, with --generate, the
// picture a 2-step generation at --size pixels (default 64) gave, with an ipAdapterImage when the UNet has the
// adapter and a control picture for ControlNet folders. test_export.py compares the report with the conventions.
// Needs a built @diff/core (`npx turbo run build --filter=@diff/core`). Exit 1 (with {"error"}) when it cannot load.
//   node tools/export/check_folder.mjs <folder> [--generate] [--size 64]
import { existsSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const CORE_ENTRY = fileURLToPath(new URL('../../packages/core/dist/index.js', import.meta.url));
const USAGE = 'usage: node tools/export/check_folder.mjs <exported folder> [--generate] [--size 64]';

/** The @diff/core class for each model family (the `_class_name` less its Onnx/ORT prefix and Pipeline suffix). */
const PIPELINE_CLASS_BY_FAMILY = {
  StableDiffusion: 'StableDiffusionPipeline',
  StableDiffusionXL: 'StableDiffusionXLPipeline',
  StableDiffusionControlNet: 'StableDiffusionControlNetPipeline',
  StableDiffusionXLControlNet: 'StableDiffusionXLControlNetPipeline',
};

class CheckError extends Error {}

/** A smooth RGB test picture. */
function gradient(width, height) {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      data.set([(255 * x) / (width - 1), (255 * y) / (height - 1), 128], (y * width + x) * 3);
    }
  }
  return { data, width, height, channels: 3 };
}

function describe(specs) {
  return specs.map(({ name, type, shape }) => `${name}:${type}[${shape.map((dim) => dim ?? '?').join(',')}]`);
}

function parseArgs(args) {
  const sizeAt = args.indexOf('--size');
  const size = sizeAt === -1 ? 64 : Number(args[sizeAt + 1]);
  const folders = args.filter((arg, index) => !arg.startsWith('--') && (sizeAt === -1 || index !== sizeAt + 1));
  if (folders.length !== 1 || !Number.isInteger(size) || size <= 0) throw new CheckError(USAGE);
  return { dir: resolve(folders[0]), generate: args.includes('--generate'), size };
}

async function componentSignatures(core, dir) {
  const pool = new core.SessionPool();
  const components = {};
  try {
    for (const component of readdirSync(dir).sort()) {
      const path = join(dir, component, 'model.onnx');
      if (existsSync(path)) components[component] = { inputs: describe(await pool.inputs(path)), outputs: describe(await pool.outputs(path)) };
    }
  } finally {
    await pool.dispose();
  }
  return components;
}

/** A short generation with the folder's extra conditioning; the error's message when the pipeline fails. */
async function tryGenerate(core, pipeline, { family, size, withAdapter }) {
  const options = { prompt: 'a red circle on a blue background', numInferenceSteps: 2, height: size, width: size, generator: new core.Generator().manualSeed(0) };
  if (withAdapter) Object.assign(options, { ipAdapterImage: gradient(48, 40), ipAdapterScale: 0.6 });
  if (family.includes('ControlNet')) options.image = gradient(size, size);
  try {
    const [image] = (await pipeline.generate(options)).images;
    return { generated: { width: image.width, height: image.height, channels: image.channels, ipAdapter: withAdapter, controlImage: 'image' in options } };
  } catch (error) {
    return { generateError: String(error?.message ?? error) };
  }
}

async function check({ dir, generate, size }) {
  if (!existsSync(CORE_ENTRY)) throw new CheckError(`@diff/core is not built (${CORE_ENTRY} is missing): npx turbo run build --filter=@diff/core`);
  const indexPath = join(dir, 'model_index.json');
  if (!existsSync(indexPath)) throw new CheckError(`${dir} has no model_index.json: not an exported pipeline folder`);
  const core = await import(CORE_ENTRY);
  // diffusers writes model_index.json with Python's json (bare Infinity/NaN allowed): read it as the core does.
  const { _class_name: className } = core.parsePythonJson(await readFile(indexPath, 'utf8'));
  const family = /^(?:Onnx|ORT)?(\w+?)Pipeline$/.exec(String(className))?.[1] ?? '';
  const pipelineClassName = PIPELINE_CLASS_BY_FAMILY[family];
  const PipelineClass = pipelineClassName ? core[pipelineClassName] : undefined;

  const report = { className, pipeline: null, pipelineNote: null, components: await componentSignatures(core, dir), generated: null };
  if (existsSync(join(dir, 'feature_extractor', 'preprocessor_config.json'))) {
    report.featureExtractor = (await core.CLIPImageProcessor.fromPretrained(join(dir, 'feature_extractor'))).constructor.name;
  }
  if (!PipelineClass) {
    report.pipelineNote = pipelineClassName ? `@diff/core has no ${pipelineClassName} yet; checked the components only` : `no @diff/core pipeline for ${className}`;
    return report;
  }
  const pipeline = await PipelineClass.fromPretrained(dir);
  report.pipeline = pipelineClassName;
  try {
    const withAdapter = (report.components.unet?.inputs ?? []).some((spec) => spec.startsWith('image_embeds:'));
    if (generate && withAdapter && !PipelineClass.callbackTensorInputs?.includes('ipAdapterImageEmbeds')) {
      report.pipelineNote = `this @diff/core's ${pipelineClassName} has no IP-Adapter options yet; not generating`;
    } else if (generate) {
      Object.assign(report, await tryGenerate(core, pipeline, { family, size, withAdapter }));
    }
  } finally {
    await pipeline.dispose();
  }
  return report;
}

try {
  console.log(JSON.stringify(await check(parseArgs(process.argv.slice(2)))));
} catch (error) {
  console.log(JSON.stringify({ error: error instanceof CheckError ? error.message : String(error?.stack ?? error) }));
  process.exitCode = 1;
}
