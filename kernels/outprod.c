// outprod.c: llmrt's kernel for the input gradient of a matmul.
//
// Training backpropagates through every frozen weight: for y = W x, ggml's
// backward pass computes dL/dx as OUT_PROD(W, transpose(dL/dy)), and its CPU
// backend runs OUT_PROD as rank-1 updates (one ggml_vec_mad per weight row
// and token), which streams the output through memory once per row of W.
// In LoRA training that one op took more time than every forward matmul
// together.
//
// That shape is a plain matrix product of row-major operands,
//
//	dst[t][i] = sum over o of g[t][o] * W[o][i]
//
// (t a token, o an output and i an input feature of the layer; g is the
// gradient, contiguous per token because the transposed view's inner
// stride is one float), so this file computes it as one: a register tile of
// 6 tokens by two vectors of features accumulates over a block of KC rows of
// W, which is first copied (or, for Q8_0 weights, dequantized) into a
// small contiguous panel on the stack. Each thread owns a range of feature
// columns (or, for an output narrower than the threads, of tokens), so no
// two threads write the same output. The same code takes a LoRA factor's
// weight gradient, an OUT_PROD whose second operand is the gradient as it
// is: only the strides of g differ.
//
// The hook is the linker's symbol wrapping, as in q8gemm.c:
// -Wl,--wrap=ggml_compute_forward_out_prod (outprod.go) sends ggml-cpu's
// call here, for attention's batched products too; any other OUT_PROD (F16
// or K-quant weights) goes on to ggml's own,
// __real_ggml_compute_forward_out_prod.
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"
#include "ggml-cpu.h"
#include "ggml-cpu/ggml-cpu-impl.h"
#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "outprod.h"
#include "q8amx.h"
#include "q8gemm.h"

#if defined(__F16C__) || defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define OP_VW 16 // floats per vector
#else
#define OP_VW 8
#endif
// The register tile: OP_MR tokens by OP_NR features (two vectors), 12
// accumulators; and the rows of W per panel (32 KiB of floats at 512-bit).
#define OP_MR 6
#define OP_NR (2 * OP_VW)
#define OP_KC 256

// Unaligned vector loads and stores: the typedefs lower the alignment.
typedef float op_vec __attribute__((vector_size(OP_VW * sizeof(float)), aligned(sizeof(float))));

// OP_VW int8 quants as floats.
static inline op_vec op_i8_to_f32(const int8_t * q) {
#if defined(__AVX512F__)
    return (op_vec) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *) q)));
#elif defined(__AVX2__)
    return (op_vec) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *) q)));
#else
    op_vec v;
    for (int i = 0; i < OP_VW; i++) {
        v[i] = (float) q[i];
    }
    return v;
#endif
}

// A Q8_0 block's scale, without a call per block where F16C converts it.
static inline float op_half(ggml_fp16_t h) {
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    return ggml_fp16_to_fp32(h);
#endif
}

static atomic_int op_enabled = 1;
static atomic_llong op_calls;
static atomic_llong op_amx_calls; // thread shares run on AMX-BF16 tiles

long long llmrt_outprod_amx_calls(void) { return atomic_load(&op_amx_calls); }

void llmrt_outprod_enable(int on) { atomic_store(&op_enabled, on != 0); }

int llmrt_outprod_enabled(void) { return atomic_load(&op_enabled); }

long long llmrt_outprod_calls(void) { return atomic_load(&op_calls); }

void __real_ggml_compute_forward_out_prod(const struct ggml_compute_params * params, struct ggml_tensor * dst);

// op_fits reports whether dst is an OUT_PROD the kernel takes: src0 W (F32
// rows, or Q8_0 rows of whole blocks), src1 F32 with any strides (the
// transposed gradient of an input gradient, or the gradient itself for a
// LoRA factor's weight gradient), dst F32 rows; in batches over dims 2 and
// 3 (attention's heads), W broadcast as ggml broadcasts it.
static int op_fits(const struct ggml_tensor * dst) {
    const struct ggml_tensor * w = dst->src[0];
    const struct ggml_tensor * g = dst->src[1];
    if (!atomic_load_explicit(&op_enabled, memory_order_relaxed) || dst->type != GGML_TYPE_F32 || g->type != GGML_TYPE_F32) {
        return 0;
    }
    if (w->type == GGML_TYPE_F32) {
        if (w->nb[0] != sizeof(float)) return 0;
    } else if (w->type == GGML_TYPE_Q8_0) {
        if (w->ne[0] % QK8_0 != 0 || w->nb[0] != sizeof(block_q8_0)) return 0;
    } else {
        return 0;
    }
    if (g->nb[0] % sizeof(float) != 0 || g->nb[1] % sizeof(float) != 0 || dst->nb[0] != sizeof(float)) return 0;
    if (dst->ne[0] != w->ne[0] || dst->ne[1] != g->ne[0] || g->ne[1] != w->ne[1] || w->ne[1] == 0) return 0;
    // Batches: one product per (i2, i3), W broadcast over its repeats.
    if (g->ne[2] != dst->ne[2] || g->ne[3] != dst->ne[3] || dst->ne[2] % w->ne[2] != 0 || dst->ne[3] % w->ne[3] != 0) return 0;
    return 1;
}

