import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CallbackRegistry, type CallbackPluginDescriptor, type JsonSchema } from '@diff/core';
import { UsageError } from './args.js';
import { CliRegistry, describeSchema, parseCallbackSpec } from './callbacks.js';
import { runCli } from './cli.js';

const OFFICIAL = ['cfg-cutoff', 'guidance-interval', 'interrupt', 'ipadapter', 'ipadapter-schedule', 'preview'];

/** A plugin whose JSON Schema has every type the CLI reads; its Standard Schema accepts anything. */
const kitchenSink: CallbackPluginDescriptor = {
  specificationVersion: 'v1',
  name: 'kitchen-sink',
  description: 'Options of every type.',
  options: { '~standard': { version: 1, vendor: 'test', validate: (value) => ({ value }) } },
  optionsJsonSchema: {
    type: 'object',
    properties: {
      flag: { type: 'boolean' },
      label: { type: 'string' },
      count: { type: 'integer' },
      mode: { anyOf: [{ enum: ['fast', 'slow'] }, { type: 'null' }] },
      level: { type: ['number', 'string'] },
      one: { const: 1 },
      anything: {},
    },
    additionalProperties: false,
  },
  create: () => ({ specificationVersion: 'v1', name: 'kitchen-sink', tensorInputs: [] }),
};

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { log: (line: string) => out.push(line), error: (line: string) => err.push(line) } };
}

function specError(text: string, registry: CallbackRegistry): string {
  try {
    parseCallbackSpec(text, registry);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as Error).message;
  }
  throw new Error(`${text} parsed`);
}

/** A third-party callback package: plain ESM with a hand-written Standard Schema; it records the steps it saw. */
async function writePluginPackage(dir: string, name: string, pluginName: string, keywords: readonly string[]): Promise<string> {
  const folder = join(dir, 'node_modules', name);
  await mkdir(join(folder, 'lib'), { recursive: true });
  await writeFile(join(folder, 'package.json'), JSON.stringify({ name, version: '1.0.0', type: 'module', keywords, exports: { '.': { import: './lib/index.js' } } }));
  await writeFile(
    join(folder, 'lib', 'index.js'),
    `export const seen = [];
const validate = (value) =>
  value.every === undefined || (Number.isInteger(value.every) && value.every >= 1)
    ? { value }
    : { issues: [{ message: 'must be an integer ≥ 1', path: ['every'] }] };
export const plugin = {
  specificationVersion: 'v1',
  name: '${pluginName}',
  description: 'Records the steps it sees.',
  options: { '~standard': { version: 1, vendor: 'test', validate } },
  optionsJsonSchema: {
    type: 'object',
    properties: {
      every: { type: 'integer', minimum: 1, default: 1, description: 'Record every this many steps.' },
      verbose: { type: 'boolean', default: false, description: 'Say more.' },
    },
    additionalProperties: false,
  },
  create: (options) => ({
    specificationVersion: 'v1',
    name: '${pluginName}',
    tensorInputs: [],
    onStepEnd: (_pipeline, stepIndex) => { if ((stepIndex + 1) % (options.every ?? 1) === 0) seen.push(stepIndex); },
  }),
};
`,
  );
  return folder;
}

