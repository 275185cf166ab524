/**
 * Form fields from JSON Schemas: one field per option of a callback plugin (number, integer, boolean, string, enum),
 * its default filled in and its description as a hint. An empty field leaves the option out.
 */
import type { CallbackPluginInfo, JsonSchema } from '@diff/core/plugin';

/** What the page reads from a schema (the keywords zod's `toJSONSchema` and the request schema use). */
export interface FieldSchema {
  type?: string;
  enum?: readonly unknown[];
  default?: unknown;
  description?: string;
  minimum?: number;
  maximum?: number;
  multipleOf?: number;
}

export interface Field {
  readonly element: HTMLElement;
  /** The value to send; undefined leaves the option out. */
  read(): unknown;
  /** Shows `value`, or the default when undefined. */
  write(value: unknown): void;
}

/** Creates an element with attributes and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Partial<Record<string, string>> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) if (value !== undefined) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/** A nullable option (`anyOf: [T, null]`) is edited as T: an empty field leaves it out. */
function fieldSchema(schema: JsonSchema): FieldSchema {
  const plain = schema as FieldSchema & { anyOf?: FieldSchema[] };
  const branch = plain.anyOf?.find((each) => each.type !== 'null');
  return branch ? { ...branch, description: plain.description, default: plain.default } : plain;
}

/** min, max and step of a number input from the schema (huge bounds such as 2^53 − 1 say nothing worth showing). */
export function numberAttributes(schema: FieldSchema = {}): Record<string, string | undefined> {
  const bound = (value: number | undefined) => (value !== undefined && Math.abs(value) < 1e9 ? String(value) : undefined);
  const step = schema.multipleOf ?? (schema.type === 'integer' ? 1 : undefined);
  return { min: bound(schema.minimum), max: bound(schema.maximum), step: step === undefined ? 'any' : String(step) };
}

function optionField(id: string, name: string, schema: FieldSchema): Field {
  const hint = schema.description ? h('small', { class: 'hint' }, schema.description) : '';
  const label = (control: HTMLElement) => h('label', { class: 'field', for: id }, h('span', {}, name), control, hint);

  if (schema.type === 'boolean') {
    const input = h('input', { id, type: 'checkbox' });
    const write = (value: unknown) => (input.checked = (value ?? schema.default) === true);
    write(undefined);
    return { element: label(input), read: () => (input.checked || schema.default !== undefined ? input.checked : undefined), write };
  }
  if (schema.enum) {
    const select = h('select', { id });
    if (schema.default === undefined) select.append(h('option', { value: '' }, '—'));
    for (const choice of schema.enum) select.append(h('option', { value: String(choice) }, String(choice)));
    const write = (value: unknown) => (select.value = String(value ?? schema.default ?? ''));
    write(undefined);
    return { element: label(select), read: () => schema.enum?.find((choice) => String(choice) === select.value), write };
  }
  const numeric = schema.type === 'number' || schema.type === 'integer';
  const input = h('input', { id, type: numeric ? 'number' : 'text', ...(numeric ? numberAttributes(schema) : {}) });
  const write = (value: unknown) => (input.value = value === undefined || value === null ? String(schema.default ?? '') : String(value));
  write(undefined);
  const read = () => {
    if (input.value.trim() === '') return undefined;
    return numeric ? Number(input.value) : input.value;
  };
  return { element: label(input), read, write };
}

export interface CallbackFieldset {
  readonly name: string;
  readonly element: HTMLFieldSetElement;
  /** `{ name, options }` when enabled. */
  read(): { name: string; options: Record<string, unknown> } | undefined;
  /** Enables the callback with these options, or disables it (undefined). */
  write(options: Readonly<Record<string, unknown>> | undefined): void;
}

/** A callback's fieldset: a checkbox in the legend enables it (a disabled fieldset greys out its options). */
export function callbackFieldset({ name, description, optionsJsonSchema }: CallbackPluginInfo): CallbackFieldset {
  const enabled = h('input', { type: 'checkbox', name: `callback-${name}` });
  const fields = Object.entries(optionsJsonSchema.properties ?? {}).map(
    ([option, schema]) => [option, optionField(`callback-${name}-${option}`, option, fieldSchema(schema))] as const,
  );
  const element = h(
    'fieldset',
    { class: 'callback', 'data-callback': name },
    h('legend', {}, h('label', {}, enabled, name)),
    h('p', { class: 'hint' }, description),
    h('div', { class: 'options' }, ...fields.map(([, field]) => field.element)),
  );
  const sync = () => (element.disabled = !enabled.checked);
  enabled.addEventListener('change', sync);
  sync();
  return {
    name,
    element,
    read() {
      if (!enabled.checked) return undefined;
      const options: Record<string, unknown> = {};
      for (const [option, field] of fields) {
        const value = field.read();
        if (value !== undefined) options[option] = value;
      }
      return { name, options };
    },
    write(options) {
      enabled.checked = options !== undefined;
      for (const [option, field] of fields) field.write(options?.[option]);
      sync();
    },
  };
}