// op_pack copies rows [k0, k0+kc) of the slice of W at base (w gives its
// type and row stride), columns [c0, c0+nc) (nc <= OP_NR), into p as kc
// rows of OP_NR floats, zero beyond nc.
static void op_pack(const struct ggml_tensor * w, const char * base, int64_t k0, int kc, int64_t c0, int nc, float * p) {
    for (int k = 0; k < kc; k++) {
        float * row = p + (size_t) k * OP_NR;
        const char * src = base + (k0 + k) * w->nb[1];
        if (w->type == GGML_TYPE_F32) {
            memcpy(row, (const float *) src + c0, sizeof(float) * nc);
        } else {
            // Q8_0: a vector of quants (never straddling two blocks, as
            // OP_VW divides QK8_0 and strips start at multiples of it)
            // converted and scaled at once; single values for a tail.
            const block_q8_0 * b = (const block_q8_0 *) src;
            int j = 0;
            for (; j + OP_VW <= nc; j += OP_VW) {
                const int64_t c = c0 + j;
                const block_q8_0 * blk = b + c / QK8_0;
                *(op_vec *) (row + j) = op_i8_to_f32(blk->qs + c % QK8_0) * op_half(blk->d);
            }
            for (; j < nc; j++) {
                const block_q8_0 * blk = b + (c0 + j) / QK8_0;
                row[j] = op_half(blk->d) * (float) blk->qs[(c0 + j) % QK8_0];
            }
        }
        for (int j = nc; j < OP_NR; j++) {
            row[j] = 0.0f;
        }
    }
}

// op_store writes (or, with add, adds) one tile row of OP_NR accumulators
// into c, of which the first nc are real columns.
static inline void op_store(float * c, op_vec a0, op_vec a1, int nc, int add) {
    if (nc == OP_NR) {
        if (add) {
            a0 += *(const op_vec *) c;
            a1 += *(const op_vec *) (c + OP_VW);
        }
        *(op_vec *) c = a0;
        *(op_vec *) (c + OP_VW) = a1;
        return;
    }
    float t[OP_NR];
    *(op_vec *) t = a0;
    *(op_vec *) (t + OP_VW) = a1;
    for (int j = 0; j < nc; j++) {
        c[j] = add ? c[j] + t[j] : t[j];
    }
}

// op_tile computes OP_MR tokens: c[r][0..nc) (+)= sum over k of
// a[r*lda + k*ldk] * p[k][..].
static void op_tile(const float * a, size_t lda, size_t ldk, const float * p, int kc, float * c, size_t ldc, int nc, int add) {
    op_vec acc[OP_MR][2] = {{{0}}};
    for (int k = 0; k < kc; k++) {
        const op_vec b0 = *(const op_vec *) (p + (size_t) k * OP_NR);
        const op_vec b1 = *(const op_vec *) (p + (size_t) k * OP_NR + OP_VW);
        for (int r = 0; r < OP_MR; r++) {
            const float ar = a[r * lda + k * ldk];
            acc[r][0] += ar * b0;
            acc[r][1] += ar * b1;
        }
    }
    for (int r = 0; r < OP_MR; r++) {
        op_store(c + r * ldc, acc[r][0], acc[r][1], nc, add);
    }
}

// op_tail is op_tile for the last mr < OP_MR tokens.
static void op_tail(const float * a, size_t lda, size_t ldk, int mr, const float * p, int kc, float * c, size_t ldc, int nc,
                    int add) {
    for (int r = 0; r < mr; r++) {
        op_vec a0 = {0}, a1 = {0};
        for (int k = 0; k < kc; k++) {
            const float ar = a[r * lda + k * ldk];
            a0 += ar * *(const op_vec *) (p + (size_t) k * OP_NR);
            a1 += ar * *(const op_vec *) (p + (size_t) k * OP_NR + OP_VW);
        }
        op_store(c + r * ldc, a0, a1, nc, add);
    }
}

