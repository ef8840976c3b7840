// machine.c: measurements of this machine's limits for the benchmarks
// (read bandwidth, OpenBLAS fp32 GEMM, ggml's Q8_0 matmul), and a minimal
// llama.cpp generation loop that the Go engine is compared with.
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "machine.h"
#include "bridge.h"
#include "ggml-cpu.h"
#include "q8gemm.h"
#include <cblas.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// --- memory bandwidth: every thread sums its share of a large buffer ---

typedef struct { const float * p; size_t n; float sum; } sum_job;

static void * sum_worker(void * arg) {
    sum_job * j = (sum_job *) arg;
    // 8 independent accumulators so the compiler vectorises and the loop
    // is bound by memory, not by the add latency.
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= j->n; i += 8) {
        for (int k = 0; k < 8; k++) acc[k] += j->p[i + k];
    }
    for (; i < j->n; i++) acc[0] += j->p[i];
    float s = 0;
    for (int k = 0; k < 8; k++) s += acc[k];
    j->sum = s;
    return NULL;
}

double llmrt_mem_bandwidth(size_t bytes, int threads, int reps) {
    if (threads < 1 || threads > 256 || reps < 1 || bytes < 1024) return -1;
    size_t n = bytes / sizeof(float);
    float * buf = (float *) malloc(n * sizeof(float));
    if (!buf) return -1;
    for (size_t i = 0; i < n; i++) buf[i] = (float) (i & 7); // touch every page
    pthread_t tid[256];
    sum_job jobs[256];
    double best = 0;
    volatile float sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        int started = 0;
        for (int t = 0; t < threads; t++) {
            size_t lo = n * t / threads, hi = n * (t + 1) / threads;
            jobs[t] = (sum_job) { buf + lo, hi - lo, 0 };
            if (pthread_create(&tid[t], NULL, sum_worker, &jobs[t]) != 0) break;
            started++;
        }
        for (int t = 0; t < started; t++) { pthread_join(tid[t], NULL); sink += jobs[t].sum; }
        if (started != threads) { free(buf); return -1; }
        double bw = (double) (n * sizeof(float)) / (now_s() - t0);
        if (bw > best) best = bw;
    }
    (void) sink;
    free(buf);
    return best;
}

// --- OpenBLAS's fp32 GEMM: the machine's fp32 limit ---

double llmrt_sgemm_flops(int m, int n, int k, int threads, int reps) {
    if (m < 1 || n < 1 || k < 1 || threads < 1 || reps < 1) return -1;
    float * a = (float *) malloc((size_t) m * k * sizeof(float));
    float * b = (float *) malloc((size_t) k * n * sizeof(float));
    float * c = (float *) malloc((size_t) m * n * sizeof(float));
    if (!a || !b || !c) { free(a); free(b); free(c); return -1; }
    for (size_t i = 0; i < (size_t) m * k; i++) a[i] = (float) ((i % 13) - 6) * 0.01f;
    for (size_t i = 0; i < (size_t) k * n; i++) b[i] = (float) ((i % 7) - 3) * 0.01f;
    openblas_set_num_threads(threads);
    // One untimed call: OpenBLAS starts its threads on first use.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
        double fl = 2.0 * m * n * k / (now_s() - t0);
        if (fl > best) best = fl;
    }
    free(a); free(b); free(c);
    return best;
}

// --- ggml's Q8_0 matmul: a yardstick for Q8_0 prompt processing ---

