// q8amx.c: training's matmuls on Intel AMX tiles: the Q8_0 x Q8_0 matmul
// of the forward pass on AMX-INT8 (for q8gemm.c), and the input gradient
// through Q8_0 weights on AMX-BF16 (for outprod.c, at the end of the file).
//
// On CPUs with AMX-INT8 one TDPBSSD instruction multiplies a 16x32 tile of
// int8 by a 32x16 one into 16x16 int32 sums: 8,192 multiply-adds, against
// 64 for a 512-bit VNNI dot product. Q8_0 gives every 32 values their own
// scale, so each product covers exactly one block; its 16x16 sums go
// through memory to be scaled (token scale times weight scale) and added to
// float accumulators held in registers.
//
// Orientation: a tile row is one token (column of the matmul), so the
// activations load straight from ggml's Q8_0 buffer with the row stride of
// a column, and a token's 16 outputs are one vector stored contiguously.
// The weights are the instruction's second operand, which wants groups of
// 4 consecutive int8 of each output row side by side ("VNNI" order); a
// thread repacks each 16-row panel of weights once and reuses it for every
// 16 tokens.
//
// ggml-cpu is built without AMX (the Makefile says why), so these functions
// carry their own target attribute and run only after a CPUID check and the
// kernel's permission for tile data (arch_prctl ARCH_REQ_XCOMP_PERM).
#include "q8amx.h"
#include "scratch.h"

#if QA_HAVE

#include "ggml.h"
#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cpuid.h>
#include <immintrin.h>

#define QA_ARCH_GET_XCOMP_PERM 0x1022
#define QA_ARCH_REQ_XCOMP_PERM 0x1023
#define QA_XFEATURE_XTILEDATA 18

static pthread_once_t qa_once = PTHREAD_ONCE_INIT;
static int qa_ok;      // AMX-INT8 usable
static int qa_bf16_ok; // and AMX-BF16 with AVX512-BF16's conversions
static atomic_int qa_enabled = 1;

// The CPU has AMX-TILE and AMX-INT8, the OS saves tile state (XCR0 bits 17
// and 18), and this process may use it.
static void qa_probe(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    const unsigned amx_tile = 1u << 24, amx_int8 = 1u << 25;
    if ((d & amx_tile) == 0 || (d & amx_int8) == 0) return;
    if (!__get_cpuid(1, &a, &b, &c, &d) || (c & (1u << 27)) == 0) return; // OSXSAVE
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return;
    if (syscall(SYS_arch_prctl, QA_ARCH_REQ_XCOMP_PERM, QA_XFEATURE_XTILEDATA) != 0) return;
    unsigned long perm = 0;
    if (syscall(SYS_arch_prctl, QA_ARCH_GET_XCOMP_PERM, &perm) != 0) return;
    qa_ok = (perm & (1ul << QA_XFEATURE_XTILEDATA)) != 0;
    const unsigned amx_bf16 = 1u << 22, avx512_bf16 = 1u << 5;
    unsigned a1, b1, c1, d1;
    qa_bf16_ok = qa_ok && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & amx_bf16) != 0 &&
                 __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && (a1 & avx512_bf16) != 0;
}

int llmrt_bf16_amx_available(void) {
    if (pthread_once(&qa_once, qa_probe) != 0) return 0;
    return qa_bf16_ok;
}

int llmrt_q8_amx_available(void) {
    if (pthread_once(&qa_once, qa_probe) != 0) return 0;
    return qa_ok;
}

void llmrt_q8_amx_enable(int on) { atomic_store(&qa_enabled, on != 0); }

int llmrt_q8_amx_enabled(void) { return atomic_load(&qa_enabled); }

int qa_usable(void) {
    return atomic_load_explicit(&qa_enabled, memory_order_relaxed) && llmrt_q8_amx_available();
}

// The 64-byte tile configuration (palette 1). Tiles (the intrinsics take
// their numbers as literals): sums 0 and 1, tokens 2 and 3, weights 4 and
// 5, so that two blocks are in flight per loop step.
typedef struct {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed, aligned(64))) qa_tilecfg;

