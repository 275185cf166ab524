import { mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  AutoPipelineForText2Image,
  DiffError,
  Generator,
  saveImage,
  schedulerFromConfig,
  SCHEDULER_CLASS_NAMES,
  type CallbackOnStepEnd,
} from '@diff/core';
import { modelDir as tinyModelDir } from '@diff/model-tiny';

export const USAGE = `Usage: diff generate "<prompt>" [options]

Options:
  --seed N              seed of the noise (torch.Generator("cpu").manual_seed), default 0
  --steps N             denoising steps, default 25
  --guidance X          classifier-free guidance scale, default 7.5
  --negative-prompt T   what to steer away from
  --width N, --height N picture size (multiples of 8), default: the model's
  --out FILE            where to write the picture, default out/image.png (png, jpg or webp)
  --preview-dir DIR     also write the decoded latents after every step: DIR/step-00.png, …
  --model DIR           a diffusers ONNX pipeline folder, default: the embedded tiny model (@diff/model-tiny)
  --scheduler NAME      one of ${SCHEDULER_CLASS_NAMES.join(', ')}
  --cuda                run on the CUDA execution provider (falls back to CPU with a notice)
  -h, --help            this text`;

export interface CliIo {
  log(line: string): void;
  error(line: string): void;
}

/** Runs the command line; returns the exit status (0 done, 1 failed, 2 bad usage). */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        seed: { type: 'string', default: '0' },
        steps: { type: 'string', default: '25' },
        guidance: { type: 'string', default: '7.5' },
        'negative-prompt': { type: 'string' },
        width: { type: 'string' },
        height: { type: 'string' },
        out: { type: 'string', default: join('out', 'image.png') },
        'preview-dir': { type: 'string' },
        model: { type: 'string' },
        scheduler: { type: 'string' },
        cuda: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    io.error(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.log(USAGE);
    return 0;
  }
  const [command, ...promptWords] = positionals;
  if (command !== 'generate' || promptWords.length === 0) {
    io.error(command === 'generate' ? `generate needs a prompt.\n\n${USAGE}` : `Unknown command ${command ?? '(none)'}.\n\n${USAGE}`);
    return 2;
  }
  const integer = (name: string, text: string | undefined) => {
    if (text === undefined) return undefined;
    if (!/^\d+$/.test(text)) throw new UsageError(`--${name} takes a non-negative integer, got "${text}".`);
    return name === 'seed' ? BigInt(text) : Number(text);
  };

  try {
    const seed = integer('seed', values.seed) as bigint;
    const guidanceScale = Number(values.guidance);
    if (!Number.isFinite(guidanceScale)) throw new UsageError(`--guidance takes a number, got "${values.guidance}".`);
    const modelDir = resolve(values.model ?? tinyModelDir);
    const pipeline = await AutoPipelineForText2Image.fromPretrained(modelDir, {
      executionProviders: values.cuda ? ['cuda'] : ['cpu'],
      onNotice: (message) => io.error(message),
    });
    if (values.scheduler) pipeline.scheduler = schedulerFromConfig({ ...pipeline.scheduler.config, _class_name: values.scheduler });

    const previewDir = values['preview-dir'];
    if (previewDir) await mkdir(previewDir, { recursive: true });
    const writePreview: CallbackOnStepEnd<'latents'> = async (state, stepIndex, _timestep, kwargs) => {
      const [preview] = await state.decodeLatents(kwargs.latents.narrow(0, 0, 1));
      await saveImage(preview, join(previewDir as string, `step-${String(stepIndex).padStart(2, '0')}.png`));
    };

    const started = performance.now();
    const { images } = await pipeline.generate({
      prompt: promptWords.join(' '),
      negativePrompt: values['negative-prompt'],
      numInferenceSteps: integer('steps', values.steps) as number,
      guidanceScale,
      width: integer('width', values.width) as number | undefined,
      height: integer('height', values.height) as number | undefined,
      generator: new Generator().manualSeed(seed),
      callbackOnStepEnd: previewDir ? writePreview : undefined,
    });
    await mkdir(dirname(resolve(values.out)), { recursive: true });
    await saveImage(images[0], values.out);
    io.log(`wrote ${values.out} (${images[0].width}×${images[0].height}, ${((performance.now() - started) / 1000).toFixed(2)} s)`);
    if (previewDir) io.log(`wrote per-step previews to ${previewDir}`);
    await pipeline.dispose();
    return 0;
  } catch (error) {
    if (error instanceof UsageError) {
      io.error(`${error.message}\n\n${USAGE}`);
      return 2;
    }
    io.error(error instanceof DiffError ? `${error.name}: ${error.message}` : String((error as Error).stack ?? error));
    return 1;
  }
}

class UsageError extends Error {}
