#pragma once
#include <stdint.h>
#include "ggml.h"

#ifdef __cplusplus
extern "C" {
#endif

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

// How many threads' shares of those matmuls ran on AMX tiles (q8amx.c).
long long llmrt_q8_amx_calls(void);

// AMX tiles sum each Q8_0 block exactly and then scale it, where the VNNI
// kernel (and ggml's single-column dot product) scale partial sums of 4:
// the same product, rounded differently. Tiles take only whole 16x16
// blocks of a product, so with them a token's result would depend on how
// many other tokens share its batch. Serving keeps results independent of
// the batch; a graph whose results need not be (training) runs on its own
// ggml thread pool and allows that pool the tiles. Returns 0, or -1 when
// pool is NULL or 64 pools are already allowed.
int llmrt_q8_tiles_allow(const void * pool);

// Takes the tiles back from pool (before the pool is freed).
void llmrt_q8_tiles_revoke(const void * pool);

// Whether pool was allowed the tiles (outprod.c asks too).
int llmrt_q8_tiles_allowed(const void * pool);

// Computes c (m x n floats, column j at c + j*ldc) = a (m rows of k Q8_0
// blocks, row stride lda blocks) times b (n columns of k Q8_0 blocks,
// column stride ldb blocks), single-threaded, with tiles where available
// (llmrt_q8_amx_enable). For tests. Returns 0, or -1
// when the kernel is not in this build or the shape is out of range.
int llmrt_q8_gemm(int64_t m, int64_t n, int64_t k, const void * a, int64_t lda,
                        const void * b, int64_t ldb, float * c, int64_t ldc);

// c = a x b through ggml's CPU matmul in a fresh ggml context: a is m rows
// of k floats, stored as wtype (GGML_TYPE_F32, or GGML_TYPE_Q8_0 quantized
// as a model stores it), b is n columns of k floats; NULL a or b get a
// fixed pattern. Returns the context holding the graph *gf and its result
// *out (the caller frees it with ggml_free), or NULL.
struct ggml_context * llmrt_mul_mat_graph(int m, int n, int k, int wtype, const float * a, const float * b,
                                          struct ggml_cgraph ** gf, struct ggml_tensor ** out);

// ggml's result for c = a x b (a quantized to Q8_0, b as a decode step's
// activations) on `threads` threads; compares routed and unrouted Q8_0
// matmuls in tests. Returns 0, or -1 on failure.
int llmrt_mul_mat_q8(int m, int n, int k, const float * a, const float * b, float * c, int threads);

#ifdef __cplusplus
}
#endif