__attribute__((target("amx-tile"))) static void qa_configure(void) {
    qa_tilecfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int t = 0; t <= 1; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; } // 16 tokens x 16 int32
    for (int t = 2; t <= 3; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 32; } // 16 tokens x 32 int8
    for (int t = 4; t <= 5; t++) { cfg.rows[t] = 8; cfg.colsb[t] = 64; }  // 32 int8 x 16 rows, VNNI
    // The intrinsic's asm names only the first 8 bytes as its input, so
    // without this barrier GCC drops the stores above.
    __asm__ volatile("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

// This thread's scratch: one packed weight panel and the token scales.
typedef struct {
    int8_t * w; // [block][8][64]: a 16-row panel in VNNI order
    float * wd; // [block][16]: the panel's row scales
    float * xd; // [block][column]: token scales
} qa_scratch;

static int qa_get_scratch(qa_scratch * s, size_t blocks, size_t cells) {
    s->w = (int8_t *) llmrt_scratch(LLMRT_SCRATCH_QA_W, blocks * 512);
    s->wd = (float *) llmrt_scratch(LLMRT_SCRATCH_QA_WD, blocks * 16 * sizeof(float));
    s->xd = (float *) llmrt_scratch(LLMRT_SCRATCH_QA_XD, cells * sizeof(float));
    return s->w != NULL && s->wd != NULL && s->xd != NULL;
}

// Packs 16 weight rows (row stride lda blocks) of k blocks: for block l,
// 32-bit group g of row r goes to w[l][g][r], i.e. byte offset
// l*512 + g*64 + r*4, which is the B-operand order of TDPBSSD.
static void qa_pack_weights(const block_q8_0 * a, int64_t lda, int64_t k, int8_t * w, float * wd) {
    for (int64_t l = 0; l < k; l++) {
        uint32_t * dst = (uint32_t *) (w + l * 512);
        for (int r = 0; r < 16; r++) {
            const block_q8_0 * blk = a + r * lda + l;
            uint32_t g[8];
            memcpy(g, blk->qs, sizeof(g));
            for (int q = 0; q < 8; q++) dst[q * 16 + r] = g[q];
            wd[l * 16 + r] = _cvtsh_ss(blk->d);
        }
    }
}

// Scales one block's 16x16 sums and adds them to acc: row t (a token) gets
// sums[t] * xd[t] * wd, wd being the 16 rows' scales.
#define QA_SCALE_ADD(acc, sums, xdp, wdv)                                                            \
    for (int t = 0; t < 16; t++) {                                                                   \
        const __m512 s = _mm512_mul_ps(_mm512_set1_ps((xdp)[t]), (wdv));                             \
        (acc)[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512((sums) + t * 16)), s, (acc)[t]); \
    }

// Computes c[j][i] for 16-row panels of rows [i0, i0 + 16*panels) and
// 16-token groups of columns [0, 16*groups). xd holds the token scales,
// [block][column] with n columns per block.
__attribute__((target("amx-tile,amx-int8,avx512f"))) static void
qa_tiles(const block_q8_0 * a, int64_t lda, const block_q8_0 * b, int64_t ldb, int64_t k, const float * xd, int64_t n,
         float * c, int64_t ldc, int64_t i0, int64_t panels, int64_t groups, qa_scratch * s) {
    int32_t sums[2][256] __attribute__((aligned(64)));
    const int64_t xstride = ldb * (int64_t) sizeof(block_q8_0); // bytes between tokens
    for (int64_t p = 0; p < panels; p++) {
        const int64_t i = i0 + 16 * p;
        qa_pack_weights(a + i * lda, lda, k, s->w, s->wd);
        for (int64_t g = 0; g < groups; g++) {
            const int64_t j = 16 * g;
            const block_q8_0 * bj = b + j * ldb;
            __m512 acc[16];
            for (int t = 0; t < 16; t++) acc[t] = _mm512_setzero_ps();
            int64_t l = 0;
            for (; l + 1 < k; l += 2) {
                _tile_zero(0);
                _tile_zero(1);
                _tile_loadd(2, bj[l].qs, xstride);
                _tile_loadd(4, s->w + l * 512, 64);
                _tile_loadd(3, bj[l + 1].qs, xstride);
                _tile_loadd(5, s->w + (l + 1) * 512, 64);
                _tile_dpbssd(0, 2, 4);
                _tile_dpbssd(1, 3, 5);
                _tile_stored(0, sums[0], 64);
                _tile_stored(1, sums[1], 64);
                const __m512 wd0 = _mm512_load_ps(s->wd + l * 16);
                const __m512 wd1 = _mm512_load_ps(s->wd + (l + 1) * 16);
                QA_SCALE_ADD(acc, sums[0], xd + l * n + j, wd0);
                QA_SCALE_ADD(acc, sums[1], xd + (l + 1) * n + j, wd1);
            }
            if (l < k) {
                _tile_zero(0);
                _tile_loadd(2, bj[l].qs, xstride);
                _tile_loadd(4, s->w + l * 512, 64);
                _tile_dpbssd(0, 2, 4);
                _tile_stored(0, sums[0], 64);
                const __m512 wd0 = _mm512_load_ps(s->wd + l * 16);
                QA_SCALE_ADD(acc, sums[0], xd + l * n + j, wd0);
            }
            for (int t = 0; t < 16; t++) _mm512_storeu_ps(c + (j + t) * ldc + i, acc[t]);
        }
    }
}

