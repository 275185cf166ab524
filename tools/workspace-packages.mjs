// The repository's workspace packages, as the root package.json's `workspaces` lists them: shared by the release
// and package checks and the pack test, so that a package added to the workspaces is checked without editing them.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export function readJson(path) {
  return JSON.parse(readFileSync(path, 'utf8'));
}

/** Folders a workspace entry names: `dir` itself, or every subfolder of `dir` for `dir/*`. */
function foldersOf(pattern) {
  if (pattern.endsWith('/*') && !pattern.slice(0, -2).includes('*')) {
    const parent = join(repoRoot, pattern.slice(0, -2));
    return existsSync(parent) ? readdirSync(parent, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(parent, e.name)) : [];
  }
  if (pattern.includes('*')) throw new Error(`workspaces entry "${pattern}": only "dir" and "dir/*" are supported here.`);
  return [join(repoRoot, pattern)];
}

/** `{ name, dir, relativeDir, manifest }` for every workspace folder with a package.json, sorted by folder. */
export function workspacePackages() {
  const { workspaces = [] } = readJson(join(repoRoot, 'package.json'));
  return workspaces
    .flatMap(foldersOf)
    .filter((dir) => existsSync(join(dir, 'package.json')))
    .map((dir) => {
      const manifest = readJson(join(dir, 'package.json'));
      return { name: manifest.name, dir, relativeDir: relative(repoRoot, dir), manifest };
    })
    .sort((a, b) => a.relativeDir.localeCompare(b.relativeDir));
}

/** The workspace packages npm would publish (not `"private": true`). */
export function publishedPackages() {
  return workspacePackages().filter((pkg) => pkg.manifest.private !== true);
}

/** The bin script of one of the root's devDependencies, to run with this Node (no npx: no npm start-up, no registry). */
export function binPath(packageName, binName = packageName.split('/').pop()) {
  const dir = join(repoRoot, 'node_modules', packageName);
  const { bin } = readJson(join(dir, 'package.json'));
  return join(dir, typeof bin === 'string' ? bin : bin[binName]);
}

/**
 * `npm pack`s the package folders into `destination` in one npm run; returns, in the same order,
 * `{ name, version, tarball (absolute path), files (paths inside the package) }`.
 */
export function packPackages(dirs, destination) {
  const result = spawnSync('npm', ['pack', '--json', '--pack-destination', destination, ...dirs], { cwd: repoRoot, encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`npm pack failed (exit ${result.status}):\n${result.stderr}`);
  return JSON.parse(result.stdout).map(({ name, version, filename, files }) => ({
    name,
    version,
    tarball: join(destination, filename),
    files: files.map((file) => file.path),
  }));
}
