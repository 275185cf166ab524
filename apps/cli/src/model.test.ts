import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { writeToyPipeline, type ToyPipelineKind } from '@diff/core/testing';
import { modelDir as tinyModelDir } from '@diff/model-tiny';
import { UsageError } from './args.js';
import { runCli } from './cli.js';
import { chooseTask, inspectModel, type PipelineRequest } from './model.js';

const KINDS: readonly ToyPipelineKind[] = ['sd', 'sdxl', 'sd-inpaint', 'sd-controlnet', 'sdxl-controlnet'];

describe('choosing the pipeline', () => {
  let dir: string;
  const folder = (kind: string) => join(dir, kind);
  let picture: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'diff-cli-models-'));
    await Promise.all(KINDS.map((kind) => writeToyPipeline(folder(kind), kind)));
    picture = join(dir, 'picture.png');
    await sharp({ create: { width: 64, height: 64, channels: 3, background: '#3060c0' } }).png().toFile(picture);
    await mkdir(folder('broken'));
    await writeFile(join(folder('broken'), 'model_index.json'), '{ "_class_name": ');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function choose(kind: string, request: PipelineRequest) {
    return chooseTask(await inspectModel(kind === 'tiny' ? tinyModelDir : folder(kind)), request);
  }

  it('follows the options on a model that can do them', async () => {
    expect(await choose('tiny', {})).toBe('text2image');
    expect(await choose('sd', { initImage: 'a.png' })).toBe('image2image');
    expect(await choose('sdxl', { initImage: 'a.png', mask: 'm.png' })).toBe('inpainting');
    expect(await choose('sd-inpaint', { initImage: 'a.png', mask: 'm.png' })).toBe('inpainting');
    expect(await choose('sd-controlnet', { controlImage: 'c.png' })).toBe('text2image');
  });

  it.each([
    ['sd', { controlImage: 'c.png' }, /^--control-image needs a model folder with a ControlNet .*; .*sd holds a ORTStableDiffusionPipeline\.$/],
    ['sd-controlnet', {}, /sd-controlnet is a ControlNet pipeline \(OnnxStableDiffusionControlNetPipeline\): give its control picture with --control-image FILE\.$/],
    ['sdxl-controlnet', { controlImage: 'c.png', initImage: 'a.png' }, /which runs text-to-image only: drop --init-image and --mask\.$/],
    ['sd-inpaint', { initImage: 'a.png' }, /sd-inpaint is an inpainting model \(its UNet takes 9 input channels\): give --init-image FILE and --mask FILE\.$/],
    ['tiny', { ipAdapterImage: 'a.png' }, /^--ip-adapter-image needs a model exported with an IP-Adapter .*; .*model has none\.$/],
  ])('refuses what a %s model cannot do: %j', async (kind, request, message) => {
    const refusal = choose(kind, request);
    await expect(refusal).rejects.toThrow(UsageError);
    await expect(refusal).rejects.toThrow(message);
  });

  it('says what is wrong with a folder that is not a pipeline', async () => {
    await expect(inspectModel(join(dir, 'nowhere'))).rejects.toThrow(/nowhere\/model_index\.json is missing; --model takes a diffusers ONNX pipeline folder/);
    await expect(inspectModel(folder('broken'))).rejects.toThrow(/broken\/model_index\.json is not valid JSON/);
  });

  it.each([
    ['sd-controlnet', ['--control-image', 'PICTURE'], 'StableDiffusionControlNetPipeline', 'text2image'],
    ['sdxl-controlnet', ['--control-image', 'PICTURE'], 'StableDiffusionXLControlNetPipeline', 'text2image'],
    ['sdxl', ['--init-image', 'PICTURE', '--strength', '0.5'], 'StableDiffusionXLImg2ImgPipeline', 'image2image'],
    ['sd-inpaint', ['--init-image', 'PICTURE', '--mask', 'PICTURE'], 'StableDiffusionInpaintPipeline', 'inpainting'],
  ])('runs the %s model with %j through %s', async (kind, options, pipeline, task) => {
    const lines: string[] = [];
    const io = { log: (line: string) => lines.push(line), error: () => undefined };
    const out = join(dir, `${kind}.png`);
    const argv = ['a cat', '--model', folder(kind), '--steps', '2', '--guidance', '1', '--out', out, '--json', ...options.map((arg) => (arg === 'PICTURE' ? picture : arg))];
    expect(await runCli(argv, io)).toBe(0);
    expect(JSON.parse(lines.at(-1) as string)).toMatchObject({ pipeline, task, files: [out] });
  });

  it('leaves the guidance scale to the model family when --guidance is absent', async () => {
    for (const [kind, guidanceScale] of [['sd', 7.5], ['sdxl', 5]] as const) {
      const lines: string[] = [];
      const io = { log: (line: string) => lines.push(line), error: () => undefined };
      expect(await runCli(['a cat', '--model', folder(kind), '--steps', '1', '--out', join(dir, 'guided.png'), '--json'], io)).toBe(0);
      expect(JSON.parse(lines.at(-1) as string)).toMatchObject({ guidanceScale });
    }
  });

  it('names the option of an input picture that cannot be read', async () => {
    const errors: string[] = [];
    const io = { log: () => undefined, error: (line: string) => errors.push(line) };
    expect(await runCli(['x', '--init-image', join(dir, 'none.png')], io)).toBe(1);
    expect(await runCli(['x', '--model', folder('sd-controlnet'), '--control-image', join(folder('broken'), 'model_index.json')], io)).toBe(1);
    expect(errors).toEqual([
      expect.stringMatching(/^diff-sd: --init-image .*none\.png: no such file\.$/),
      expect.stringMatching(/^diff-sd: --control-image .*model_index\.json: not a picture this tool reads \(PNG, JPEG, WebP, …\): /),
    ]);
  });
});
