/**
 * Callbacks by name on the command line: a registry with the official plugins, third-party packages (`--plugin`, or
 * found by `discoverCallbackPlugins`), and `NAME[:key=value,…]` specs whose values are read by the plugin's JSON
 * Schema and then validated by its schema.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  CallbackRegistry,
  discoverCallbackPlugins,
  isCallbackPluginDescriptor,
  type CallbackPluginDescriptor,
  type JsonSchema,
} from '@diff/core';
import * as cfgCutoff from '@diff/callback-cfg-cutoff';
import * as interrupt from '@diff/callback-interrupt';
import * as ipAdapter from '@diff/callback-ipadapter';
import * as preview from '@diff/callback-preview';
import { UsageError } from './args.js';

type Descriptor = CallbackPluginDescriptor<unknown, unknown>;

/** The official callback packages, by package name: every descriptor they export is registered. */
const OFFICIAL_PACKAGES: Readonly<Record<string, Record<string, unknown>>> = {
  '@diff/callback-cfg-cutoff': cfgCutoff,
  '@diff/callback-interrupt': interrupt,
  '@diff/callback-ipadapter': ipAdapter,
  '@diff/callback-preview': preview,
};

const descriptorsOf = (module: Record<string, unknown>): Descriptor[] => [...new Set(Object.values(module).filter(isCallbackPluginDescriptor))];

/** A registry that remembers which package each plugin came from, for listings and messages. */
export class CliRegistry {
  readonly registry = new CallbackRegistry();
  private readonly packages = new Map<string, string>();
  /** Plugins found under a name another package already took, as `name (package)`. */
  readonly shadowed: string[] = [];

  constructor() {
    for (const [packageName, module] of Object.entries(OFFICIAL_PACKAGES)) this.add(packageName, descriptorsOf(module));
  }

  /** Registers a package's descriptors; a different descriptor under a name already taken is set aside in `shadowed`. */
  add(packageName: string, descriptors: readonly Descriptor[]): void {
    for (const descriptor of descriptors) {
      if (this.registry.has(descriptor.name) && this.registry.get(descriptor.name) !== descriptor) {
        this.shadowed.push(`${descriptor.name} (${packageName}; ${this.packages.get(descriptor.name)} has that name)`);
        continue;
      }
      this.registry.register(descriptor);
      if (!this.packages.has(descriptor.name)) this.packages.set(descriptor.name, packageName);
    }
  }

  packageOf(name: string): string | undefined {
    return this.packages.get(name);
  }

  /** `--plugin PACKAGE`: imports an installed package (resolved from `cwd`) or a path, and registers its descriptors. */
  async loadPlugin(spec: string, cwd: string): Promise<void> {
    const module = await importPlugin(spec, cwd);
    const descriptors = descriptorsOf(module);
    if (descriptors.length === 0) {
      throw new UsageError(`--plugin ${spec}: the package exports no callback plugin descriptor ({ specificationVersion, name, options, optionsJsonSchema, create }).`);
    }
    const before = this.shadowed.length;
    this.add(spec, descriptors);
    if (this.shadowed.length > before) throw new UsageError(`--plugin ${spec}: a different plugin is already registered as ${this.shadowed.slice(before).join(', ')}.`);
  }

  /** Registers the callback packages installed where `cwd` resolves packages (keyword `diff-callback`). */
  async discover(cwd: string): Promise<void> {
    for (const { packageName, descriptors } of await discoverCallbackPlugins({ from: cwd })) this.add(packageName, descriptors);
  }
}

async function importPlugin(spec: string, cwd: string): Promise<Record<string, unknown>> {
  const isPath = spec.startsWith('.') || isAbsolute(spec);
  const target = isPath ? resolve(cwd, spec) : installedPackage(spec, cwd);
  if (target === undefined || !existsSync(target)) {
    throw new UsageError(
      isPath ? `--plugin ${spec}: no such file or folder.` : `--plugin ${spec}: no package of that name is installed in ${cwd} or a folder above it (npm install ${spec}).`,
    );
  }
  const entry = statSync(target).isDirectory() ? join(target, packageEntry(target)) : target;
  try {
    return (await import(pathToFileURL(entry).href)) as Record<string, unknown>;
  } catch (error) {
    throw new Error(`--plugin ${spec}: failed to load ${entry}: ${(error as Error).message}`, { cause: error });
  }
}

/** The package folder Node would find for `name` from `cwd`: `node_modules/name` here or in a folder above. */
function installedPackage(name: string, cwd: string): string | undefined {
  for (let dir = resolve(cwd); ; dir = dirname(dir)) {
    const folder = join(dir, 'node_modules', name);
    if (existsSync(join(folder, 'package.json'))) return folder;
    if (dirname(dir) === dir) return undefined;
  }
}

