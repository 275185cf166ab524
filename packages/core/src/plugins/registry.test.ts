import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { CallbackPlugin, CallbackPluginDescriptor, StandardSchemaV1 } from '../contract.js';
import { InvalidArgumentError, PluginLoadError } from '../errors.js';
import { discoverCallbackPlugins } from './discover.js';
import { CallbackRegistry, withConstructorRules } from './registry.js';

/** A hand-written Standard Schema: any validator library works, zod is only what the official packages use. */
function ratioSchema(): StandardSchemaV1<unknown, { ratio: number }> {
  return {
    '~standard': {
      version: 1,
      vendor: 'test',
      validate(value) {
        const ratio = (value as { ratio?: unknown }).ratio ?? 0.5;
        if (typeof ratio !== 'number' || !(ratio >= 0 && ratio <= 1)) {
          return { issues: [{ message: 'Expected a number between 0 and 1', path: ['ratio'] }] };
        }
        return { value: { ratio } };
      },
    },
  };
}

const created: Array<{ options: unknown; runtime: unknown }> = [];
const descriptor: CallbackPluginDescriptor<{ ratio: number }, { onStep?: () => void }> = {
  specificationVersion: 'v1',
  name: 'half-way',
  description: 'Does something half way.',
  options: ratioSchema(),
  optionsJsonSchema: { type: 'object', properties: { ratio: { type: 'number', default: 0.5, minimum: 0, maximum: 1 } } },
  create(options, runtime): CallbackPlugin<string> {
    created.push({ options, runtime });
    return { specificationVersion: 'v1', name: 'HalfWay', tensorInputs: [], onStepEnd: () => undefined };
  },
};

describe('CallbackRegistry', () => {
  it('creates callbacks by name with validated options and runtime values', () => {
    const registry = new CallbackRegistry([descriptor]);
    const onStep = () => undefined;
    expect(registry.create('half-way', { ratio: 0.25 }, { onStep }).name).toBe('HalfWay');
    registry.create('half-way');
    expect(created.slice(-2)).toEqual([{ options: { ratio: 0.25 }, runtime: { onStep } }, { options: { ratio: 0.5 }, runtime: undefined }]);
    expect(registry.list()).toEqual([{ name: 'half-way', description: 'Does something half way.', optionsJsonSchema: descriptor.optionsJsonSchema }]);
  });

  it('names the option and what is allowed, and the known plugins for an unknown name', () => {
    const registry = new CallbackRegistry([descriptor]);
    expect(() => registry.create('half-way', { ratio: 'half' })).toThrow(
      new InvalidArgumentError('Invalid options for callback plugin "half-way": ratio: Expected a number between 0 and 1.'),
    );
    expect(() => registry.create('quarter-way')).toThrow(new InvalidArgumentError('Unknown callback plugin "quarter-way". Known: half-way.'));
    expect(() => new CallbackRegistry().create('x')).toThrow(/Known: none \(register plugins first\)/);
  });

  it('refuses asynchronous schemas, bad names, other contract versions and a second plugin under a taken name', () => {
    const asyncSchema = { '~standard': { version: 1, vendor: 'test', validate: async (value: unknown) => ({ value }) } } as StandardSchemaV1;
    expect(() => new CallbackRegistry([{ ...descriptor, options: asyncSchema }]).create('half-way', {})).toThrow(/validates asynchronously/);
    expect(() => new CallbackRegistry([{ ...descriptor, name: 'Half Way' }])).toThrow(/lowercase words joined by "-"/);
    expect(() => new CallbackRegistry([{ ...descriptor, specificationVersion: 'v9' as 'v1' }])).toThrow(/specification v9/);
    expect(() => new CallbackRegistry([descriptor, { ...descriptor }])).toThrow(/A different callback plugin named "half-way"/);
    expect(new CallbackRegistry([descriptor, descriptor]).list()).toHaveLength(1);
    expect(() => new CallbackRegistry([{ name: 'x' } as never])).toThrow(/takes a callback plugin descriptor/);
  });
});

describe('withConstructorRules', () => {
  it('adds the constructor’s cross-option rules to a schema, as issues with the constructor’s message', () => {
    const schema = withConstructorRules(ratioSchema(), ({ ratio }) => {
      if (ratio === 0.25) throw new InvalidArgumentError('ratio 0.25 is reserved.');
    });
    expect(schema['~standard'].validate({ ratio: 0.5 })).toEqual({ value: { ratio: 0.5 } });
    expect(schema['~standard'].validate({ ratio: 0.25 })).toEqual({ issues: [{ message: 'ratio 0.25 is reserved.' }] });
    expect(schema['~standard'].validate({ ratio: 2 })).toMatchObject({ issues: [{ path: ['ratio'] }] });
    expect(() => withConstructorRules(ratioSchema(), () => { throw new TypeError('bug'); })['~standard'].validate({})).toThrow(TypeError);
  });
});

describe('discoverCallbackPlugins', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'diff-discover-'));
    const write = async (pkg: string, json: object, code: string) => {
      const folder = join(root, 'node_modules', pkg);
      await mkdir(join(folder, 'dist'), { recursive: true });
      await writeFile(join(folder, 'package.json'), JSON.stringify(json));
      await writeFile(join(folder, 'dist', 'index.js'), code);
    };
    const pluginCode = (name: string) => `
      const options = { '~standard': { version: 1, vendor: 'x', validate: (value) => ({ value }) } };
      export const plugin = { specificationVersion: 'v1', name: '${name}', description: 'd', options, optionsJsonSchema: {}, create: () => ({}) };
      export const other = 42;`;
    await write('@acme/diff-callback-sparkle', { name: '@acme/diff-callback-sparkle', type: 'module', keywords: ['diff-callback'], exports: { '.': { types: './dist/index.d.ts', import: './dist/index.js' } } }, pluginCode('sparkle'));
    await write('unrelated', { name: 'unrelated', type: 'module', main: 'dist/index.js' }, 'throw new Error("must not be imported")');
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  it('imports the packages with the diff-callback keyword and registers their descriptors', async () => {
    const registry = new CallbackRegistry();
    const found = await discoverCallbackPlugins({ from: join(root, 'src', 'deep'), registry });
    expect(found.map((entry) => [entry.packageName, entry.descriptors.map((d) => d.name)])).toEqual([['@acme/diff-callback-sparkle', ['sparkle']]]);
    expect(registry.list().map((info) => info.name)).toEqual(['sparkle']);
  });

  it('names a package that fails to load', async () => {
    const broken = join(root, 'broken');
    await mkdir(join(broken, 'node_modules', 'diff-callback-broken'), { recursive: true });
    await writeFile(join(broken, 'node_modules', 'diff-callback-broken', 'package.json'), JSON.stringify({ name: 'diff-callback-broken', type: 'module', keywords: ['diff-callback'], main: 'missing.js' }));
    const failure = discoverCallbackPlugins({ from: broken });
    await expect(failure).rejects.toBeInstanceOf(PluginLoadError);
    await expect(failure).rejects.toThrow(/^diff-callback-broken: the callback package failed to load/);
  });
});

describe('@diff/core/plugin', () => {
  it('loads neither onnxruntime-node nor sharp (the built entry, in a fresh process)', async () => {
    const entry = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'plugin.js');
    const probe = `
      import { createRequire } from 'node:module';
      await import(${JSON.stringify(entry)});
      const loaded = Object.keys(createRequire(import.meta.url).cache).filter((path) => /onnxruntime|sharp/.test(path));
      console.log(JSON.stringify(loaded));`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', probe]);
    expect(JSON.parse(stdout)).toEqual([]);
  });
});
