// smallgemm.c: the batched-decode matmul.
//
// When several sequences decode together, every weight matmul of the step
// has one column per sequence. ggml hands any Q8_0 matmul with more than one
// column to llamafile's tinyBLAS, whose x86 path uses 256-bit
// multiply-add-pairs and is slower per column than ggml's own single-column
// dot product on CPUs with AVX-512 VNNI: decoding 4 sequences cost about 3.5
// single-sequence steps, so batching bought almost nothing.
//
// This file puts a kernel in front of tinyBLAS for Q8_0 x Q8_0 products with
// at most LLMRT_SG_MAX_N columns. The hook is the linker's symbol wrapping
// (-Wl,--wrap=llamafile_sgemm in kernels.go): ggml's call to
// llamafile_sgemm lands in __wrap_llamafile_sgemm below, which either runs
// the kernel or calls the original, __real_llamafile_sgemm. ggml itself is
// not modified; everything else (prompt processing, other types) keeps
// going to tinyBLAS.
//
// The kernel streams each weight row once for all columns. Per pair of
// 32-element blocks it loads 64 weight bytes and, for each column, does one
// 512-bit VNNI dot product (vpdpbusd), a convert and a fused multiply-add.
// vpdpbusd multiplies unsigned by signed bytes, so the activations are
// shifted to unsigned (x + 128, an xor with 0x80) once per call, and the
// accumulator starts at -128 * sum(w), which the same instruction computes
// once per weight pair for all columns: sum((x + 128) * w) - 128 * sum(w)
// is exactly sum(x * w).
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"
#include "ggml-cpu.h"
#include "ggml-cpu/ggml-cpu-impl.h"
#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "smallgemm.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__) && defined(__F16C__)
#define SG_HAVE 1
#include <immintrin.h>
#else
#define SG_HAVE 0
#endif

// Longest row the kernel takes, in blocks (32768 elements): the per-thread
// scratch holds LLMRT_SG_MAX_N columns of it.
#define SG_MAX_K 1024

static atomic_int sg_enabled = 1;
static atomic_llong sg_calls;

int llmrt_small_gemm_available(void) { return SG_HAVE; }

long long llmrt_small_gemm_calls(void) { return atomic_load(&sg_calls); }

void llmrt_small_gemm_enable(int on) { atomic_store(&sg_enabled, on != 0); }

#if SG_HAVE

// Per-thread scratch: the activations repacked for the kernel. One buffer
// per ggml worker thread, grown on demand and freed when the thread exits.
typedef struct {
    uint8_t * xu;  // [pair][column][64]: x + 128, two blocks per 64 bytes
    float * dx;    // [pair][column][16]: each block's scale, 8 lanes per block
    size_t pairs_cols; // capacity in (pair, column) cells
} sg_scratch;

static pthread_key_t sg_key;
static pthread_once_t sg_once = PTHREAD_ONCE_INIT;
static int sg_key_ok;

static void sg_scratch_free(void * p) {
    sg_scratch * s = (sg_scratch *) p;
    if (s == NULL) return;
    free(s->xu);
    free(s->dx);
    free(s);
}

static void sg_key_init(void) { sg_key_ok = pthread_key_create(&sg_key, sg_scratch_free) == 0; }

// Returns this thread's scratch with room for `cells` (pair, column) cells,
// or NULL when memory is short (the caller then leaves the work to ggml).
static sg_scratch * sg_get_scratch(size_t cells) {
    if (pthread_once(&sg_once, sg_key_init) != 0 || !sg_key_ok) return NULL;
    sg_scratch * s = (sg_scratch *) pthread_getspecific(sg_key);
    if (s == NULL) {
        s = (sg_scratch *) calloc(1, sizeof(*s));
        if (s == NULL) return NULL;
        if (pthread_setspecific(sg_key, s) != 0) { free(s); return NULL; }
    }
    if (s->pairs_cols < cells) {
        uint8_t * xu = (uint8_t *) aligned_alloc(64, cells * 64);
        float * dx = (float *) aligned_alloc(64, cells * 16 * sizeof(float));
        if (xu == NULL || dx == NULL) { free(xu); free(dx); return NULL; }
        free(s->xu);
        free(s->dx);
        s->xu = xu;
        s->dx = dx;
        s->pairs_cols = cells;
    }
    return s;
}

