// diffusers' conformance data (refs.json and the tiny ONNX pipelines) lives in ../shared/conformance beside the
// repository on the project's machines and in CI; a clone without it skips the tests that need it.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const SHARED_CONFORMANCE_DIR = fileURLToPath(new URL('../../../../../shared/conformance', import.meta.url));
const REFS_PATH = join(SHARED_CONFORMANCE_DIR, 'refs.json');

/** refs.json parsed, typed as the sections a test reads; `undefined` where the shared data is absent. */
export function readSharedRefs<Refs>(): Refs | undefined {
  return existsSync(REFS_PATH) ? (JSON.parse(readFileSync(REFS_PATH, 'utf8')) as Refs) : undefined;
}