describe('--callback specs', () => {
  const registry = new CliRegistry().registry;
  const sink = new CallbackRegistry([kitchenSink]);

  it('registers every official plugin', () => {
    expect(registry.list().map(({ name }) => name)).toEqual(OFFICIAL);
  });

  it("reads values as the plugin's JSON Schema types them", () => {
    expect(parseCallbackSpec('cfg-cutoff', registry)).toEqual({ name: 'cfg-cutoff', text: 'cfg-cutoff', options: {} });
    expect(parseCallbackSpec('cfg-cutoff:', registry).options).toEqual({});
    expect(parseCallbackSpec('cfg-cutoff:cutoffStepRatio=0.4', registry).options).toEqual({ cutoffStepRatio: 0.4 });
    expect(parseCallbackSpec('cfg-cutoff:cutoffStepRatio=null, cutoffStepIndex=3', registry).options).toEqual({ cutoffStepRatio: null, cutoffStepIndex: 3 });
    expect(parseCallbackSpec('preview:every=5,method=vae,source=latents', registry).options).toEqual({ every: 5, method: 'vae', source: 'latents' });
    expect(parseCallbackSpec('interrupt:{"atStep": 3}', registry).options).toEqual({ atStep: 3 });
    expect(parseCallbackSpec('kitchen-sink:flag,label=a b,count=-2,mode=null,level=0.5,one=1,anything=[1]', sink).options).toEqual({
      flag: true, label: 'a b', count: -2, mode: null, level: 0.5, one: 1, anything: [1],
    });
    expect(parseCallbackSpec('kitchen-sink:flag=false,label=12,mode=slow,level=high,anything=word', sink).options).toEqual({
      flag: false, label: '12', mode: 'slow', level: 'high', anything: 'word',
    });
  });

  it.each([
    ['', registry, /^--callback "": give the plugin's name first, as NAME\[:key=value,…\]/],
    ['cfgcutoff:cutoffStepRatio=0.4', registry, /^--callback cfgcutoff:cutoffStepRatio=0\.4: Unknown callback plugin "cfgcutoff"\. Known: cfg-cutoff, guidance-interval, .*diff-sd callbacks lists them/],
    ['cfg-cutoff:ratio=0.4', registry, /^--callback cfg-cutoff: unknown option "ratio"; cfg-cutoff takes cutoffStepRatio, cutoffStepIndex\.$/],
    ['cfg-cutoff:cutoffStepRatio=abc', registry, /^--callback cfg-cutoff: option cutoffStepRatio takes a number from 0 to 1, or null, got "abc"\.$/],
    ['cfg-cutoff:cutoffStepRatio=', registry, /^--callback cfg-cutoff: option cutoffStepRatio takes a number from 0 to 1, or null, got ""\.$/],
    ['cfg-cutoff:cutoffStepRatio', registry, /^--callback cfg-cutoff: option cutoffStepRatio needs a value \(cutoffStepRatio=…\), a number from 0 to 1, or null\.$/],
    ['cfg-cutoff:cutoffStepRatio=0.1,cutoffStepRatio=0.2', registry, /^--callback cfg-cutoff: option cutoffStepRatio is given twice\.$/],
    ['cfg-cutoff:=0.4', registry, /^--callback cfg-cutoff: "=0\.4" is not key=value/],
    ['interrupt:atStep=2.5', registry, /^--callback interrupt: option atStep takes an integer ≥ 0, got "2\.5"\.$/],
    ['preview:method=fast', registry, /^--callback preview: option method takes one of linear, vae, got "fast"\.$/],
    ['interrupt:{"atStep": 3', registry, /^--callback interrupt: the options are not valid JSON/],
    ['interrupt:{}x', registry, /^--callback interrupt: the options are not valid JSON/],
    ['kitchen-sink:flag=yes', sink, /^--callback kitchen-sink: option flag takes true or false, got "yes"\.$/],
    ['kitchen-sink:one=2', sink, /^--callback kitchen-sink: option one takes 1, got "2"\.$/],
    ['kitchen-sink:count=1e3', sink, /^--callback kitchen-sink: option count takes an integer, got "1e3"\.$/],
  ])('rejects %j', (text, where, message) => {
    expect(specError(text, where)).toMatch(message);
  });

  it('describes schemas in words', () => {
    const cases: [JsonSchema, string][] = [
      [{ type: 'number', minimum: 0, maximum: 1 }, 'a number from 0 to 1'],
      [{ type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER }, 'an integer ≥ 1'],
      [{ type: 'number', exclusiveMinimum: 0 }, 'a number > 0'],
      [{ type: 'number', maximum: 2 }, 'a number ≤ 2'],
      [{ anyOf: [{ type: 'string', enum: ['a', 'b'] }, { type: 'null' }] }, 'one of a, b, or null'],
      [{ type: ['boolean', 'string'] }, 'true or false or a string'],
      [{}, 'any JSON value'],
    ];
    for (const [schema, words] of cases) expect(describeSchema(schema)).toBe(words);
  });
});

describe('third-party callback packages', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'diff-cli-plugins-'));
    await writePluginPackage(dir, 'diff-callback-step-log', 'step-log', ['diff-callback']);
    await writePluginPackage(dir, '@someone/not-marked', 'step-count', []);
    await writePluginPackage(dir, '@someone/step-log-fork', 'step-log', []);
    await mkdir(join(dir, 'node_modules', 'nothing-here'), { recursive: true });
    await writeFile(join(dir, 'node_modules', 'nothing-here', 'package.json'), JSON.stringify({ name: 'nothing-here', type: 'module', main: 'index.js' }));
    await writeFile(join(dir, 'node_modules', 'nothing-here', 'index.js'), 'export const answer = 42;\n');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('loads --plugin by package name (resolved from the working folder) or by path', async () => {
    const byName = new CliRegistry();
    await byName.loadPlugin('@someone/not-marked', dir);
    expect(byName.packageOf('step-count')).toBe('@someone/not-marked');
    const byPath = new CliRegistry();
    await byPath.loadPlugin('./node_modules/diff-callback-step-log/lib/index.js', dir);
    await byPath.loadPlugin(join(dir, 'node_modules', 'diff-callback-step-log'), dir); // the same module: no conflict
    expect(byPath.registry.has('step-log')).toBe(true);
  });

  it('says why a --plugin cannot be used', async () => {
    const registry = new CliRegistry();
    await expect(registry.loadPlugin('diff-callback-missing', dir)).rejects.toThrow(/^--plugin diff-callback-missing: no package of that name is installed in .* or a folder above it \(npm install diff-callback-missing\)\.$/);
    await expect(registry.loadPlugin('./missing.js', dir)).rejects.toThrow('--plugin ./missing.js: no such file or folder.');
    await expect(registry.loadPlugin('nothing-here', dir)).rejects.toThrow(/^--plugin nothing-here: the package exports no callback plugin descriptor/);
    await registry.loadPlugin('diff-callback-step-log', dir);
    await expect(registry.loadPlugin('@someone/step-log-fork', dir)).rejects.toThrow(
      '--plugin @someone/step-log-fork: a different plugin is already registered as step-log (@someone/step-log-fork; diff-callback-step-log has that name).',
    );
  });

  it('lists the official plugins and the installed ones with their options, types and defaults', async () => {
    const { out, err, io } = capture();
    expect(await runCli(['callbacks'], io, { cwd: dir })).toBe(0);
    const text = out.join('\n');
    for (const name of [...OFFICIAL, 'step-log']) expect(text).toMatch(new RegExp(`^${name}  \\(`, 'm'));
    expect(text).toContain(
      [
        'step-log  (diff-callback-step-log)',
        '  Records the steps it sees.',
        '  every: an integer ≥ 1; default 1',
        '      Record every this many steps.',
        '  verbose: true or false; default false',
        '      Say more.',
        '  --callback step-log:every=1',
      ].join('\n'),
    );
    expect(text).toContain('preview  (@diff/callback-preview)');
    expect(text).toContain('  method: one of linear, vae; default "linear"');
    expect(text).toContain('  cutoffStepRatio: a number from 0 to 1, or null\n');
    expect(err).toEqual([]);
  });

  it('lists them as JSON with --json, --plugin packages included', async () => {
    const { out, io } = capture();
    expect(await runCli(['callbacks', '--json', '--plugin', '@someone/not-marked'], io, { cwd: dir })).toBe(0);
    const listed = JSON.parse(out.join('\n')) as { name: string; description: string; package?: string; optionsJsonSchema: JsonSchema }[];
    expect(listed.map(({ name, package: from }) => [name, from])).toEqual([
      ['cfg-cutoff', '@diff/callback-cfg-cutoff'],
      ['guidance-interval', '@diff/callback-cfg-cutoff'],
      ['interrupt', '@diff/callback-interrupt'],
      ['ipadapter', '@diff/callback-ipadapter'],
      ['ipadapter-schedule', '@diff/callback-ipadapter'],
      ['preview', '@diff/callback-preview'],
      ['step-count', '@someone/not-marked'],
      ['step-log', 'diff-callback-step-log'],
    ]);
    expect(listed.find(({ name }) => name === 'preview')?.optionsJsonSchema.properties?.every).toMatchObject({ type: 'integer', default: 1 });
  });

  it('runs a --callback from a --plugin package, its options validated by its schema', async () => {
    const module = (await import(pathToFileURL(join(dir, 'node_modules', '@someone', 'not-marked', 'lib', 'index.js')).href)) as { seen: number[] };
    const out = join(dir, 'out.png');
    const run = capture();
    const argv = ['x', '--steps', '4', '--out', out, '--quiet', '--plugin', '@someone/not-marked'];
    expect(await runCli([...argv, '--callback', 'step-count:every=2'], run.io, { cwd: dir })).toBe(0);
    expect(module.seen).toEqual([1, 3]);

    const bad = capture();
    expect(await runCli([...argv, '--callback', 'step-count:every=0'], bad.io, { cwd: dir })).toBe(2);
    expect(bad.err).toEqual(['diff-sd: --callback step-count:every=0: Invalid options for callback plugin "step-count": every: must be an integer ≥ 1.']);
  });

  it('finds an installed callback package for --callback without --plugin', async () => {
    const { io } = capture();
    expect(await runCli(['x', '--steps', '2', '--out', join(dir, 'found.png'), '--quiet', '--callback', 'step-log'], io, { cwd: dir })).toBe(0);
  });
});
