// Which ONNX Runtime execution providers can be used here. The npm package bundles only the CPU provider (and
// WebGPU); the CUDA provider is a separate download that its install script fetches on request, so its absence is
// normal and is detected up front instead of letting ORT fail (and log native errors) on every session.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export type ExecutionProviderName = 'cpu' | 'cuda';

export const EXECUTION_PROVIDER_NAMES: readonly ExecutionProviderName[] = ['cpu', 'cuda'];

export const CUDA_INSTALL_COMMAND = 'ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node';

/** The CUDA provider library onnxruntime-node loads, by platform/arch, where the package offers one. */
const CUDA_PROVIDER_LIBRARY: Readonly<Record<string, string>> = {
  'linux/x64': 'libonnxruntime_providers_cuda.so',
  'win32/x64': 'onnxruntime_providers_cuda.dll',
};

/** Why the CUDA provider cannot be used here, or `undefined` when its library is installed. */
export function cudaUnavailableReason(): string | undefined {
  const platform = `${process.platform}/${process.arch}`;
  const library = CUDA_PROVIDER_LIBRARY[platform];
  if (library === undefined) return `onnxruntime-node offers no CUDA execution provider for ${platform}`;
  const binaryFolder = join(
    dirname(createRequire(import.meta.url).resolve('onnxruntime-node')),
    '..',
    'bin',
    'napi-v6',
    process.platform,
    process.arch,
  );
  if (existsSync(join(binaryFolder, library))) return undefined;
  return (
    `the CUDA execution provider is not installed (${library} is missing from ${binaryFolder}; ` +
    `onnxruntime-node does not bundle it). To enable CUDA 12 run \`${CUDA_INSTALL_COMMAND}\` ` +
    '(it downloads the provider; CUDA 12 and cuDNN 9 must be installed)'
  );
}
