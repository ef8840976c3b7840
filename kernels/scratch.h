#pragma once
#include <stddef.h>

// Per-thread scratch buffers for the CPU kernels (scratch.c): each ggml
// worker thread gets its own buffer per slot, 64-byte aligned, grown on
// demand and freed when the thread exits.

#ifdef __cplusplus
extern "C" {
#endif

enum {
    LLMRT_SCRATCH_QG_X,  // q8gemm.c: a column block of activations, repacked
    LLMRT_SCRATCH_QG_D,  // q8gemm.c: their block scales
    LLMRT_SCRATCH_QA_W,  // q8amx.c: a 16-row weight panel in VNNI order
    LLMRT_SCRATCH_QA_WD, // q8amx.c: the panel's row scales
    LLMRT_SCRATCH_QA_XD, // q8amx.c: the token scales
    LLMRT_SCRATCH_QA_G,  // q8amx.c: a gradient in bf16
    LLMRT_SCRATCH_SLOTS
};

// This thread's buffer for slot with room for at least bytes, or NULL when
// memory is short. Growing it does not keep its contents.
void * llmrt_scratch(int slot, size_t bytes);

#ifdef __cplusplus
}
#endif
