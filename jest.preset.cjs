// Shared jest settings: TypeScript through swc as native ESM (run with --experimental-vm-modules),
// and NodeNext-style ".js" import specifiers mapped back to the ".ts" sources.
module.exports = {
  testEnvironment: require.resolve('./jest.environment.cjs'),
  extensionsToTreatAsEsm: ['.ts'],
  transform: {
    '^.+\\.ts$': [
      '@swc/jest',
      { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'es6' } },
    ],
  },
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  testMatch: ['<rootDir>/src/**/*.test.ts'],
  testTimeout: 60_000,
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
};
