import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsageError, isCi, parseCliArgs, runCli } from './cli.js';
import { SECTION_NAMES, type Report } from './report.js';

const fixturesDir = fileURLToPath(new URL('./__fixtures__/', import.meta.url));
const fixtureRefs = join(fixturesDir, 'refs.json');
const fixtureModels = join(fixturesDir, 'models');

async function run(argv: string[], cwd = '/work', env: Record<string, string> = {}) {
  let stdout = '';
  let stderr = '';
  const status = await runCli(argv, {
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
    cwd,
    env,
  });
  return { status, stdout, stderr };
}

describe('parseCliArgs', () => {
  it('resolves paths against the given folder and defaults --models to the refs file folder', () => {
    expect(parseCliArgs(['--refs', '../shared/conformance/refs.json'], '/repo/main')).toEqual({
      refs: '/repo/shared/conformance/refs.json',
      modelsDir: '/repo/shared/conformance',
      json: false,
      strict: false,
      sections: [],
    });
  });

  it('reads --models, --json and repeated --section (also in --flag=value form)', () => {
    expect(parseCliArgs(['--refs=r.json', '--models', 'm', '--json', '--section', 'randn', '--section=sd_runs'], '/x')).toEqual({
      refs: '/x/r.json',
      modelsDir: '/x/m',
      json: true,
      strict: false,
      sections: ['randn', 'sd_runs'],
    });
  });

  it('is strict with --strict or in CI', () => {
    expect(parseCliArgs(['--refs', 'r.json', '--strict'], '/x')).toMatchObject({ strict: true });
    expect(parseCliArgs(['--refs', 'r.json'], '/x', { CI: 'true' })).toMatchObject({ strict: true });
    expect(parseCliArgs(['--refs', 'r.json'], '/x', { CI: 'false' })).toMatchObject({ strict: false });
    expect([isCi({ CI: '1' }), isCi({ CI: '' }), isCi({ CI: '0' }), isCi({})]).toEqual([true, false, false, false]);
  });

  it('asks for help', () => {
    expect(parseCliArgs(['--help'], '/x')).toBe('help');
  });

  it.each([
    [[], /--refs FILE is required/],
    [['--refs'], /argument missing/],
    [['--refs', 'r.json', '--section', 'vae'], /unknown section vae; sections: randn, tokenizer/],
    [['--refs', 'r.json', '--verbose'], /Unknown option '--verbose'/],
    [['--refs', 'r.json', 'extra'], /positional argument/],
  ])('rejects %j', (argv, message) => {
    expect(() => parseCliArgs(argv, '/x')).toThrow(UsageError);
    expect(() => parseCliArgs(argv, '/x')).toThrow(message);
  });
});

describe('runCli errors', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'conformance-cli-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('exits with 2 and the usage on bad arguments', async () => {
    const { status, stderr, stdout } = await run(['--json']);
    expect(status).toBe(2);
    expect(stderr).toMatch(/--refs FILE is required[\s\S]*usage:/);
    expect(stdout).toBe('');
  });

  it('exits with 2 when the refs file is missing', async () => {
    const { status, stderr } = await run(['--refs', join(dir, 'missing.json')]);
    expect(status).toBe(2);
    expect(stderr).toMatch(/cannot read refs file .*missing\.json/);
  });

  it('exits with 2 when the refs file is not JSON or not shaped like refs', async () => {
    await writeFile(join(dir, 'broken.json'), '{"randn": [');
    await writeFile(join(dir, 'odd.json'), '{"randn": {"seed": 1}}');
    expect(await run(['--refs', join(dir, 'broken.json')])).toMatchObject({ status: 2, stderr: expect.stringMatching(/is not valid JSON/) });
    expect(await run(['--refs', join(dir, 'odd.json')])).toMatchObject({ status: 2, stderr: expect.stringMatching(/"randn" must be an array/) });
  });

  it('passes a run whose only case is unsupported, except when strict or in CI', async () => {
    const fixture = JSON.parse(await readFile(fixtureRefs, 'utf8')) as { schedulers: Array<{ scheduler: string }> };
    await writeFile(join(dir, 'unsupported.json'), JSON.stringify({ schedulers: fixture.schedulers.filter((c) => c.scheduler === 'heun') }));
    const refs = ['--refs', join(dir, 'unsupported.json')];
    expect(await run(refs)).toMatchObject({ status: 0, stdout: expect.stringMatching(/conformance: 0 passed, 0 failed, 1 unsupported\n$/) });
    expect(await run([...refs, '--strict'])).toMatchObject({
      status: 1,
      stdout: expect.stringMatching(/conformance: 0 passed, 0 failed, 1 unsupported \(strict: unsupported cases fail\)\n$/),
    });
    expect((await run(refs, '/work', { CI: 'true' })).status).toBe(1);
  });

  it('passes a refs file without cases', async () => {
    await writeFile(join(dir, 'empty.json'), '{}');
    const { status, stdout } = await run(['--refs', join(dir, 'empty.json'), '--json']);
    expect(status).toBe(0);
    const report = JSON.parse(stdout) as Report;
    expect(report.cases).toEqual([]);
    expect(Object.keys(report.sections)).toEqual([...SECTION_NAMES]);
  });
});

