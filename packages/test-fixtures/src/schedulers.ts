/**
 * refs.json's scheduler names (its README, "Scheduler names") → diffusers' classes; the variants (`_karras`,
 * `_trailing`) differ only in the config the entry records.
 */
export const REFERENCE_SCHEDULER_CLASSES: Readonly<Record<string, string>> = {
  pndm: 'PNDMScheduler',
  ddim: 'DDIMScheduler',
  ddim_trailing: 'DDIMScheduler',
  euler: 'EulerDiscreteScheduler',
  euler_karras: 'EulerDiscreteScheduler',
  euler_a: 'EulerAncestralDiscreteScheduler',
  dpmpp_2m: 'DPMSolverMultistepScheduler',
  dpmpp_2m_karras: 'DPMSolverMultistepScheduler',
  lms: 'LMSDiscreteScheduler',
};
