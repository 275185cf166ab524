import type {
  CallbackPluginDescriptor,
  CallbackPluginInfo,
  CallbackPluginOptions,
  CallbackPluginRegistry,
  CallbackPluginRuntime,
  RegisteredCallback,
  StandardSchemaV1,
} from '../contract.js';
import { InvalidArgumentError } from '../errors.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a registry holds descriptors of every option type
type AnyDescriptor = CallbackPluginDescriptor<any, any, any>;

const NAME_PATTERN = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;

/**
 * A plugin's options schema plus the rules its constructor enforces across options: `schema` validates the JSON
 * (any Standard Schema: zod, valibot, …), then `construct` runs on the result and an `InvalidArgumentError` it throws
 * becomes an issue — so the registry rejects exactly what `new` rejects, with the same message.
 */
export function withConstructorRules<Input, Output>(
  schema: StandardSchemaV1<Input, Output>,
  construct: (options: Output) => unknown,
): StandardSchemaV1<Input, Output> {
  const validate = (value: unknown): StandardSchemaV1.Result<Output> => {
    const result = schema['~standard'].validate(value);
    if (result instanceof Promise) throw new InvalidArgumentError('withConstructorRules needs a schema that validates synchronously.');
    if (result.issues) return result;
    try {
      construct(result.value);
    } catch (error) {
      if (!(error instanceof InvalidArgumentError)) throw error;
      return { issues: [{ message: error.message }] };
    }
    return result;
  };
  return { '~standard': { ...schema['~standard'], validate } };
}

/** Whether `value` has the shape of a callback plugin descriptor (used by discovery to find them in modules). */
export function isCallbackPluginDescriptor(value: unknown): value is AnyDescriptor {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Partial<AnyDescriptor>;
  return (
    typeof candidate.name === 'string' &&
    typeof candidate.create === 'function' &&
    typeof candidate.options === 'object' &&
    candidate.options !== null &&
    '~standard' in candidate.options
  );
}

function describeIssue(issue: StandardSchemaV1.Issue): string {
  const path = (issue.path ?? []).map((segment) => String(typeof segment === 'object' ? segment.key : segment)).join('.');
  const message = issue.message.replace(/\.$/, ''); // the sentence around it ends with its own full stop
  return path ? `${path}: ${message}` : message;
}

/**
 * Callbacks by name, for apps whose options arrive as JSON or strings (a CLI, an HTTP API, a job queue). Each app or
 * queue may keep its own; `registerCallbackPlugin` & co. use one default registry.
 */
export class CallbackRegistry {
  private readonly descriptors = new Map<string, AnyDescriptor>();

  constructor(descriptors: readonly AnyDescriptor[] = []) {
    for (const descriptor of descriptors) this.register(descriptor);
  }

  /** Adds a plugin. The same descriptor twice is fine; another one under a taken name is an error. */
  register(descriptor: AnyDescriptor): this {
    if (!isCallbackPluginDescriptor(descriptor)) {
      throw new InvalidArgumentError(
        'registerCallbackPlugin takes a callback plugin descriptor: { specificationVersion, name, description, options (a Standard Schema), optionsJsonSchema, create }.',
      );
    }
    const { name } = descriptor;
    if (descriptor.specificationVersion !== 'v1') {
      throw new InvalidArgumentError(`Callback plugin "${name}" implements specification ${String(descriptor.specificationVersion)}; this version of @diff/core supports: v1.`);
    }
    if (!NAME_PATTERN.test(name)) {
      throw new InvalidArgumentError(`Callback plugin name "${name}" must be lowercase words joined by "-", e.g. "cfg-cutoff".`);
    }
    const existing = this.descriptors.get(name);
    if (existing && existing !== descriptor) {
      throw new InvalidArgumentError(`A different callback plugin named "${name}" is already registered; plugin names must be unique.`);
    }
    this.descriptors.set(name, descriptor);
    return this;
  }

  has(name: string): boolean {
    return this.descriptors.has(name);
  }

  /** The registered plugins, by name, with their options' JSON Schema. */
  list(): CallbackPluginInfo[] {
    return [...this.descriptors.values()]
      .map(({ name, description, optionsJsonSchema }) => ({ name, description, optionsJsonSchema }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The descriptor registered under `name`; throws naming the known ones. */
  get(name: string): AnyDescriptor {
    const descriptor = this.descriptors.get(name);
    if (!descriptor) {
      const known = [...this.descriptors.keys()].sort();
      throw new InvalidArgumentError(
        `Unknown callback plugin "${name}". Known: ${known.length > 0 ? known.join(', ') : 'none (register plugins first)'}.`,
      );
    }
    return descriptor;
  }

  /** Validates `options` with the plugin's schema (synchronously) and returns what its `create` expects. */
  parseOptions(name: string, options: unknown): unknown {
    const descriptor = this.get(name);
    const result = descriptor.options['~standard'].validate(options ?? {});
    if (result instanceof Promise) {
      throw new InvalidArgumentError(`Callback plugin "${name}" has an options schema that validates asynchronously; registry schemas must validate synchronously.`);
    }
    if (result.issues) {
      throw new InvalidArgumentError(`Invalid options for callback plugin "${name}": ${result.issues.map(describeIssue).join('; ')}.`);
    }
    return result.value;
  }

  /** A callback from its registry name and JSON-able options (validated), plus runtime values such as handlers. */
  create<Name extends keyof CallbackPluginRegistry>(name: Name, options?: CallbackPluginOptions<Name>, runtime?: CallbackPluginRuntime<Name>): RegisteredCallback;
  create<Name extends string>(name: Name extends keyof CallbackPluginRegistry ? never : Name, options?: unknown, runtime?: unknown): RegisteredCallback;
  create(name: string, options?: unknown, runtime?: unknown): RegisteredCallback {
    const parsed = this.parseOptions(name, options);
    return this.get(name).create(parsed, runtime) as RegisteredCallback;
  }
}

const defaultRegistry = new CallbackRegistry();

/** The registry `registerCallbackPlugin`, `listCallbackPlugins` and `createCallback` use. */
export function defaultCallbackRegistry(): CallbackRegistry {
  return defaultRegistry;
}

/** Registers plugins in the default registry (apps do this; packages never register themselves on import). */
export function registerCallbackPlugin(...descriptors: AnyDescriptor[]): void {
  for (const descriptor of descriptors) defaultRegistry.register(descriptor);
}

export function listCallbackPlugins(): CallbackPluginInfo[] {
  return defaultRegistry.list();
}

/** `createCallback('cfg-cutoff', { cutoffStepRatio: 0.4 })`: a callback from the default registry, options checked. */
export function createCallback<Name extends keyof CallbackPluginRegistry>(name: Name, options?: CallbackPluginOptions<Name>, runtime?: CallbackPluginRuntime<Name>): RegisteredCallback;
export function createCallback<Name extends string>(name: Name extends keyof CallbackPluginRegistry ? never : Name, options?: unknown, runtime?: unknown): RegisteredCallback;
export function createCallback(name: string, options?: unknown, runtime?: unknown): RegisteredCallback {
  return defaultRegistry.create(name as never, options, runtime);
}
