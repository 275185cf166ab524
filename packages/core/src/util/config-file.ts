import { readFile } from 'node:fs/promises';
import { ModelLoadError } from '../errors.js';
import { parsePythonJson } from './python-json.js';

/**
 * Reads a JSON object from a model folder's file (configs, vocabularies; written by Python, so bare NaN /
 * Infinity are allowed). Errors are `ModelLoadError`s naming the file and what was expected.
 */
export async function readConfigFile(path: string, expected: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new ModelLoadError(path, `cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'}); expected ${expected}.`, { cause: error });
  }
  let value: unknown;
  try {
    value = parsePythonJson(text);
  } catch (error) {
    throw new ModelLoadError(path, `is not valid JSON (${(error as Error).message}); expected ${expected}.`, { cause: error });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ModelLoadError(path, `must hold a JSON object; expected ${expected}.`);
  }
  return value as Record<string, unknown>;
}
