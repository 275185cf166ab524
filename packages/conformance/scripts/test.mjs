// `npm test`: the unit tests, then the conformance run on ../shared/conformance/refs.json (beside the repository)
// when that file exists, strict: an unsupported case fails the test. Turbo builds dist/ before testing.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const sharedConformanceDir = resolve(packageDir, '../../../shared/conformance');
const refsPath = join(sharedConformanceDir, 'refs.json');

function runNode(args) {
  const { status, signal } = spawnSync(process.execPath, args, { cwd: packageDir, stdio: 'inherit' });
  return signal ? 1 : status;
}

const jest = join(packageDir, '../../node_modules/jest/bin/jest.js');
const unitStatus = runNode(['--experimental-vm-modules', '--no-warnings=ExperimentalWarning', jest, ...process.argv.slice(2)]);
if (unitStatus !== 0) {
  process.exitCode = unitStatus;
} else if (!existsSync(refsPath)) {
  process.stdout.write('conformance: skipped — ../shared/conformance/refs.json not found\n');
} else {
  process.exitCode = runNode([join(packageDir, 'dist/main.js'), '--refs', refsPath, '--models', sharedConformanceDir, '--strict']);
}
