// A leaf module: request validation (which must not load the runtime) lists these names too.

/**
 * Schedulers by the short names UIs and requests use (the names of diffusers' scheduler guide and of the conformance
 * references): the class, and the config changes the name implies.
 */
export const NAMED_SCHEDULERS = {
  pndm: { className: 'PNDMScheduler', overrides: {} },
  ddim: { className: 'DDIMScheduler', overrides: {} },
  euler: { className: 'EulerDiscreteScheduler', overrides: { useKarrasSigmas: false } },
  'euler-karras': { className: 'EulerDiscreteScheduler', overrides: { useKarrasSigmas: true } },
  'euler-ancestral': { className: 'EulerAncestralDiscreteScheduler', overrides: {} },
  'dpmpp-2m': { className: 'DPMSolverMultistepScheduler', overrides: { useKarrasSigmas: false } },
  'dpmpp-2m-karras': { className: 'DPMSolverMultistepScheduler', overrides: { useKarrasSigmas: true } },
  lms: { className: 'LMSDiscreteScheduler', overrides: {} },
} as const satisfies Record<string, { className: string; overrides: Record<string, unknown> }>;

export type SchedulerName = keyof typeof NAMED_SCHEDULERS;
export const SCHEDULER_NAMES = Object.freeze(Object.keys(NAMED_SCHEDULERS)) as readonly SchedulerName[];
