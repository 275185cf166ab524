import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { modelDir } from '@diff/model-tiny';
import { runCli, type CliIo } from './cli.js';

const cliDir = dirname(dirname(fileURLToPath(import.meta.url)));

function capture(extra: Partial<CliIo> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { log: (line) => out.push(line), error: (line) => err.push(line), ...extra };
  return { out, err, io };
}

async function size(file: string): Promise<[number | undefined, number | undefined]> {
  const { width, height } = await sharp(file).metadata();
  return [width, height];
}

describe('diff-sd', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'diff-cli-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('prints the help of each command and the version', async () => {
    const help = async (...argv: string[]) => {
      const { out, io } = capture();
      expect(await runCli(argv, io)).toBe(0);
      return out.join('\n');
    };
    const main = await help('--help');
    expect(main).toMatch(/^Usage: diff-sd \[generate\] "<prompt>" \[options\]/);
    for (const option of ['--seed', '--steps', '--guidance', '--width', '--height', '--scheduler', '--negative-prompt', '--num-images', '--out', '--preview-dir',
      '--model', '--cuda', '--init-image', '--strength', '--mask', '--control-image', '--ip-adapter-image', '--ip-adapter-scale', '--callback', '--plugin',
      '--json', '--quiet', '--verbose', '--version']) {
      expect(main).toContain(`${option} `);
    }
    expect(main.split('\n')[1]).toBe('       diff-sd callbacks [--plugin PACKAGE]… [--json]   (lists the callback plugins: diff-sd callbacks --help)');
    expect(await help('generate', '--help')).not.toContain('diff-sd callbacks [');
    expect(await help('callbacks', '-h')).toMatch(/^Usage: diff-sd callbacks \[--plugin PACKAGE\]… \[--json\]/);
    expect(await help('--version')).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('reports bad usage in one line with exit status 2, and the stack only with --verbose', async () => {
    const plain = capture();
    expect(await runCli(['x', '--steps', 'many'], plain.io)).toBe(2);
    expect(plain.err).toEqual(['diff-sd: --steps takes an integer ≥ 1, got "many".']);
    const verbose = capture();
    expect(await runCli(['x', '--steps', 'many', '--verbose'], verbose.io)).toBe(2);
    expect(verbose.err[0]).toBe(plain.err[0]);
    expect(verbose.err[1]).toMatch(/^UsageError: --steps takes an integer ≥ 1, got "many"\.\n\s+at /);
  });

  it('reports a runtime error with exit status 1, naming the file', async () => {
    const { err, io } = capture();
    expect(await runCli(['x', '--model', join(dir, 'nowhere')], io)).toBe(1);
    expect(err).toEqual([expect.stringMatching(/^diff-sd: .*nowhere\/model_index\.json is missing; --model takes a diffusers ONNX pipeline folder/)]);
  });

  it.each([
    [['cfg-cutoff:cutoffStepRatio=2'], /^diff-sd: --callback cfg-cutoff:cutoffStepRatio=2: Invalid options for callback plugin "cfg-cutoff": cutoffStepRatio must be a number between 0\.0 and 1\.0, got 2\./],
    [['cfg-cutoff:cutoffStepRatio=0.5,cutoffStepIndex=3'], /^diff-sd: --callback cfg-cutoff:cutoffStepRatio=0\.5,cutoffStepIndex=3: Invalid options for callback plugin "cfg-cutoff": .*cutoffStepIndex/],
    [['ipadapter-schedule:from=1'], /^diff-sd: --callback ipadapter-schedule:from=1: .*schedule/],
    [['preview:every=2'], /^diff-sd: --callback preview:every=2: the preview plugin writes its pictures into --preview-dir; give --preview-dir DIR\.$/],
  ])('validates --callback %j with the plugin’s schema before loading the model', async (specs, message) => {
    const { err, io } = capture();
    expect(await runCli(['x', '--model', join(dir, 'nowhere'), ...specs.flatMap((spec) => ['--callback', spec])], io)).toBe(2);
    expect(err).toEqual([expect.stringMatching(message)]);
  });

  it('prints one JSON document on stdout with --json, the rest on stderr', async () => {
    const out = join(dir, 'json', 'cat.png');
    const { out: stdout, err, io } = capture();
    const argv = ['generate', 'a', 'large', 'red', 'circle', '--seed', '18446744073709551615', '--steps', '3', '--scheduler', 'euler', '--num-images', '2',
      '--out', out, '--preview-dir', join(dir, 'json', 'previews'), '--callback', 'cfg-cutoff:cutoffStepRatio=0.5', '--json'];
    expect(await runCli(argv, io)).toBe(0);
    expect(stdout).toHaveLength(1);
    const report = JSON.parse(stdout[0]);
    const previews = [0, 1, 2].flatMap((step) => [0, 1].map((image) => join(dir, 'json', 'previews', `image-${image}-step-00${step}.png`)));
    expect(report).toEqual({
      files: [out, join(dir, 'json', 'cat-1.png')],
      previews,
      prompt: 'a large red circle',
      negativePrompt: null,
      seed: '18446744073709551615',
      steps: 3,
      numTimesteps: 3,
      completedSteps: 3,
      interruptedAtStep: null,
      guidanceScale: 7.5,
      scheduler: 'euler',
      width: 64,
      height: 64,
      model: modelDir,
      pipeline: 'StableDiffusionPipeline',
      task: 'text2image',
      callbacks: [{ name: 'cfg-cutoff', options: { cutoffStepRatio: 0.5 } }],
      timings: {
        loadMs: expect.any(Number),
        encodeMs: expect.any(Number),
        denoiseMs: expect.any(Number),
        decodeMs: expect.any(Number),
        saveMs: expect.any(Number),
        totalMs: expect.any(Number),
        stepsPerSecond: expect.any(Number),
      },
    });
    for (const file of report.files) expect(await size(file)).toEqual([64, 64]);
    expect(await size(previews[0])).toEqual([64, 64]); // --preview-dir alone: VAE previews, full size
    expect(err).toEqual(expect.arrayContaining(['load', 'encode', 'decode', 'save', `wrote ${out} (64×64)`, `wrote 6 previews to ${join(dir, 'json', 'previews')}`]));
    const steps = err.filter((line) => line.startsWith('denoise '));
    expect(steps[0]).toMatch(/^denoise 1\/3 \([\d.]+ it\/s, ETA \d+ s\)$/);
    expect(steps.at(-1)).toMatch(/^denoise 3\/3 \([\d.]+ it\/s\)$/);
    expect(await readdir(join(dir, 'json'))).toEqual(['cat-1.png', 'cat.png', 'previews']); // no temporary files left
  });

  it('is reproducible from the seed, and quiet with --quiet', async () => {
    const run = async (name: string, seed: string) => {
      const { out, err, io } = capture();
      expect(await runCli(['a small blue square', '--seed', seed, '--steps', '1', '--out', join(dir, name), '--quiet'], io)).toBe(0);
      expect({ out, err }).toEqual({ out: [`wrote ${join(dir, name)} (64×64)`], err: [] });
      return readFile(join(dir, name));
    };
    const [first, again, other] = await Promise.all([run('a.png', '5'), run('b.png', '5'), run('c.png', '6')]);
    expect(again.equals(first)).toBe(true);
    expect(other.equals(first)).toBe(false);
  });

  it('stops where an interrupt callback says, exit status 0', async () => {
    const { out, err, io } = capture();
    expect(await runCli(['x', '--steps', '6', '--out', join(dir, 'early.png'), '--callback', 'interrupt:atStep=2', '--json'], io)).toBe(0);
    expect(JSON.parse(out[0])).toMatchObject({ interruptedAtStep: 2, completedSteps: 3, numTimesteps: 6 });
    expect(err).toContain('diff-sd: interrupted after 3 of 6 steps: the picture shows the generation at that point.');
  });

  it('draws a progress bar on a terminal', async () => {
    const drawn: string[] = [];
    const { err, io } = capture({ terminal: { write: (text) => drawn.push(text), columns: () => 100 } });
    expect(await runCli(['x', '--steps', '4', '--out', join(dir, 'bar.png')], io)).toBe(0);
    const clearLine = '\r\x1b[2K';
    expect(drawn[0]).toBe(`${clearLine}load…`);
    expect(drawn.filter((text) => text.startsWith(`${clearLine}denoise ▕${'█'.repeat(24)}▏ 4/4 `))).toHaveLength(1);
    expect(drawn.at(-1)).toBe(clearLine); // the last phase line is cleared, the finished bar stays
    expect(err).toEqual(['', expect.stringMatching(/^4 steps at [\d.]+ it\/s, [\d.]+ s in all, seed 0$/)]);
  });

  it('aborts on a second Ctrl-C: exit status 130, nothing written', async () => {
    let interrupt: (() => boolean) | undefined;
    const out = join(dir, 'aborted.png');
    const presses: boolean[] = [];
    const { err, io } = capture({
      onInterrupt: (handler) => {
        interrupt = handler;
        return () => (interrupt = undefined);
      },
    });
    const press = () => presses.push((interrupt as () => boolean)());
    // Ctrl-C twice as the first step ends (progress lines are written from inside the loop), then once more.
    io.error = (line) => {
      err.push(line);
      if (line.startsWith('denoise 1/')) [1, 2, 3].forEach(press);
    };
    expect(await runCli(['x', '--steps', '20', '--out', out], io)).toBe(130);
    expect(presses).toEqual([true, true, false]);
    expect(err).toContain('diff-sd: interrupting: the current step finishes, then the picture so far is decoded and saved (Ctrl-C again to abort).');
    expect(err.at(-1)).toBe('diff-sd: aborted: no picture written.');
    expect(existsSync(out)).toBe(false);
    expect(interrupt).toBeUndefined();
  });

  it('saves the picture so far on Ctrl-C (SIGINT to the built command) and exits as interrupted', async () => {
    const main = join(cliDir, 'dist', 'main.js');
    const sources = await readdir(join(cliDir, 'src'));
    const builtAt = existsSync(main) ? statSync(main).mtimeMs : 0;
    const stale = sources.filter((file) => !file.endsWith('.test.ts') && statSync(join(cliDir, 'src', file)).mtimeMs > builtAt);
    expect({ stale, hint: 'build first: npm run build -w @diff/cli' }).toEqual({ stale: [], hint: expect.any(String) });

    const out = join(dir, 'partial.png');
    const child = spawn(process.execPath, [main, 'a red star', '--steps', '500', '--out', out, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => {
      if (!stderr.includes('denoise ') && `${stderr}${chunk}`.includes('denoise ')) child.kill('SIGINT');
      stderr += chunk;
    });
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((done) => child.on('close', (status, by) => done([status, by])));
    expect({ code, signal }).toEqual(process.platform === 'win32' ? { code: 130, signal: null } : { code: null, signal: 'SIGINT' });
    expect(stderr).toContain('diff-sd: interrupting: the current step finishes');
    expect(stderr).toMatch(/diff-sd: interrupted after \d+ of 500 steps: the picture shows the generation at that point\./);
    const report = JSON.parse(stdout);
    expect(report.interruptedAtStep).toBeLessThan(499);
    expect(report.files).toEqual([out]);
    expect(await size(out)).toEqual([64, 64]);
  });
});
