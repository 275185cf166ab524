#!/usr/bin/env node
// The pack test: what a third party gets from npm. Packs the published workspace packages and the callback template,
// checks the tarballs (publint, attw), installs them into a scratch project outside the repository (as npm would
// from the registry, plus typescript and @types/node), type-checks app/main.ts there with strict NodeNext settings
// and skipLibCheck off, runs it and checks what it prints. Needs built packages (`npm run build`) and the npm
// registry (or a warm npm cache). `--keep` keeps the scratch project.
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { checkTarballs, reportChecks } from '../package-check.mjs';
import { packPackages, readJson, repoRoot, workspacePackages } from '../workspace-packages.mjs';

const appDir = join(dirname(fileURLToPath(import.meta.url)), 'app');
/** The packages app/main.ts imports. */
const REQUIRED = ['@diff/core', '@diff/model-tiny', '@diff/callback-cfg-cutoff', '@diff/callback-interrupt', '@diff/callback-ipadapter', '@diff/callback-preview', '@diff/callback-template'];
/**
 * What app/main.ts must print: 8 steps, guidance off after step 2 (ratio 0.25), stopped after step 5; then the
 * IP-Adapter scale set by the schedule before each step (1, 0.75, 0.5) and by the cut-off after step 1 (0), with
 * latents equal to a run without them (the tiny model has no adapter).
 */
const EXPECTED = {
  interruptedAtStep: 5,
  images: [[64, 64]],
  previewSteps: [1, 3, 5],
  previewSize: [8, 8],
  statsSteps: [0, 1, 2, 3, 4, 5],
  statsFinite: true,
  guidanceScales: [7.5, 7.5, 0, 0, 0, 0],
  ipAdapterScales: [1, 0, 0.5],
  ipAdapterHarmless: true,
  registered: ['cfg-cutoff', 'interrupt', 'ipadapter', 'ipadapter-schedule', 'latent-stats', 'preview'],
  discovered: {
    '@diff/callback-cfg-cutoff': ['cfg-cutoff', 'guidance-interval'],
    '@diff/callback-interrupt': ['interrupt'],
    '@diff/callback-ipadapter': ['ipadapter', 'ipadapter-schedule'],
    '@diff/callback-preview': ['preview'],
    '@diff/callback-template': ['latent-stats'],
  },
};

const keep = process.argv.includes('--keep');
const timings = [];
async function timed(label, work) {
  const started = performance.now();
  try {
    return await work();
  } finally {
    timings.push([label, (performance.now() - started) / 1000]);
  }
}

/** Runs a command; resolves to its stdout, rejects with its output when it fails. */
function run(command, args, cwd) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (status, signal) => {
      if (status === 0) resolve(stdout);
      else reject(new Error(`${[command, ...args].join(' ')} failed (exit ${status ?? signal}) in ${cwd}:\n${(stdout + stderr).trim()}`));
    });
  });
}

function printTimings() {
  console.log('pack-test timings:');
  for (const [label, seconds] of timings) console.log(`  ${label.padEnd(42)} ${seconds.toFixed(1).padStart(6)} s`);
}

const scratch = mkdtempSync(join(tmpdir(), 'diff-pack-test-'));
let failed = true;
try {
  await timed('total', async () => {
    const packages = workspacePackages().filter((pkg) => pkg.manifest.private !== true || pkg.relativeDir.startsWith('templates'));
    const missing = REQUIRED.filter((name) => !packages.some((pkg) => pkg.name === name));
    if (missing.length > 0) throw new Error(`not in the workspaces (or private): ${missing.join(', ')}`);

    const tarballs = join(scratch, 'tarballs');
    mkdirSync(tarballs);
    const packed = await timed(`npm pack (${packages.length} packages)`, () =>
      packPackages(packages.map((pkg) => pkg.dir), tarballs).map((tarball, i) => ({ ...tarball, manifest: packages[i].manifest })),
    );
    const published = packed.filter((tarball) => tarball.manifest.private !== true);
    // The checks run while npm installs: one waits on the CPU, the other mostly on the disk and the network.
    const checks = timed(`publint + attw (${published.length} tarballs)`, () => checkTarballs(published));

    const app = join(scratch, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), `${JSON.stringify({ name: 'diff-pack-test-app', private: true, type: 'module' }, null, 2)}\n`);
    // onnxruntime-node's install script would download CUDA binaries; the CPU ones ship in its tarball.
    writeFileSync(join(app, '.npmrc'), 'onnxruntime-node-install=skip\n');
    for (const file of ['main.ts', 'tsconfig.json']) copyFileSync(join(appDir, file), join(app, file));
    const { devDependencies } = readJson(join(repoRoot, 'package.json'));
    const tools = ['typescript', '@types/node'].map((name) => `${name}@${devDependencies[name]}`);
    const install = timed('npm install (tarballs + typescript)', () =>
      run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', ...packed.map((p) => p.tarball), ...tools], app),
    );
    const [results] = await Promise.all([checks, install]);
    if (!reportChecks(results)) throw new Error('publint or attw found problems (above).');

    await timed('tsc (strict, nodenext, skipLibCheck off)', () => run(process.execPath, [join(app, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], app));
    const stdout = await timed('node dist/main.js', () => run(process.execPath, ['dist/main.js'], app));
    const output = JSON.parse(stdout.trim().split('\n').at(-1));
    const wrong = Object.entries(EXPECTED).filter(([key, value]) => !isDeepStrictEqual(output[key], value));
    if (wrong.length > 0) {
      throw new Error(`app/main.ts printed:\n${JSON.stringify(output, null, 2)}\nexpected for ${wrong.map(([key, value]) => `${key}: ${JSON.stringify(value)}`).join('; ')}`);
    }
    console.log(`app/main.ts: ${JSON.stringify(output)}`);
  });
  failed = false;
} catch (error) {
  console.error(`pack-test failed: ${error.message}`);
  process.exitCode = 1;
} finally {
  printTimings();
  if (keep || failed) console.log(`scratch project: ${scratch}`);
  else rmSync(scratch, { recursive: true, force: true });
}
