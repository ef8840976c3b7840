// q8ref.c: ggml's own Q8_0 matmul on a graph of its own, the reference the
// tests compare llmrt's kernel with (q8gemm_test.go) and the product the
// benchmarks time (scripts/internal/machine).
#include <string.h>
#include "ggml.h"
#include "ggml-cpu.h"
#include "q8gemm.h"

// llmrt_mul_mat_graph builds c = a x b on ggml's CPU in a fresh context: a is m
// rows of k floats, stored as wtype (F32, or Q8_0 quantized as a model
// stores it), b is n columns of k floats. NULL a or b get a fixed pattern.
// Returns the context (the caller frees it), or NULL.
struct ggml_context * llmrt_mul_mat_graph(int m, int n, int k, int wtype, const float * a, const float * b,
                                          struct ggml_cgraph ** gf, struct ggml_tensor ** out) {
    size_t mem = ((size_t) 2 * m * k + (size_t) n * k + (size_t) m * n) * sizeof(float) + 64 * ggml_tensor_overhead() + ggml_graph_overhead() + (1 << 20);
    struct ggml_init_params ip = { mem, NULL, false };
    struct ggml_context * ctx = ggml_init(ip);
    if (!ctx) return NULL;
    struct ggml_tensor * a32 = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
    struct ggml_tensor * b32 = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, n);
    for (int64_t i = 0; i < ggml_nelements(a32); i++) ((float *) a32->data)[i] = a ? a[i] : (float) ((i % 13) - 6) * 0.01f;
    for (int64_t i = 0; i < ggml_nelements(b32); i++) ((float *) b32->data)[i] = b ? b[i] : (float) ((i % 7) - 3) * 0.01f;
    struct ggml_tensor * wa = a32;
    if (wtype == GGML_TYPE_Q8_0) {
        wa = ggml_new_tensor_2d(ctx, GGML_TYPE_Q8_0, k, m);
        ggml_quantize_chunk(GGML_TYPE_Q8_0, (const float *) a32->data, wa->data, 0, m, k, NULL);
    }
    *out = ggml_mul_mat(ctx, wa, b32);
    *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(*gf, *out);
    return ctx;
}

int llmrt_mul_mat_q8(int m, int n, int k, const float * a, const float * b, float * c, int threads) {
    if (m < 1 || n < 1 || k < 1 || k % 32 != 0 || threads < 1) return -1;
    struct ggml_cgraph * gf;
    struct ggml_tensor * out;
    struct ggml_context * ctx = llmrt_mul_mat_graph(m, n, k, GGML_TYPE_Q8_0, a, b, &gf, &out);
    if (!ctx) return -1;
    int rc = ggml_graph_compute_with_ctx(ctx, gf, threads) == GGML_STATUS_SUCCESS ? 0 : -1;
    if (rc == 0) memcpy(c, out->data, (size_t) m * n * sizeof(float));
    ggml_free(ctx);
    return rc;
}