__attribute__((target("amx-tile"))) static void qa_release(void) { _tile_release(); }

int qa_run(const void * av, int64_t lda, const void * bv, int64_t ldb, int64_t k, int64_t n, float * c,
           int64_t ldc, int64_t i0, int64_t panels, int64_t groups) {
    const block_q8_0 * a = (const block_q8_0 *) av;
    const block_q8_0 * b = (const block_q8_0 *) bv;
    if (panels <= 0 || groups <= 0) return 0;
    qa_scratch sc, * s = &sc;
    if (!qa_get_scratch(s, (size_t) k, (size_t) (k * n))) return -1;
    for (int64_t l = 0; l < k; l++) {
        for (int64_t j = 0; j < 16 * groups; j++) s->xd[l * n + j] = _cvtsh_ss(b[j * ldb + l].d);
    }
    qa_configure();
    qa_tiles(a, lda, b, ldb, k, s->xd, n, c, ldc, i0, panels, groups, s);
    qa_release();
    return 0;
}

// ---- the input gradient on AMX-BF16 -------------------------------------
//
// dst[t][i] = sum over o of g[t][o] * W[o][i] (outprod.c's shape) with the
// gradient and the dequantized weights rounded to bf16 and the sums kept
// in fp32 tiles over the whole reduction, as mixed-precision training does
// on GPUs. Tiles: sums 0-3 (2x2 of 16 tokens by 16 features), gradient 4-5
// (16 tokens by 32 o), weights 6-7 (16 pairs of o by 16 features, pairs
// side by side: TDPBF16PS's operand order).

__attribute__((target("amx-tile"))) static void qa_configure_bf16(void) {
    qa_tilecfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    __asm__ volatile("" : : "r"(&cfg) : "memory"); // see qa_configure
    _tile_loadconfig(&cfg);
}

// Converts rows [t0, t0 + 16*tt) of the gradient (row stride lda floats,
// k contiguous floats per row) to bf16 rows of kp (k rounded up to 32,
// zero-padded) values.
__attribute__((target("avx512f,avx512bf16"))) static void qa_pack_grad(const float * g, size_t lda, int64_t k, int64_t kp,
                                                                     int64_t rows, uint16_t * out) {
    for (int64_t t = 0; t < rows; t++) {
        const float * src = g + t * lda;
        uint16_t * dst = out + t * kp;
        for (int64_t o = 0; o < kp; o += 32) {
            const __mmask16 m0 = o + 16 <= k ? 0xffff : (o < k ? (__mmask16) ((1u << (k - o)) - 1) : 0);
            const __mmask16 m1 = o + 32 <= k ? 0xffff : (o + 16 < k ? (__mmask16) ((1u << (k - o - 16)) - 1) : 0);
            const __m512 lo = _mm512_maskz_loadu_ps(m0, src + o);
            const __m512 hi = _mm512_maskz_loadu_ps(m1, src + o + 16);
            _mm512_storeu_si512(dst + o, (__m512i) _mm512_cvtne2ps_pbh(hi, lo));
        }
    }
}