double llmrt_gemm_flops(int m, int n, int k, int threads, int reps, int wtype) {
    if (m < 1 || n < 1 || k < 1 || threads < 1 || reps < 1) return -1;
    if (wtype != GGML_TYPE_F32 && wtype != GGML_TYPE_Q8_0) return -1;
    if (wtype == GGML_TYPE_Q8_0 && k % 32 != 0) return -1;
    struct ggml_cgraph * gf;
    struct ggml_tensor * c;
    struct ggml_context * ctx = llmrt_mul_mat_graph(m, n, k, wtype, NULL, NULL, &gf, &c);
    if (!ctx) return -1;
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        if (ggml_graph_compute_with_ctx(ctx, gf, threads) != GGML_STATUS_SUCCESS) { ggml_free(ctx); return -1; }
        double fl = 2.0 * m * n * k / (now_s() - t0);
        if (fl > best) best = fl;
    }
    ggml_free(ctx);
    return best;
}

// --- the raw llama.cpp loop ---

int llmrt_raw_bench(const char * path, int n_prompt, int n_gen, int threads, int n_ctx, llmrt_raw_result * out) {
    memset(out, 0, sizeof(*out));
    if (n_prompt < 1 || n_gen < 1 || n_prompt + n_gen > n_ctx) return 1;
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model * model = llama_model_load_from_file(path, mp);
    if (!model) return 2;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_prompt;
    cp.n_ubatch = n_prompt;
    cp.n_seq_max = 1;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    // The rest as kernels.NewContext sets them for the engine's context:
    // one KV buffer, perf counters kept, an abort flag polled per node.
    cp.kv_unified = true;
    cp.no_perf = false;
    llmrt_abort_t abort_flag = {0};
    llmrt_ctx_params_set_abort(&cp, &abort_flag);
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { llama_model_free(model); return 3; }
    // The same worker pools as the engine's contexts (bridge.h), so that
    // the two loops make the same llama.cpp calls.
    llmrt_pools pools;
    if (llmrt_pools_attach(ctx, threads, threads, &pools) != 0) { llama_free(ctx); llama_model_free(model); return 7; }
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    struct llama_batch batch = llama_batch_init(n_prompt, 0, 1);
    int rc = 0;
    // A fixed pseudo-random prompt of valid tokens.
    uint32_t x = 12345;
    for (int i = 0; i < n_prompt; i++) {
        x = x * 1664525u + 1013904223u;
        batch.token[i] = (llama_token) (x % (uint32_t) n_vocab);
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = i == n_prompt - 1;
    }
    batch.n_tokens = n_prompt;
    // One untimed pass first: the weights are mmapped, and the first pass
    // over them pays the page faults (the engine it is compared with has
    // been warm since its first request).
    if (llama_decode(ctx, batch) != 0) { rc = 4; goto done; }
    llama_memory_clear(llama_get_memory(ctx), true);
    double t0 = now_s();
    if (llama_decode(ctx, batch) != 0) { rc = 4; goto done; }
    double t1 = now_s();
    out->prompt_seconds = t1 - t0;
    // A chain holding greedy, as kernels.NewSampler builds for greedy.
    struct llama_sampler_chain_params sp = llama_sampler_chain_default_params();
    sp.no_perf = true;
    struct llama_sampler * smpl = llama_sampler_chain_init(sp);
    if (!smpl) { rc = 5; goto done; }
    struct llama_sampler * greedy = llama_sampler_init_greedy();
    if (!greedy) { llama_sampler_free(smpl); rc = 5; goto done; }
    llama_sampler_chain_add(smpl, greedy); // the chain owns it now
    int idx = n_prompt - 1;
    for (int i = 0; i < n_gen; i++) {
        llama_token tok = llama_sampler_sample(smpl, ctx, idx);
        batch.token[0] = tok;
        batch.pos[0] = n_prompt + i;
        batch.n_seq_id[0] = 1;
        batch.seq_id[0][0] = 0;
        batch.logits[0] = 1;
        batch.n_tokens = 1;
        idx = 0;
        if (llama_decode(ctx, batch) != 0) { rc = 6; break; }
    }
    out->gen_seconds = now_s() - t1;
    llama_sampler_free(smpl);
done:
    llama_batch_free(batch);
    llama_free(ctx);
    llmrt_pools_free(NULL, &pools);
    llama_model_free(model);
    return rc;
}