/** A package's ESM entry: `exports['.']` (its `import`, `node` or `default` condition), else `main`, else index.js. */
function packageEntry(folder: string): string {
  const manifestPath = join(folder, 'package.json');
  if (!existsSync(manifestPath)) return 'index.js';
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as { exports?: unknown; main?: string };
  let target = manifest.exports;
  if (target && typeof target === 'object' && '.' in target) target = (target as Record<string, unknown>)['.'];
  while (target && typeof target === 'object' && !Array.isArray(target)) {
    const conditions = target as Record<string, unknown>;
    target = conditions.import ?? conditions.node ?? conditions.default;
  }
  return typeof target === 'string' ? target : (manifest.main ?? 'index.js');
}

// ---------------------------------------------------------------------------------------------------------------
// `--callback NAME[:key=value,…]`

export interface CallbackSpec {
  readonly name: string;
  /** As written, for messages. */
  readonly text: string;
  /** The JSON options read from the spec (before the plugin's schema validates them). */
  readonly options: Record<string, unknown>;
}

/** The plugin name of a `NAME[:options]` spec. */
export const callbackName = (text: string): string => text.split(':', 1)[0];

/**
 * Reads `NAME`, `NAME:key=value,key=value` (each value read as the plugin's JSON Schema types it: number, integer,
 * boolean, null, enum, string; a bare `key` is `true` for a boolean) or `NAME:{"key": …}` (JSON). The plugin must be
 * registered; its schema validates the options later (`registry.create`).
 */
export function parseCallbackSpec(text: string, registry: CallbackRegistry): CallbackSpec {
  const name = callbackName(text);
  const body = text.slice(name.length + 1).trim();
  if (name === '') throw new UsageError(`--callback "${text}": give the plugin's name first, as NAME[:key=value,…] (diff-sd callbacks lists them).`);
  let descriptor: Descriptor;
  try {
    descriptor = registry.get(name);
  } catch (error) {
    throw new UsageError(`--callback ${text}: ${(error as Error).message} diff-sd callbacks lists them with their options; --plugin PACKAGE loads more.`);
  }
  if (body.startsWith('{')) return { name, text, options: parseJsonOptions(name, body) };
  const schema = descriptor.optionsJsonSchema;
  const options: Record<string, unknown> = {};
  for (const pair of body === '' ? [] : body.split(',')) {
    const equals = pair.indexOf('=');
    const key = (equals === -1 ? pair : pair.slice(0, equals)).trim();
    if (key === '') throw new UsageError(`--callback ${name}: "${pair}" is not key=value; options are written ${name}:key=value,key=value.`);
    if (Object.hasOwn(options, key)) throw new UsageError(`--callback ${name}: option ${key} is given twice.`);
    const property = propertySchema(name, key, schema);
    options[key] = equals === -1 ? bareKey(name, key, property) : readValue(name, key, pair.slice(equals + 1).trim(), property);
  }
  return { name, text, options };
}

