#!/usr/bin/env node
// Checks what npm would publish: packs every published workspace package (not "private") and runs publint (strict:
// warnings fail too) and, on packages with a library entry, Are the Types Wrong (`--profile esm-only`: the packages
// are ESM-only, so CommonJS `require` is not a target) on each tarball. Needs built packages (`npm run build`).
// Exits 1 on any problem.
//
// The pack test (tools/pack-test/run.mjs) runs the same checks on the tarballs it packs.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { binPath, packPackages, publishedPackages, repoRoot } from './workspace-packages.mjs';

/** Runs a tool; resolves to its exit status and output together. */
function run(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: repoRoot, env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' } });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, output }));
  });
}

const binTargets = (manifest) => (typeof manifest.bin === 'string' ? [manifest.bin] : Object.values(manifest.bin ?? {}));

/**
 * Whether the package has something to import. A bin-only package (the CLI) has no entry and no types: attw would
 * pass it without looking at anything, so it is not run there; publint checks its bin, and the tarball check that
 * the bin files are in it.
 */
const hasLibraryEntry = (manifest) => manifest.main !== undefined || manifest.types !== undefined || manifest.exports !== undefined;

/** Every file an exports map (or main/types/bin) points to, wildcard patterns and package.json aside. */
function exportTargets(manifest) {
  const targets = [manifest.main, manifest.types, ...binTargets(manifest)];
  const visit = (value) => {
    if (typeof value === 'string') targets.push(value);
    else if (value && typeof value === 'object') Object.values(value).forEach(visit);
  };
  visit(manifest.exports);
  return [...new Set(targets.filter((t) => typeof t === 'string' && !t.includes('*') && t !== './package.json').map((t) => t.replace(/^\.\//, '')))];
}

/** Runs `tasks` (functions returning promises) with at most `limit` at a time; resolves to their results in order. */
async function limited(tasks, limit) {
  const results = [];
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const index = next++;
      results[index] = await tasks[index]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}

/**
 * Checks packed packages (`packPackages` results, each with its `manifest`): the files the exports map names are in
 * the tarball, then publint and attw. Resolves to one `{ name, problems }` per package.
 */
export async function checkTarballs(packed) {
  const publint = binPath('publint');
  const attw = binPath('@arethetypeswrong/cli', 'attw');
  const checks = packed.map(({ name, tarball, files, manifest }) => async () => {
    const missing = exportTargets(manifest).filter((target) => !files.includes(target));
    if (missing.length > 0) {
      return { name, problems: [`the tarball lacks ${missing.join(', ')}, which package.json points to: build first (npm run build).`] };
    }
    const library = hasLibraryEntry(manifest);
    const [lint, types] = await Promise.all([
      run([publint, 'run', tarball, '--strict']),
      library ? run([attw, tarball, '--profile', 'esm-only', '--format', 'ascii', '--no-emoji']) : undefined,
    ]);
    const problems = [];
    if (lint.status !== 0) problems.push(`publint:\n${lint.output.trim()}`);
    if (types && types.status !== 0) problems.push(`attw --profile esm-only:\n${types.output.trim()}`);
    return { name, problems, checks: library ? 'publint, attw (esm-only)' : 'publint, bin files (no library entry: attw does not apply)' };
  });
  return limited(checks, Math.max(1, Math.floor(availableParallelism() / 2)));
}

/** Prints the results; returns whether every package passed. */
export function reportChecks(results) {
  for (const { name, problems, checks } of results) {
    console.log(`${problems.length === 0 ? '✓' : '✗'} ${name}${problems.length === 0 ? `: ${checks}` : ''}`);
    for (const problem of problems) console.log(problem.replace(/^/gm, '    '));
  }
  return results.every(({ problems }) => problems.length === 0);
}

async function main() {
  const started = performance.now();
  const packages = publishedPackages();
  const destination = mkdtempSync(join(tmpdir(), 'package-check-'));
  try {
    const packed = packPackages(packages.map((pkg) => pkg.dir), destination).map((tarball, i) => ({ ...tarball, manifest: packages[i].manifest }));
    const passed = reportChecks(await checkTarballs(packed));
    console.log(`package-check: ${packages.length} packages in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    if (!passed) process.exitCode = 1;
  } finally {
    rmSync(destination, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
