export { Generator, defaultGenerator, rand, randn } from './generator.js';
export type { GeneratorState, RandomOptions } from './generator.js';