// op_strip computes columns [c0, c0+nc) of rows [t0, t1) of one batch:
// c = a x W, W's slice at wbase.
static void op_strip(const struct ggml_tensor * w, const char * wbase, const float * a, size_t lda, size_t ldk, float * c, size_t ldc,
                     int64_t c0, int nc, int64_t t0, int64_t t1) {
    const int64_t k = w->ne[1];
    float panel[OP_KC * OP_NR] __attribute__((aligned(64)));
    for (int64_t k0 = 0; k0 < k; k0 += OP_KC) {
        const int kc = (int) (k - k0 < OP_KC ? k - k0 : OP_KC);
        op_pack(w, wbase, k0, kc, c0, nc, panel);
        const int add = k0 > 0;
        int64_t t = t0;
        for (; t + OP_MR <= t1; t += OP_MR) {
            op_tile(a + t * lda + k0 * ldk, lda, ldk, panel, kc, c + t * ldc + c0, ldc, nc, add);
        }
        if (t < t1) {
            op_tail(a + t * lda + k0 * ldk, lda, ldk, (int) (t1 - t), panel, kc, c + t * ldc + c0, ldc, nc, add);
        }
    }
}

static void op_run(const struct ggml_compute_params * params, struct ggml_tensor * dst) {
    const struct ggml_tensor * w = dst->src[0];
    const struct ggml_tensor * g = dst->src[1];
    const int64_t n = w->ne[0];  // features: dst's row length
    const int64_t m = g->ne[0];  // tokens: dst's rows
    const size_t lda = g->nb[0] / sizeof(float), ldk = g->nb[1] / sizeof(float);
    const size_t ldc = dst->nb[1] / sizeof(float);
    const int64_t ne2 = dst->ne[2], batches = ne2 * dst->ne[3];
    const int64_t rep2 = ne2 / w->ne[2], rep3 = dst->ne[3] / w->ne[3];
    const int64_t strips = (n + OP_NR - 1) / OP_NR;
    const int ith = params->ith, nth = params->nth;

    // This thread's share: (batch, strip) units when there are enough for
    // every thread, else (a LoRA factor's narrow gradient) a range of rows
    // of every strip.
    const int64_t units = batches * strips;
    const int by_rows = units < nth;
    const int64_t u0 = by_rows ? 0 : units * ith / nth, u1 = by_rows ? units : units * (ith + 1) / nth;
    int64_t t0 = 0, t1 = m;
    if (by_rows) {
        const int64_t tiles = (m + OP_MR - 1) / OP_MR;
        t0 = tiles * ith / nth * OP_MR;
        t1 = tiles * (ith + 1) / nth * OP_MR;
        t1 = t1 < m ? t1 : m;
    }
    // Training's input gradients through Q8_0 weights (one batch, the
    // gradient contiguous per token): whole strips of 32 features and
    // groups of 32 tokens on AMX-BF16 where the pool is allowed the tiles
    // (q8gemm.h); the loop below takes the tokens and strips left over.
    int64_t amx_tokens = 0, amx_strips_end = 0;
#if QA_HAVE
    if (w->type == GGML_TYPE_Q8_0 && batches == 1 && ldk == 1 && !by_rows && m >= 32 && OP_NR == 32 &&
        llmrt_q8_tiles_allowed(params->threadpool) && qa_usable() && llmrt_bf16_amx_available()) {
        const int64_t whole = n / OP_NR; // strips of 32 real features
        const int64_t s1 = u1 < whole ? u1 : whole;
        if (s1 > u0 && qa_outprod((const char *) w->data, w->nb[1], w->ne[1], (const float *) g->data, lda, m / 32 * 32,
                                  (float *) dst->data, ldc, u0 * OP_NR, s1 * OP_NR) == 0) {
            amx_tokens = m / 32 * 32;
            amx_strips_end = s1;
            atomic_fetch_add_explicit(&op_amx_calls, 1, memory_order_relaxed);
        }
    }
#endif
    for (int64_t u = u0; u < u1 && t0 < t1; u++) {
        const int64_t b = u / strips, s = u % strips;
        const int64_t ts = u < amx_strips_end ? amx_tokens : t0;
        if (ts >= t1) continue;
        const int64_t i2 = b % ne2, i3 = b / ne2;
        const char * wbase = (const char *) w->data + (i2 / rep2) * w->nb[2] + (i3 / rep3) * w->nb[3];
        const float * a = (const float *) ((const char *) g->data + i2 * g->nb[2] + i3 * g->nb[3]);
        float * c = (float *) ((char *) dst->data + i2 * dst->nb[2] + i3 * dst->nb[3]);
        const int64_t c0 = s * OP_NR;
        op_strip(w, wbase, a, lda, ldk, c, ldc, c0, (int) (n - c0 < OP_NR ? n - c0 : OP_NR), ts, t1);
    }
}

