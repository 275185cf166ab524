#!/usr/bin/env node
// Runs the export recipe's end-to-end test (tools/export/test_export.py) from Node, echoing its output, and ends with
// one summary line: "export recipe test: passed", "… skipped (<why>)" or "… FAILED". Exit status: the test's (0 when
// skipped, where the Python ML stack is missing). The interpreter is $PYTHON, else python3.
//   node tools/export/run-test.mjs [--keep] [--conformance DIR]
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('./test_export.py', import.meta.url));
const python = process.env.PYTHON || 'python3';

const child = spawn(python, [script, ...process.argv.slice(2)], { stdio: ['ignore', 'pipe', 'inherit'] });
let output = '';
child.stdout.on('data', (chunk) => {
  output += chunk;
  process.stdout.write(chunk);
});
child.on('error', (error) => {
  console.log(`export recipe test: FAILED (cannot run ${python}: ${error.message})`);
  process.exitCode = 1;
});
child.on('close', (code, signal) => {
  const skipped = /^skipped: (.*)$/m.exec(output);
  if (code === 0) console.log(skipped ? `export recipe test: skipped (${skipped[1]})` : 'export recipe test: passed');
  else console.log(`export recipe test: FAILED (${signal ? `killed by ${signal}` : `exit ${code}`})`);
  process.exitCode = code ?? 1;
});
