# llmrt build. llama.cpp and ggml are compiled through cgo from the Go module
# github.com/ollama/ollama; their include paths come from `go list -m`.
# The flags below are part of Go's build cache key: keep them stable, or the
# ~6 minute cold build of llama.cpp runs again.

GO        ?= go
# `go mod download` first: on a fresh machine the module is not in the cache
# yet and `go list -m` would print an empty directory.
OLLAMA_DIR := $(shell $(GO) mod download github.com/ollama/ollama >/dev/null 2>&1; $(GO) list -m -f '{{.Dir}}' github.com/ollama/ollama 2>/dev/null)
ifeq ($(OLLAMA_DIR),)
$(error cannot locate the Go module github.com/ollama/ollama (llama.cpp sources): run `go mod download` and check GOPROXY)
endif
LLAMA_INC := $(OLLAMA_DIR)/llama/llama.cpp/include
LLAMA_SRC := $(OLLAMA_DIR)/llama/llama.cpp/src
GGML_INC  := $(OLLAMA_DIR)/ml/backend/ggml/ggml/include
GGML_SRC  := $(OLLAMA_DIR)/ml/backend/ggml/ggml/src

ifeq ($(PORTABLE),1)
ARCH_FLAGS := -mavx2 -mfma -mf16c
else
ARCH_FLAGS := -march=native
endif
# ggml-cpu calls its AMX buffer type when the compiler targets AMX, but that
# code lives in ggml-cpu/amx/, which the cgo package does not compile: on a
# CPU with AMX, -march=native alone links a binary that dies at its first
# matmul with "undefined symbol: ggml_backend_amx_buffer_type".
ifeq ($(shell uname -m),x86_64)
ARCH_FLAGS += -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif

export CGO_ENABLED  := 1
export LLMRT_LLAMA_LOG ?= error
export CGO_CPPFLAGS := -I$(LLAMA_INC) -I$(LLAMA_SRC) -I$(GGML_INC) -I$(GGML_SRC)
export CGO_CFLAGS   := -O3 $(ARCH_FLAGS)
export CGO_CXXFLAGS := -O3 $(ARCH_FLAGS)

# The shared models folder: used as the pull mirror and by the tests.
SHARED_MODELS := $(abspath ../shared/models)
ifneq ($(wildcard $(SHARED_MODELS)/stories260K.gguf),)
export LLMRT_MIRROR ?= $(SHARED_MODELS)
export LLMRT_TEST_MODELS ?= $(SHARED_MODELS)
else
export LLMRT_TEST_MODELS ?= $(abspath testdata/models)
NEED_TEST_MODELS := 1
endif

.PHONY: all build default-model test fuzz test-race test-models apitest-deps bench bench-multilora vet fmt lint clean env demo backends cuda simgpu
# `make` builds the binary and puts the default model into the store (from
# ../shared/models when present, else from Hugging Face), so that
# `./bin/llmrt serve` answers right away.
all: build default-model

default-model: build
	./bin/llmrt pull --if-missing stories260K

VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

build:
	@mkdir -p bin
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/llmrt ./cmd/llmrt

# Packages whose concurrency is checked under the race detector. The race
# build recompiles llama.cpp once (cached afterwards).
RACE_PKGS ?= ./runtime/...

# Every test. Test models come from LLMRT_TEST_MODELS (../shared/models when
# present), else `make test-models` downloads them.
# One package at a time (-p 1): every test that runs llama.cpp uses both
# cores, and two such binaries at once make ggml's spinning thread
# barriers collapse (tests slow down tenfold, not twofold).
test: test-models apitest-deps backends simgpu vet
	$(GO) test -p 1 -count=1 -timeout 30m ./...
	cd scripts/hnswbench && $(GO) test -count=1 -timeout 10m ./...
	$(GO) test -p 1 -count=1 -race -timeout 30m $(RACE_PKGS)
	$(MAKE) fuzz

