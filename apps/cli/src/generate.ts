/**
 * `diff-sd generate`: callbacks composed from the registry, the CLI's own plugins (progress, Ctrl-C, previews), the
 * pipeline the options ask for, and pictures written whole or not at all.
 */
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import sharp from 'sharp';
import { AbortError, Generator, saveImage, type CallbackPlugin, type RgbImage } from '@diff/core';
import { InterruptController } from '@diff/callback-interrupt';
import { LatentPreviewCallback, savePreviews, type PreviewWriter } from '@diff/callback-preview';
import { modelDir as tinyModelDir } from '@diff/model-tiny';
import { UsageError, type GenerateArgs } from './args.js';
import { CliRegistry, callbackName, parseCallbackSpec, type CallbackSpec } from './callbacks.js';
import { chooseTask, inspectModel, loadPipeline, type LoadedPipeline } from './model.js';
import { Progress, type ProgressView } from './progress.js';
import type { CliIo } from './cli.js';

/** The exit status of a run Ctrl-C ended (128 + SIGINT), whether it saved a partial picture or aborted. */
export const INTERRUPTED_STATUS = 130;

/** The JSON document `--json` prints. */
export interface GenerateReport {
  readonly files: readonly string[];
  readonly previews: readonly string[];
  readonly prompt: string;
  readonly negativePrompt: string | null;
  /** A decimal string: seeds go up to 2^64 − 1, beyond JSON's exact integers. */
  readonly seed: string;
  /** The number of inference steps asked for. */
  readonly steps: number;
  /** The steps the schedule had (fewer than `steps` for image-to-image with strength < 1) and those that ran. */
  readonly numTimesteps: number | null;
  readonly completedSteps: number;
  readonly interruptedAtStep: number | null;
  readonly guidanceScale: number | null;
  readonly scheduler: string | null;
  readonly width: number;
  readonly height: number;
  readonly model: string;
  readonly pipeline: string;
  readonly task: string;
  readonly callbacks: readonly { readonly name: string; readonly options: Record<string, unknown> }[];
  readonly timings: Record<string, number | null>;
}

/** `out/image.png`, then `out/image-1.png`, `out/image-2.png`, … */
function numberedPath(path: string, index: number): string {
  if (index === 0) return path;
  const extension = extname(path);
  return `${path.slice(0, path.length - extension.length)}-${index}${extension}`;
}

export async function runGenerate(args: GenerateArgs, io: CliIo, cwd: string): Promise<number> {
  const started = performance.now();
  const view: ProgressView | undefined = args.quiet ? undefined : progressView(io);
  const progress = new Progress(view);
  const tell = (message: string) => (view ? progress.note(message) : io.error(message));

  const registry = new CliRegistry();
  for (const plugin of args.plugins) await registry.loadPlugin(plugin, cwd);
  // Installed callback packages are looked for only when a name is not known yet: importing them costs time.
  if (args.callbacks.some((text) => !registry.registry.has(callbackName(text)))) await registry.discover(cwd);
  const specs = args.callbacks.map((text) => parseCallbackSpec(text, registry.registry));
  const previews = args.previewDir === undefined ? undefined : savePreviews(resolve(cwd, args.previewDir));
  const callbacks: CallbackPlugin<'latents'>[] = specs.map((spec) => createCallback(registry, spec, previews));
  // --preview-dir alone: full-size previews through the VAE, true to any model's colours (`--callback preview:…` tunes it).
  if (previews && !specs.some((spec) => spec.name === 'preview')) callbacks.push(new LatentPreviewCallback({ onPreview: previews.onPreview, method: 'vae' }));

  const pictures = {
    initImage: await readPicture('--init-image', cwd, args.initImage),
    mask: await readPicture('--mask', cwd, args.mask),
    controlImage: await readPicture('--control-image', cwd, args.controlImage),
    ipAdapterImage: await readPicture('--ip-adapter-image', cwd, args.ipAdapterImage),
  };
  const modelDir = args.model === undefined ? tinyModelDir : resolve(cwd, args.model);
  const task = chooseTask(await inspectModel(modelDir), pictures);

  const interrupter = new InterruptController();
  const abort = new AbortController();
  let state: 'running' | 'interrupting' | 'aborting' = 'running';
  const stopListening = io.onInterrupt?.(() => {
    if (state === 'running' && progress.completedSteps > 0) {
      state = 'interrupting';
      interrupter.interrupt();
      tell('diff-sd: interrupting: the current step finishes, then the picture so far is decoded and saved (Ctrl-C again to abort).');
      return true;
    }
    if (state === 'aborting') return false;
    state = 'aborting';
    abort.abort();
    tell('diff-sd: aborting: nothing more will be written (Ctrl-C again to quit at once).');
    return true;
  });

  progress.enter('load');
  let pipeline: LoadedPipeline | undefined;
  try {
    pipeline = await loadPipeline(task, modelDir, { executionProviders: args.cuda ? ['cuda'] : ['cpu'], onNotice: (message) => progress.note(message) });
    progress.enter('encode');
    const { images, interruptedAtStep } = await pipeline.generate({
      prompt: args.prompt,
      negativePrompt: args.negativePrompt,
      numInferenceSteps: args.steps,
      guidanceScale: args.guidance,
      width: args.width,
      height: args.height,
      scheduler: args.scheduler,
      numImagesPerPrompt: args.numImages,
      generator: new Generator().manualSeed(args.seed),
      image: pictures.controlImage ?? pictures.initImage,
      maskImage: pictures.mask,
      strength: args.strength,
      ipAdapterImage: pictures.ipAdapterImage,
      ipAdapterScale: args.ipAdapterScale,
      callbackOnStepEnd: [...callbacks, interrupter.callback, progress.callback],
      signal: abort.signal,
    });
    progress.enter('save');
    const files = images.map((_, index) => numberedPath(args.out, index));
    await writePictures(images, files.map((file) => resolve(cwd, file)), abort.signal);
    await previews?.done();
    progress.finish();

    const writtenPreviews = previews?.written.map((path) => join(args.previewDir as string, basename(path))) ?? [];
    const report: GenerateReport = {
      files,
      previews: writtenPreviews,
      prompt: args.prompt,
      negativePrompt: args.negativePrompt ?? null,
      seed: String(args.seed),
      steps: args.steps,
      numTimesteps: progress.numTimesteps ?? null,
      completedSteps: progress.completedSteps,
      interruptedAtStep: interruptedAtStep ?? null,
      guidanceScale: progress.startGuidanceScale ?? args.guidance ?? null,
      scheduler: args.scheduler ?? null,
      width: images[0].width,
      height: images[0].height,
      model: modelDir,
      pipeline: pipeline.constructor.name,
      task,
      callbacks: specs.map(({ name, options }) => ({ name, options })),
      timings: { ...progress.timings, totalMs: Math.round(performance.now() - started), stepsPerSecond: roundOrNull(progress.stepsPerSecond) },
    };
    const result = args.json ? (line: string) => !args.quiet && io.error(line) : io.log;
    for (const [index, file] of files.entries()) result(`wrote ${file} (${images[index].width}×${images[index].height})`);
    if (writtenPreviews.length > 0) result(`wrote ${writtenPreviews.length} previews to ${args.previewDir}`);
    if (interruptedAtStep !== undefined) {
      tell(`diff-sd: interrupted after ${interruptedAtStep + 1} of ${report.numTimesteps} steps: the picture shows the generation at that point.`);
    } else if (!args.quiet) {
      const rate = report.timings.stepsPerSecond;
      io.error(`${report.completedSteps} steps${rate ? ` at ${rate} it/s` : ''}, ${((performance.now() - started) / 1000).toFixed(2)} s in all, seed ${report.seed}`);
    }
    if (args.json) io.log(JSON.stringify(report));
    // A run stopped by a callback (`--callback interrupt:…`) did what was asked; one stopped by Ctrl-C did not.
    return state === 'running' ? 0 : INTERRUPTED_STATUS;
  } finally {
    progress.finish();
    stopListening?.();
    await previews?.done().catch(() => undefined); // its first failure was reported above; here it only waits
    await pipeline?.dispose();
  }
}

