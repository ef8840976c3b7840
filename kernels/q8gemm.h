#pragma once
#include <stdint.h>

// llmrt's Q8_0 matmul: a Q8_0 x Q8_0 product for 1..LLMRT_Q8_GEMM_MAX_N columns
// (a decode step has one per sequence, a prompt chunk one per token),
// hooked in front of llamafile's tinyBLAS at link time (see q8gemm.c).

#define LLMRT_Q8_GEMM_MAX_N 4096

// Whether this build has the kernel (AVX-512 F/BW/VL + VNNI at compile time).
int llmrt_q8_gemm_available(void);

// Routes matching matmuls to the kernel (on != 0) or leaves them to ggml
// (on == 0). Process-wide; the default is on where available.
void llmrt_q8_gemm_enable(int on);

// How many matmuls the kernel has run in this process.
long long llmrt_q8_gemm_calls(void);

// Computes c (m x n floats, column j at c + j*ldc) = a (m rows of k Q8_0
// blocks, row stride lda blocks) times b (n columns of k Q8_0 blocks,
// column stride ldb blocks), single-threaded. For tests. Returns 0, or -1
// when the kernel is not in this build or the shape is out of range.
int llmrt_q8_gemm(int64_t m, int64_t n, int64_t k, const void * a, int64_t lda,
                        const void * b, int64_t ldb, float * c, int64_t ldc);
