import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ConfigError, ModelLoadError, UnsupportedError } from '../errors.js';
import {
  DDIMScheduler,
  LMSDiscreteScheduler,
  PNDMScheduler,
  SCHEDULER_CLASS_NAMES,
  loadSchedulerConfig,
  parsePythonJson,
  schedulerFromConfig,
} from './index.js';

const SD15_PNDM_CONFIG = `{
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.6.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null,
  "clip_sample": false
}`;

describe('scheduler registry', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'schedulers-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('lists the supported classes', () => {
    expect([...SCHEDULER_CLASS_NAMES].sort()).toEqual([
      'DDIMScheduler',
      'DPMSolverMultistepScheduler',
      'EulerAncestralDiscreteScheduler',
      'EulerDiscreteScheduler',
      'LMSDiscreteScheduler',
      'PNDMScheduler',
    ]);
  });

  test('builds the class named by _class_name, other classes’ keys ignored', () => {
    const config = parsePythonJson(SD15_PNDM_CONFIG) as Record<string, unknown>;
    const pndm = schedulerFromConfig(config);
    expect(pndm).toBeInstanceOf(PNDMScheduler);
    expect(pndm.className).toBe('PNDMScheduler');
    expect(pndm.config).toMatchObject({ skipPrkSteps: true, stepsOffset: 1, timestepSpacing: 'leading' });
    expect(pndm.config).not.toHaveProperty('clipSample');

    const ddim = schedulerFromConfig({ ...config, _class_name: 'DDIMScheduler' });
    expect(ddim).toBeInstanceOf(DDIMScheduler);
    expect(ddim.config).toMatchObject({ clipSample: false, setAlphaToOne: false, timestepSpacing: 'leading' });
  });

  test('overrides win, in snake_case or camelCase', () => {
    const config = { _class_name: 'LMSDiscreteScheduler', timestep_spacing: 'leading', steps_offset: 1 };
    const lms = schedulerFromConfig(config, { timestep_spacing: 'trailing', useKarrasSigmas: true });
    expect(lms).toBeInstanceOf(LMSDiscreteScheduler);
    expect(lms.config).toMatchObject({ timestepSpacing: 'trailing', useKarrasSigmas: true, stepsOffset: 1 });
  });

  test('an unknown class name lists the supported ones', () => {
    expect(() => schedulerFromConfig({ _class_name: 'UniPCMultistepScheduler' })).toThrow(UnsupportedError);
    expect(() => schedulerFromConfig({ _class_name: 'UniPCMultistepScheduler' })).toThrow(
      `Scheduler class "UniPCMultistepScheduler" is not supported; supported classes: ${SCHEDULER_CLASS_NAMES.join(', ')}.`,
    );
    expect(() => schedulerFromConfig({ _class_name: 'toString' })).toThrow(UnsupportedError);
    expect(() => schedulerFromConfig({ beta_start: 0.001 })).toThrow(ConfigError);
  });

  test('invalid values are rejected with the class name', () => {
    expect(() => schedulerFromConfig({ _class_name: 'DDIMScheduler', prediction_type: 'flow' })).toThrow(
      /DDIMScheduler config: prediction_type \(predictionType\) = "flow" is not allowed; expected one of "epsilon", "v_prediction", "sample"/,
    );
  });

  test('loadSchedulerConfig reads Python JSON with -Infinity, from the file or its folder', async () => {
    const folder = join(dir, 'scheduler');
    await mkdir(folder);
    const file = join(folder, 'scheduler_config.json');
    await writeFile(file, '{"_class_name": "DDIMScheduler", "lambda_min_clipped": -Infinity, "steps_offset": 1}');
    const config = await loadSchedulerConfig(file);
    expect(config.lambda_min_clipped).toBe(-Infinity);
    expect(await loadSchedulerConfig(folder)).toEqual(config);
    expect(schedulerFromConfig(config).config).toMatchObject({ stepsOffset: 1 });
  });

  test('loadSchedulerConfig: missing or malformed files throw ModelLoadError naming the file', async () => {
    const missing = join(dir, 'nope.json');
    await expect(loadSchedulerConfig(missing)).rejects.toThrow(ModelLoadError);
    await expect(loadSchedulerConfig(missing)).rejects.toMatchObject({ path: missing });

    const broken = join(dir, 'broken.json');
    await writeFile(broken, '{"_class_name": "DDIMScheduler",');
    await expect(loadSchedulerConfig(broken)).rejects.toThrow(/broken.json: the scheduler config is not valid JSON/);

    const list = join(dir, 'list.json');
    await writeFile(list, '[1, 2]');
    await expect(loadSchedulerConfig(list)).rejects.toThrow(/must be a JSON object/);
  });
});
