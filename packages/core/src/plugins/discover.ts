import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { CallbackPluginDescriptor } from '../contract.js';
import { PluginLoadError } from '../errors.js';
import { isCallbackPluginDescriptor, type CallbackRegistry } from './registry.js';

/** The keyword that marks a package as holding diff callback plugins. */
export const CALLBACK_PACKAGE_KEYWORD = 'diff-callback';

interface PackageJson {
  name?: string;
  keywords?: unknown;
  main?: string;
  exports?: unknown;
}

/** The ESM entry of a package: `exports['.']` (its `import` or `default` condition), else `main`, else index.js. */
function entryOf(pkg: PackageJson): string {
  let target: unknown = pkg.exports;
  if (target && typeof target === 'object' && '.' in target) target = (target as Record<string, unknown>)['.'];
  while (target && typeof target === 'object' && !Array.isArray(target)) {
    const conditions = target as Record<string, unknown>;
    target = conditions.import ?? conditions.node ?? conditions.default;
  }
  return typeof target === 'string' ? target : (pkg.main ?? 'index.js');
}

async function readPackageJson(dir: string): Promise<PackageJson | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as PackageJson;
  } catch {
    return undefined;
  }
}

/** Package folders in every `node_modules` from `from` up to the file-system root (nearest first, names unique). */
async function installedPackages(from: string): Promise<string[]> {
  const seen = new Set<string>();
  const folders: string[] = [];
  for (let dir = resolve(from); ; dir = dirname(dir)) {
    const modules = join(dir, 'node_modules');
    const entries = await readdir(modules, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      if (!entry.isDirectory() && !entry.isSymbolicLink()) continue;
      const names = entry.name.startsWith('@')
        ? (await readdir(join(modules, entry.name)).catch(() => [])).map((scoped) => `${entry.name}/${scoped}`)
        : entry.name.startsWith('.') ? [] : [entry.name];
      for (const name of names) {
        if (seen.has(name)) continue;
        seen.add(name);
        folders.push(join(modules, name));
      }
    }
    if (dirname(dir) === dir) return folders;
  }
}

export interface DiscoveredCallbackPackage {
  /** The package name. */
  readonly packageName: string;
  readonly descriptors: readonly CallbackPluginDescriptor<unknown, unknown>[];
}

/**
 * Finds the installed packages whose package.json has the keyword `diff-callback` (resolved as Node would from
 * `from`, default the current folder), imports them and returns their exported plugin descriptors — registered into
 * `registry` when one is given. A package that fails to load is an error naming it.
 */
export async function discoverCallbackPlugins(
  options: { from?: string; registry?: CallbackRegistry } = {},
): Promise<DiscoveredCallbackPackage[]> {
  const found: DiscoveredCallbackPackage[] = [];
  for (const folder of await installedPackages(options.from ?? process.cwd())) {
    const pkg = await readPackageJson(folder);
    if (!pkg || !Array.isArray(pkg.keywords) || !pkg.keywords.includes(CALLBACK_PACKAGE_KEYWORD)) continue;
    const entry = join(folder, entryOf(pkg));
    let module: Record<string, unknown>;
    try {
      module = (await import(pathToFileURL(entry).href)) as Record<string, unknown>;
    } catch (error) {
      throw new PluginLoadError(pkg.name ?? folder, `the callback package failed to load from ${entry}: ${(error as Error).message}`, { cause: error });
    }
    const descriptors = [...new Set(Object.values(module).filter(isCallbackPluginDescriptor))];
    for (const descriptor of descriptors) options.registry?.register(descriptor);
    found.push({ packageName: pkg.name ?? folder, descriptors });
  }
  return found;
}
