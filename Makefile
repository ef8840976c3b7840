# llmrt build. llama.cpp and ggml are compiled through cgo from the Go module
# github.com/ollama/ollama; their include paths come from `go list -m`.
# The flags below are part of Go's build cache key: keep them stable, or the
# ~6 minute cold build of llama.cpp runs again.

GO        ?= go
OLLAMA_DIR := $(shell $(GO) list -m -f '{{.Dir}}' github.com/ollama/ollama 2>/dev/null)
LLAMA_INC := $(OLLAMA_DIR)/llama/llama.cpp/include
LLAMA_SRC := $(OLLAMA_DIR)/llama/llama.cpp/src
GGML_INC  := $(OLLAMA_DIR)/ml/backend/ggml/ggml/include
GGML_SRC  := $(OLLAMA_DIR)/ml/backend/ggml/ggml/src

ifeq ($(PORTABLE),1)
ARCH_FLAGS := -mavx2 -mfma -mf16c
else
ARCH_FLAGS := -march=native
endif

export CGO_ENABLED  := 1
export CGO_CPPFLAGS := -I$(LLAMA_INC) -I$(LLAMA_SRC) -I$(GGML_INC) -I$(GGML_SRC)
export CGO_CFLAGS   := -O3 $(ARCH_FLAGS)
export CGO_CXXFLAGS := -O3 $(ARCH_FLAGS)

# The shared models folder: used as the pull mirror and by the tests.
SHARED_MODELS := $(abspath ../shared/models)
ifneq ($(wildcard $(SHARED_MODELS)/stories260K.gguf),)
export LLMRT_MIRROR ?= $(SHARED_MODELS)
export LLMRT_TEST_MODELS ?= $(SHARED_MODELS)
endif

.PHONY: all build test bench vet fmt clean env
all: build

build:
	@mkdir -p bin
	$(GO) build -o bin/llmrt ./cmd/llmrt

# `eval "$$(make -s env)"` gives a shell the same cgo flags (and cache hits).
env:
	@echo "export CGO_ENABLED=1"
	@echo "export CGO_CPPFLAGS='$(CGO_CPPFLAGS)'"
	@echo "export CGO_CFLAGS='$(CGO_CFLAGS)'"
	@echo "export CGO_CXXFLAGS='$(CGO_CXXFLAGS)'"
	@echo "export LLMRT_TEST_MODELS='$(LLMRT_TEST_MODELS)'"
