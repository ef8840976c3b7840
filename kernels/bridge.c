#include "bridge.h"
#include "_cgo_export.h"

bool llmrt_abort_cb(void * data) {
    llmrt_abort_t * a = (llmrt_abort_t *) data;
    return a != NULL && __atomic_load_n(&a->flag, __ATOMIC_RELAXED) != 0;
}

static bool llmrt_progress_cb(float progress, void * user) {
    return goLoadProgress((uintptr_t) user, progress);
}

struct llama_model * llmrt_load_model(const char * path, struct llama_model_params params, uintptr_t handle, bool with_progress) {
    if (with_progress) {
        params.progress_callback = llmrt_progress_cb;
        params.progress_callback_user_data = (void *) handle;
    }
    return llama_model_load_from_file(path, params);
}

static void llmrt_log_cb(enum ggml_log_level level, const char * text, void * user) {
    (void) user;
    goLog((int) level, (char *) text);
}

void llmrt_set_log(void) { llama_log_set(llmrt_log_cb, NULL); }

void llmrt_ctx_params_set_abort(struct llama_context_params * p, llmrt_abort_t * a) {
    p->abort_callback = llmrt_abort_cb;
    p->abort_callback_data = a;
}

float * llmrt_alloc_split(void) {
    return (float *) calloc(llama_max_devices(), sizeof(float));
}

uint32_t llmrt_quantize(const char * in, const char * out, int32_t ftype, int32_t nthread, bool allow_requantize, bool pure) {
    llama_model_quantize_params p = llama_model_quantize_default_params();
    p.ftype = (enum llama_ftype) ftype;
    p.nthread = nthread;
    p.allow_requantize = allow_requantize;
    p.pure = pure;
    return llama_model_quantize(in, out, &p);
}

int32_t llmrt_argmax(const float * v, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        if (v[i] > v[best]) best = i;
    }
    return best;
}