function progressView(io: CliIo): ProgressView {
  const { terminal } = io;
  if (!terminal) return { line: io.error };
  return { line: io.error, redraw: (text) => terminal.write(`\r\x1b[2K${text}`), columns: terminal.columns };
}

/** A registry callback from its spec; the preview plugin writes into --preview-dir, the CLI's one runtime value. */
function createCallback(registry: CliRegistry, spec: CallbackSpec, previews: PreviewWriter | undefined): CallbackPlugin<never> {
  if (spec.name === 'preview' && !previews) {
    throw new UsageError(`--callback ${spec.text}: the preview plugin writes its pictures into --preview-dir; give --preview-dir DIR.`);
  }
  try {
    return registry.registry.create(spec.name, spec.options, spec.name === 'preview' ? { onPreview: previews?.onPreview } : undefined);
  } catch (error) {
    throw new UsageError(`--callback ${spec.text}: ${(error as Error).message}`);
  }
}

/** An input picture as bytes, checked to decode, so that a bad file is named by its option before any model loads. */
async function readPicture(option: string, cwd: string, file: string | undefined): Promise<Buffer | undefined> {
  if (file === undefined) return undefined;
  let bytes: Buffer;
  try {
    bytes = await readFile(resolve(cwd, file));
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message;
    throw new Error(`${option} ${file}: ${reason}.`, { cause: error });
  }
  try {
    await sharp(bytes).metadata();
  } catch (error) {
    throw new Error(`${option} ${file}: not a picture this tool reads (PNG, JPEG, WebP, …): ${(error as Error).message}.`, { cause: error });
  }
  return bytes;
}

/**
 * Writes every picture under a temporary name beside its file, then renames them all: a reader never sees half a
 * picture, and a run aborted meanwhile leaves nothing behind.
 */
async function writePictures(images: readonly RgbImage[], paths: readonly string[], signal: AbortSignal): Promise<void> {
  const temporary = paths.map((path) => join(dirname(path), `.${basename(path)}.${process.pid}.tmp${extname(path)}`));
  try {
    for (const [index, image] of images.entries()) {
      await mkdir(dirname(paths[index]), { recursive: true });
      await saveImage(image, temporary[index]);
    }
    if (signal.aborted) throw new AbortError();
    for (const [index, path] of paths.entries()) await rename(temporary[index], path);
  } finally {
    await Promise.all(temporary.map((path) => rm(path, { force: true })));
  }
}

const roundOrNull = (value: number | undefined) => (value === undefined ? null : Math.round(value * 100) / 100);
