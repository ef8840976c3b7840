#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Training's matmuls on AMX tiles (q8amx.c): q8gemm.c runs whole 16x16
// tiles of Q8_0 products of 16 or more columns on AMX-INT8, outprod.c
// whole 32x32 blocks of input gradients through Q8_0 weights on AMX-BF16.

#if defined(__linux__) && defined(__x86_64__) && defined(__AVX512F__) && defined(__F16C__) && \
    ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11) || (defined(__clang__) && __clang_major__ >= 12))
#define QA_HAVE 1
#else
#define QA_HAVE 0
#endif

// Whether this CPU and OS let the process use AMX-INT8 tiles (asks the
// kernel for tile-data permission once). 0 in builds without the kernel.
int llmrt_q8_amx_available(void);

// Whether AMX-BF16 (and AVX512-BF16) can run outprod.c's input
// gradients too. 0 in builds without the kernel.
int llmrt_bf16_amx_available(void);

// Lets q8gemm.c use the tiles (on != 0, the default) or not. Process-wide,
// for benchmarks and tests that compare the two.
void llmrt_q8_amx_enable(int on);

// The last llmrt_q8_amx_enable setting (1 by default).
int llmrt_q8_amx_enabled(void);

#if QA_HAVE
// Enabled and available.
int qa_usable(void);

// c[j*ldc + i] for the 16-row panels of rows [i0, i0 + 16*panels) of a and
// the first 16*groups columns of b (n columns in all), k Q8_0 blocks each
// (a and b point at ggml's block_q8_0). Returns 0, or -1 when this thread
// cannot get its scratch memory (nothing was written).
int qa_run(const void * a, int64_t lda, const void * b, int64_t ldb, int64_t k, int64_t n, float * c,
           int64_t ldc, int64_t i0, int64_t panels, int64_t groups);

// c[t*ldc + i] = sum over o < k of g[t*lda + o] * W[o][i] for tokens
// t < tokens (a multiple of 32) and features i in [f0, f1) (multiples of
// 32), W being k Q8_0 rows of stride ldw bytes: in bf16 with fp32 sums.
// Returns 0, or -1 when this thread cannot get its scratch memory.
int qa_outprod(const char * w, size_t ldw, int64_t k, const float * g, size_t lda, int64_t tokens, float * c, size_t ldc,
               int64_t f0, int64_t f1);
#endif

#ifdef __cplusplus
}
#endif