function parseJsonOptions(name: string, body: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch (error) {
    throw new UsageError(`--callback ${name}: the options are not valid JSON (${(error as Error).message}).`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UsageError(`--callback ${name}: JSON options must be an object, got ${body}.`);
  return value as Record<string, unknown>;
}

/** The schema of one option; unknown options are an error where the plugin allows no others. */
function propertySchema(name: string, key: string, schema: JsonSchema): JsonSchema {
  const property = schema.properties?.[key];
  if (property) return property;
  const { additionalProperties } = schema;
  if (additionalProperties === false) {
    const known = Object.keys(schema.properties ?? {});
    throw new UsageError(`--callback ${name}: unknown option "${key}"; ${name} takes ${known.length > 0 ? known.join(', ') : 'no options'}.`);
  }
  return typeof additionalProperties === 'object' ? additionalProperties : {};
}

/** The alternatives a value may take: `anyOf`/`oneOf` members, or the schema itself. */
function alternatives(schema: JsonSchema): JsonSchema[] {
  const members = [...(schema.anyOf ?? []), ...(schema.oneOf ?? [])];
  return members.length > 0 ? members.flatMap(alternatives) : [schema];
}

const typesOf = (schema: JsonSchema): string[] => (schema.type === undefined ? [] : typeof schema.type === 'string' ? [schema.type] : [...schema.type]);

/** How a string reads as each JSON type; undefined where it does not. */
const READERS: readonly [string, (text: string) => unknown][] = [
  ['null', (text) => (text === 'null' ? null : undefined)],
  ['boolean', (text) => (text === 'true' ? true : text === 'false' ? false : undefined)],
  ['integer', (text) => (/^[+-]?\d+$/.test(text) && Number.isSafeInteger(Number(text)) ? Number(text) : undefined)],
  ['number', (text) => (text !== '' && Number.isFinite(Number(text)) ? Number(text) : undefined)],
  ['string', (text) => text],
];

function readValue(name: string, key: string, text: string, schema: JsonSchema): unknown {
  const options = alternatives(schema);
  for (const option of options) {
    const listed = option.enum ?? (option.const !== undefined ? [option.const] : []);
    const index = listed.findIndex((value) => String(value) === text);
    if (index !== -1) return listed[index];
  }
  for (const [type, read] of READERS) {
    if (!options.some((option) => option.enum === undefined && option.const === undefined && typesOf(option).includes(type))) continue;
    const value = read(text);
    if (value !== undefined) return value;
  }
  if (options.every((option) => option.enum === undefined && option.const === undefined && typesOf(option).length === 0)) {
    // An option of any type: JSON where it parses, the text otherwise.
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return text;
    }
  }
  throw new UsageError(`--callback ${name}: option ${key} takes ${describeSchema(schema)}, got "${text}".`);
}

function bareKey(name: string, key: string, schema: JsonSchema): true {
  if (alternatives(schema).some((option) => typesOf(option).includes('boolean'))) return true;
  throw new UsageError(`--callback ${name}: option ${key} needs a value (${key}=…), ${describeSchema(schema)}.`);
}

/** A short human description of what a schema accepts: `a number from 0 to 1, or null`, `one of linear, vae`. */
export function describeSchema(schema: JsonSchema): string {
  const parts = alternatives(schema).map((option) => {
    if (option.enum) return option.enum.length === 1 ? JSON.stringify(option.enum[0]) : `one of ${option.enum.map((value) => String(value)).join(', ')}`;
    if (option.const !== undefined) return JSON.stringify(option.const);
    const types = typesOf(option);
    if (types.length === 0) return 'any JSON value';
    return types
      .map((type) => {
        if (type !== 'number' && type !== 'integer') return type === 'null' ? 'null' : type === 'boolean' ? 'true or false' : `a ${type}`;
        const article = type === 'integer' ? 'an integer' : 'a number';
        const { minimum, maximum, exclusiveMinimum, exclusiveMaximum } = option;
        // zod writes integers without a bound as ≤ MAX_SAFE_INTEGER: not worth showing.
        const max = maximum !== undefined && maximum < Number.MAX_SAFE_INTEGER ? maximum : undefined;
        if (minimum !== undefined && max !== undefined) return `${article} from ${minimum} to ${max}`;
        const low = minimum !== undefined ? `≥ ${minimum}` : exclusiveMinimum !== undefined ? `> ${exclusiveMinimum}` : '';
        const high = max !== undefined ? `≤ ${max}` : exclusiveMaximum !== undefined ? `< ${exclusiveMaximum}` : '';
        return [article, low, high].filter(Boolean).join(' ');
      })
      .join(' or ');
  });
  return parts.join(', or ');
}

// ---------------------------------------------------------------------------------------------------------------
// `diff-sd callbacks`

export interface PluginListing {
  readonly name: string;
  readonly description: string;
  readonly package?: string;
  readonly optionsJsonSchema: JsonSchema;
}

export function listPlugins(cli: CliRegistry): PluginListing[] {
  return cli.registry.list().map(({ name, description, optionsJsonSchema }) => ({ name, description, package: cli.packageOf(name), optionsJsonSchema }));
}

/** The listing as text: each plugin, its package and description, then one line per option with type and default. */
export function formatPlugins(plugins: readonly PluginListing[]): string {
  const blocks = plugins.map(({ name, description, package: packageName, optionsJsonSchema }) => {
    const properties = Object.entries(optionsJsonSchema.properties ?? {});
    const lines = [`${name}${packageName ? `  (${packageName})` : ''}`, `  ${description}`];
    if (properties.length === 0) lines.push('  no options');
    for (const [key, property] of properties) {
      const shown = property.default !== undefined ? `; default ${JSON.stringify(property.default)}` : '';
      lines.push(`  ${key}: ${describeSchema(property)}${shown}`);
      if (property.description) lines.push(`      ${property.description}`);
    }
    const example = properties.map(([key, property]) => [key, exampleValue(property)]).find(([, value]) => value !== undefined);
    lines.push(`  --callback ${example ? `${name}:${example[0]}=${example[1]}` : name}`);
    return lines.join('\n');
  });
  return blocks.join('\n\n');
}

/** A value an option accepts, for the usage line: its default, its first choice, or one inside its range. */
function exampleValue(schema: JsonSchema): string | undefined {
  if (schema.default !== undefined) return String(schema.default);
  for (const option of alternatives(schema)) {
    if (option.enum?.[0] !== undefined || option.const !== undefined) return String(option.enum?.[0] ?? option.const);
    const types = typesOf(option);
    if (types.includes('number') || types.includes('integer')) {
      const { minimum = 0, maximum } = option;
      const inside = maximum !== undefined && maximum < Number.MAX_SAFE_INTEGER ? (minimum + maximum) / 2 : minimum + 1;
      return String(types.includes('number') ? inside : Math.ceil(inside));
    }
    if (types.includes('boolean')) return 'true';
  }
  return undefined;
}
