/**
 * The playground page: builds the form from the server's schemas, posts a generation, follows its events (a live
 * preview, a progress bar), Stop and Cancel, and a gallery whose entries fill the form again.
 */
import type { CallbackPluginInfo, GenerationEvent, GenerationRequest, JsonSchema } from '@diff/core/plugin';
import { callbackFieldset, h, numberAttributes, type CallbackFieldset, type FieldSchema } from './form.js';

/** A request as JSON: seeds beyond 2^53 − 1 travel as decimal strings. */
type RequestJson = Omit<GenerationRequest, 'seed'> & { seed?: number | string };
/** The playground's `done` also lists every picture. */
type PlaygroundEvent = GenerationEvent & { images?: readonly string[] };

interface GalleryEntry {
  readonly request: RequestJson;
  readonly pictures: readonly string[];
  readonly interruptedAtStep?: number;
}

const SESSION_HEADER = 'X-Playground-Session';
/** The request fields the form edits, by input name. */
const NUMBER_FIELDS = ['numInferenceSteps', 'guidanceScale', 'width', 'height', 'numImagesPerPrompt'] as const;
const TEXT_FIELDS = ['prompt', 'negativePrompt', 'seed', 'scheduler', 'model'] as const;

const byId = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const form = byId<HTMLFormElement>('settings');
const control = (name: string) => form.elements.namedItem(name) as HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
const generateButton = byId<HTMLButtonElement>('generate');
const stopButton = byId<HTMLButtonElement>('stop');
const cancelButton = byId<HTMLButtonElement>('cancel');
const progress = byId<HTMLProgressElement>('progress');
const statusLine = byId<HTMLParagraphElement>('status');
const view = byId<HTMLImageElement>('view');
const gallery = byId<HTMLUListElement>('gallery');

let session: string | undefined;
let callbackFieldsets: CallbackFieldset[] = [];
let current: string | undefined;

/** An error answer of the API: `{ error: { field, message } }`. */
class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** fetch with this page's session token; an error answer throws an ApiError. */
async function api(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (session) headers.set(SESSION_HEADER, session);
  const response = await fetch(path, { ...init, headers });
  if (response.ok) return response;
  const { error } = (await response.json().catch(() => ({ error: { message: response.statusText } }))) as { error: { field?: string; message: string } };
  throw new ApiError(response.status, error.message, error.field);
}

const getJson = async <T>(path: string): Promise<T> => (await api(path)).json() as Promise<T>;

function setStatus(text: string, kind: 'info' | 'error' = 'info'): void {
  statusLine.textContent = text;
  statusLine.classList.toggle('error', kind === 'error');
}

function setRunning(running: boolean): void {
  generateButton.disabled = running;
  stopButton.disabled = !running;
  cancelButton.disabled = !running;
}

function showPicture(src: string): void {
  view.src = src;
  view.hidden = false;
}

// ---------------------------------------------------------------------------------------------------------------
// The form

/** Limits and hints of the built-in fields from the request's JSON Schema; the scheduler and model choices. */
function setUpForm(schema: JsonSchema, models: readonly { name: string; default: boolean }[], callbacks: readonly CallbackPluginInfo[]): void {
  const properties = (schema.properties ?? {}) as Record<string, FieldSchema>;
  for (const name of [...NUMBER_FIELDS, ...TEXT_FIELDS]) {
    const field = control(name);
    const property = properties[name];
    if (property?.description) field.title = property.description;
    if (field instanceof HTMLInputElement && field.type === 'number') {
      for (const [attribute, value] of Object.entries(numberAttributes(property))) if (value !== undefined) field.setAttribute(attribute, value);
    }
  }
  const scheduler = control('scheduler');
  for (const name of properties.scheduler?.enum ?? []) scheduler.append(h('option', { value: String(name) }, String(name)));
  const model = control('model');
  for (const each of models) model.append(h('option', { value: each.name, ...(each.default ? { selected: '' } : {}) }, each.name));

  callbackFieldsets = callbacks.map(callbackFieldset);
  byId('callbacks').append(...callbackFieldsets.map((fieldset) => fieldset.element));
}

function readForm(): RequestJson {
  const request: Record<string, unknown> = {};
  for (const name of TEXT_FIELDS) {
    const value = control(name).value.trim();
    if (value !== '' || name === 'prompt') request[name] = value;
  }
  if (typeof request.seed === 'string' && /^\d{1,15}$/.test(request.seed)) request.seed = Number(request.seed);
  for (const name of NUMBER_FIELDS) {
    const value = control(name).value;
    if (value !== '') request[name] = Number(value);
  }
  const callbacks = callbackFieldsets.flatMap((fieldset) => fieldset.read() ?? []);
  if (callbacks.length > 0) request.callbacks = callbacks;
  return request as RequestJson;
}

function fillForm(request: RequestJson): void {
  for (const name of [...TEXT_FIELDS, ...NUMBER_FIELDS]) control(name).value = String(request[name] ?? '');
  for (const fieldset of callbackFieldsets) {
    const callback = request.callbacks?.find(({ name }) => name === fieldset.name);
    fieldset.write(callback ? (callback.options ?? {}) : undefined);
  }
  window.scrollTo({ top: 0, behavior: 'smooth' });
}

function markInvalid(field: string | undefined): void {
  for (const element of form.querySelectorAll('.invalid')) element.classList.remove('invalid');
  if (!field) return;
  const index = /^callbacks\.(\d+)/.exec(field)?.[1];
  const enabled = callbackFieldsets.filter((fieldset) => fieldset.read());
  const target = index === undefined ? control(field) : enabled[Number(index)]?.element;
  target?.classList.add('invalid');
  target?.focus();
}

