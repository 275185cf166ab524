import { CallbackRegistry, type CallbackPluginDescriptor } from '@diff/core/plugin';
import { guidanceIntervalPlugin, plugin as cfgCutoff } from '@diff/callback-cfg-cutoff';
import { plugin as interrupt } from '@diff/callback-interrupt';
import { plugin as ipAdapter, schedulePlugin as ipAdapterSchedule } from '@diff/callback-ipadapter';
import { plugin as preview } from '@diff/callback-preview';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a registry holds descriptors of every option type
export type AnyCallbackPluginDescriptor = CallbackPluginDescriptor<any, any, any>;

/** Every descriptor of the official callback packages: what requests may name when no `plugins` are given. */
export const OFFICIAL_PLUGINS: readonly AnyCallbackPluginDescriptor[] = Object.freeze([
  cfgCutoff,
  guidanceIntervalPlugin,
  interrupt,
  preview,
  ipAdapter,
  ipAdapterSchedule,
]);

/**
 * The registry requests are checked against (by `add`) and run with (by workers): queue and workers must be given
 * the same plugins.
 */
export function createRegistry(plugins: readonly AnyCallbackPluginDescriptor[] = OFFICIAL_PLUGINS): CallbackRegistry {
  return new CallbackRegistry(plugins);
}
