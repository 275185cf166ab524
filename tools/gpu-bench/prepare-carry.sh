#!/usr/bin/env bash
# Stages what the GPU machine lacks for tools/gpu-bench/run-on-device.sh, as one compressed bundle split into parts
# small enough for the device tool (at most 64 MiB travel per call, the working tree included):
#   - a Node 20 binary (the machine has none) — this machine's own `node`, which must be Node 20 on x86-64;
#   - packages/core/dist (built here) and the node_modules it loads at run time: onnxruntime-node (Linux x64 binaries
#     only), onnxruntime-common, sharp and its libvips, their dependencies;
#   - ONNX Runtime's CUDA provider for onnxruntime-node 1.29 (CUDA 13): libonnxruntime_providers_cuda.so and
#     libonnxruntime_providers_shared.so from the npm package com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9
#     (about 180 MB, downloaded once with `npm pack` into .cuda/download/), placed beside the binding;
# Written (all under .cuda/, which git ignores): .cuda/parts/part-NN, .cuda/parts/MANIFEST, and beside them
# .cuda/diffusers-src.tar.xz (shared/tools' diffusers source, which make_models.py imports: carried by the first call,
# so that the models are made while the other parts are still to come). It prints the device calls to make: one per
# part, each carrying that part and the MANIFEST, back to back while the machine stays warm.
#
#   bash tools/gpu-bench/prepare-carry.sh [--dry-run] [--no-provider] [--no-build] [--part-mib N]
#
#   --dry-run      say what would be done, with the sizes known here; download, compress and write nothing
#   --no-provider  leave the CUDA provider out (a bundle to test this script with, or for a CPU run there)
#   --no-build     use packages/core/dist as it is
#   --part-mib N   part size (default: 64 MiB less the working tree and the diffusers source, less 2 MiB)
set -euo pipefail

PROVIDER_PACKAGE=com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9
PROVIDER_LIBRARIES=(libonnxruntime_providers_cuda.so libonnxruntime_providers_shared.so)
# onnxruntime-node's install script needs these; nothing loads them at run time.
INSTALL_ONLY_PACKAGES='adm-zip global-agent'
CALL_LIMIT_MIB=64

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
dry_run=false with_provider=true build=true part_mib=
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) dry_run=true ;;
    --no-provider) with_provider=false ;;
    --no-build) build=false ;;
    --part-mib) part_mib=${2:?--part-mib needs a number}; shift ;;
    -h | --help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '%s\n' "$*"; }
mib() { awk -v bytes="$1" 'BEGIN { printf "%.1f MiB", bytes / 1048576 }'; }
fail() { say "error: $*" >&2; exit 1; }

# --- checks -------------------------------------------------------------------------------------------------------
node_version=$(node -p process.version)
node_arch=$(node -p process.arch)
[[ $node_version == v20.* && $node_arch == x64 ]] || fail "the GPU machine needs a Node 20 x86-64 binary; this node is $node_version on $node_arch"
diffusers_source=$(ls "$repo"/../shared/tools/diffusers-*-src.tar.xz 2>/dev/null | head -1 || true)
[[ -n $diffusers_source ]] || fail "no ../shared/tools/diffusers-*-src.tar.xz beside the checkout (make_models.py needs diffusers' source there)"

# What travels with every call anyway: tracked files and untracked ones git does not ignore.
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
diffusers_bytes=$(stat -c %s "$diffusers_source")
if [[ -z $part_mib ]]; then
  part_mib=$(( CALL_LIMIT_MIB - (tree_bytes + 1048575) / 1048576 - (diffusers_bytes + 1048575) / 1048576 - 2 ))
fi
(( part_mib >= 8 )) || fail "the working tree carries $(mib "$tree_bytes") per call: too little room left for parts"
say "working tree: $(mib "$tree_bytes") per call; parts of $part_mib MiB"

# The runtime closure of @diff/core's dependencies, as package folders relative to the repository.
runtime_packages=$(node --input-type=module - "$INSTALL_ONLY_PACKAGES" <<'EOF'
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
const skip = new Set(process.argv[2].split(' '));
const found = new Set();
// Node's lookup: <dir>/node_modules/<name>, then each parent folder's.
const locate = (name, from) => {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (dirname(dir) === dir) return undefined;
  }
};
const visit = (folder) => {
  const manifest = JSON.parse(readFileSync(join(folder, 'package.json'), 'utf8'));
  const names = [...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.optionalDependencies ?? {})];
  for (const name of names) {
    if (skip.has(name)) continue;
    const location = locate(name, folder);
    if (location === undefined) {
      if (name in (manifest.dependencies ?? {})) throw new Error(`${name} (needed by ${folder}) is not installed`);
      continue; // an optional dependency for another platform
    }
    if (found.has(location)) continue;
    found.add(location);
    visit(location);
  }
};
visit(join(process.cwd(), 'packages', 'core'));
console.log([...found].map((location) => relative(process.cwd(), location)).sort().join('\n'));
EOF
)
say "runtime packages: $(echo $runtime_packages)"