# Bounded fuzzing of the request decoders, of a live server with a real
# model (FuzzCompletionsLive: any 5xx or process death fails), and of the
# GGUF parser. Minimizing
# each new input gets at most 2 s (Go's default is 60 s, and with it both
# fuzzers spent 25 of their 30 s minimizing instead of running inputs).
FUZZTIME ?= 30s
FUZZMIN ?= 2s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeRequests -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) ./runtime/server
	$(GO) test -run '^$$' -fuzz FuzzCompletionsLive -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) ./runtime/server
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMIN) ./models/gguf

# The official OpenAI Node client used by the API compatibility tests.
apitest-deps:
	@test -d scripts/apitest/node_modules/openai || (cd scripts/apitest && npm ci --no-audit --no-fund --loglevel=error)

test-race:
	$(GO) test -p 1 -count=1 -race -timeout 30m $(RACE_PKGS)

# Downloads the test models into testdata/models when ../shared/models is
# missing, checking the sha256 digests recorded in models/store's catalogue.
test-models:
ifeq ($(NEED_TEST_MODELS),1)
	$(GO) run ./scripts/fetchmodels $(LLMRT_TEST_MODELS)
endif

vet:
	$(GO) vet ./...
	cd scripts/hnswbench && $(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

fmt:
	gofmt -w $$(git ls-files '*.go')

# BENCH_ARGS, e.g. "-lib lib -gpu-layers 99" on a GPU (scripts/gpu-check.sh).
bench:
	$(GO) run ./scripts/bench $(BENCH_ARGS)

bench-multilora:
	$(GO) run ./scripts/bench-multilora $(BENCH_ARGS)

clean:
	rm -rf bin lib build

# GPU backends are shared libraries built with CMake from the dependency's
# own ggml source (ollama's CMakeLists, GGML_BACKEND_DL) and loaded at start
# from LLMRT_LIB_PATH (default lib/ beside the binary) with
# ggml_backend_load_all_from_path.
#
# A backend library's DT_NEEDED libggml-base.so.0 must exist for dlopen, so
# it is copied beside the backend, and RUNPATH $ORIGIN makes that copy the
# one found (CMake's default RUNPATH is the build folder, so deleting build/
# broke loading). Its ggml_* symbols still bind to llmrt's own statically
# linked ggml, which the binary exports (kernels/dltest's
# TestBackendBindsToExecutable checks it): one ggml in the process.
BACKEND_RPATH := -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$$ORIGIN'
CUDA_ARCHS ?= 86;89;90
cuda:
	@command -v nvcc >/dev/null || { echo "make cuda: nvcc not found. Install the CUDA toolkit (12.x) and put nvcc on PATH; without a GPU, llmrt runs on the CPU and needs nothing more." >&2; exit 1; }
	@command -v cmake >/dev/null || { echo "make cuda: cmake not found (apt-get install cmake)." >&2; exit 1; }
	cmake -S $(OLLAMA_DIR) -B build/cuda -DCMAKE_BUILD_TYPE=Release -DGGML_CCACHE=OFF $(BACKEND_RPATH) -DCMAKE_CUDA_ARCHITECTURES="$(CUDA_ARCHS)"
	cmake --build build/cuda --target ggml-cuda -j
	@mkdir -p lib
	cp -a build/cuda/lib/ollama/libggml-base.so* build/cuda/lib/ollama/libggml-cuda.so lib/
	@echo "CUDA backend in lib/ (architectures $(CUDA_ARCHS)); llmrt loads it at start."

# The same path with the CPU backend, for testing dynamic loading on
# machines without a GPU (kernels' TestLoadBackendsFromLibDir).
backends:
	@command -v cmake >/dev/null || { echo "make backends: cmake not found (apt-get install cmake; .ci/run does)." >&2; exit 1; }
	@test -f lib/test-backends/libggml-cpu-x64.so || { mkdir -p build && \
		{ cmake -S $(OLLAMA_DIR) -B build/backends -DCMAKE_BUILD_TYPE=Release -DGGML_CCACHE=OFF $(BACKEND_RPATH) && \
		  cmake --build build/backends --target ggml-cpu-x64 -j 2; } > build/backends.log 2>&1 || \
		{ tail -30 build/backends.log; echo "make backends failed: see build/backends.log" >&2; exit 1; }; \
		mkdir -p lib/test-backends && \
		cp -a build/backends/lib/ollama/libggml-base.so* build/backends/lib/ollama/libggml-cpu-x64.so lib/test-backends/; }

# The simulated GPU (kernels/simgpu): a ggml backend library whose devices
# are GPUs with host-memory buffers, for running the GPU code path without
# one. llmrt loads it only when LLMRT_SIM_GPUS is set (e.g. 2GiB,1GiB). It is
# linked without libggml-base on purpose: its ggml_* references bind to the
# ggml llmrt links statically (kernels exports it with -rdynamic), so the
# process keeps one ggml. -fvisibility=hidden leaves ggml_backend_init its
# only export.
SIMGPU_SRC := kernels/simgpu/simgpu.cpp kernels/simgpu/simgpu.h
simgpu: lib/libggml-simgpu.so
lib/libggml-simgpu.so: $(SIMGPU_SRC)
	@mkdir -p lib
	$(CXX) -O2 -fPIC -shared -std=c++17 -fvisibility=hidden -Wall -Wextra -Wno-unused-function \
		-DGGML_BACKEND_DL -DGGML_BACKEND_SHARED -DGGML_BACKEND_BUILD \
		-I$(GGML_INC) -I$(GGML_SRC) -o $@ kernels/simgpu/simgpu.cpp

# `eval "$$(make -s env)"` gives a shell the same cgo flags (and cache hits).
env:
	@echo "export CGO_ENABLED=1"
	@echo "export CGO_CPPFLAGS='$(CGO_CPPFLAGS)'"
	@echo "export CGO_CFLAGS='$(CGO_CFLAGS)'"
	@echo "export CGO_CXXFLAGS='$(CGO_CXXFLAGS)'"
	@echo "export LLMRT_TEST_MODELS='$(LLMRT_TEST_MODELS)'"

# The domain demo (examples/aurora), from the documents alone: ingest the
# handbook, generate questions and answers from it, tune an adapter on the
# documents and the generated chat lines, evaluate base / RAG / fine-tuned /
# both on the generated questions, with the retrieval-stage ablation. Runs
# on the CPU with stories260K; on a GPU workstation pass a real model, e.g.
# make demo DEMO_MODEL=qwen2.5-0.5b-instruct-q8_0 DEMO_TUNE="--epochs 3".
DEMO_MODEL ?= stories260K
DEMO_HOME  ?= $(CURDIR)/demo-out/home
DEMO_QA    ?= $(CURDIR)/demo-out/qa
DEMO_OUT   ?= $(CURDIR)/demo-out/report
DEMO_QAGEN ?= --per-chunk 3 --eval-share 0.2
DEMO_TUNE  ?= --epochs 8 --lr 2e-3 --targets all-linear --rank 16 --alpha 32
DEMO_EVAL  ?= --ablation --concurrency 4
demo: build
	@mkdir -p $(DEMO_HOME)
	./bin/llmrt --home $(DEMO_HOME) index add -m $(DEMO_MODEL) --collection aurora examples/aurora/handbook
	./bin/llmrt --home $(DEMO_HOME) qagen -m $(DEMO_MODEL) --collection aurora --out $(DEMO_QA) $(DEMO_QAGEN)
	./bin/llmrt --home $(DEMO_HOME) tune -m $(DEMO_MODEL) --collection aurora --data $(DEMO_QA)/train.jsonl --out aurora --eval-split 0.1 $(DEMO_TUNE)
	./bin/llmrt --home $(DEMO_HOME) eval -m $(DEMO_MODEL) --data $(DEMO_QA)/qa.jsonl --collection aurora --adapter aurora \
		--out $(DEMO_OUT) $(DEMO_EVAL)
	@echo "report: $(DEMO_OUT)/report.md  chart: $(DEMO_OUT)/chart.svg  answers: $(DEMO_OUT)/results.json"
