/**
 * The playground's generations: one waiting line per model (one generation at a time per pipeline), each
 * generation's events kept for replay, its pictures as PNG, and its owner (the session that started it).
 */
import { randomInt, randomUUID } from 'node:crypto';
import sharp from 'sharp';
import {
  AutoPipelineForText2Image,
  DiffError,
  Generator,
  InvalidArgumentError,
  InvalidRequestError,
  parseGenerationRequest,
  type CallbackPlugin,
  type CallbackRegistry,
  type GenerationEvent,
  type GenerationRequest,
  type RegisteredCallback,
  type RgbImage,
  type Text2ImagePipeline,
} from '@diff/core';
import { InterruptController } from '@diff/callback-interrupt';
import type { LatentPreview } from '@diff/callback-preview';

type DoneEvent = Extract<GenerationEvent, { type: 'done' }>;

/** Core's event vocabulary; `done` also lists every picture (`image` is the first) for requests that ask for several. */
export type PlaygroundEvent = Exclude<GenerationEvent, DoneEvent> | (DoneEvent & { readonly images: readonly string[] });

/** The events after which nothing more comes. */
export const FINAL_EVENT_TYPES: ReadonlySet<PlaygroundEvent['type']> = new Set(['done', 'cancelled', 'error']);

/** A request as it runs: the model and the seed filled in, so that the gallery can repeat it exactly. */
export type ResolvedRequest = GenerationRequest & { readonly model: string; readonly seed: number | bigint };

type Listener = (event: PlaygroundEvent, index: number) => void;

export class Generation {
  readonly id = randomUUID();
  readonly events: PlaygroundEvent[] = [];
  readonly listeners = new Set<Listener>();
  readonly abortController = new AbortController();
  /** Stop: the generation ends after the step in flight and keeps what it has. */
  readonly stopButton = new InterruptController();
  callbacks: RegisteredCallback[] = [];
  /** PNG files, once done. */
  pictures: Buffer[] = [];
  position = 0;
  /** Where the latest step event with a preview is stored: only that one keeps its picture for replay. */
  latestPreviewIndex = -1;

  constructor(
    readonly owner: string,
    readonly request: ResolvedRequest,
  ) {}

  get finished(): boolean {
    const last = this.events.at(-1);
    return last !== undefined && FINAL_EVENT_TYPES.has(last.type);
  }

  pictureUrl(index: number): string {
    return `/api/generations/${this.id}/image/${index}`;
  }
}

/** More generations wait than the server allows. */
export class QueueFullError extends Error {
  constructor(readonly maxQueued: number) {
    super(`${maxQueued} generations are already waiting; try again when one has finished.`);
  }
}

/** A model and its waiting line. The pipeline loads on its first generation (a failed load is retried next time). */
class ModelLane {
  readonly waiting: Generation[] = [];
  running?: Generation;
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

export interface GenerationsOptions {
  /** Model name → pipeline folder; the first is the default. */
  models: ReadonlyMap<string, string>;
  registry: CallbackRegistry;
  /** Waiting generations (all models together) beyond which new ones are refused. */
  maxQueued: number;
  /** Finished generations kept for replay and their pictures; the oldest are forgotten first. */
  maxFinished: number;
  /** Where unexpected failures are reported. */
  logError: (message: string) => void;
}

async function encodePng(image: RgbImage): Promise<Buffer> {
  return sharp(image.data, { raw: { width: image.width, height: image.height, channels: image.channels } }).png().toBuffer();
}

export class Generations {
  private readonly byId = new Map<string, Generation>();
  private readonly lanes = new Map<string, ModelLane>();
  private readonly finishedOrder: Generation[] = [];

  constructor(private readonly options: GenerationsOptions) {
    for (const [name, dir] of options.models) this.lanes.set(name, new ModelLane(dir));
  }

  get modelNames(): string[] {
    return [...this.lanes.keys()];
  }