void __wrap_ggml_compute_forward_out_prod(const struct ggml_compute_params * params, struct ggml_tensor * dst) {
    if (!op_fits(dst)) {
        __real_ggml_compute_forward_out_prod(params, dst);
        return;
    }
    if (params->ith == 0) {
        atomic_fetch_add_explicit(&op_calls, 1, memory_order_relaxed);
    }
    op_run(params, dst);
}

// --- for tests: one OUT_PROD through ggml's CPU backend ---

int llmrt_outprod_graph(int n, int m, int k, int heads, int w_heads, int wtype, const float * w, const float * g, int transposed, float * dst,
                        int threads, int tiles) {
    if (n < 1 || m < 1 || k < 1 || heads < 1 || w_heads < 1 || heads % w_heads != 0 || threads < 1 || !w || !g || !dst) return -1;
    if (wtype != GGML_TYPE_F32 && !(wtype == GGML_TYPE_Q8_0 && n % QK8_0 == 0)) return -1;
    const size_t wbytes = ggml_row_size((enum ggml_type) wtype, n) * (size_t) k * w_heads;
    const size_t need = wbytes + sizeof(float) * ((size_t) m * k + (size_t) n * m) * heads + 8 * ggml_tensor_overhead() +
                        ggml_graph_overhead() + sizeof(float) * (size_t) n * threads + 64 * 1024;
    struct ggml_init_params ip = {need, NULL, false};
    struct ggml_context * ctx = ggml_init(ip);
    if (!ctx) return -1;
    struct ggml_tensor * tw = ggml_new_tensor_3d(ctx, (enum ggml_type) wtype, n, k, w_heads);
    struct ggml_tensor * tg = transposed ? ggml_new_tensor_3d(ctx, GGML_TYPE_F32, k, m, heads) : ggml_new_tensor_3d(ctx, GGML_TYPE_F32, m, k, heads);
    if (!tw || !tg) { ggml_free(ctx); return -1; }
    if (wtype == GGML_TYPE_F32) {
        memcpy(tw->data, w, sizeof(float) * (size_t) n * k * w_heads);
    } else if (ggml_quantize_chunk(GGML_TYPE_Q8_0, w, tw->data, 0, (int64_t) k * w_heads, n, NULL) != wbytes) {
        ggml_free(ctx);
        return -1;
    }
    memcpy(tg->data, g, sizeof(float) * (size_t) m * k * heads);
    struct ggml_tensor * out = ggml_out_prod(ctx, tw, transposed ? ggml_transpose(ctx, tg) : tg);
    struct ggml_cgraph * gf = ggml_new_graph(ctx);
    if (!out || !gf) { ggml_free(ctx); return -1; }
    ggml_build_forward_expand(gf, out);
    int rc = -1;
    if (!tiles) {
        rc = ggml_graph_compute_with_ctx(ctx, gf, threads) == GGML_STATUS_SUCCESS ? 0 : -1;
    } else {
        // On a thread pool allowed the tiles, as a training net's is.
        struct ggml_threadpool_params tpp = ggml_threadpool_params_default(threads);
        struct ggml_threadpool * pool = ggml_threadpool_new(&tpp);
        if (pool != NULL && llmrt_q8_tiles_allow(pool) == 0) {
            struct ggml_cplan plan = ggml_graph_plan(gf, threads, pool);
            void * work = plan.work_size > 0 ? malloc(plan.work_size) : NULL;
            if (plan.work_size == 0 || work != NULL) {
                plan.work_data = (uint8_t *) work;
                rc = ggml_graph_compute(gf, &plan) == GGML_STATUS_SUCCESS ? 0 : -1;
            }
            free(work);
            llmrt_q8_tiles_revoke(pool);
        }
        if (pool != NULL) ggml_threadpool_free(pool);
    }
    if (rc == 0) {
        memcpy(dst, out->data, sizeof(float) * (size_t) n * m * heads);
    }
    ggml_free(ctx);
    return rc;
}
