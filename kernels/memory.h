// memory.h: llama.cpp's own accounting of a context's memory.
#pragma once
#include <stddef.h>
#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

// Sums over every buffer type the bytes llama.cpp allocated for the
// model's weights, the context (KV cache) and compute buffers. Returns 0,
// or -1 on failure.
int llmrt_ctx_memory(const struct llama_context * ctx, size_t * model, size_t * context, size_t * compute);

// The same per buffer type ("CPU", "CUDA0", "SIM1", ...): fills up to max
// entries (names point at ggml's own strings) and returns how many buffer
// types there are, which may exceed max, or -1 on failure.
int llmrt_ctx_memory_by_buft(const struct llama_context * ctx, const char ** names, size_t * model,
                             size_t * context, size_t * compute, int max);

#ifdef __cplusplus
}
#endif
