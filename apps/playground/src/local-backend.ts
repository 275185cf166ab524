/**
 * Generations in this process: one waiting line per model (one generation at a time per pipeline), the pipelines
 * loaded on their first generation, each generation's callbacks composed from the registry, its pictures kept as PNG.
 */
import { randomUUID } from 'node:crypto';
import sharp from 'sharp';
import {
  AutoPipelineForText2Image,
  DiffError,
  generationOptions,
  parseGenerationRequest,
  type CallbackPlugin,
  type CallbackRegistry,
  type RegisteredCallback,
  type RgbImage,
  type Text2ImagePipeline,
} from '@diff/core';
import { InterruptController } from '@diff/callback-interrupt';
import type { LatentPreview } from '@diff/callback-preview';
import { createRequestedCallbacks, resolveRequest, type BackendEvent, type GenerationBackend, type ResolvedRequest } from './backend.js';
import { createPlaygroundRegistry } from './registry.js';

class LocalGeneration {
  readonly id = randomUUID();
  readonly abortController = new AbortController();
  /** Stop: the generation ends after the step in flight and keeps what it has. */
  readonly stopButton = new InterruptController();
  callbacks: RegisteredCallback[] = [];
  /** PNG files, once done. */
  pictures: Buffer[] = [];
  /** In its model's line: 1 = next; 0 once it runs or has ended. */
  position = 0;
  finished = false;

  constructor(
    readonly request: ResolvedRequest,
    private readonly onEvent: (event: BackendEvent) => void,
  ) {}

  emit(event: BackendEvent): void {
    if (this.finished) return;
    this.finished = event.type === 'done' || event.type === 'cancelled' || event.type === 'error';
    this.onEvent(event);
  }
}

/** A model and its waiting line. The pipeline loads on its first generation (a failed load is retried next time). */
class ModelLane {
  readonly waiting: LocalGeneration[] = [];
  /** The running generation, and its run (which never rejects). */
  running?: { generation: LocalGeneration; run: Promise<void> };
  private pipeline?: Promise<Text2ImagePipeline>;

  constructor(readonly dir: string) {}

  load(): Promise<Text2ImagePipeline> {
    this.pipeline ??= AutoPipelineForText2Image.fromPretrained(this.dir).catch((error: unknown) => {
      this.pipeline = undefined;
      throw error;
    });
    return this.pipeline;
  }

  async dispose(): Promise<void> {
    const pipeline = await this.pipeline?.catch(() => undefined);
    await pipeline?.dispose();
  }
}

export interface LocalBackendOptions {
  /** Model name → pipeline folder; the first is the default. */
  models: ReadonlyMap<string, string>;
  /** Where unexpected failures are reported. */
  logError: (message: string) => void;
}

async function encodePng(image: RgbImage): Promise<Buffer> {
  return sharp(image.data, { raw: { width: image.width, height: image.height, channels: image.channels } }).png().toBuffer();
}

export class LocalBackend implements GenerationBackend {
  readonly registry: CallbackRegistry = createPlaygroundRegistry();
  private readonly byId = new Map<string, LocalGeneration>();
  private readonly lanes = new Map<string, ModelLane>();

  constructor(private readonly options: LocalBackendOptions) {
    for (const [name, dir] of options.models) this.lanes.set(name, new ModelLane(dir));
  }

  async models(): Promise<readonly string[]> {
    return [...this.lanes.keys()];
  }

  async submit(body: unknown, onEvent: (event: BackendEvent) => void): Promise<{ id: string; request: ResolvedRequest }> {
    const request = resolveRequest(parseGenerationRequest(body, { registry: this.registry }), [...this.lanes.keys()]);
    const generation = new LocalGeneration(request, onEvent);
    generation.callbacks = this.createCallbacks(generation);
    const lane = this.lanes.get(request.model) as ModelLane;
    this.byId.set(generation.id, generation);
    lane.waiting.push(generation);
    this.updatePositions(lane);
    this.startNext(lane);
    return { id: generation.id, request };
  }

  async interrupt(id: string): Promise<void> {
    const generation = this.byId.get(id);
    if (generation?.position === 0) generation.stopButton.interrupt();
    else await this.cancel(id);
  }

