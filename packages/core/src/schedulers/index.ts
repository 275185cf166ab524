import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { ConfigError, InvalidArgumentError, ModelLoadError, UnsupportedError } from '../errors.js';
import { parsePythonJson } from '../util/python-json.js';
import { DDIMScheduler } from './ddim.js';
import { DPMSolverMultistepScheduler } from './dpm-solver-multistep.js';
import { EulerAncestralDiscreteScheduler } from './euler-ancestral-discrete.js';
import { EulerDiscreteScheduler } from './euler-discrete.js';
import { LMSDiscreteScheduler } from './lms-discrete.js';
import { PNDMScheduler } from './pndm.js';
import { NAMED_SCHEDULERS, SCHEDULER_NAMES, type SchedulerName } from './names.js';
import type { Scheduler } from './scheduler.js';

export { SCHEDULER_NAMES, type SchedulerName } from './names.js';

export type { Scheduler, SchedulerOutput, SchedulerStepOptions } from './scheduler.js';
export type { DDIMConfig, DDIMStepOptions } from './ddim.js';
export type { DPMSolverMultistepConfig } from './dpm-solver-multistep.js';
export type { EulerAncestralDiscreteConfig } from './euler-ancestral-discrete.js';
export type { EulerDiscreteConfig } from './euler-discrete.js';
export type { LMSDiscreteConfig, LMSStepOptions } from './lms-discrete.js';
export type { PNDMConfig } from './pndm.js';
export type { BetaSchedule, PredictionType, TimestepSpacing } from './common.js';
export {
  DDIMScheduler,
  DPMSolverMultistepScheduler,
  EulerAncestralDiscreteScheduler,
  EulerDiscreteScheduler,
  LMSDiscreteScheduler,
  PNDMScheduler,
  parsePythonJson,
};

interface SchedulerClass {
  fromConfig(config: Readonly<Record<string, unknown>>, overrides?: Readonly<Record<string, unknown>>): Scheduler;
}

const SCHEDULER_CLASSES: Readonly<Record<string, SchedulerClass>> = {
  PNDMScheduler,
  DDIMScheduler,
  LMSDiscreteScheduler,
  EulerDiscreteScheduler,
  EulerAncestralDiscreteScheduler,
  DPMSolverMultistepScheduler,
};

/** The diffusers class names `schedulerFromConfig` can build. */
export const SCHEDULER_CLASS_NAMES: readonly string[] = Object.freeze(Object.keys(SCHEDULER_CLASSES));

/**
 * diffusers' `SchedulerMixin.from_config` by class: builds the scheduler named by `config._class_name` from a
 * scheduler_config.json object, `overrides` (snake_case or camelCase) taking precedence over the config's keys.
 */
export function schedulerFromConfig(
  config: Readonly<Record<string, unknown>>,
  overrides?: Readonly<Record<string, unknown>>,
): Scheduler {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new ConfigError(`A scheduler config must be an object with a _class_name, got ${String(config)}.`);
  }
  const className = config._class_name;
  const supported = SCHEDULER_CLASS_NAMES.join(', ');
  if (typeof className !== 'string') {
    throw new ConfigError(`A scheduler config needs a _class_name string naming one of: ${supported}; got ${JSON.stringify(className) ?? 'none'}.`);
  }
  if (!Object.hasOwn(SCHEDULER_CLASSES, className)) {
    throw new UnsupportedError(`Scheduler class "${className}" is not supported; supported classes: ${supported}.`);
  }
  return SCHEDULER_CLASSES[className].fromConfig(config, overrides);
}


/**
 * A scheduler for one generation: a name builds that scheduler from `base`'s config (the model's own beta schedule
 * and training settings, as diffusers' `X.from_config(pipe.scheduler.config)`); an instance is cloned. Either way
 * the result is a fresh instance, so concurrent generations never share scheduler state.
 */
export function resolveScheduler(choice: SchedulerName | Scheduler | undefined, base: Scheduler): Scheduler {
  if (choice === undefined) return base.clone();
  if (typeof choice === 'string') {
    if (!Object.hasOwn(NAMED_SCHEDULERS, choice)) {
      throw new InvalidArgumentError(`Unknown scheduler "${choice}". Known: ${SCHEDULER_NAMES.join(', ')} (or a Scheduler instance).`);
    }
    const { className, overrides } = NAMED_SCHEDULERS[choice];
    return schedulerFromConfig({ ...base.config, _class_name: className }, overrides);
  }
  if (typeof choice !== 'object' || choice === null || typeof (choice as Scheduler).clone !== 'function') {
    throw new InvalidArgumentError(`scheduler must be a name (${SCHEDULER_NAMES.join(', ')}) or a Scheduler instance.`);
  }
  return choice.clone();
}

/**
 * Reads a diffusers `scheduler_config.json` (or the one inside a `scheduler` folder given as `path`), accepting
 * Python's bare NaN / Infinity. Missing or malformed files throw `ModelLoadError` naming the file.
 */
export async function loadSchedulerConfig(path: string): Promise<Record<string, unknown>> {
  const file = await stat(path).then(
    (info) => (info.isDirectory() ? join(path, 'scheduler_config.json') : path),
    () => path,
  );
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new ModelLoadError(file, 'cannot read the scheduler config (missing or unreadable).', { cause: error });
  }
  let config: unknown;
  try {
    config = parsePythonJson(text);
  } catch (error) {
    throw new ModelLoadError(file, `the scheduler config is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new ModelLoadError(file, 'the scheduler config must be a JSON object.');
  }
  return config as Record<string, unknown>;
}