describe('runCli on the hand-made fixture', () => {
  let report: Report;
  let status: number;
  beforeAll(async () => {
    const result = await run(['--refs', fixtureRefs, '--models', fixtureModels, '--json']);
    status = result.status;
    report = JSON.parse(result.stdout) as Report;
  });

  const outcome = (section: string, id: string) => report.cases.find((c) => c.section === section && c.id === id)?.ok;

  it('prints one JSON object with all seven sections, counted from its cases', () => {
    expect(Object.keys(report.sections)).toEqual([...SECTION_NAMES]);
    for (const section of SECTION_NAMES) {
      const cases = report.cases.filter((c) => c.section === section);
      expect(report.sections[section]).toEqual({
        passed: cases.filter((c) => c.ok === true).length,
        failed: cases.filter((c) => c.ok === false).length,
        unsupported: cases.filter((c) => c.ok === null).length,
      });
    }
    for (const result of report.cases) {
      expect(Object.keys(result).sort()).toEqual(['detail', 'id', 'maxAbsDiff', 'ok', 'section']);
      expect([true, false, null]).toContain(result.ok);
      expect(result.maxAbsDiff === null || typeof result.maxAbsDiff === 'number').toBe(true);
      expect(typeof result.detail).toBe('string');
    }
  });

  it('exits with 1 because the fixture holds deliberately wrong references', () => {
    expect(status).toBe(1);
  });

  it('checks randn bit for bit: numeric, string and 64-bit seeds, head/tail/sum, float64', () => {
    expect(report.sections.randn).toEqual({ passed: 6, failed: 1, unsupported: 0 });
    expect(outcome('randn', 'seed 42 [7] float32')).toBe(true);
    expect(outcome('randn', 'seed 42 [7] float32 (2)')).toBe(true);
    expect(outcome('randn', 'seed 18446744069414584362 [7] float32')).toBe(true);
    expect(outcome('randn', 'seed 42 [2,4,8,8] float32')).toBe(true);
    expect(outcome('randn', 'seed 42 [7] float64')).toBe(true);
    expect(outcome('randn', 'seed 1 [3] float64')).toBe(true);
    const tampered = report.cases.find((c) => c.id === 'seed 0 [7] float32');
    expect(tampered).toMatchObject({ ok: false, detail: expect.stringMatching(/^first\[3\] = /) });
  });

  it('checks token ids with the SD tokenizer and the "!"-padded one', () => {
    expect(report.sections.tokenizer).toEqual({ passed: 3, failed: 1, unsupported: 0 });
    const wrongPadding = report.cases.find((c) => c.id === '#3 "cat a"');
    expect(wrongPadding).toMatchObject({ ok: false, maxAbsDiff: null, detail: expect.stringMatching(/^ids_pad_bang\[4\] = 0, want 9/) });
  });

  it('checks schedulers, reporting an unknown scheduler name as unsupported', () => {
    expect(outcome('schedulers', 'ddim ×4')).toBe(true);
    // dpmpp_2m's config holds lambda_min_clipped "-Infinity"
    expect(outcome('schedulers', 'dpmpp_2m ×4')).toBe(true);
    expect(report.cases.find((c) => c.id === 'ddim ×4 (2)')).toMatchObject({ ok: false, detail: expect.stringMatching(/^timesteps\[1\]/) });
    expect(report.cases.find((c) => c.id === 'heun ×4')).toMatchObject({ ok: null, detail: expect.stringMatching(/unknown scheduler name "heun"/) });
  });

  it('fails a pipeline run whose model folder is missing, naming the file, and counts unknown kinds as unsupported', () => {
    for (const section of ['sd_runs', 'sdxl_runs', 'inpaint_runs'] as const) {
      expect(report.sections[section]).toEqual({ passed: 0, failed: 1, unsupported: 0 });
    }
    expect(report.cases.find((c) => c.id === 'inpaint-crash')?.detail).toMatch(/tiny-sd-inpaint[/\\]model_index\.json: cannot be read/);
    expect(report.sections.controlnet_runs).toEqual({ passed: 0, failed: 0, unsupported: 1 });
    expect(report.cases.find((c) => c.id === 'cn-unknown-kind')?.detail).toMatch(/pipeline kind "text2video" is not supported/);
  });

  it('prints tables without --json and keeps to the chosen sections', async () => {
    const { status: tableStatus, stdout } = await run(['--refs', fixtureRefs, '--models', fixtureModels, '--section', 'schedulers']);
    expect(tableStatus).toBe(1);
    expect(stdout).toMatch(/^schedulers: 2 passed, 1 failed, 1 unsupported\n {2}case +result +max abs diff +detail\n/);
    expect(stdout).toMatch(/\n {2}heun ×4 +unsupported +- +unknown scheduler name/);
    expect(stdout).not.toMatch(/randn/);
    expect(stdout).toMatch(/\nconformance: 2 passed, 1 failed, 1 unsupported\n$/);
  });
});