  /**
   * Validates a JSON request and queues it for `owner`. Throws `InvalidRequestError` (naming the field) for a bad
   * request, `QueueFullError` when too many wait.
   */
  submit(body: unknown, owner: string): Generation {
    const request = parseGenerationRequest(body, { registry: this.options.registry });
    const model = request.model ?? this.modelNames[0];
    const lane = this.lanes.get(model);
    if (!lane) {
      throw new InvalidRequestError('model', `Invalid generation request: model must be one of ${this.modelNames.join(', ')}, got ${JSON.stringify(model)}.`);
    }
    const waiting = [...this.lanes.values()].reduce((sum, each) => sum + each.waiting.length, 0);
    if (waiting >= this.options.maxQueued) throw new QueueFullError(this.options.maxQueued);

    const generation = new Generation(owner, { ...request, model, seed: request.seed ?? randomInt(2 ** 48 - 1) });
    generation.callbacks = this.createCallbacks(generation);
    this.byId.set(generation.id, generation);
    lane.waiting.push(generation);
    this.updatePositions(lane);
    this.startNext(lane);
    return generation;
  }

  /** The generation, if it exists and `owner` started it: other sessions cannot tell it from a missing one. */
  get(id: string, owner: string): Generation | undefined {
    const generation = this.byId.get(id);
    return generation?.owner === owner ? generation : undefined;
  }

  /**
   * Replays the events after `afterIndex`, then passes each new one to `listener` until the final one. Returns the
   * unsubscribe function: when the last listener of an unfinished generation leaves (its page closed), it is cancelled.
   */
  subscribe(generation: Generation, listener: Listener, afterIndex = -1): () => void {
    generation.events.forEach((event, index) => index > afterIndex && listener(event, index));
    if (generation.finished) return () => undefined;
    generation.listeners.add(listener);
    return () => {
      generation.listeners.delete(listener);
      if (generation.listeners.size === 0) this.cancel(generation);
    };
  }

  /** Stop: a running generation ends after its current step and keeps its partial picture; a waiting one is cancelled. */
  interrupt(generation: Generation): void {
    if (generation.position > 0) this.cancel(generation);
    else generation.stopButton.interrupt();
  }

  cancel(generation: Generation): void {
    if (generation.finished) return;
    const lane = this.lanes.get(generation.request.model) as ModelLane;
    const waitingAt = lane.waiting.indexOf(generation);
    if (waitingAt >= 0) {
      lane.waiting.splice(waitingAt, 1);
      generation.position = 0;
      this.finish(generation, { type: 'cancelled', id: generation.id });
      this.updatePositions(lane);
    } else {
      generation.abortController.abort();
    }
  }

  /** Cancels everything, waits for the running generations to stop and frees the models. */
  async close(): Promise<void> {
    const running = [...this.lanes.values()].flatMap((lane) => (lane.running ? [lane.running] : []));
    for (const generation of this.byId.values()) this.cancel(generation);
    await Promise.all(running.map((generation) => new Promise<void>((resolve) => this.subscribe(generation, (event) => FINAL_EVENT_TYPES.has(event.type) && resolve()))));
    await Promise.all([...this.lanes.values()].map((lane) => lane.dispose()));
  }

