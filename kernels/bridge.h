// bridge.h: small C helpers for the Go binding. They exist where cgo cannot
// express something directly (callbacks, function pointers) or where a C loop
// saves thousands of cgo crossings. Every helper checks its inputs and reports
// failure through its return value.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include "llama.h"
#include "ggml.h"
#include "ggml-backend.h"

// Abort flag shared between Go and the decode loop: llama_decode polls it
// through llmrt_abort_cb and stops when it is non-zero.
typedef struct { volatile int32_t flag; } llmrt_abort_t;
bool llmrt_abort_cb(void * data);

// Model loading with a progress callback that reaches Go through a cgo handle.
// Returns NULL on failure (llama.cpp logs why; the Go side adds context).
struct llama_model * llmrt_load_model(const char * path, struct llama_model_params params, uintptr_t handle, bool with_progress);

// Route llama.cpp/ggml logs to Go.
void llmrt_set_log(void);

// Sets the abort callback of a context parameter block.
void llmrt_ctx_params_set_abort(struct llama_context_params * p, llmrt_abort_t * a);

// Tensor-split array of size llama_max_devices(), owned by the caller.
float * llmrt_alloc_split(void);

// Model quantization wrapper (keeps the params struct on the C side).
uint32_t llmrt_quantize(const char * in, const char * out, int32_t ftype, int32_t nthread, bool allow_requantize, bool pure);

// Greedy argmax over n floats (used by the raw-loop benchmark and tests).
int32_t llmrt_argmax(const float * v, int32_t n);
