import { InvalidArgumentError } from './errors.js';
import { CallbackRegistry } from './plugins/registry.js';
import { GENERATION_REQUEST_JSON_SCHEMA, InvalidRequestError, generationOptions, generationRequestSchema, parseGenerationRequest } from './requests.js';

const registry = new CallbackRegistry([{
  specificationVersion: 'v1', name: 'cfg-cutoff', description: 'Guidance off after a ratio of the steps.',
  options: {
    '~standard': {
      version: 1, vendor: 'test',
      validate: (value) => {
        const ratio = (value as { cutoffStepRatio?: unknown }).cutoffStepRatio;
        return ratio === undefined || (typeof ratio === 'number' && ratio >= 0 && ratio <= 1)
          ? { value: value as object }
          : { issues: [{ message: 'Expected a number from 0 to 1', path: ['cutoffStepRatio'] }] };
      },
    },
  },
  optionsJsonSchema: { type: 'object' },
  create: () => ({ specificationVersion: 'v1', name: 'X', tensorInputs: [], onStepEnd: () => undefined }),
}]);

describe('parseGenerationRequest', () => {
  it('accepts a full request and reads seeds past 2^53 from decimal strings', () => {
    const request = parseGenerationRequest({
      prompt: 'a red circle', negativePrompt: '', seed: '18446744073709551615', numInferenceSteps: 20, guidanceScale: 7.5,
      width: 64, height: 64, scheduler: 'dpmpp-2m-karras', numImagesPerPrompt: 2, model: 'tiny',
      callbacks: [{ name: 'cfg-cutoff', options: { cutoffStepRatio: 0.4 } }],
    }, { registry });
    expect(request.seed).toBe(2n ** 64n - 1n);
    expect(parseGenerationRequest({ prompt: 'x', seed: '42' }).seed).toBe(42);
    expect(parseGenerationRequest({ prompt: 'x', seed: 9007199254740991 }).seed).toBe(9007199254740991);
  });

  it('names the field and what is allowed', () => {
    const fails = (body: unknown, field: string, message: RegExp) => {
      let error: unknown;
      try {
        parseGenerationRequest(body, { registry });
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(InvalidRequestError);
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect(error).toMatchObject({ field, code: 'INVALID_ARGUMENT' });
      expect((error as Error).message).toMatch(message);
    };
    fails({}, 'prompt', /prompt must be a string, got nothing/);
    fails({ prompt: 42 }, 'prompt', /prompt must be a string, got 42/);
    fails({ prompt: 'x', seed: -1 }, 'seed', /seed must be an integer from 0 to 2\^53 − 1, or a decimal string up to 2\^64 − 1/);
    fails({ prompt: 'x', seed: '18446744073709551616' }, 'seed', /seed/);
    fails({ prompt: 'x', width: 100 }, 'width', /width must be an integer from 8 to 4096, a multiple of 8, got 100/);
    fails({ prompt: 'x', guidanceScale: Number.NaN }, 'guidanceScale', /guidanceScale must be a number from 0 to 100/);
    fails({ prompt: 'x', scheduler: 'heun' }, 'scheduler', /scheduler must be one of pndm, ddim, euler/);
    fails({ prompt: 'x', modelPath: '/etc' }, 'modelPath', /modelPath is not a request field; allowed: prompt, negativePrompt/);
    fails({ prompt: 'x', callbacks: [{ name: 'cfg-cutoff', options: { cutoffStepRatio: 'half' } }] }, 'callbacks.0',
      /callbacks\.0: Invalid options for callback plugin "cfg-cutoff": cutoffStepRatio: Expected a number from 0 to 1/);
    fails({ prompt: 'x', callbacks: [{ name: 'sparkle' }] }, 'callbacks.0', /Unknown callback plugin "sparkle"\. Known: cfg-cutoff/);
    fails('prompt', '', /must be a JSON object/);
  });

  it('is a synchronous Standard Schema with a JSON Schema listing the same fields', () => {
    const result = generationRequestSchema['~standard'].validate({ prompt: 'x' });
    expect(result).toEqual({ value: { prompt: 'x' } });
    expect(Object.keys(GENERATION_REQUEST_JSON_SCHEMA.properties ?? {})).toEqual([
      'prompt', 'negativePrompt', 'seed', 'numInferenceSteps', 'guidanceScale', 'width', 'height', 'scheduler', 'numImagesPerPrompt', 'callbacks', 'model',
    ]);
  });
});

describe('generationOptions', () => {
  it('maps a request to generate options, the seed to a fresh Generator', () => {
    const options = generationOptions(parseGenerationRequest({ prompt: 'x', seed: '7', numInferenceSteps: 3, scheduler: 'euler' }));
    expect(options).toMatchObject({ prompt: 'x', numInferenceSteps: 3, scheduler: 'euler' });
    expect(options.generator?.initialSeed()).toBe(7n);
    expect(generationOptions({ prompt: 'x' }).generator).toBeUndefined();
  });
});
