import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { modelDir } from '@diff/model-tiny';
import { runCli } from './cli.js';

function capture() {
  const lines = { log: [] as string[], error: [] as string[] };
  return { lines, io: { log: (line: string) => lines.log.push(line), error: (line: string) => lines.error.push(line) } };
}

describe('diff generate', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'diff-cli-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('prints the usage with --help', async () => {
    const { lines, io } = capture();
    expect(await runCli(['--help'], io)).toBe(0);
    expect(lines.log[0]).toMatch(/^Usage: diff generate "<prompt>"/);
  });

  it('rejects bad usage with exit status 2 and says why', async () => {
    for (const [argv, message] of [
      [['paint', 'x'], /Unknown command paint/],
      [['generate'], /generate needs a prompt/],
      [['generate', 'x', '--steps', 'many'], /--steps takes a non-negative integer, got "many"/],
      [['generate', 'x', '--guidance', 'high'], /--guidance takes a number, got "high"/],
      [['generate', 'x', '--colour'], /Unknown option '--colour'/],
    ] as const) {
      const { lines, io } = capture();
      expect(await runCli(argv, io)).toBe(2);
      expect(lines.error.join('\n')).toMatch(message);
    }
  });

  it('reports a missing model folder with exit status 1, naming the file', async () => {
    const { lines, io } = capture();
    expect(await runCli(['generate', 'x', '--model', join(dir, 'nowhere')], io)).toBe(1);
    expect(lines.error.join('\n')).toMatch(/ModelLoadError: .*model_index\.json/);
  });

  it('writes a picture and one preview per step with the embedded model', async () => {
    expect(existsSync(join(modelDir, 'model_index.json'))).toBe(true);
    const out = join(dir, 'picture.png');
    const previews = join(dir, 'previews');
    const { lines, io } = capture();
    const status = await runCli(['generate', 'a', 'large', 'red', 'circle', '--steps', '3', '--seed', '7', '--out', out, '--preview-dir', previews], io);
    expect({ status, errors: lines.error }).toEqual({ status: 0, errors: [] });
    expect(lines.log[0]).toMatch(/^wrote .*picture\.png \(64×64, /);
    const metadata = await sharp(out).metadata();
    expect([metadata.width, metadata.height, metadata.channels]).toEqual([64, 64, 3]);
    const files = (await readdir(previews)).sort();
    expect(files.length).toBeGreaterThanOrEqual(3); // one per UNet call: PNDM adds one for 3 steps
    files.forEach((file, index) => expect(file).toBe(`step-${String(index).padStart(2, '0')}.png`));
  });
});
