import { existsSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { splitRows, type CfgLayout, type CfgRows } from '../callbacks/context.js';
import type { StableDiffusionControlNetTensorName } from '../contract.js';
import { InvalidArgumentError, ModelLoadError } from '../errors.js';
import type { OnnxModel, SessionPool } from '../runtime/onnx-model.js';
import type { Scheduler } from '../schedulers/scheduler.js';
import { Tensor } from '../tensor.js';
import { denoise } from './denoise.js';
import { startGeneration } from './generation.js';
import { defaultImageSize } from './image-latents.js';
import { readImage, type ImageInput } from './images.js';
import { componentModel, loadCommonComponents, readConfigFile, type CommonComponents, type PipelineLoadOptions } from './loading.js';
import type { StableDiffusionBaseOptions } from './stable-diffusion.js';
import {
  checkBatch,
  contextWidth,
  encodeGuidedPrompt,
  finishOutput,
  prepareLatents,
  repeatRows,
  scaleTensor,
  timestepFeed,
  type OutputType,
  type PipelineOutput } from './steps.js';
import { ipAdapterFeeds, prepareIPAdapter } from './ip-adapter.js';
import { generationSettings } from './validation.js';
import { SD_CFG_LAYOUT } from './cfg-layouts.js';
import { memoizeSuccess } from '../util/memoize.js';

/** The ControlNet load option every ControlNet pipeline takes. */
export interface ControlNetLoadOptions {
  /**
   * The ControlNet folders (each with `model.onnx`, and optionally diffusers' `config.json`), absolute or relative
   * to the pipeline folder, in the order the control images are given. Default: `controlnet`, then `controlnet_1`,
   * `controlnet_2`, … while they exist — the layout diffusers' `MultiControlNetModel.save_pretrained` writes.
   */
  controlnets?: readonly string[];
}

export interface StableDiffusionControlNetLoadOptions extends PipelineLoadOptions, ControlNetLoadOptions {}

/** The ControlNet options every ControlNet pipeline takes (diffusers' `__call__` arguments, camelCased). */
export interface ControlNetOptions {
  /**
   * The control picture, or one per ControlNet (an array, in the ControlNets' order; required with several). Read
   * as diffusers reads a PIL image: converted to RGB (grey pictures, files or 1-channel raw pixels, are repeated on
   * the three channels; alpha is dropped), resized to `width`×`height`, values in [0, 1]. One picture serves every
   * image of the batch.
   */
  image: ImageInput | readonly ImageInput[];
  /** Multiplies each ControlNet's residuals: one value for all, or one per ControlNet. Default 1. */
  controlnetConditioningScale?: number | readonly number[];
  /**
   * Let the ControlNets recognise the picture without the prompt: they see only the conditional half of the guided
   * batch, their residuals are weighted from 0.1 (first down block) to 1 (mid block), and the unconditional half
   * gets none. Forced on when the (first) ControlNet's config sets `global_pool_conditions`, as in diffusers.
   * Default false.
   */
  guessMode?: boolean;
  /**
   * The fraction of the steps after which each ControlNet starts (default 0) and stops (default 1) acting; one value
   * for all or one per ControlNet, with 0 ≤ start < end ≤ 1.
   */
  controlGuidanceStart?: number | readonly number[];
  controlGuidanceEnd?: number | readonly number[];
  /** Default: the first control picture's size, each side rounded down to a multiple of the VAE factor. */
  height?: number;
  width?: number;
}

export interface StableDiffusionControlNetOptions<
  Requested extends StableDiffusionControlNetTensorName = 'latents',
  Output extends OutputType = 'image',
  BeginRequested extends StableDiffusionControlNetTensorName = 'latents',
> extends StableDiffusionBaseOptions<StableDiffusionControlNetTensorName, Requested, Output, BeginRequested>, ControlNetOptions {
  /** Start from these (unscaled) latents instead of fresh noise. */
  latents?: Tensor<'float32'>;
}

/** A loaded ControlNet export. */
export interface ControlNet {
  readonly model: OnnxModel;
  /** Its config's `global_pool_conditions`: the export averages its residuals itself and forces guess mode. */
  readonly globalPoolConditions: boolean;
}

export type StableDiffusionControlNetComponents = CommonComponents & { readonly controlnets: readonly ControlNet[] };

/**
 * The ONNX names that connect a ControlNet to the UNet (Hugging Face optimum's): the ControlNet outputs
 * `down_block_res_sample_<k>` and `mid_block_res_sample`, the UNet takes them as `down_block_additional_residual_<k>`
 * and `mid_block_additional_residual`. Down blocks first, the mid block last, as diffusers lists them.
 */
export interface ResidualNames {
  readonly outputs: readonly string[];
  readonly inputs: readonly string[];
}

const DOWN_RESIDUAL_OUTPUT = /^down_block_res_sample_\d+$/;
const DOWN_RESIDUAL_INPUT = /^down_block_additional_residual_\d+$/;
const MID_RESIDUAL_OUTPUT = 'mid_block_res_sample';
const MID_RESIDUAL_INPUT = 'mid_block_additional_residual';
/** What every ControlNet export takes besides the UNet conditioning a pipeline feeds it. */
const CONTROLNET_INPUTS = ['sample', 'timestep', 'controlnet_cond', 'conditioning_scale'] as const;
/** The UNet conditioning an SD 1.x / 2.x ControlNet takes. */
const SD_CONTROLNET_CONDITIONING = ['encoder_hidden_states'] as const;

/**
 * Text-to-image guided by one or several ControlNets, with Stable Diffusion 1.x / 2.x ONNX exports (diffusers'
 * `StableDiffusionControlNetPipeline`; several ControlNets act as its `MultiControlNetModel`: their residuals are
 * summed). The UNet must be exported with the ControlNet residual inputs.
 *
 * Callbacks may read and replace `image`: the prepared control pictures, `[rows, 3·ControlNets, height, width]` —
 * the ControlNets' pictures side by side on the channel axis (ControlNet k reads channels 3k…3k+2), so that the
 * batch axis means what it means for the prompt embeddings: `[negative; positive]` (2 rows per image) while
 * classifier-free guidance is on outside guess mode, one row per image otherwise. A callback that turns guidance
 * off must keep the conditional half of it, as of `promptEmbeds` (`SDCFGCutoffCallback` does).
 */
export class StableDiffusionControlNetPipeline {
  static readonly callbackTensorInputs: readonly StableDiffusionControlNetTensorName[] = [
    'latents', 'promptEmbeds', 'negativePromptEmbeds', 'image', 'predOriginalSample', 'ipAdapterImageEmbeds',
  ];
  readonly callbackTensorInputs = StableDiffusionControlNetPipeline.callbackTensorInputs;
  /** The scheduler template; each generation runs on its own `clone()`. Assign another to swap schedulers. */
  scheduler: Scheduler;
  readonly #residualNames = memoizeSuccess(() => matchResiduals(this.components, SD_CONTROLNET_CONDITIONING));

  constructor(readonly components: StableDiffusionControlNetComponents) {
    if (components.controlnets.length === 0) throw new InvalidArgumentError('StableDiffusionControlNetPipeline needs at least one ControlNet.');
    this.scheduler = components.scheduler;
  }

  static async fromPretrained(dir: string, options: StableDiffusionControlNetLoadOptions = {}): Promise<StableDiffusionControlNetPipeline> {
    const { controlnets: folders, ...loadOptions } = options;
    const controlnetFolders = controlNetFolders(dir, folders);
    const common = await loadCommonComponents(dir, loadOptions);
    return new StableDiffusionControlNetPipeline({ ...common, controlnets: await loadControlNets(controlnetFolders, common.pool) });
  }

  /**
   * The residual names, read from the models (once): the UNet's residual inputs, and outputs every ControlNet has
   * in the same number. A `ModelLoadError` names both counts when a ControlNet does not fit the UNet.
   */
  residualNames(): Promise<ResidualNames> {
    return this.#residualNames();
  }

  async generate<const Requested extends StableDiffusionControlNetTensorName = 'latents', Output extends OutputType = 'image', const BeginRequested extends StableDiffusionControlNetTensorName = 'latents'>(
    options: StableDiffusionControlNetOptions<Requested, Output, BeginRequested>,
  ): Promise<PipelineOutput<Output>> {
    const { unet, vaeScaleFactor, controlnets } = this.components;
    const control = controlSettings(options, controlnets);
    const { height, width, numInferenceSteps, guidanceScale, guidanceRescale, numImagesPerPrompt } = generationSettings(
      options,
      await controlOutputSize(options, control.images[0], vaeScaleFactor),
      { guidanceScale: 7.5, vaeScaleFactor, limits: this.components.limits },
    );
    const { generator } = options;
    const { callbacks, scheduler, context } = await startGeneration({ name: 'StableDiffusionControlNetPipeline', family: 'stable-diffusion' }, this, options);
    const residualNames = await this.residualNames();
    const doClassifierFreeGuidance = guidanceScale > 1;
    const { promptEmbeds, negativePromptEmbeds, batchSize } = await encodeGuidedPrompt(this.components, options, numImagesPerPrompt, doClassifierFreeGuidance);

    const image = await prepareControlImage(control, { width, height }, batchSize, doClassifierFreeGuidance);
    scheduler.setTimesteps(numInferenceSteps);
    const timesteps = scheduler.timesteps;
    const latentShape = [batchSize, 4, height / vaeScaleFactor, width / vaeScaleFactor];
    const latents = prepareLatents(latentShape, scheduler.initNoiseSigma, generator, options.latents);
    const ipAdapter = await prepareIPAdapter(this.components, options, { batchSize, doClassifierFreeGuidance: guidanceScale > 1 });
    const pipeline = context({ guidanceScale, timesteps, batchSize, cfgLayout: { ...controlCfgLayout(SD_CFG_LAYOUT, control.guessMode), ...ipAdapter.cfgLayout }, ipAdapterScale: ipAdapter.ipAdapterScale, ipAdapterActive: ipAdapter.ipAdapterActive });

    const denoised = await denoise<StableDiffusionControlNetTensorName>({
      scheduler, timesteps, pipeline, callbacks, generator, guidanceRescale, eta: options.eta,
      tensors: { latents, promptEmbeds, negativePromptEmbeds, image, ...ipAdapter.tensors },
      predictNoise: async (latentModelInput, timestep, stepIndex, tensors) => {
        const cfg = pipeline.doClassifierFreeGuidance;
        const embeddings = tensors.promptEmbeds as Tensor<'float32'>;
        checkBatch('promptEmbeds', embeddings, latentModelInput.shape[0], cfg);
        const residuals = await controlNetResidualFeeds(controlnets, residualNames, control, {
          latentModelInput, timestep, stepIndex, stepCount: timesteps.length, batchSize, cfg,
          image: tensors.image as Tensor<'float32'>,
          conditioning: { encoder_hidden_states: { tensor: embeddings, rows: SD_CFG_LAYOUT.promptEmbeds! } },
        });
        const { out_sample } = await unet.run({
          sample: latentModelInput,
          timestep: timestepFeed(timestep, latentModelInput.shape[0]),
          encoder_hidden_states: embeddings,
          ...ipAdapterFeeds(tensors.ipAdapterImageEmbeds, pipeline.ipAdapterFeedScale, latentModelInput.shape[0]),
          ...residuals,
        });
        return out_sample;
      },
    });
    return finishOutput(options.outputType ?? ('image' as Output), denoised, this.components);
  }

  /** Frees every ONNX Runtime session of this pipeline. */
  async dispose(): Promise<void> {
    await this.components.pool.dispose();
  }
}

/**
 * The ControlNet folders to load: those given, resolved against the pipeline folder `dir`, else `controlnet`, then
 * `controlnet_1`, `controlnet_2`, … while they exist (a missing `controlnet` is reported on load).
 */
export function controlNetFolders(dir: string, given: readonly string[] | undefined): string[] {
  if (given?.length === 0) throw new InvalidArgumentError('controlnets lists no folder; omit it to load controlnet, controlnet_1, … from the pipeline folder.');
  if (given) return given.map((folder) => resolve(dir, folder));
  const folders = [join(dir, 'controlnet')];
  for (let index = 1; existsSync(join(dir, `controlnet_${index}`)); index++) folders.push(join(dir, `controlnet_${index}`));
  return folders;
}

export async function loadControlNets(folders: readonly string[], pool: SessionPool): Promise<ControlNet[]> {
  return Promise.all(
    folders.map(async (folder) => {
      const model = componentModel(dirname(folder), basename(folder), pool);
      const configPath = join(folder, 'config.json');
      const config = existsSync(configPath) ? await readConfigFile(configPath, 'the ControlNet config') : {};
      return { model, globalPoolConditions: config.global_pool_conditions === true };
    }),
  );
}

function downResidualCount(names: readonly string[], pattern: RegExp): number {
  return names.filter((name) => pattern.test(name)).length;
}

/**
 * Checks that every ControlNet fits the UNet — the same number of residuals, the UNet conditioning the pipeline
 * feeds it (`conditioning`: SDXL ControlNets also take `text_embeds` and `time_ids`), the same text-embedding width —
 * and returns the residual names. Throws a `ModelLoadError` that says what does not fit.
 */
export async function matchResiduals(
  { unet, controlnets }: { readonly unet: OnnxModel; readonly controlnets: readonly ControlNet[] },
  conditioning: readonly string[],
): Promise<ResidualNames> {
  const unetInputs = (await unet.inputs()).map((spec) => spec.name);
  const downCount = downResidualCount(unetInputs, DOWN_RESIDUAL_INPUT);
  if (downCount === 0 || !unetInputs.includes(MID_RESIDUAL_INPUT)) {
    throw new ModelLoadError(
      unet.path,
      `takes no ControlNet residuals (it needs down_block_additional_residual_0… and ${MID_RESIDUAL_INPUT} inputs; it has ` +
        `${unetInputs.join(', ')}). Use a UNet exported for ControlNet.`,
    );
  }
  const expectedInputs = [...CONTROLNET_INPUTS, ...conditioning];
  const unetWidth = await contextWidth(unet);
  for (const { model } of controlnets) {
    const outputs = await model.outputNames();
    const count = downResidualCount(outputs, DOWN_RESIDUAL_OUTPUT);
    if (count !== downCount || !outputs.includes(MID_RESIDUAL_OUTPUT)) {
      throw new ModelLoadError(
        model.path,
        `gives ${count} down-block residuals${outputs.includes(MID_RESIDUAL_OUTPUT) ? '' : ' and no mid-block one'}, but the UNet ` +
          `(${unet.path}) takes ${downCount} and a mid-block one: this ControlNet was made for another UNet.`,
      );
    }
    const inputs = (await model.inputs()).map((spec) => spec.name);
    const missing = expectedInputs.filter((name) => !inputs.includes(name));
    const extra = inputs.filter((name) => !expectedInputs.includes(name));
    if (missing.length > 0 || extra.length > 0) {
      throw new ModelLoadError(
        model.path,
        `takes ${inputs.join(', ')}, but this pipeline feeds its ControlNets ${expectedInputs.join(', ')}: this ControlNet was made ` +
          'for another UNet (SDXL ControlNets also take text_embeds and time_ids; SD 1.x / 2.x ones do not).',
      );
    }
    const width = await contextWidth(model);
    if (width !== undefined && unetWidth !== undefined && width !== unetWidth) {
      throw new ModelLoadError(
        model.path,
        `takes text embeddings ${width} wide, but the UNet (${unet.path}) takes ${unetWidth}: this ControlNet was made for another UNet.`,
      );
    }
  }
  const indices = Array.from({ length: downCount }, (_, k) => k);
  return {
    outputs: [...indices.map((k) => `down_block_res_sample_${k}`), MID_RESIDUAL_OUTPUT],
    inputs: [...indices.map((k) => `down_block_additional_residual_${k}`), MID_RESIDUAL_INPUT],
  };
}

/** diffusers' default size: the one given, else the first control picture's, each side rounded down to the VAE factor. */
export async function controlOutputSize(given: { height?: number; width?: number }, picture: ImageInput, vaeScaleFactor: number) {
  if (given.height !== undefined && given.width !== undefined) return { height: given.height, width: given.width };
  const own = await defaultImageSize(picture, vaeScaleFactor);
  return { height: given.height ?? own.height, width: given.width ?? own.width };
}

/** A per-ControlNet option: an array with one entry per ControlNet, or one value for all of them. */
function perControlNet<T>(name: string, value: T | readonly T[], count: number, fix = 'give one per ControlNet or a single value'): T[] {
  const values: T[] = Array.isArray(value) ? [...(value as readonly T[])] : new Array<T>(count).fill(value as T);
  if (values.length !== count) {
    throw new InvalidArgumentError(`${name} has ${values.length} entries but the pipeline has ${count} ControlNet${count === 1 ? '' : 's'}; ${fix}.`);
  }
  return values;
}

export type ControlSettings = ReturnType<typeof controlSettings>;

/** The ControlNet options, checked (diffusers' `check_inputs`) and aligned one per ControlNet. */
export function controlSettings(
  options: Pick<ControlNetOptions, 'image' | 'controlnetConditioningScale' | 'guessMode' | 'controlGuidanceStart' | 'controlGuidanceEnd'>,
  controlnets: readonly ControlNet[],
) {
  const count = controlnets.length;
  if (options.image === undefined) throw new InvalidArgumentError('image is required: the control picture, or one per ControlNet.');
  const images = perControlNet<ImageInput>('image', Array.isArray(options.image) ? options.image : [options.image as ImageInput], count, 'give one control image per ControlNet');
  const conditioningScales = perControlNet('controlnetConditioningScale', options.controlnetConditioningScale ?? 1, count);
  const starts = perControlNet('controlGuidanceStart', options.controlGuidanceStart ?? 0, count);
  const ends = perControlNet('controlGuidanceEnd', options.controlGuidanceEnd ?? 1, count);
  for (let index = 0; index < count; index++) {
    const which = count > 1 ? ` (ControlNet ${index})` : '';
    if (!Number.isFinite(conditioningScales[index])) throw new InvalidArgumentError(`controlnetConditioningScale must be a finite number, got ${conditioningScales[index]}${which}.`);
    const [start, end] = [starts[index], ends[index]];
    if (!(start >= 0 && end <= 1 && start < end)) {
      throw new InvalidArgumentError(`controlGuidanceStart and controlGuidanceEnd need 0 ≤ start < end ≤ 1, got start ${start} and end ${end}${which}.`);
    }
  }
  return {
    images,
    guessMode: options.guessMode === true || controlnets[0].globalPoolConditions,
    /**
     * Each ControlNet's conditioning scale at a step: 0 outside its [start, end] fraction of the schedule
     * (diffusers' `controlnet_keep`).
     */
    scalesAt(stepIndex: number, stepCount: number): number[] {
      return conditioningScales.map((scale, index) => {
        const kept = !(stepIndex / stepCount < starts[index] || (stepIndex + 1) / stepCount > ends[index]);
        return kept ? scale : 0;
      });
    },
  };
}

/**
 * diffusers' `prepare_image` for every ControlNet: each picture read as RGB at the output size, side by side on the
 * channel axis, one row per image of the batch, doubled for guidance unless in guess mode.
 */
export async function prepareControlImage(
  control: ControlSettings,
  size: { width: number; height: number },
  batchSize: number,
  doClassifierFreeGuidance: boolean,
): Promise<Tensor<'float32'>> {
  const pictures = await Promise.all(control.images.map((input) => readImage(input, 'rgb', size)));
  const perImage = repeatRows(Tensor.cat(pictures, 1), batchSize);
  return doClassifierFreeGuidance && !control.guessMode ? Tensor.cat([perImage, perImage]) : perImage;
}

/** A pipeline's CFG layout with the control image: doubled under guidance, except in guess mode, where it never is. */
export function controlCfgLayout(layout: CfgLayout, guessMode: boolean): CfgLayout {
  return guessMode ? layout : { ...layout, image: { kind: 'duplicated' } };
}

/** The control image must fit the ControlNets' batch and hold 3 channels per ControlNet; says how to fix a callback. */
function checkControlImage(image: Tensor<'float32'>, rows: number, controlnetCount: number, cfg: boolean, guessMode: boolean): void {
  if (image.shape.length !== 4 || image.shape[1] !== 3 * controlnetCount) {
    throw new InvalidArgumentError(`image must be [rows, ${3 * controlnetCount}, height, width] (3 channels per ControlNet), got [${image.shape.join(', ')}].`);
  }
  if (!guessMode) return checkBatch('image', image, rows, cfg);
  if (image.shape[0] !== rows) {
    throw new InvalidArgumentError(`image has ${image.shape[0]} rows but the ControlNets need ${rows}: in guess mode the control image has one row per image, never CFG-doubled.`);
  }
}

/**
 * diffusers' `ControlNetModel` scaling, done outside the export (which is fed `conditioning_scale = 1`): every residual
 * times the conditioning scale, and in guess mode times `logspace(-1, 0, n + 1)` too — 0.1 for the first of the n
 * down-block residuals up to 1 for the mid-block one.
 */
function residualFactors(residualCount: number, scale: number, weighByDepth: boolean): number[] {
  if (!weighByDepth) return new Array<number>(residualCount).fill(scale);
  const downCount = residualCount - 1;
  // torch computes these in float32: the logspace entries, then their product with the scale.
  return Array.from({ length: residualCount }, (_, k) => Math.fround(Math.fround(10 ** (-1 + k / downCount)) * Math.fround(scale)));
}

function addTensors(a: Tensor<'float32'>, b: Tensor<'float32'>): Tensor<'float32'> {
  return new Tensor(a.data.map((value, i) => value + b.data[i]), a.shape);
}

/**
 * Runs each ControlNet on its channels of the control image and returns the residuals (in `outputNames` order),
 * scaled and summed over the ControlNets, as diffusers' `MultiControlNetModel`.
 */
async function runControlNets(
  controlnets: readonly ControlNet[],
  outputNames: readonly string[],
  step: {
    sample: Tensor<'float32'>;
    timestep: number;
    /** The UNet conditioning the ControlNets take, by input name (`encoder_hidden_states`, SDXL's `text_embeds`, …). */
    conditioning: Readonly<Record<string, Tensor<'float32'>>>;
    image: Tensor<'float32'>;
    scales: readonly number[];
    guessMode: boolean;
  },
): Promise<Tensor<'float32'>[]> {
  const residualsPerControlNet: Tensor<'float32'>[][] = [];
  for (const [index, controlnet] of controlnets.entries()) {
    const outputs = await controlnet.model.run(
      {
        sample: step.sample,
        timestep: timestepFeed(step.timestep, step.sample.shape[0]),
        ...step.conditioning,
        controlnet_cond: controlnets.length === 1 ? step.image : step.image.narrow(1, 3 * index, 3),
        conditioning_scale: 1,
      },
      outputNames,
    );
    const factors = residualFactors(outputNames.length, step.scales[index], step.guessMode && !controlnet.globalPoolConditions);
    residualsPerControlNet.push(outputNames.map((name, k) => scaleTensor(outputs[name], factors[k])));
  }
  return residualsPerControlNet.reduce((sums, residuals) => sums.map((sum, k) => addTensors(sum, residuals[k])));
}

/** One denoising step as the ControlNets see it. */
export interface ControlNetStep {
  /** The UNet's scaled latent batch (`[latents; latents]` under guidance). */
  latentModelInput: Tensor<'float32'>;
  timestep: number;
  stepIndex: number;
  stepCount: number;
  /** Images in the latent batch. */
  batchSize: number;
  /** Whether this step runs with classifier-free guidance. */
  cfg: boolean;
  /** The control image as the loop holds it now (a callback may have replaced it). */
  image: Tensor<'float32'>;
  /**
   * The UNet conditioning the ControlNets take, by input name, each with its rows' CFG layout: in guess mode under
   * guidance the ControlNets get the conditional rows only.
   */
  conditioning: Readonly<Record<string, { tensor: Tensor<'float32'>; rows: CfgRows }>>;
}

/**
 * The ControlNet part of a denoising step (diffusers' loop, before the UNet call): runs the ControlNets and returns
 * their summed residuals as UNet feeds. In guess mode under guidance the ControlNets see the conditional half of the
 * batch only, and the unconditional half gets zero residuals.
 */
export async function controlNetResidualFeeds(
  controlnets: readonly ControlNet[],
  residualNames: ResidualNames,
  control: ControlSettings,
  step: ControlNetStep,
): Promise<Record<string, Tensor<'float32'>>> {
  const { latentModelInput, batchSize, cfg } = step;
  const conditionalOnly = control.guessMode && cfg;
  checkControlImage(step.image, conditionalOnly ? batchSize : latentModelInput.shape[0], controlnets.length, cfg, control.guessMode);
  const conditioning = Object.fromEntries(
    Object.entries(step.conditioning).map(([name, { tensor, rows }]) => [name, conditionalOnly ? splitRows(rows, tensor, batchSize).positive : tensor]),
  );
  const residuals = await runControlNets(controlnets, residualNames.outputs, {
    sample: conditionalOnly ? latentModelInput.narrow(0, batchSize, batchSize) : latentModelInput,
    timestep: step.timestep,
    conditioning,
    image: step.image,
    scales: control.scalesAt(step.stepIndex, step.stepCount),
    guessMode: control.guessMode,
  });
  return Object.fromEntries(
    residualNames.inputs.map((name, k) => [name, conditionalOnly ? Tensor.cat([Tensor.zeros(residuals[k].shape), residuals[k]]) : residuals[k]]),
  );
}