  async cancel(id: string): Promise<void> {
    const generation = this.byId.get(id);
    if (!generation || generation.finished) return;
    const lane = this.lanes.get(generation.request.model) as ModelLane;
    const waitingAt = lane.waiting.indexOf(generation);
    if (waitingAt >= 0) {
      lane.waiting.splice(waitingAt, 1);
      generation.position = 0;
      generation.emit({ type: 'cancelled', id });
      this.updatePositions(lane);
    } else {
      generation.abortController.abort();
    }
  }

  async image(id: string, index: number): Promise<Buffer | undefined> {
    return this.byId.get(id)?.pictures[index];
  }

  forget(id: string): void {
    this.byId.delete(id);
  }

  async close(): Promise<void> {
    const runs = [...this.lanes.values()].flatMap((lane) => (lane.running ? [lane.running.run] : []));
    for (const id of this.byId.keys()) await this.cancel(id);
    await Promise.all(runs);
    await Promise.all([...this.lanes.values()].map((lane) => lane.dispose()));
  }

  /**
   * The request's callbacks, plus what the playground adds: the Stop button first, a `preview` callback (the
   * request's, or one with its defaults) whose pictures go into the `step` events, and the reporter of those events.
   */
  private createCallbacks(generation: LocalGeneration): RegisteredCallback[] {
    let latestPreview: { stepIndex: number; url: string } | undefined;
    const onPreview = async ({ stepIndex, images }: LatentPreview) => {
      latestPreview = { stepIndex, url: `data:image/png;base64,${(await encodePng(images[0])).toString('base64')}` };
    };
    const callbacks = createRequestedCallbacks(this.registry, generation.request, onPreview);
    const preview = generation.request.callbacks?.some(({ name }) => name === 'preview') ? [] : [this.registry.create('preview', {}, { onPreview })];
    // After the preview (both 'post', in list order), so a step's event carries the picture made at that step.
    const reporter: CallbackPlugin<never> = {
      specificationVersion: 'v1',
      name: 'PlaygroundProgress',
      tensorInputs: [],
      enforce: 'post',
      onStepEnd: (pipeline, stepIndex) => {
        const preview = latestPreview?.stepIndex === stepIndex ? { preview: latestPreview.url } : {};
        generation.emit({ type: 'step', id: generation.id, stepIndex, numTimesteps: pipeline.numTimesteps, ...preview });
      },
    };
    return [generation.stopButton.callback, ...callbacks, ...preview, reporter];
  }

  private startNext(lane: ModelLane): void {
    if (lane.running) return;
    const generation = lane.waiting.shift();
    if (!generation) return;
    generation.position = 0;
    this.updatePositions(lane);
    const run = this.run(generation, lane).finally(() => {
      lane.running = undefined;
      this.startNext(lane);
    });
    lane.running = { generation, run };
  }

  private async run(generation: LocalGeneration, lane: ModelLane): Promise<void> {
    const { id, request, abortController } = generation;
    generation.emit({ type: 'started', id });
    try {
      const pipeline = await lane.load();
      const output = await pipeline.generate({ ...generationOptions(request), callbackOnStepEnd: generation.callbacks, signal: abortController.signal });
      generation.pictures = await Promise.all(output.images.map(encodePng));
      generation.emit({ type: 'done', id, ...(output.interruptedAtStep === undefined ? {} : { interruptedAtStep: output.interruptedAtStep }) });
    } catch (error) {
      if (abortController.signal.aborted) {
        generation.emit({ type: 'cancelled', id });
      } else {
        if (!(error instanceof DiffError)) this.options.logError(`generation ${id} failed: ${(error as Error).stack ?? String(error)}`);
        const code = error instanceof DiffError ? error.code : 'INTERNAL';
        generation.emit({ type: 'error', id, message: (error as Error).message ?? String(error), code });
      }
    }
  }

  private updatePositions(lane: ModelLane): void {
    lane.waiting.forEach((generation, index) => {
      if (generation.position === index + 1) return;
      generation.position = index + 1;
      generation.emit({ type: 'queued', id: generation.id, position: generation.position });
    });
  }
}
