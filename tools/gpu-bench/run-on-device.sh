#!/usr/bin/env bash
# The one script a session with the GPU machine runs there (from the repository root), once per call of the plan
# that tools/gpu-bench/prepare-carry.sh prints: each call carries one part of the bundle and .cuda/parts/MANIFEST,
# the first also .cuda/diffusers-src.tar.xz. Every call:
#   1. keeps what it carried in /tmp/gpu-bench (the repository copy there is refreshed between calls);
#   2. makes the models with the machine's Python (PyTorch, transformers, onnx, onnxruntime) and diffusers' source,
#      unless made already: SD 1.5 at 512 px in float16 as exported, and the same UNet fused by ONNX Runtime's
#      transformer optimizer (make_models.py) — in the first call, while the other parts are still to come;
#   3. stops there (exit 0) while parts of the MANIFEST are missing, saying which;
#   4. once all are there: joins, checks and unpacks the bundle (Node 20, packages/core/dist and its node_modules
#      with the CUDA provider beside onnxruntime-node's binding) and runs packages/core/bench/gpu.bench.mjs on CUDA
#      for each lever, most telling first, within the time budget;
#   5. writes $OUT/gpu.json after every step (the figures so far, the PyTorch anchors, the environment, how the
#      models were made) and $OUT/run.log. Copy gpu.json to docs/benchmarks/gpu.json.
# Models and results stay in /tmp/gpu-bench while the machine is warm: a rerun skips what is done. --rehearse runs
# the same steps on a machine without a GPU (toy-width models in float32, the CPU provider), to check the script.
#
#   bash tools/gpu-bench/run-on-device.sh [--families sd15[,sdxl]] [--steps 25] [--runs 5] [--budget-s 520] [--fresh]
#                                         [--rehearse]
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
families=sd15 steps=25 runs=5 budget_s=520 fresh=false rehearse=false
while [[ $# -gt 0 ]]; do
  case $1 in
    --families) families=${2:?}; shift ;;
    --steps) steps=${2:?}; shift ;;
    --runs) runs=${2:?}; shift ;;
    --budget-s) budget_s=${2:?}; shift ;;
    --fresh) fresh=true ;;
    --rehearse) rehearse=true ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

out=${OUT:-$repo/out/gpu-bench}
stash=/tmp/gpu-bench
model_options=(--fp16) bench_options=(--cuda) precision=fp16
if $rehearse; then
  stash=/tmp/gpu-bench-rehearsal model_options=(--small --device cpu) bench_options=() precision=fp32-small
fi
results=$stash/results
models=$stash/models
mkdir -p "$out" "$stash/parts" "$results" "$models"
exec > >(tee -a "$out/run.log") 2>&1
say() { printf '[%4ds] %s\n' "$SECONDS" "$*"; }
over_budget() { (( SECONDS >= budget_s )); }
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

# gpu.json, rewritten after every step so that whatever the budget allows comes back.
aggregate() {
  "$python" - "$results" "$out/gpu.json" "$steps" "$runs" <<'EOF'
import glob, json, os, sys, time
results, target, steps, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def load(path):
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        return {"error": f"unreadable {os.path.basename(path)}: {error}"}
benches = [load(path) for path in sorted(glob.glob(os.path.join(results, "bench-*.json")), key=os.path.getmtime)]
summary = []
for bench in benches:
    steady, first = bench.get("steadyState", {}), bench.get("firstGeneration", {})
    summary.append({
        "label": bench.get("label"),
        "wallMsPerStep": steady.get("wallMsPerStep"),
        "unetMsPerCall": steady.get("unetMsPerCall"),
        "onnxRuntimeMsPerRunByModel": steady.get("onnxRuntimeMsPerRunByModel"),
        "overheadPercent": steady.get("overheadPercent"),
        "float16ConversionMsPerStep": steady.get("float16Conversion", {}).get("msPerStep"),
        "firstGenerationMs": first.get("totalMs"),
        "sessionCreateTotalMs": first.get("sessionCreateTotalMs"),
        "error": bench.get("error"),
    })
models_log = os.path.join(results, "models.jsonl")
report = {
    "generatedBy": "tools/gpu-bench/run-on-device.sh",
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "settings": {"numInferenceSteps": steps, "runs": runs, "guidanceScale": 7.5, "batch": "1 picture, guidance on (UNet batch 2)"},
    "goal": {"msPerStep": 12, "overheadPercent": 3, "definition": "(text encoding + all steps + VAE decode) / steps, SD 1.5, 512 px"},
    "anchors": {
        "source": "issue 12: NVIDIA H200, diffusers' real architectures with random weights, float16, batch 2 (guidance on)",
        "pytorch_2_11_eager": {"sd15_unet_512px_ms_per_step": 25.5, "sdxl_unet_1024px_ms_per_step": 59.0, "sd15_vae_decode_ms": 21, "sdxl_vae_decode_ms": 86},
        "onnxruntime_node_1_29_cuda_default": {"sd15_unet_512px_fp16_ms_per_step": 20.7},
    },
    "environment": load(os.path.join(results, "environment.json")),
    "models": [json.loads(line) for line in open(models_log)] if os.path.exists(models_log) else [],
    "summary": summary,
    "runs": benches,
}
with open(target, "w") as file:
    json.dump(report, file, indent=2)
    file.write("\n")
EOF
}

