import { runCli } from './cli.js';

process.exitCode = await runCli(process.argv.slice(2), {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  // npm runs the script in this package's folder; INIT_CWD is where the user ran npm, which relative paths mean.
  cwd: process.env.INIT_CWD ?? process.cwd(),
  env: process.env,
});
