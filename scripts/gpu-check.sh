#!/usr/bin/env bash
# gpu-check.sh: everything the simulated GPU cannot verify, on a workstation
# with an NVIDIA GPU, in one command:
#
#   scripts/gpu-check.sh            # OUT=gpu-check-out by default
#
# It builds ggml's CUDA backend (make cuda) and llmrt, runs the device tests
# (kernels/simgputest and runtime/registry/simgputest) against the first
# CUDA device instead of the simulated one (LLMRT_TEST_DEVICE=cuda,
# CUDA_VISIBLE_DEVICES=0), runs make bench and scripts/bench-serve.sh with
# the layers on that GPU, and prints a table of what passed with the
# figures: the scheduler's estimates against the device's allocation, and
# decode tokens/s beside the GPU's memory bandwidth. Without nvidia-smi, a
# working driver or nvcc it stops at once, saying which is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}

die() {
  echo "gpu-check: $*" >&2
  exit 1
}

# Preconditions: a GPU the driver answers for, and the CUDA compiler.
command -v nvidia-smi >/dev/null 2>&1 ||
  die "no NVIDIA GPU here: nvidia-smi not found. This script checks llmrt on an NVIDIA GPU; without one, make test checks the scheduler on the simulated GPU (make simgpu)."
if ! gpu=$(nvidia-smi --query-gpu=name,memory.total,pci.bus_id --format=csv,noheader -i 0 2>&1) || [ -z "$gpu" ]; then
  die "nvidia-smi failed, so there is no usable GPU (is the NVIDIA driver loaded?): $gpu"
fi
command -v nvcc >/dev/null 2>&1 ||
  die "nvcc not found: install the CUDA toolkit (12.x) and put nvcc on PATH; make cuda builds ggml's CUDA backend with it."

mkdir -p "$OUT"
eval "$(make -s env)"
export CUDA_VISIBLE_DEVICES=0 # the first GPU only, for every step
echo "GPU 0: $gpu (logs in $OUT/)"

# step NAME CMD...: runs CMD with its output in $OUT/NAME.log and records
# PASS or FAIL for the table.
names=() results=()
step() {
  local name=$1
  shift
  echo "== $name"
  if "$@" >"$OUT/$name.log" 2>&1; then
    results+=(PASS)
  else
    results+=(FAIL)
    tail -15 "$OUT/$name.log" | sed 's/^/   /'
  fi
  names+=("$name")
}

step make-cuda make cuda
step make-build make build
step kernels-simgputest env LLMRT_TEST_DEVICE=cuda go test -p 1 -count=1 -v ./kernels/simgputest
step registry-simgputest env LLMRT_TEST_DEVICE=cuda go test -p 1 -count=1 -v ./runtime/registry/simgputest
step make-bench make bench BENCH_ARGS="-lib $PWD/lib -gpu-layers 999"
step bench-serve env SKIP_ENGINE=1 OUT="$OUT/serve" scripts/bench-serve.sh

# The GPU's peak memory bandwidth (NVML: memory clock x 2 x bus width).
if bwline=$(go run ./scripts/gpuinfo 2>&1); then
  bw=$(sed -n 's/.*= \([0-9.]*\) GB\/s.*/\1/p' <<<"$bwline")
else
  bw="" bwline="memory bandwidth unknown ($bwline)"
fi

echo
echo "== summary: $gpu"
printf '%-22s %s\n' STEP RESULT
for i in "${!names[@]}"; do
  printf '%-22s %s\n' "${names[$i]}" "${results[$i]}"
done
echo
echo "scheduler estimate against the device (runtime/registry/simgputest):"
grep -h 'scheduler estimate' "$OUT/registry-simgputest.log" | sed 's/^ *sched_test.go:[0-9]*: /  /' || echo "  (no figures: see $OUT/registry-simgputest.log)"
echo
echo "GPU: $bwline"
# Single-stream decode is bound by reading every weight once per token:
# the limit is bandwidth / weight bytes.
mib=$(sed -n 's/.*Q8_0: [0-9]*M parameters, \([0-9]*\) MiB of weights.*/\1/p' "$OUT/make-bench.log")
decode=$(awk '/^decode \(/ {print $4}' "$OUT/make-bench.log")
if [ -n "$decode" ]; then
  if [ -n "$bw" ] && [ -n "$mib" ]; then
    awk -v d="$decode" -v bw="$bw" -v mib="$mib" 'BEGIN { lim = bw * 1e9 / (mib * 1048576);
      printf "make bench decode (Go engine, qwen2 0.5B shape Q8_0): %.1f tok/s; bandwidth limit %.1f tok/s (%.0f%%)\n", d, lim, 100 * d / lim }'
  else
    echo "make bench decode (Go engine): $decode tok/s (no bandwidth limit: $bwline)"
  fi
else
  echo "make bench: no decode figure (see $OUT/make-bench.log)"
fi
if command -v jq >/dev/null 2>&1 && [ -f "$OUT/serve/loadgen-chat.json" ]; then
  echo "bench-serve (llmrt serve, chat streams):"
  jq -r '.levels[].summary | "  \(.streams) streams: \(.stream_decode_tok_s_mean) tok/s per stream, \(.wall_aggregate_tok_s) tok/s aggregate, \(.errors) errors"' "$OUT/serve/loadgen-chat.json"
else
  echo "bench-serve: see $OUT/serve/loadgen-chat.txt"
fi

for r in "${results[@]}"; do
  [ "$r" = PASS ] || exit 1
done
