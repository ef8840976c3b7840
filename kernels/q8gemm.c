// q8gemm.c: llmrt's Q8_0 matmul for ggml's CPU backend.
//
// When several sequences decode together, every weight matmul of the step
// has one column per sequence. ggml hands any Q8_0 matmul with more than one
// column to llamafile's tinyBLAS, whose x86 path uses 256-bit
// multiply-add-pairs and is slower per column than ggml's own single-column
// dot product on CPUs with AVX-512 VNNI: decoding 4 sequences cost about 3.5
// single-sequence steps, so batching bought almost nothing.
//
// This file puts a kernel in front of tinyBLAS for Q8_0 x Q8_0 products of
// up to LLMRT_Q8_GEMM_MAX_N columns, which covers every ubatch: it beats
// tinyBLAS on prompt-sized products too (about 1.9x at 512 columns here).
// The hook is the linker's symbol wrapping (-Wl,--wrap=llamafile_sgemm in
// q8gemm.go): ggml's call to llamafile_sgemm lands in
// __wrap_llamafile_sgemm below, which either runs the kernel or calls the
// original, __real_llamafile_sgemm. ggml itself is not modified; other
// weight types keep going to tinyBLAS.
//
// The kernel streams each weight row once per block of up to 16 columns,
// whose accumulators stay in registers. Per pair of 32-element blocks it
// loads 64 weight bytes and, for each column, does one 512-bit VNNI dot
// product (vpdpbusd), a convert, a scale multiply and a fused multiply-add.
// vpdpbusd multiplies unsigned by signed bytes, so the activations are
// shifted to unsigned (x + 128, an xor with 0x80) when a column block is
// packed, and the accumulator starts at -128 * sum(w), which the same
// instruction computes once per weight pair for all columns:
// sum((x + 128) * w) - 128 * sum(w) is exactly sum(x * w).
//
// For the matmuls of thread pools allowed them (training's, see q8gemm.h)
// every whole 16x16 tile of a product runs on AMX-INT8 where the CPU has
// it (q8amx.c), and this kernel takes the edges.
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ggml.h"
#include "ggml-cpu.h"
#include "ggml-cpu/ggml-cpu-impl.h"
#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "q8amx.h"
#include "q8gemm.h"
#include "scratch.h"

// The hook needs GNU ld's --wrap (linux builds); the kernel needs AVX-512.
#if defined(__linux__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__) && defined(__F16C__)
#define QG_HAVE 1
#include <immintrin.h>
#else
#define QG_HAVE 0
#endif

// Columns computed per pass over the rows: the accumulators of one row for
// all of them stay in registers.
#define QG_BLOCK_N 16

// Longest row the kernel takes, in blocks (32768 elements): the per-thread
// scratch holds QG_BLOCK_N columns of it.
#define QG_MAX_K 1024

static atomic_int qg_enabled = 1;
static atomic_llong qg_calls;
static atomic_llong qg_amx_calls; // thread shares of a matmul run on AMX tiles

int llmrt_q8_gemm_available(void) { return QG_HAVE; }

long long llmrt_q8_gemm_calls(void) { return atomic_load(&qg_calls); }

long long llmrt_q8_amx_calls(void) { return atomic_load(&qg_amx_calls); }

void llmrt_q8_gemm_enable(int on) { atomic_store(&qg_enabled, on != 0); }

// The thread pools whose matmuls may use AMX tiles (see q8gemm.h).
#define QG_TILE_POOLS 64
static _Atomic(const void *) qg_tile_pools[QG_TILE_POOLS];

int llmrt_q8_tiles_allow(const void * pool) {
    if (pool == NULL) return -1;
    for (int i = 0; i < QG_TILE_POOLS; i++) {
        const void * empty = NULL;
        if (atomic_compare_exchange_strong(&qg_tile_pools[i], &empty, pool)) return 0;
    }
    return -1;
}

void llmrt_q8_tiles_revoke(const void * pool) {
    for (int i = 0; i < QG_TILE_POOLS; i++) {
        const void * want = pool;
        atomic_compare_exchange_strong(&qg_tile_pools[i], &want, NULL);
    }
}

int llmrt_q8_tiles_allowed(const void * pool) {
    if (pool == NULL) return 0;
    for (int i = 0; i < QG_TILE_POOLS; i++) {
        if (atomic_load_explicit(&qg_tile_pools[i], memory_order_acquire) == pool) return 1;
    }
    return 0;
}

#if QG_HAVE

// The activations repacked for the kernel, in this thread's scratch.
typedef struct {
    uint8_t * xu; // [pair][column][64]: x + 128, two blocks per 64 bytes
    float * dx;   // [pair][column][16]: each block's scale, 8 lanes per block
} qg_scratch;

// Fills s with room for `cells` (pair, column) cells; 0 when memory is
// short (the caller then runs the plain loop).
static int qg_get_scratch(qg_scratch * s, size_t cells) {
    s->xu = (uint8_t *) llmrt_scratch(LLMRT_SCRATCH_QG_X, cells * 64);
    s->dx = (float *) llmrt_scratch(LLMRT_SCRATCH_QG_D, cells * 16 * sizeof(float));
    return s->xu != NULL && s->dx != NULL;
}

