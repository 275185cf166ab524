// Makes the README's pictures: the first command's output, and a strip of its per-step previews (scaled ×3,
// nearest neighbour, so the 64×64 pixels stay visible). Run after `npm run build`: node tools/readme-images.mjs
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { runCli } from '../apps/cli/dist/cli.js';

const prompt = 'a small red circle on the left on a blue background';
const previews = join('out', 'readme-previews');
await rm(previews, { recursive: true, force: true });
await mkdir('docs', { recursive: true });
const status = await runCli(['generate', ...prompt.split(' '), '--out', join('out', 'readme.png'), '--preview-dir', previews], console);
if (status !== 0) process.exit(status);

const scale = 3;
const tile = 64 * scale;
const enlarge = (file) => sharp(file).resize(tile, tile, { kernel: 'nearest' }).png().toBuffer();
await sharp(await enlarge(join('out', 'readme.png'))).toFile(join('docs', 'first-picture.png'));

const steps = (await readdir(previews)).sort();
const every = Math.ceil(steps.length / 8);
const chosen = steps.filter((_, index) => index % every === 0 || index === steps.length - 1);
const gap = 4;
await sharp({ create: { width: chosen.length * (tile + gap) - gap, height: tile, channels: 3, background: '#ffffff' } })
  .composite(await Promise.all(chosen.map(async (file, index) => ({ input: await enlarge(join(previews, file)), left: index * (tile + gap), top: 0 }))))
  .png()
  .toFile(join('docs', 'preview-strip.png'));
console.log(`docs/first-picture.png, docs/preview-strip.png (steps ${chosen.map((file) => Number(file.slice("step-".length, -".png".length))).join(', ')})`);