// ---------------------------------------------------------------------------------------------------------------
// A generation

/** The events of a Server-Sent Events response (read with fetch, which can send the session header). */
async function* readEvents(response: Response): AsyncGenerator<PlaygroundEvent> {
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const data = buffer
        .slice(0, end)
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).trimStart())
        .join('\n');
      buffer = buffer.slice(end + 2);
      if (data) yield JSON.parse(data) as PlaygroundEvent;
    }
  }
}

async function postGeneration(request: RequestJson): Promise<{ id: string; session: string; request: RequestJson; events: string }> {
  const post = () => api('/api/generations', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(request) });
  try {
    return (await post()).json();
  } catch (error) {
    // The server restarted: its old tokens are void; start a new session.
    if (!(error instanceof ApiError && error.status === 401)) throw error;
    session = undefined;
    return (await post()).json();
  }
}

async function generate(): Promise<void> {
  markInvalid(undefined);
  setRunning(true);
  progress.value = 0;
  setStatus('Sending…');
  try {
    const started = await postGeneration(readForm());
    session = started.session;
    current = started.id;
    for await (const event of readEvents(await api(started.events))) {
      await show(event, started.request);
    }
  } catch (error) {
    const { message, field } = error as ApiError;
    setStatus(message, 'error');
    markInvalid(field);
  } finally {
    current = undefined;
    setRunning(false);
  }
}

async function show(event: PlaygroundEvent, request: RequestJson): Promise<void> {
  switch (event.type) {
    case 'queued':
      setStatus(event.position === 1 ? 'Waiting: next in line.' : `Waiting: ${event.position} in line.`);
      break;
    case 'started':
      setStatus('Loading the model…');
      break;
    case 'step':
      progress.max = event.numTimesteps;
      progress.value = event.stepIndex + 1;
      setStatus(`Step ${event.stepIndex + 1} of ${event.numTimesteps}`);
      if (event.preview) showPicture(event.preview);
      break;
    case 'done': {
      const pictures = await Promise.all((event.images ?? [event.image]).map(async (url) => URL.createObjectURL(await (await api(url)).blob())));
      showPicture(pictures[0]);
      const stopped = event.interruptedAtStep === undefined ? '' : ` Stopped after step ${event.interruptedAtStep + 1}; the picture is what it had.`;
      setStatus(`Done.${stopped}`);
      addToGallery({ request, pictures, interruptedAtStep: event.interruptedAtStep });
      break;
    }
    case 'cancelled':
      setStatus('Cancelled.');
      break;
    case 'error':
      setStatus(`Failed (${event.code}): ${event.message}`, 'error');
      break;
  }
}

function command(action: 'interrupt' | 'cancel'): void {
  if (!current) return;
  api(`/api/generations/${current}/${action}`, { method: 'POST' }).catch((error: Error) => setStatus(error.message, 'error'));
}

// ---------------------------------------------------------------------------------------------------------------
// The gallery

function summarize(request: RequestJson): string {
  const parts = [
    `seed ${request.seed}`,
    request.numInferenceSteps !== undefined && `${request.numInferenceSteps} steps`,
    request.guidanceScale !== undefined && `guidance ${request.guidanceScale}`,
    request.scheduler,
    request.width !== undefined && request.height !== undefined && `${request.width}×${request.height}`,
    request.model,
    ...(request.callbacks ?? []).map(({ name, options = {} }) => (Object.keys(options).length > 0 ? `${name} ${JSON.stringify(options)}` : name)),
  ];
  return parts.filter(Boolean).join(' · ');
}

function addToGallery({ request, pictures, interruptedAtStep }: GalleryEntry): void {
  const reuse = h('button', { type: 'button', class: 'reuse' }, 'Reuse settings');
  reuse.addEventListener('click', () => fillForm(request));
  const images = pictures.map((src) => h('img', { src, alt: request.prompt, title: 'Show' }));
  for (const image of images) image.addEventListener('click', () => showPicture(image.src));
  const badge = interruptedAtStep === undefined ? '' : h('span', { class: 'badge' }, `stopped after step ${interruptedAtStep + 1}`);
  gallery.prepend(
    h(
      'li',
      { class: 'entry' },
      h('div', { class: 'pictures' }, ...images),
      h('p', { class: 'prompt' }, request.prompt || '(empty prompt)', badge),
      h('p', { class: 'settings' }, summarize(request)),
      reuse,
    ),
  );
}

// ---------------------------------------------------------------------------------------------------------------

async function start(): Promise<void> {
  const [schema, { models }, { callbacks }] = await Promise.all([
    getJson<JsonSchema>('/api/schema'),
    getJson<{ models: { name: string; default: boolean }[] }>('/api/models'),
    getJson<{ callbacks: CallbackPluginInfo[] }>('/api/callbacks'),
  ]);
  setUpForm(schema, models, callbacks);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void generate();
  });
  stopButton.addEventListener('click', () => command('interrupt'));
  cancelButton.addEventListener('click', () => command('cancel'));
  byId('dice').addEventListener('click', () => (control('seed').value = String(crypto.getRandomValues(new Uint32Array(1))[0])));
  view.addEventListener('load', () => view.classList.toggle('upscaled', view.naturalWidth < view.clientWidth));
  setRunning(false);
  setStatus('Ready.');
  document.body.dataset.ready = 'true';
}

start().catch((error: Error) => setStatus(`Could not load the playground: ${error.message}`, 'error'));