// Repacks n columns of k blocks into the scratch layout. An odd k is padded
// with a block of scale 0, which contributes nothing.
static void qg_pack(const block_q8_0 * b, int64_t ldb, int n, int64_t k, uint8_t * xu, float * dx) {
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
#define QG_ROWS(N)                                                                              \
    static void qg_rows_##N(const block_q8_0 * a, int64_t lda, int64_t k, const uint8_t * xu, \
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

QG_ROWS(1)
QG_ROWS(2)
QG_ROWS(3)
QG_ROWS(4)
QG_ROWS(5)
QG_ROWS(6)
QG_ROWS(7)
QG_ROWS(8)
QG_ROWS(9)
QG_ROWS(10)
QG_ROWS(11)
QG_ROWS(12)
QG_ROWS(13)
QG_ROWS(14)
QG_ROWS(15)
QG_ROWS(16)

typedef void (*qg_rows_fn)(const block_q8_0 *, int64_t, int64_t, const uint8_t *, const float *, float *,
                           int64_t, int64_t, int64_t);

static const qg_rows_fn qg_rows[QG_BLOCK_N + 1] = {
    NULL,       qg_rows_1,  qg_rows_2,  qg_rows_3,  qg_rows_4,  qg_rows_5,  qg_rows_6,  qg_rows_7, qg_rows_8,
    qg_rows_9, qg_rows_10, qg_rows_11, qg_rows_12, qg_rows_13, qg_rows_14, qg_rows_15, qg_rows_16,
};

// A plain loop over rows [i0, i1): used only when a thread cannot get its
// scratch, because the other threads of the matmul have already taken the
// kernel's branch and the work split must stay the same.
static void qg_rows_plain(const block_q8_0 * a, int64_t lda, int n, int64_t k, const block_q8_0 * b, int64_t ldb,
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

// Runs this thread's share: rows split evenly over nth threads; whole
// tiles on AMX when tiles is set and the CPU has it.
static void qg_run(int ith, int nth, int64_t m, int64_t n, int64_t k, const void * a, int64_t lda, const void * b,
                   int64_t ldb, float * c, int64_t ldc, int tiles) {
    const int64_t i0 = m * ith / nth;
    const int64_t i1 = m * (ith + 1) / nth;
    const int64_t pairs = (k + 1) / 2;
    const int64_t width = n < QG_BLOCK_N ? n : QG_BLOCK_N;
    // Whole 16x16 tiles go to AMX where the CPU has it; the VNNI kernel
    // takes the rest: the last rows (fewer than 16) of the tiled columns,
    // and the last columns (fewer than 16) of every row.
    int64_t tiled_rows = 0, tiled_cols = 0;
#if !QA_HAVE
    (void) tiles;
#else
    if (tiles && n >= 16 && i1 - i0 >= 16 && qa_usable() &&
        qa_run(a, lda, b, ldb, k, n, c, ldc, i0, (i1 - i0) / 16, n / 16) == 0) {
        tiled_rows = (i1 - i0) / 16 * 16;
        tiled_cols = n / 16 * 16;
        atomic_fetch_add_explicit(&qg_amx_calls, 1, memory_order_relaxed);
    }
#endif
    qg_scratch sc;
    qg_scratch * s = qg_get_scratch(&sc, (size_t) (pairs * width)) ? &sc : NULL;
    // Columns in blocks of up to QG_BLOCK_N: each block is packed once and
    // the thread's rows stream past it.
    for (int64_t j0 = 0; j0 < n; j0 += QG_BLOCK_N) {
        const int nb = (int) (n - j0 < QG_BLOCK_N ? n - j0 : QG_BLOCK_N);
        const int64_t r0 = j0 < tiled_cols ? i0 + tiled_rows : i0;
        if (r0 >= i1) continue;
        const block_q8_0 * bj = (const block_q8_0 *) b + j0 * ldb;
        float * cj = c + j0 * ldc;
        if (s == NULL) {
            qg_rows_plain((const block_q8_0 *) a, lda, nb, k, bj, ldb, cj, ldc, r0, i1);
            continue;
        }
        qg_pack(bj, ldb, nb, k, s->xu, s->dx);
        qg_rows[nb]((const block_q8_0 *) a, lda, k, s->xu, s->dx, cj, ldc, r0, i1);
    }
}

#endif // QG_HAVE

#if defined(__linux__)
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
#if QG_HAVE
    if (Atype == GGML_TYPE_Q8_0 && Btype == GGML_TYPE_Q8_0 && Ctype == GGML_TYPE_F32 && n >= 1 &&
        n <= LLMRT_Q8_GEMM_MAX_N && k >= 1 && k <= QG_MAX_K && atomic_load_explicit(&qg_enabled, memory_order_relaxed)) {
        if (params->ith == 0) atomic_fetch_add_explicit(&qg_calls, 1, memory_order_relaxed);
        // Tiles need 16 columns: a decode step's matmuls skip the pool lookup.
        const int tiles = n >= 16 && llmrt_q8_tiles_allowed(params->threadpool);
        qg_run(params->ith, params->nth, m, n, k, A, lda, B, ldb, (float *) C, ldc, tiles);
        return true;
    }
#endif
    return __real_llamafile_sgemm(params, m, n, k, A, lda, B, ldb, C, ldc, Atype, Btype, Ctype);
}
#endif // __linux__

int llmrt_q8_gemm(int64_t m, int64_t n, int64_t k, const void * a, int64_t lda, const void * b, int64_t ldb,
                        float * c, int64_t ldc) {
#if QG_HAVE
    if (m < 0 || n < 1 || n > LLMRT_Q8_GEMM_MAX_N || k < 1 || k > QG_MAX_K || lda < k || ldb < k || ldc < m) return -1;
    qg_run(0, 1, m, n, k, a, lda, b, ldb, c, ldc, 1);
    return 0;
#else
    (void) m; (void) n; (void) k; (void) a; (void) lda; (void) b; (void) ldb; (void) c; (void) ldc;
    return -1;
#endif
}
