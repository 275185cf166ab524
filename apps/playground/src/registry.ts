import { CallbackRegistry } from '@diff/core';
import { guidanceIntervalPlugin, plugin as cfgCutoff } from '@diff/callback-cfg-cutoff';
import { plugin as interrupt } from '@diff/callback-interrupt';
import { plugin as ipAdapter, schedulePlugin as ipAdapterSchedule } from '@diff/callback-ipadapter';
import { plugin as preview } from '@diff/callback-preview';

/** The callbacks the page offers: every descriptor of the callback packages, under its registry name. */
export function createPlaygroundRegistry(): CallbackRegistry {
  return new CallbackRegistry([cfgCutoff, guidanceIntervalPlugin, interrupt, preview, ipAdapter, ipAdapterSchedule]);
}
