// memory.cpp: what llama.cpp allocated for a context, from its own
// accounting (llama_context::memory_breakdown, an internal API: the
// public llama_memory_breakdown_print only logs it).
#include "llama-context.h"
#include "memory.h"

extern "C" int llmrt_ctx_memory(const struct llama_context * ctx, size_t * model, size_t * context, size_t * compute) {
    *model = *context = *compute = 0;
    if (!ctx) {
        return -1;
    }
    try {
        for (const auto & kv : ctx->memory_breakdown()) {
            *model += kv.second.model;
            *context += kv.second.context;
            *compute += kv.second.compute;
        }
    } catch (...) {
        return -1;
    }
    return 0;
}

extern "C" int llmrt_ctx_memory_by_buft(const struct llama_context * ctx, const char ** names, size_t * model,
                                        size_t * context, size_t * compute, int max) {
    if (!ctx) {
        return -1;
    }
    try {
        int n = 0;
        for (const auto & kv : ctx->memory_breakdown()) {
            if (n < max) {
                names[n] = ggml_backend_buft_name(kv.first);
                model[n] = kv.second.model;
                context[n] = kv.second.context;
                compute[n] = kv.second.compute;
            }
            n++;
        }
        return n;
    } catch (...) {
        return -1;
    }
}
