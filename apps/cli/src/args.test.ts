import { SCHEDULER_NAMES } from '@diff/core';
import { parseCommandLine, UsageError, type GenerateArgs, type WorkerArgs } from './args.js';

function generate(...argv: string[]): GenerateArgs {
  const command = parseCommandLine(argv);
  if (command.command !== 'generate') throw new Error(`expected generate, got ${command.command}`);
  return command.args;
}

function worker(...argv: string[]): WorkerArgs {
  const command = parseCommandLine(['worker', ...argv]);
  if (command.command !== 'worker') throw new Error(`expected worker, got ${command.command}`);
  return command.args;
}

function usageError(argv: readonly string[]): string {
  try {
    parseCommandLine(argv);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as Error).message;
  }
  throw new Error(`${argv.join(' ')} parsed`);
}

describe('parseCommandLine', () => {
  it('makes generate the default command and fills in the defaults', () => {
    expect(generate('a red circle')).toEqual({
      prompt: 'a red circle',
      negativePrompt: undefined,
      seed: 0n,
      steps: 25,
      guidance: undefined,
      width: undefined,
      height: undefined,
      scheduler: undefined,
      numImages: 1,
      out: 'out/image.png',
      previewDir: undefined,
      model: undefined,
      cuda: false,
      initImage: undefined,
      strength: undefined,
      mask: undefined,
      controlImage: undefined,
      ipAdapterImage: undefined,
      ipAdapterScale: undefined,
      callbacks: [],
      plugins: [],
      json: false,
      quiet: false,
      verbose: false,
    });
    expect(generate('generate', 'a', 'red', 'circle').prompt).toBe('a red circle');
  });

  it('reads every option', () => {
    const args = generate(
      'generate', 'a cat', '--seed', '18446744073709551615', '--steps', '30', '--guidance', '0', '--width', '512', '--height', '768',
      '--scheduler', 'dpmpp-2m-karras', '--negative-prompt', 'blurry', '--num-images', '3', '--out', 'pics/cat.webp',
      '--preview-dir', 'pics/steps', '--model', 'models/sd', '--cuda', '--init-image', 'in.png', '--strength', '0.6', '--mask', 'mask.png',
      '--ip-adapter-image', 'style.png', '--ip-adapter-scale', '0.5', '--callback', 'cfg-cutoff:cutoffStepRatio=0.4',
      '--callback', 'interrupt:atStep=10', '--plugin', 'diff-callback-x', '--plugin', './local.js', '--json', '--quiet', '--verbose',
    );
    expect(args).toEqual({
      prompt: 'a cat',
      negativePrompt: 'blurry',
      seed: 2n ** 64n - 1n,
      steps: 30,
      guidance: 0,
      width: 512,
      height: 768,
      scheduler: 'dpmpp-2m-karras',
      numImages: 3,
      out: 'pics/cat.webp',
      previewDir: 'pics/steps',
      model: 'models/sd',
      cuda: true,
      initImage: 'in.png',
      strength: 0.6,
      mask: 'mask.png',
      controlImage: undefined,
      ipAdapterImage: 'style.png',
      ipAdapterScale: 0.5,
      callbacks: ['cfg-cutoff:cutoffStepRatio=0.4', 'interrupt:atStep=10'],
      plugins: ['diff-callback-x', './local.js'],
      json: true,
      quiet: true,
      verbose: true,
    });
    expect(generate('x', '--control-image', 'edges.png').controlImage).toBe('edges.png');
    expect(generate('x', '--guidance=2.5').guidance).toBe(2.5);
    for (const name of SCHEDULER_NAMES) expect(generate('x', '--scheduler', name).scheduler).toBe(name);
  });

  it('tells the commands, help and version apart', () => {
    expect(parseCommandLine(['callbacks'])).toEqual({ command: 'callbacks', args: { plugins: [], json: false, verbose: false } });
    expect(parseCommandLine(['callbacks', '--plugin', 'p', '--json'])).toEqual({ command: 'callbacks', args: { plugins: ['p'], json: true, verbose: false } });
    expect(parseCommandLine(['--help'])).toEqual({ command: 'help', topic: 'main' });
    expect(parseCommandLine(['generate', '-h'])).toEqual({ command: 'help', topic: 'generate' });
    expect(parseCommandLine(['callbacks', '--help'])).toEqual({ command: 'help', topic: 'callbacks' });
    expect(parseCommandLine(['worker', '--help'])).toEqual({ command: 'help', topic: 'worker' });
    expect(parseCommandLine(['worker', '--redis', '-h'])).toEqual({ command: 'help', topic: 'worker' });
    expect(parseCommandLine(['--colour', '--help'])).toEqual({ command: 'help', topic: 'main' });
    expect(parseCommandLine(['--version'])).toEqual({ command: 'version' });
  });

  it('reads the options of worker, with their defaults', () => {
    expect(worker('--redis', 'redis://127.0.0.1:6379')).toEqual({
      redis: 'redis://127.0.0.1:6379',
      models: {},
      concurrency: 1,
      cuda: false,
      queue: undefined,
      quiet: false,
      verbose: false,
    });
    const args = worker('--redis', 'rediss://:secret@queue.internal:6380/2', '--model', 'sd15=/models/sd15', '--model', 'xl=models/sdxl=v1',
      '--concurrency', '2', '--cuda', '--queue', 'sdxl', '--quiet', '--verbose');
    expect(args).toEqual({
      redis: 'rediss://:secret@queue.internal:6380/2',
      models: { sd15: '/models/sd15', xl: 'models/sdxl=v1' },
      concurrency: 2,
      cuda: true,
      queue: 'sdxl',
      quiet: true,
      verbose: true,
    });
    expect(Object.keys(args.models)).toEqual(['sd15', 'xl']); // the first serves requests without a model
  });

  it.each([
    [[], /^give a prompt: diff-sd "<prompt>"/],
    [['generate'], /^generate needs a prompt/],
    [['paint', 'a', 'cat'], /^unknown command "paint"; the commands are generate, callbacks and worker\. A prompt of several words goes in quotes: diff-sd "paint a cat"/],
    [['x', '--colour'], /^unknown option --colour \(diff-sd --help/],
    [['x', '--sed', '3'], /^unknown option --sed; did you mean --seed\?/],
    [['x', '--seed'], /^--seed needs a value\.$/],
    [['x', '--seed', '-3'], /^--seed needs a value; write a value that starts with "-" as --seed=VALUE\./],
    [['x', '--seed=-3'], /^--seed takes an integer from 0 to 18446744073709551615 \(2\^64 − 1\), got "-3"/],
    [['x', '--seed', '18446744073709551616'], /^--seed takes an integer from 0 to 18446744073709551615/],
    [['x', '--seed', '1.5'], /^--seed takes an integer/],
    [['x', '--steps', 'many'], /^--steps takes an integer ≥ 1, got "many"/],
    [['x', '--steps', '0'], /^--steps takes an integer ≥ 1, got "0"/],
    [['x', '--num-images', '2.5'], /^--num-images takes an integer ≥ 1, got "2.5"/],
    [['x', '--width', '-'], /^--width takes an integer ≥ 1/],
    [['x', '--guidance', 'high'], /^--guidance takes a number ≥ 0, got "high"/],
    [['x', '--guidance=-1'], /^--guidance takes a number ≥ 0, got "-1"/],
    [['x', '--guidance', ''], /^--guidance takes a number ≥ 0, got ""/],
    [['x', '--init-image', 'a.png', '--strength', '1.5'], /^--strength takes a number from 0 to 1, got "1.5"/],
    [['x', '--ip-adapter-image', 'a.png', '--ip-adapter-scale', 'NaN'], /^--ip-adapter-scale takes a number, got "NaN"/],
    [['x', '--scheduler', 'karras'], /^--scheduler takes one of pndm, ddim, euler, .*, got "karras"/],
    [['x', '--out', 'picture.gif'], /^--out names a picture file ending in \.png, \.jpg, \.jpeg, \.webp, got "picture\.gif"/],
    [['x', '--cuda=yes'], /^--cuda is a switch and takes no value/],
    [['x', '--seed', '1', '--seed', '2'], /^--seed was given 2 times \("1", "2"\); give it once/],
    [['x', '--out', 'a.png', '--out', 'b.png'], /^--out was given 2 times/],
    [['x', '--mask', 'm.png'], /^--mask needs the picture to repaint: give --init-image FILE too/],
    [['x', '--strength', '0.5'], /^--strength applies to a starting picture: give --init-image FILE/],
    [['x', '--control-image', 'c.png', '--init-image', 'i.png'], /^--control-image runs text-to-image with a ControlNet; it does not combine with --init-image/],
    [['x', '--ip-adapter-scale', '0.5'], /^--ip-adapter-scale needs --ip-adapter-image FILE/],
    [['callbacks', '--seed', '3'], /^--seed does not apply to diff-sd callbacks, which takes --plugin, --json, --verbose/],
    [['callbacks', 'extra'], /^diff-sd callbacks takes no arguments, got "extra"/],
    [['x', '--redis', 'redis://h'], /^--redis is an option of diff-sd worker, not of generate \(diff-sd worker --help/],
    [['worker'], /^worker needs the queue's Redis: give --redis URL, e\.g\. --redis redis:\/\/127\.0\.0\.1:6379\.$/],
    [['worker', '--redis', '127.0.0.1:6379'], /^--redis takes a redis:\/\/ or rediss:\/\/ URL, e\.g\. redis:\/\/127\.0\.0\.1:6379, got "127\.0\.0\.1:6379"/],
    [['worker', '--redis', 'http://h'], /^--redis takes a redis:\/\/ or rediss:\/\/ URL/],
    [['worker', '--redis', 'redis://h', '--redis', 'redis://g'], /^--redis was given 2 times/],
    [['worker', '--redis', 'redis://h', '--model', 'models/sd15'], /^--model takes NAME=DIR for diff-sd worker .*, got "models\/sd15"/],
    [['worker', '--redis', 'redis://h', '--model', 'sd='], /^--model takes NAME=DIR/],
    [['worker', '--redis', 'redis://h', '--model', 'my model=m'], /^--model my model=m: the name "my model" must start with a letter or digit/],
    [['worker', '--redis', 'redis://h', '--model', 'a=m', '--model', 'a=n'], /^--model a=n: the name "a" was given twice/],
    [['worker', '--redis', 'redis://h', '--concurrency', '0'], /^--concurrency takes an integer ≥ 1, got "0"/],
    [['worker', '--redis', 'redis://h', '--queue', ''], /^--queue takes the name of a queue, got ""/],
    [['worker', '--redis', 'redis://h', '--steps', '3'], /^--steps does not apply to diff-sd worker, which takes --redis, --model, --concurrency, --cuda, --queue, --quiet, --verbose\.$/],
    [['worker', 'now', '--redis', 'redis://h'], /^diff-sd worker takes no arguments, got "now"/],
  ])('rejects %j', (argv, message) => {
    expect(usageError(argv)).toMatch(message);
  });
});
