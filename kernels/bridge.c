#include "bridge.h"
#include "_cgo_export.h"
#include "ggml-cpu.h"

bool llmrt_abort_cb(void * data) {
    llmrt_abort_t * a = (llmrt_abort_t *) data;
    return a != NULL && __atomic_load_n(&a->flag, __ATOMIC_RELAXED) != 0;
}

static bool llmrt_progress_cb(float progress, void * user) {
    return goLoadProgress((uintptr_t) user, progress);
}

struct llama_model * llmrt_load_model(const char * path, struct llama_model_params params, uintptr_t handle, bool with_progress,
                                      llmrt_err * err) {
    if (with_progress) {
        params.progress_callback = llmrt_progress_cb;
        params.progress_callback_user_data = (void *) handle;
    }
    return llmrt_model_load(path, params, err);
}

// Set while this thread runs a call whose warnings and errors the Go side
// returns in its error (so they are not logged a second time).
static _Thread_local int llmrt_log_quiet;

static void llmrt_log_cb(enum ggml_log_level level, const char * text, void * user) {
    (void) user;
    goLog((int) level, (char *) text, llmrt_log_quiet);
}

int llmrt_model_quantize_quiet(const char * in, const char * out_path, int32_t ftype, int32_t nthread, uint32_t * out,
                               llmrt_err * err) {
    llmrt_log_quiet = 1;
    int rc = llmrt_model_quantize(in, out_path, ftype, nthread, false, false, out, err);
    llmrt_log_quiet = 0;
    return rc;
}

void llmrt_set_log(void) { llama_log_set(llmrt_log_cb, NULL); }

void llmrt_ctx_params_set_abort(struct llama_context_params * p, llmrt_abort_t * a) {
    p->abort_callback = llmrt_abort_cb;
    p->abort_callback_data = a;
}

float * llmrt_alloc_split(void) {
    return (float *) calloc(llama_max_devices(), sizeof(float));
}

// A pool of n threads that polls at LLMRT_POOL_POLL before it sleeps.
static struct ggml_threadpool * llmrt_pool_new(int n) {
    struct ggml_threadpool_params tpp = ggml_threadpool_params_default(n);
    tpp.poll = LLMRT_POOL_POLL;
    return ggml_threadpool_new(&tpp);
}

int llmrt_pools_attach(struct llama_context * ctx, int n_threads, int n_threads_batch, llmrt_pools * p) {
    p->decode = NULL;
    p->batch = NULL;
    p->n_decode = p->n_batch = 0;
    if (ctx == NULL || n_threads < 1 || n_threads_batch < 1) return -1;
    p->decode = llmrt_pool_new(n_threads);
    if (p->decode == NULL) return -1;
    p->batch = p->decode;
    if (n_threads_batch != n_threads) {
        p->batch = llmrt_pool_new(n_threads_batch);
        if (p->batch == NULL) {
            ggml_threadpool_free(p->decode);
            p->decode = NULL;
            return -1;
        }
    }
    llama_attach_threadpool(ctx, p->decode, p->batch);
    p->n_decode = n_threads;
    p->n_batch = n_threads_batch;
    return 0;
}

void llmrt_pools_free(struct llama_context * ctx, llmrt_pools * p) {
    if (ctx != NULL && p->decode != NULL) llama_detach_threadpool(ctx);
    if (p->batch != NULL && p->batch != p->decode) ggml_threadpool_free(p->batch);
    if (p->decode != NULL) ggml_threadpool_free(p->decode);
    p->decode = NULL;
    p->batch = NULL;
    p->n_decode = p->n_batch = 0;
}