// Repacks n columns of k blocks into the scratch layout. An odd k is padded
// with a block of scale 0, which contributes nothing.
static void sg_pack(const block_q8_0 * b, int64_t ldb, int n, int64_t k, uint8_t * xu, float * dx) {
    const int64_t pairs = (k + 1) / 2;
    const __m256i flip = _mm256_set1_epi8((char) 0x80);
    for (int64_t p = 0; p < pairs; p++) {
        for (int j = 0; j < n; j++) {
            uint8_t * dst = xu + (p * n + j) * 64;
            float * d = dx + (p * n + j) * 16;
            for (int h = 0; h < 2; h++) {
                const int64_t l = 2 * p + h;
                __m256i v = flip;
                float s = 0.0f;
                if (l < k) {
                    const block_q8_0 * blk = b + j * ldb + l;
                    v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *) blk->qs), flip);
                    s = _cvtsh_ss(blk->d);
                }
                _mm256_store_si256((__m256i *) (dst + 32 * h), v);
                _mm256_store_ps(d + 8 * h, _mm256_set1_ps(s));
            }
        }
    }
}

// Computes rows [i0, i1) of c for n columns from the packed activations.
// N is a compile-time column count so the accumulators stay in registers.
#define SG_ROWS(N)                                                                              \
    static void sg_rows_##N(const block_q8_0 * a, int64_t lda, int64_t k, const uint8_t * xu, \
                            const float * dx, float * c, int64_t ldc, int64_t i0, int64_t i1) {  \
        const int64_t pairs = (k + 1) / 2;                                                      \
        const __m512i bias = _mm512_set1_epi8((char) 0x80);                                     \
        for (int64_t i = i0; i < i1; i++) {                                                     \
            const block_q8_0 * row = a + i * lda;                                               \
            __m512 acc[N];                                                                      \
            for (int j = 0; j < N; j++) acc[j] = _mm512_setzero_ps();                           \
            for (int64_t p = 0; p < pairs; p++) {                                               \
                const block_q8_0 * b0 = row + 2 * p;                                            \
                __m512i w;                                                                      \
                __m512 dw;                                                                      \
                if (2 * p + 1 < k) {                                                            \
                    w = _mm512_inserti64x4(                                                     \
                        _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *) b0[0].qs)), \
                        _mm256_loadu_si256((const __m256i *) b0[1].qs), 1);                     \
                    dw = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(b0[0].d)),                 \
                                            _mm256_set1_ps(_cvtsh_ss(b0[1].d)), 1);            \
                } else {                                                                        \
                    w = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *) b0[0].qs)); \
                    dw = _mm512_zextps256_ps512(_mm256_set1_ps(_cvtsh_ss(b0[0].d)));            \
                }                                                                               \
                const __m512i corr =                                                            \
                    _mm512_sub_epi32(_mm512_setzero_si512(),                                    \
                                     _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, w));     \
                const uint8_t * xp = xu + p * N * 64;                                           \
                const float * dp = dx + p * N * 16;                                             \
                for (int j = 0; j < N; j++) {                                                   \
                    const __m512i dot =                                                         \
                        _mm512_dpbusd_epi32(corr, _mm512_load_si512(xp + j * 64), w);           \
                    const __m512 s = _mm512_mul_ps(dw, _mm512_load_ps(dp + j * 16));            \
                    acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[j]);               \
                }                                                                               \
            }                                                                                   \
            for (int j = 0; j < N; j++) c[j * ldc + i] = _mm512_reduce_add_ps(acc[j]);          \
        }                                                                                       \
    }

SG_ROWS(1)
SG_ROWS(2)
SG_ROWS(3)
SG_ROWS(4)
SG_ROWS(5)
SG_ROWS(6)
SG_ROWS(7)
SG_ROWS(8)
SG_ROWS(9)
SG_ROWS(10)
SG_ROWS(11)
SG_ROWS(12)
SG_ROWS(13)
SG_ROWS(14)
SG_ROWS(15)
SG_ROWS(16)

typedef void (*sg_rows_fn)(const block_q8_0 *, int64_t, int64_t, const uint8_t *, const float *, float *,
                           int64_t, int64_t, int64_t);

static const sg_rows_fn sg_rows[LLMRT_SG_MAX_N + 1] = {
    NULL,       sg_rows_1,  sg_rows_2,  sg_rows_3,  sg_rows_4,  sg_rows_5,  sg_rows_6,  sg_rows_7, sg_rows_8,
    sg_rows_9, sg_rows_10, sg_rows_11, sg_rows_12, sg_rows_13, sg_rows_14, sg_rows_15, sg_rows_16,
};

// A plain loop over rows [i0, i1): used only when a thread cannot get its
// scratch, because the other threads of the matmul have already taken the
// kernel's branch and the work split must stay the same.
static void sg_rows_plain(const block_q8_0 * a, int64_t lda, int n, int64_t k, const block_q8_0 * b, int64_t ldb,
                          float * c, int64_t ldc, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
        for (int j = 0; j < n; j++) {
            float sum = 0.0f;
            for (int64_t l = 0; l < k; l++) {
                const block_q8_0 * w = a + i * lda + l;
                const block_q8_0 * x = b + j * ldb + l;
                int32_t dot = 0;
                for (int t = 0; t < QK8_0; t++) dot += (int32_t) w->qs[t] * (int32_t) x->qs[t];
                sum += (float) dot * _cvtsh_ss(w->d) * _cvtsh_ss(x->d);
            }
            c[j * ldc + i] = sum;
        }
    }
}

