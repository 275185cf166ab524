// A third-party app, as it would be written against the packages installed from their npm tarballs: a CFG cut-off,
// per-step previews, an interrupt and the template's latent statistics on the embedded tiny model, each made by name
// through the registry; then the IP-Adapter callbacks on that model, which has no adapter. Prints one JSON line that
// run.mjs checks.
import { Generator, StableDiffusionPipeline, type StableDiffusionOptions } from '@diff/core';
import type { CallbackPipeline } from '@diff/core/contract';
import { CallbackRegistry, createCallback, discoverCallbackPlugins, listCallbackPlugins, registerCallbackPlugin } from '@diff/core/plugin';
import { plugin as cfgCutoff } from '@diff/callback-cfg-cutoff';
import { plugin as interrupt } from '@diff/callback-interrupt';
import { plugin as ipAdapterCutoff, schedulePlugin as ipAdapterSchedule } from '@diff/callback-ipadapter';
import { plugin as preview, type LatentPreview } from '@diff/callback-preview';
import { plugin as latentStats, type LatentStats } from '@diff/callback-template';
import { modelDir } from '@diff/model-tiny';

registerCallbackPlugin(cfgCutoff, interrupt, ipAdapterCutoff, ipAdapterSchedule, preview, latentStats);
// The packages a CLI would find on its own: every installed package with the keyword diff-callback.
const discovered = await discoverCallbackPlugins({ registry: new CallbackRegistry() });

const previews: LatentPreview[] = [];
const stats: LatentStats[] = [];
const guidanceScales: number[] = [];
const pipeline = await StableDiffusionPipeline.fromPretrained(modelDir);
const { images, interruptedAtStep } = await pipeline.generate({
  prompt: 'a red circle on a blue background',
  numInferenceSteps: 8,
  generator: new Generator().manualSeed(0),
  callbackOnStepEnd: [
    createCallback('cfg-cutoff', { cutoffStepRatio: 0.25 }),
    createCallback('interrupt', { atStep: 5 }),
    // enforce: 'post' — both run after the others, so they see the step after which the run stops.
    createCallback('preview', { every: 2 }, { onPreview: (frame) => void previews.push(frame) }),
    createCallback('latent-stats', {}, { onStats: (report) => void stats.push(report) }),
    (state: CallbackPipeline) => void guidanceScales.push(state.guidanceScale),
  ],
});

// The IP-Adapter callbacks set the generation's adapter scale; on a model without an adapter it reaches no UNet
// input, so the latents are those of a run without them.
const ipAdapterScales: number[] = [];
const shortRun = (callbackOnStepEnd: StableDiffusionOptions['callbackOnStepEnd']) =>
  pipeline.generate({ prompt: 'a red circle', numInferenceSteps: 3, generator: new Generator().manualSeed(1), outputType: 'latent', callbackOnStepEnd });
const withoutIPAdapterCallbacks = await shortRun(undefined);
const withIPAdapterCallbacks = await shortRun([
  createCallback('ipadapter-schedule', { schedule: 'linear', from: 1, to: 0.5 }),
  createCallback('ipadapter', { cutoffStepIndex: 1 }),
  (state: CallbackPipeline) => void ipAdapterScales.push(state.ipAdapterScale),
]);
await pipeline.dispose();

console.log(
  JSON.stringify({
    interruptedAtStep,
    images: images.map(({ width, height }) => [width, height]),
    previewSteps: previews.map((frame) => frame.stepIndex),
    previewSize: previews.map(({ images: [picture] }) => [picture.width, picture.height])[0],
    statsSteps: stats.map((report) => report.stepIndex),
    statsFinite: stats.every((report) => report.images.every((image) => image.finite)),
    guidanceScales,
    ipAdapterScales,
    ipAdapterHarmless: withIPAdapterCallbacks.images.data.every((value, i) => value === withoutIPAdapterCallbacks.images.data[i]),
    registered: listCallbackPlugins().map((plugin) => plugin.name),
    discovered: Object.fromEntries(discovered.map((pkg) => [pkg.packageName, pkg.descriptors.map((descriptor) => descriptor.name).sort()])),
  }),
);

// Type-level checks across the installed packages' declarations: compiled by tsc, never run.
export function typeChecks(): void {
  // @ts-expect-error each package's CallbackPluginRegistry augmentation types its options
  createCallback('interrupt', { atStep: 'five' });
  // @ts-expect-error runtime values (handlers) are typed too
  createCallback('latent-stats', {}, { onStats: 'console' });
  // @ts-expect-error the IP-Adapter schedules are named
  createCallback('ipadapter-schedule', { schedule: 'exponential' });
  // @ts-expect-error options are strict objects
  createCallback('preview', { evry: 2 }, { onPreview: () => undefined });
}