make_model() {  # name, make_models.py arguments …
  local name=$1; shift
  [[ -f $models/$name/model_index.json ]] && return 0
  if over_budget; then say "skipped making $name: time budget spent"; return 1; fi
  say "making $name: make_models.py $*"
  local started=$SECONDS
  timeout $(( budget_s - SECONDS + 5 )) "$python" tools/gpu-bench/make_models.py --out "$models/$name" "$@" > "$results/make-$name.log" 2>&1
  local status=$?
  tail -3 "$results/make-$name.log"
  "$python" - "$name" "$status" "$(( SECONDS - started ))" "$models/$name" "$*" >> "$results/models.jsonl" <<'EOF'
import json, os, sys
name, status, seconds, folder, arguments = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
sizes = {}
for component in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    path = os.path.join(folder, component)
    if os.path.islink(path):
        sizes[component] = "linked"
    elif os.path.isfile(path):
        sizes[component] = os.path.getsize(path)
    else:
        sizes[component] = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)
optimization = os.path.join(folder, "unet", "optimization.json")
print(json.dumps({"name": name, "arguments": arguments, "exitStatus": status, "seconds": seconds, "bytes": sizes,
                  "unetOptimization": json.load(open(optimization)) if os.path.exists(optimization) else None}))
EOF
  aggregate
  return $status
}

bench() {  # label, model name, gpu.bench.mjs options …
  local label=$1 model=$2; shift 2
  local result=$results/bench-$label.json
  if [[ -f $result ]] && ! grep -q '"error"' "$result"; then say "$label: done before"; return 0; fi
  [[ -f $models/$model/model_index.json ]] || { say "$label: no $model model"; return 1; }
  if over_budget; then say "$label: skipped, time budget spent"; return 1; fi
  say "$label …"
  timeout $(( budget_s - SECONDS + 30 )) "$node_bin" packages/core/bench/gpu.bench.mjs --model "$models/$model" "${bench_options[@]}" \
    --steps "$steps" --runs "$runs" --label "$label" "$@" > "$result" 2> "$results/bench-$label.err"
  (( $? == 124 )) && printf '{"label": "%s", "error": "timed out (time budget)"}\n' "$label" > "$result"
  "$python" - "$result" <<'EOF' || tail -5 "$results/bench-$label.err"
import json, sys
bench = json.load(open(sys.argv[1]))
steady, first = bench.get("steadyState", {}), bench.get("firstGeneration", {})
line = "  %s: %s ms/step, UNet %s ms/call, overhead %s %%, first generation %s ms" % (
    bench.get("label"), steady.get("wallMsPerStep"), steady.get("unetMsPerCall"), steady.get("overheadPercent"), first.get("totalMs"))
print(line + (" ERROR " + bench["error"] if bench.get("error") else ""))
EOF
  aggregate
}

# --- 1. keep what was carried -------------------------------------------------------------------------------------
[[ -f .cuda/parts/MANIFEST ]] && cp .cuda/parts/MANIFEST "$stash/parts/MANIFEST"
for part in .cuda/parts/part-*; do
  [[ -f $part ]] && cp "$part" "$stash/parts/" && say "kept $(basename "$part")"
done
[[ -f .cuda/diffusers-src.tar.xz ]] && cp .cuda/diffusers-src.tar.xz "$stash/"
if $fresh; then rm -f "$results"/bench-*; fi

# --- 2. models ----------------------------------------------------------------------------------------------------
if [[ ! -d $stash/diffusers/diffusers && -f $stash/diffusers-src.tar.xz ]]; then
  mkdir -p "$stash/diffusers" && tar -C "$stash/diffusers" -xJf "$stash/diffusers-src.tar.xz" --strip-components=2