// Packs features [c0, c0 + 32) of the Q8_0 rows of W (k rows, stride ldw
// bytes) as two weight tiles per 32 rows: out[step][tile][pair][16][2].
__attribute__((target("avx512f,avx512bf16"))) static void qa_pack_w_bf16(const char * w, size_t ldw, int64_t k, int64_t kp,
                                                                       int64_t c0, uint16_t * out) {
    const __m512i lo_idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi_idx = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    for (int64_t o = 0; o < kp; o += 2) {
        __m512 r[2][2]; // [row o, o+1][features 0-15, 16-31]
        for (int h = 0; h < 2; h++) {
            if (o + h >= k) {
                r[h][0] = r[h][1] = _mm512_setzero_ps();
                continue;
            }
            const block_q8_0 * blk = (const block_q8_0 *) (w + (o + h) * ldw) + c0 / QK8_0;
            const __m512 d = _mm512_set1_ps(_cvtsh_ss(blk->d));
            r[h][0] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *) blk->qs))), d);
            r[h][1] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *) (blk->qs + 16)))), d);
        }
        const int64_t step = o / 32, pair = (o % 32) / 2;
        for (int f = 0; f < 2; f++) {
            // Interleave rows o and o+1 feature by feature: 32 bf16 = one tile row.
            const __m512 first = _mm512_permutex2var_ps(r[0][f], lo_idx, r[1][f]);  // features 0-7 of this half
            const __m512 second = _mm512_permutex2var_ps(r[0][f], hi_idx, r[1][f]); // features 8-15
            uint16_t * dst = out + ((step * 2 + f) * 16 + pair) * 32;
            _mm512_storeu_si512(dst, (__m512i) _mm512_cvtne2ps_pbh(second, first));
        }
    }
}

// Adds (or, for the first chunk of the reduction, stores) one chunk's
// products for 32 features of every group of 32 tokens.
__attribute__((target("amx-tile,amx-bf16,avx512f"))) static void qa_outprod_tiles(const uint16_t * gb, int64_t kp, int64_t tokens,
                                                                                 const uint16_t * wb, float * c, size_t ldc, int add) {
    const size_t gstride = (size_t) kp * sizeof(uint16_t), cstride = ldc * sizeof(float);
    for (int64_t t = 0; t < tokens; t += 32) {
        float * c0 = c + t * ldc;
        float * c1 = c0 + 16 * ldc;
        if (add) {
            _tile_loadd(0, c0, cstride);
            _tile_loadd(1, c0 + 16, cstride);
            _tile_loadd(2, c1, cstride);
            _tile_loadd(3, c1 + 16, cstride);
        } else {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
        }
        const uint16_t * g0 = gb + t * kp;
        const uint16_t * g1 = g0 + 16 * kp;
        for (int64_t step = 0; step < kp / 32; step++) {
            _tile_loadd(4, g0 + step * 32, gstride);
            _tile_loadd(5, g1 + step * 32, gstride);
            _tile_loadd(6, wb + (step * 2 + 0) * 512, 64);
            _tile_loadd(7, wb + (step * 2 + 1) * 512, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, c0, cstride);
        _tile_stored(1, c0 + 16, cstride);
        _tile_stored(2, c1, cstride);
        _tile_stored(3, c1 + 16, cstride);
    }
}

int qa_outprod(const char * w, size_t ldw, int64_t k, const float * g, size_t lda, int64_t tokens, float * c, size_t ldc,
               int64_t f0, int64_t f1) {
    if (tokens <= 0 || f1 <= f0) return 0;
    // The reduction in chunks, so that the bf16 copies stay small (the
    // output head's reduces over the whole vocabulary).
    enum { KC = 1024 };
    const int64_t kmax = k < KC ? (k + 31) / 32 * 32 : KC;
    uint16_t * gb = (uint16_t *) llmrt_scratch(LLMRT_SCRATCH_QA_G, (size_t) (tokens * kmax) * sizeof(uint16_t));
    uint16_t * wb = (uint16_t *) llmrt_scratch(LLMRT_SCRATCH_QA_W, (size_t) kmax * 32 * sizeof(uint16_t));
    if (gb == NULL || wb == NULL) return -1;
    qa_configure_bf16();
    for (int64_t k0 = 0; k0 < k; k0 += KC) {
        const int64_t kc = k - k0 < KC ? k - k0 : KC, kp = (kc + 31) / 32 * 32;
        qa_pack_grad(g + k0, lda, kc, kp, tokens, gb);
        for (int64_t c0 = f0; c0 < f1; c0 += 32) {
            qa_pack_w_bf16(w + k0 * ldw, ldw, kc, kp, c0, wb);
            qa_outprod_tiles(gb, kp, tokens, wb, c + c0, ldc, k0 > 0);
        }
    }
    qa_release();
    return 0;
}

#else // !QA_HAVE

int llmrt_q8_amx_available(void) { return 0; }

int llmrt_bf16_amx_available(void) { return 0; }

static int qa_enabled = 1;

void llmrt_q8_amx_enable(int on) { qa_enabled = on != 0; }

int llmrt_q8_amx_enabled(void) { return qa_enabled; }

#endif
