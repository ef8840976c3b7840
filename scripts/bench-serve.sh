#!/usr/bin/env bash
# Serving benchmark (issue "llmrt serve"): starts ./bin/llmrt serve on
# loopback with the generated qwen2 0.5B-shape model in Q8_0 and runs
# scripts/loadgen at 1, 4 and 8 streams (256-token prompts, 128-token
# outputs), then the embeddings benchmark on the generated tiny llama.
# Prints the machine's memory bandwidth beside the decode figures.
#
#   make build && scripts/bench-serve.sh            # all
#   THREADS=2 STREAMS=1,4 scripts/bench-serve.sh    # fewer levels
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
STREAMS=${STREAMS:-1,4,8}
PORT=${PORT:-18181}
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
eval "$(make -s env)"
[ -x bin/llmrt ] || make -s build

qwen=$(go run ./scripts/genmodel -spec qwen2-0.5b -type q8_0)
tiny=$(go run ./scripts/genmodel -spec tiny-llama)
home=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$home"' EXIT
# The server names models by store name: link the generated files in.
mkdir -p "$home/models"
ln -s "$qwen" "$home/models/qwen2-0.5b-q8.gguf"
ln -s "$tiny" "$home/models/tiny-llama.gguf"

serve() { # model parallel ctx
  ./bin/llmrt serve --home "$home" --addr "127.0.0.1:$PORT" -m "$1" --parallel "$2" --ctx "$3" \
    --threads "$THREADS" --keep-alive -1s --log-format json >"$OUT/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
    kill -0 $pid 2>/dev/null || { cat "$OUT/serve.log"; exit 1; }
    sleep 0.1
  done
  echo "server did not start"; exit 1
}

if [ "${SKIP_ENGINE:-}" != 1 ]; then
  echo "== machine =="
  go run ./scripts/bench -threads "$THREADS" -reps 3 | tee "$OUT/engine.txt"
fi

echo
echo "== chat streams: qwen2 0.5B shape, Q8_0, $THREADS threads =="
serve qwen2-0.5b-q8 8 512
go run ./scripts/loadgen -url "http://127.0.0.1:$PORT" -model qwen2-0.5b-q8 -mode completions -streams "$STREAMS" \
  -prompt-tokens 256 -max-tokens 128 -json "$OUT/loadgen-chat.json" | tee "$OUT/loadgen-chat.txt"
kill $pid; wait $pid 2>/dev/null || true

echo
echo "== embeddings: tiny llama (n_embd 256, 4 layers, vocab 32000, f32), 64-token inputs =="
serve tiny-llama 4 2048
go run ./scripts/loadgen -url "http://127.0.0.1:$PORT" -model tiny-llama -mode embeddings -emb-tokens 64 -emb-batch 1,16 \
  -streams 1,4 -duration 10s -json "$OUT/loadgen-emb.json" | tee "$OUT/loadgen-emb.txt"
echo
echo "references on this machine kind (llama.cpp's llama-server): 18.9 tok/s wall aggregate with 1 client, 26.5 with 4;"
echo "about 40 embeddings/s on the tiny llama (it runs the 32000-wide head for every token)."