fi
if [[ -d $stash/diffusers/diffusers ]]; then
  export PYTHONPATH=$stash/diffusers${PYTHONPATH:+:$PYTHONPATH}
  for family in ${families//,/ }; do
    make_model "$family" --family "$family" "${model_options[@]}"
    make_model "$family-opt" --family "$family" "${model_options[@]}" --optimize --reuse "$models/$family"
  done
else
  say "no diffusers source yet: carry .cuda/diffusers-src.tar.xz (prepare-carry.sh puts it in the first call)"
fi

# --- 3. all parts there? ------------------------------------------------------------------------------------------
if [[ ! -f $stash/parts/MANIFEST ]]; then
  say "no .cuda/parts/MANIFEST carried (run tools/gpu-bench/prepare-carry.sh first; carry the MANIFEST with each part)"
  exit 1
fi
missing=()
while read -r sum name; do
  [[ $name == part-* ]] || continue
  [[ -f $stash/parts/$name && $(sha256sum < "$stash/parts/$name" | cut -d' ' -f1) == "$sum" ]] || missing+=("$name")
done < "$stash/parts/MANIFEST"
if (( ${#missing[@]} > 0 )); then
  say "parts still missing: ${missing[*]} — carry the next one in the following call (the machine stays warm ~30 s)"
  aggregate
  exit 0
fi

# --- 4. bundle, environment, levers -------------------------------------------------------------------------------
bundle_sum=$(awk '$2 == "bundle.tar.xz" { print $1 }' "$stash/parts/MANIFEST")
if [[ $(cat "$stash/root.sha256" 2>/dev/null) != "$bundle_sum" ]]; then
  say "joining and unpacking the bundle …"
  cat $(awk '$2 ~ /^part-/ { print "'"$stash"'/parts/" $2 }' "$stash/parts/MANIFEST" | sort) > "$stash/bundle.tar.xz"
  [[ $(sha256sum < "$stash/bundle.tar.xz" | cut -d' ' -f1) == "$bundle_sum" ]] || { say "the joined bundle does not match the MANIFEST"; exit 1; }
  rm -rf "$stash/root" && mkdir -p "$stash/root"
  tar -C "$stash/root" -xJf "$stash/bundle.tar.xz" || { say "unpacking failed"; exit 1; }
  rm -f "$stash/bundle.tar.xz"
  echo "$bundle_sum" > "$stash/root.sha256"
fi
cp -a "$stash/root/." "$repo/"
node_bin=$repo/.cuda/node/bin/node
binding_dir=$repo/node_modules/onnxruntime-node/bin/napi-v6/linux/x64

# The provider links against CUDA 13's and cuDNN 9's libraries: the machine has them in its Python packages.
cuda_libraries=$("$python" - <<'EOF'
import glob, os, site, sysconfig
roots = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
folders = []
for root in roots:
    folders += sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib")) + glob.glob(os.path.join(root, "nvidia", "*", "*", "lib")))
    folders += [path for path in [os.path.join(root, "torch", "lib")] if os.path.isdir(path)]
print(":".join(dict.fromkeys(folders)))
EOF
)
export LD_LIBRARY_PATH=$cuda_libraries${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if [[ -f $binding_dir/libonnxruntime_providers_cuda.so ]]; then
  unresolved=$(ldd "$binding_dir/libonnxruntime_providers_cuda.so" 2>&1 | grep 'not found' | awk '{ print $1 }' | tr '\n' ' ')
  say "CUDA provider: ${unresolved:+UNRESOLVED: $unresolved}${unresolved:-every library it links found}"
else
  unresolved=libonnxruntime_providers_cuda.so
  say "CUDA provider: missing from the bundle (made with --no-provider?)"
fi
gpu=$(command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)
say "node $("$node_bin" --version); GPU: ${gpu:-none found}"
"$python" - > "$results/environment.json" <<EOF
import importlib, json, subprocess
versions = {}
for name in ("torch", "transformers", "diffusers", "onnx", "onnxruntime", "numpy"):
    try:
        versions[name] = importlib.import_module(name).__version__
    except Exception as error:  # reported, not fatal here
        versions[name] = f"not importable: {error}"
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
except FileNotFoundError:
    gpu = None
print(json.dumps({"gpu": gpu, "python": versions, "node": "$("$node_bin" --version)", "providerUnresolvedLibraries": "$unresolved".split()}))
EOF
aggregate

for family in ${families//,/ }; do
  bench "$family-$precision" "$family"
  bench "$family-$precision-fused" "$family-opt"
  bench "$family-$precision-fused-basic" "$family-opt" --graph-optimization basic
  bench "$family-$precision-extended" "$family" --graph-optimization extended
  bench "$family-$precision-fused-no-spinning" "$family-opt" --session-config session.intra_op.allow_spinning=0
  # Options the binding does not pass on (the result says so): measured to show they change nothing.
  bench "$family-$precision-fused-cuda-options" "$family-opt" --provider-option cudnn_conv_algo_search=HEURISTIC \
    --provider-option prefer_nhwc=1 --provider-option enable_cuda_graph=1
  bench "$family-$precision-disabled" "$family" --graph-optimization disabled
done
say "done: $out/gpu.json"