  /**
   * The request's callbacks, plus what the playground adds: the Stop button first, a `preview` callback (the
   * request's, or one with its defaults) whose pictures go into the `step` events, and the reporter of those events.
   */
  private createCallbacks(generation: Generation): RegisteredCallback[] {
    const { registry } = this.options;
    let latestPreview: { stepIndex: number; url: string } | undefined;
    const onPreview = async ({ stepIndex, images }: LatentPreview) => {
      latestPreview = { stepIndex, url: `data:image/png;base64,${(await encodePng(images[0])).toString('base64')}` };
    };
    const requested = generation.request.callbacks ?? [];
    const callbacks = requested.map(({ name, options }, index) => {
      try {
        return registry.create(name, options, name === 'preview' ? { onPreview } : undefined);
      } catch (error) {
        if (!(error instanceof InvalidArgumentError)) throw error;
        throw new InvalidRequestError(`callbacks.${index}`, `Invalid generation request: callbacks.${index}: ${error.message}`);
      }
    });
    const preview = requested.some(({ name }) => name === 'preview') ? [] : [registry.create('preview', {}, { onPreview })];
    // After the preview (both 'post', in list order), so a step's event carries the picture made at that step.
    const reporter: CallbackPlugin<never> = {
      specificationVersion: 'v1',
      name: 'PlaygroundProgress',
      tensorInputs: [],
      enforce: 'post',
      onStepEnd: (pipeline, stepIndex) => {
        const preview = latestPreview?.stepIndex === stepIndex ? { preview: latestPreview.url } : {};
        this.emit(generation, { type: 'step', id: generation.id, stepIndex, numTimesteps: pipeline.numTimesteps, ...preview });
      },
    };
    return [generation.stopButton.callback, ...callbacks, ...preview, reporter];
  }

  private startNext(lane: ModelLane): void {
    if (lane.running) return;
    const generation = lane.waiting.shift();
    if (!generation) return;
    lane.running = generation;
    generation.position = 0;
    this.updatePositions(lane);
    void this.run(generation, lane).finally(() => {
      lane.running = undefined;
      this.startNext(lane);
    });
  }

  private async run(generation: Generation, lane: ModelLane): Promise<void> {
    const { id, request, abortController } = generation;
    this.emit(generation, { type: 'started', id });
    try {
      const pipeline = await lane.load();
      const output = await pipeline.generate({
        prompt: request.prompt,
        negativePrompt: request.negativePrompt,
        numInferenceSteps: request.numInferenceSteps,
        guidanceScale: request.guidanceScale,
        width: request.width,
        height: request.height,
        scheduler: request.scheduler,
        numImagesPerPrompt: request.numImagesPerPrompt,
        generator: new Generator().manualSeed(request.seed),
        callbackOnStepEnd: generation.callbacks,
        signal: abortController.signal,
      });
      generation.pictures = await Promise.all(output.images.map(encodePng));
      const images = generation.pictures.map((_, index) => generation.pictureUrl(index));
      const interrupted = output.interruptedAtStep === undefined ? {} : { interruptedAtStep: output.interruptedAtStep };
      this.finish(generation, { type: 'done', id, image: images[0], images, ...interrupted });
    } catch (error) {
      if (abortController.signal.aborted) {
        this.finish(generation, { type: 'cancelled', id });
      } else {
        if (!(error instanceof DiffError)) this.options.logError(`generation ${id} failed: ${(error as Error).stack ?? String(error)}`);
        const code = error instanceof DiffError ? error.code : 'INTERNAL';
        this.finish(generation, { type: 'error', id, message: (error as Error).message ?? String(error), code });
      }
    }
  }

  private updatePositions(lane: ModelLane): void {
    lane.waiting.forEach((generation, index) => {
      if (generation.position === index + 1) return;
      generation.position = index + 1;
      this.emit(generation, { type: 'queued', id: generation.id, position: generation.position });
    });
  }

  private emit(generation: Generation, event: PlaygroundEvent): void {
    const { events } = generation;
    if (event.type === 'step' && event.preview !== undefined) {
      // Replays show the latest preview only: earlier ones would make a long generation's log grow by a picture a step.
      const previous = events[generation.latestPreviewIndex];
      if (previous?.type === 'step') {
        const { preview: _shownBefore, ...withoutPreview } = previous;
        events[generation.latestPreviewIndex] = withoutPreview;
      }
      generation.latestPreviewIndex = events.length;
    }
    events.push(event);
    for (const listener of generation.listeners) listener(event, events.length - 1);
  }

  private finish(generation: Generation, event: PlaygroundEvent): void {
    this.emit(generation, event);
    generation.listeners.clear();
    this.finishedOrder.push(generation);
    while (this.finishedOrder.length > this.options.maxFinished) this.byId.delete((this.finishedOrder.shift() as Generation).id);
  }
}