// Runs this thread's share: rows split evenly over nth threads.
static void sg_run(int ith, int nth, int64_t m, int n, int64_t k, const void * a, int64_t lda, const void * b,
                   int64_t ldb, float * c, int64_t ldc) {
    const int64_t i0 = m * ith / nth;
    const int64_t i1 = m * (ith + 1) / nth;
    const int64_t pairs = (k + 1) / 2;
    sg_scratch * s = sg_get_scratch((size_t) (pairs * n));
    if (s == NULL) {
        sg_rows_plain((const block_q8_0 *) a, lda, n, k, (const block_q8_0 *) b, ldb, c, ldc, i0, i1);
        return;
    }
    sg_pack((const block_q8_0 *) b, ldb, n, k, s->xu, s->dx);
    sg_rows[n]((const block_q8_0 *) a, lda, k, s->xu, s->dx, c, ldc, i0, i1);
}

#endif // SG_HAVE

bool __real_llamafile_sgemm(const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k,
                            const void * A, int64_t lda, const void * B, int64_t ldb, void * C,
                            int64_t ldc, int Atype, int Btype, int Ctype);

bool __wrap_llamafile_sgemm(const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k,
                            const void * A, int64_t lda, const void * B, int64_t ldb, void * C,
                            int64_t ldc, int Atype, int Btype, int Ctype);

// Every worker thread of a matmul calls this with the same arguments, so
// all of them take the same branch; the kernel splits the rows by
// params->ith/nth as tinyBLAS does, and needs no barrier because each
// thread writes only its own rows.
bool __wrap_llamafile_sgemm(const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k,
                            const void * A, int64_t lda, const void * B, int64_t ldb, void * C,
                            int64_t ldc, int Atype, int Btype, int Ctype) {
#if SG_HAVE
    if (Atype == GGML_TYPE_Q8_0 && Btype == GGML_TYPE_Q8_0 && Ctype == GGML_TYPE_F32 && n >= 1 &&
        n <= LLMRT_SG_MAX_N && k >= 1 && k <= SG_MAX_K && atomic_load_explicit(&sg_enabled, memory_order_relaxed)) {
        if (params->ith == 0) atomic_fetch_add_explicit(&sg_calls, 1, memory_order_relaxed);
        sg_run(params->ith, params->nth, m, (int) n, k, A, lda, B, ldb, (float *) C, ldc);
        return true;
    }
#endif
    return __real_llamafile_sgemm(params, m, n, k, A, lda, B, ldb, C, ldc, Atype, Btype, Ctype);
}

int llmrt_small_gemm_q8(int64_t m, int64_t n, int64_t k, const void * a, int64_t lda, const void * b, int64_t ldb,
                        float * c, int64_t ldc) {
#if SG_HAVE
    if (m < 0 || n < 1 || n > LLMRT_SG_MAX_N || k < 1 || k > SG_MAX_K || lda < k || ldb < k || ldc < m) return -1;
    sg_run(0, 1, m, (int) n, k, a, lda, b, ldb, c, ldc);
    return 0;
#else
    (void) m; (void) n; (void) k; (void) a; (void) lda; (void) b; (void) ldb; (void) c; (void) ldc;
    return -1;
#endif
}

int llmrt_mul_mat_q8(int m, int n, int k, const float * a, const float * b, float * c, int threads) {
    if (m < 1 || n < 1 || k < 1 || k % 32 != 0 || threads < 1) return -1;
    const size_t mem = ((size_t) m * k + (size_t) n * k + (size_t) m * n) * sizeof(float) +
                       16 * ggml_tensor_overhead() + ggml_graph_overhead() + (1 << 20);
    struct ggml_init_params ip = { mem, NULL, false };
    struct ggml_context * ctx = ggml_init(ip);
    if (ctx == NULL) return -1;
    struct ggml_tensor * wa = ggml_new_tensor_2d(ctx, GGML_TYPE_Q8_0, k, m);
    struct ggml_tensor * xb = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, n);
    ggml_quantize_chunk(GGML_TYPE_Q8_0, a, wa->data, 0, m, k, NULL);
    memcpy(xb->data, b, (size_t) n * k * sizeof(float));
    struct ggml_tensor * out = ggml_mul_mat(ctx, wa, xb);
    struct ggml_cgraph * gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, out);
    int rc = ggml_graph_compute_with_ctx(ctx, gf, threads) == GGML_STATUS_SUCCESS ? 0 : -1;
    if (rc == 0) memcpy(c, out->data, (size_t) m * n * sizeof(float));
    ggml_free(ctx);
    return rc;
}
