#pragma once
#include <stddef.h>
#include "llama.h"

// Best-of-reps read bandwidth in bytes/s over a buffer of `bytes`, summed by
// `threads` threads. Returns -1 on bad arguments or allocation failure.
double llmrt_mem_bandwidth(size_t bytes, int threads, int reps);

// Best-of-reps FLOP/s of OpenBLAS's cblas_sgemm for an m x k by k x n
// product on `threads` threads. Returns -1 on bad arguments or allocation
// failure.
double llmrt_sgemm_flops(int m, int n, int k, int threads, int reps);

// Best-of-reps FLOP/s of ggml's CPU matmul for an m x k by k x n product
// (weights of ggml type `wtype`: F32 or Q8_0; activations f32) on
// `threads` threads. Returns -1 on failure.
double llmrt_gemm_flops(int m, int n, int k, int threads, int reps, int wtype);

typedef struct {
    double prompt_seconds; // one llama_decode of n_prompt tokens
    double gen_seconds;    // n_gen single-token decodes with greedy sampling
} llmrt_raw_result;

// Loads the model and runs the minimal generation loop. Returns 0 on success,
// 1 bad arguments, 2 load failed, 3 context failed, 4 prompt decode failed,
// 5 sampler failed, 6 generation decode failed, 7 worker pools failed.
int llmrt_raw_bench(const char * path, int n_prompt, int n_gen, int threads, int n_ctx, llmrt_raw_result * out);