if $dry_run; then
  say "dry run: would build @diff/core ($build), stage $(command -v node) ($node_version), packages/core/dist and the packages above"
  say "dry run: onnxruntime-node's bin/napi-v6 would keep linux/x64 only: $(du -sh node_modules/onnxruntime-node/bin/napi-v6/linux/x64 | cut -f1)"
  if $with_provider; then
    if [[ -f .cuda/download/provider.tgz ]]; then
      say "dry run: the provider package is already downloaded: .cuda/download/provider.tgz"
    else
      say "dry run: would run: npm pack $PROVIDER_PACKAGE --pack-destination .cuda/download"
      say "dry run: registry says: $(npm view "$PROVIDER_PACKAGE" name version dist.tarball 2>/dev/null | tr '\n' ' ')"
    fi
    say "dry run: would copy ${PROVIDER_LIBRARIES[*]} into node_modules/onnxruntime-node/bin/napi-v6/linux/x64/ of the bundle"
  fi
  say "dry run: would copy $diffusers_source to .cuda/diffusers-src.tar.xz, compress the stage with xz into .cuda/bundle.tar.xz"
  say "dry run: and split it into .cuda/parts/part-NN of $part_mib MiB with a MANIFEST of sha256 sums"
  exit 0
fi

# --- stage --------------------------------------------------------------------------------------------------------
if $build; then
  say "building @diff/core …"
  npm run -s build -w @diff/core
fi
[[ -f packages/core/dist/index.js ]] || fail "packages/core/dist is missing: build @diff/core first"

stage=.cuda/stage
rm -rf "$stage" .cuda/parts .cuda/bundle.tar.xz
mkdir -p "$stage/.cuda/node/bin" "$stage/packages/core" .cuda/parts
cp "$(command -v node)" "$stage/.cuda/node/bin/node"
install -m 0644 "$diffusers_source" .cuda/diffusers-src.tar.xz
cp packages/core/package.json "$stage/packages/core/"
tar -C packages/core --exclude='*.test.*' --exclude='__fixtures__' -cf - dist | tar -C "$stage/packages/core" -xf -
for package in $runtime_packages; do
  mkdir -p "$stage/$(dirname "$package")"
  if [[ $(basename "$package") == onnxruntime-node ]]; then
    # Its bin/ holds every platform's binaries (280 MB); the machine is Linux x64.
    tar -C "$(dirname "$package")" --exclude='onnxruntime-node/bin' -cf - onnxruntime-node | tar -C "$stage/$(dirname "$package")" -xf -
    mkdir -p "$stage/$package/bin/napi-v6/linux"
    cp -r "$package/bin/napi-v6/linux/x64" "$stage/$package/bin/napi-v6/linux/"
  else
    cp -r "$package" "$stage/$package"
  fi
done

if $with_provider; then
  mkdir -p .cuda/download
  if [[ ! -f .cuda/download/provider.tgz ]]; then
    say "downloading $PROVIDER_PACKAGE (about 180 MB) …"
    packed=$(npm pack "$PROVIDER_PACKAGE" --pack-destination .cuda/download --silent | tail -1)
    mv ".cuda/download/$packed" .cuda/download/provider.tgz
  fi
  rm -rf .cuda/download/provider && mkdir -p .cuda/download/provider
  tar -C .cuda/download/provider -xzf .cuda/download/provider.tgz
  binding_dir="$stage/node_modules/onnxruntime-node/bin/napi-v6/linux/x64"
  for library in "${PROVIDER_LIBRARIES[@]}"; do
    found=$(find .cuda/download/provider -name "$library" -type f | head -1)
    [[ -n $found ]] || fail "$library is not in $PROVIDER_PACKAGE; it holds: $(find .cuda/download/provider -name '*.so*' | tr '\n' ' ')"
    cp "$found" "$binding_dir/$library"
  done
fi

say "staged $(du -sh "$stage" | cut -f1); compressing …"
tar -C "$stage" -cf - . | xz -T0 -9 > .cuda/bundle.tar.xz
split -b "${part_mib}M" -d -a 2 .cuda/bundle.tar.xz .cuda/parts/part-
(cd .cuda/parts && sha256sum part-* > MANIFEST && echo "$(sha256sum < ../bundle.tar.xz | cut -d' ' -f1)  bundle.tar.xz" >> MANIFEST)
rm -rf "$stage"

parts=(.cuda/parts/part-*)
say "bundle: $(mib "$(stat -c %s .cuda/bundle.tar.xz)") in ${#parts[@]} part(s); per call at most $(mib $(( tree_bytes + diffusers_bytes + part_mib * 1048576 ))) travels"
say "device calls, back to back (the machine stays warm about 30 s after each):"
extra=', ".cuda/diffusers-src.tar.xz"'
for part in "${parts[@]}"; do
  say "  run(command=\"bash tools/gpu-bench/run-on-device.sh\", carry=[\"$part\", \".cuda/parts/MANIFEST\"$extra], timeout_s=600)"
  extra=
done
say "the first makes the models, the last runs the levers; each writes \$OUT/gpu.json and \$OUT/run.log"
say "(copy the last gpu.json to docs/benchmarks/gpu.json)."
