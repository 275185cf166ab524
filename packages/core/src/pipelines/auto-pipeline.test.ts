import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeToyPipeline } from '../testing/toy-models.js';
import { ModelLoadError, UnsupportedError } from '../errors.js';
import { AutoPipelineForImage2Image, AutoPipelineForInpainting } from './auto-pipeline.js';
import { StableDiffusionImg2ImgPipeline } from './stable-diffusion-img2img.js';
import { StableDiffusionInpaintPipeline } from './stable-diffusion-inpaint.js';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'diff-auto-'));
  await writeToyPipeline(join(dir, 'sd'), 'sd'); // ORTStableDiffusionPipeline
  await writeToyPipeline(join(dir, 'sd-inpaint'), 'sd-inpaint'); // OnnxStableDiffusionInpaintPipeline, 9-channel UNet
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A copy of the toy SD folder whose model_index.json names `className` (or none). */
async function folderNaming(className: string | undefined): Promise<string> {
  const folder = join(dir, `class-${className ?? 'none'}`);
  await cp(join(dir, 'sd'), folder, { recursive: true });
  const index = JSON.parse(await readFile(join(folder, 'model_index.json'), 'utf8'));
  await writeFile(join(folder, 'model_index.json'), JSON.stringify({ ...index, _class_name: className }));
  return folder;
}

describe('AutoPipelineForImage2Image / AutoPipelineForInpainting', () => {
  it('pick the task’s pipeline for any class of the Stable Diffusion family, ONNX and optimum names included', async () => {
    const classNames = [
      'StableDiffusionPipeline', 'StableDiffusionImg2ImgPipeline', 'StableDiffusionInpaintPipeline',
      'OnnxStableDiffusionPipeline', 'OnnxStableDiffusionImg2ImgPipeline', 'ORTStableDiffusionInpaintPipeline',
    ];
    for (const className of classNames) {
      const folder = await folderNaming(className);
      expect(await AutoPipelineForImage2Image.fromPretrained(folder)).toBeInstanceOf(StableDiffusionImg2ImgPipeline);
      expect(await AutoPipelineForInpainting.fromPretrained(folder)).toBeInstanceOf(StableDiffusionInpaintPipeline);
    }
    expect(await AutoPipelineForImage2Image.fromPretrained(join(dir, 'sd'))).toBeInstanceOf(StableDiffusionImg2ImgPipeline);
  });

  it('load inpainting exports (9-channel UNets) for inpainting only', async () => {
    const pipe = await AutoPipelineForInpainting.fromPretrained(join(dir, 'sd-inpaint'));
    expect(pipe).toBeInstanceOf(StableDiffusionInpaintPipeline);
    expect(await pipe.unetInChannels()).toBe(9);
    await expect(AutoPipelineForImage2Image.fromPretrained(join(dir, 'sd-inpaint'))).rejects.toThrow(
      new UnsupportedError(`${join(dir, 'sd-inpaint')} is an inpainting model (its UNet takes 9 input channels); load it with AutoPipelineForInpainting.`),
    );
  });

  it('refuse other families, listing what they support, and folders without a _class_name', async () => {
    for (const className of ['OnnxStableDiffusionControlNetPipeline', 'OnnxStableDiffusionInpaintPipelineLegacy', 'FluxPipeline']) {
      const folder = await folderNaming(className);
      const failure = AutoPipelineForImage2Image.fromPretrained(folder);
      await expect(failure).rejects.toThrow(UnsupportedError);
      await expect(failure).rejects.toThrow(`AutoPipelineForImage2Image cannot load ${className} (${join(folder, 'model_index.json')}); supported: `);
      await expect(failure).rejects.toThrow(/StableDiffusionPipeline, StableDiffusionImg2ImgPipeline \(or any task of that family\).*each also with an Onnx or ORT prefix\.$/);
    }
    await expect(AutoPipelineForInpainting.fromPretrained(await folderNaming('FluxPipeline'))).rejects.toThrow(/supported: StableDiffusionPipeline, StableDiffusionInpaintPipeline \(or any task of that family\)/);
    await expect(AutoPipelineForInpainting.fromPretrained(await folderNaming(undefined))).rejects.toThrow(ModelLoadError);
    await expect(AutoPipelineForInpainting.fromPretrained(join(dir, 'missing'))).rejects.toThrow(ModelLoadError);
  });
});
