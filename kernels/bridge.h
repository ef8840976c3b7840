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
#include "guard.h"

// Abort flag shared between Go and the decode loop: llama_decode polls it
// through llmrt_abort_cb and stops when it is non-zero.
typedef struct { volatile int32_t flag; } llmrt_abort_t;
bool llmrt_abort_cb(void * data);

// Model loading with a progress callback that reaches Go through a cgo handle.
// Returns NULL on failure (llama.cpp logs why, err holds a caught C++
// exception's message; the Go side adds context).
struct llama_model * llmrt_load_model(const char * path, struct llama_model_params params, uintptr_t handle, bool with_progress,
                                      llmrt_err * err);

// Route llama.cpp/ggml logs to Go.
void llmrt_set_log(void);

// llmrt_model_quantize without requantizing, whose llama.cpp warnings and
// errors reach Go's error instead of the log.
int llmrt_model_quantize_quiet(const char * in, const char * out_path, int32_t ftype, int32_t nthread, uint32_t * out,
                               llmrt_err * err);

// Sets the abort callback of a context parameter block.
void llmrt_ctx_params_set_abort(struct llama_context_params * p, llmrt_abort_t * a);

// Tensor-split array of size llama_max_devices(), owned by the caller.
float * llmrt_alloc_split(void);

// Worker pools for one context. Without them llama.cpp starts and joins its
// worker threads inside every decode; with them the workers stay, and after
// a decode they poll briefly for the next one, so a decode step no longer
// waits at its first barrier for a thread to be created and scheduled
// (docs/performance.md has the measurements). decode and batch are the same
// pool when the two thread counts agree.
//
// Polling level 1 of ggml's 0-100: a worker spins about 3 ms for the next
// graph before it sleeps, which spans the gap between two decode steps.
// ggml's default (50) spins about 160 ms after every decode, a core burnt
// after each request and taken from any other context computing then.
#define LLMRT_POOL_POLL 1
typedef struct {
    struct ggml_threadpool * decode;
    struct ggml_threadpool * batch;
    int n_decode, n_batch; // their sizes in threads
} llmrt_pools;

// Makes pools of n_threads (single-token decodes) and n_threads_batch
// (batches) and attaches them to ctx. Returns 0, or -1 when a pool cannot
// be made; then nothing is attached and *p is empty.
int llmrt_pools_attach(struct llama_context * ctx, int n_threads, int n_threads_batch, llmrt_pools * p);

// Detaches the pools from ctx (when ctx is not NULL) and frees them.
void llmrt_pools_free(struct llama_context * ctx, llmrt_pools * p);
