/**
 * Where the examples find their models: `--model DIR`, else the conformance fixtures beside the repository
 * (`../shared/conformance/<name>`), which hold tiny SD 1.5 and SDXL pipelines exported from real diffusers models.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export function modelDir(name: 'tiny-sd' | 'tiny-sdxl' | 'tiny-sd-inpaint' | 'tiny-sd-controlnet' | 'tiny-sd-ipadapter'): string {
  const flag = process.argv.indexOf('--model');
  const dir = flag >= 0 ? resolve(process.argv[flag + 1]) : join(repoRoot, '..', 'shared', 'conformance', name);
  if (!existsSync(join(dir, 'model_index.json'))) {
    console.error(`No diffusers ONNX pipeline at ${dir}. Pass --model DIR (a folder with model_index.json).`);
    process.exit(1);
  }
  return dir;
}

export function outputPath(file: string): string {
  return join(repoRoot, 'out', file);
}
