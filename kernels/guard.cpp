// guard.cpp: the exception-catching wrappers declared in guard.h.
#include "guard.h"

#include <cmath>
#include <cstdio>
#include <exception>
#include <new>

namespace {

void put(llmrt_err * err, const char * what) {
    if (err) {
        snprintf(err->msg, sizeof err->msg, "%s", what ? what : "unknown C++ exception");
    }
}

// Runs f, turning any exception into LLMRT_EXCEPTION and a message.
template <typename F> int guarded(llmrt_err * err, F && f) {
    try {
        f();
        return 0;
    } catch (const std::bad_alloc &) {
        put(err, "out of memory");
    } catch (const std::exception & e) {
        put(err, e.what());
    } catch (...) {
        put(err, nullptr);
    }
    return LLMRT_EXCEPTION;
}

// The dead-end sampler (guard.h): its state is one flag.
struct dead_end {
    int32_t tripped = 0;
};

const char * dead_end_name(const llama_sampler *) { return "llmrt-dead-end"; }

void dead_end_apply(llama_sampler * smpl, llama_token_data_array * cur) {
    for (size_t i = 0; i < cur->size; ++i) {
        if (cur->data[i].logit != -INFINITY) {
            return;
        }
    }
    static_cast<dead_end *>(smpl->ctx)->tripped = 1;
    if (cur->size > 0) {
        cur->data[0].logit = 0.0f;
    }
}

void dead_end_reset(llama_sampler * smpl) { static_cast<dead_end *>(smpl->ctx)->tripped = 0; }

void dead_end_free(llama_sampler * smpl) { delete static_cast<dead_end *>(smpl->ctx); }

llama_sampler * dead_end_clone(const llama_sampler * smpl);

const llama_sampler_i dead_end_iface = {
    /* .name   = */ dead_end_name,
    /* .accept = */ nullptr,
    /* .apply  = */ dead_end_apply,
    /* .reset  = */ dead_end_reset,
    /* .clone  = */ dead_end_clone,
    /* .free   = */ dead_end_free,
};

llama_sampler * dead_end_clone(const llama_sampler *) {
    dead_end * st = new (std::nothrow) dead_end();
    return st ? llama_sampler_init(&dead_end_iface, st) : nullptr;
}

} // namespace

extern "C" {

llama_sampler * llmrt_sampler_init_dead_end(int32_t ** tripped) {
    dead_end * st = new (std::nothrow) dead_end();
    if (!st) {
        return nullptr;
    }
    llama_sampler * s = nullptr;
    try {
        s = llama_sampler_init(&dead_end_iface, st);
    } catch (...) {
    }
    if (!s) {
        delete st;
        return nullptr;
    }
    *tripped = &st->tripped;
    return s;
}

int llmrt_tokenize(const llama_vocab * vocab, const char * text, int32_t text_len, llama_token * tokens, int32_t n_tokens_max,
                   bool add_special, bool parse_special, int32_t * out, llmrt_err * err) {
    return guarded(err, [&] { *out = llama_tokenize(vocab, text, text_len, tokens, n_tokens_max, add_special, parse_special); });
}

int llmrt_detokenize(const llama_vocab * vocab, const llama_token * tokens, int32_t n_tokens, char * text, int32_t text_len_max,
                     bool remove_special, bool unparse_special, int32_t * out, llmrt_err * err) {
    return guarded(err, [&] {
        *out = llama_detokenize(vocab, tokens, n_tokens, text, text_len_max, remove_special, unparse_special);
    });
}

int llmrt_token_to_piece(const llama_vocab * vocab, llama_token token, char * buf, int32_t length, int32_t lstrip, bool special,
                         int32_t * out, llmrt_err * err) {
    return guarded(err, [&] { *out = llama_token_to_piece(vocab, token, buf, length, lstrip, special); });
}

int llmrt_vocab_is_eog(const llama_vocab * vocab, llama_token token, bool * out, llmrt_err * err) {
    return guarded(err, [&] { *out = llama_vocab_is_eog(vocab, token); });
}

int llmrt_vocab_is_control(const llama_vocab * vocab, llama_token token, bool * out, llmrt_err * err) {
    return guarded(err, [&] { *out = llama_vocab_is_control(vocab, token); });
}

int llmrt_chat_apply_template(const char * tmpl, const llama_chat_message * chat, size_t n_msg, bool add_ass, char * buf,
                              int32_t length, int32_t * out, llmrt_err * err) {
    return guarded(err, [&] { *out = llama_chat_apply_template(tmpl, chat, n_msg, add_ass, buf, length); });
}

int llmrt_decode(llama_context * ctx, llama_batch batch, int32_t * out, llmrt_err * err) {
    return guarded(err, [&] { *out = llama_decode(ctx, batch); });
}

int llmrt_sampler_sample(llama_sampler * smpl, llama_context * ctx, int32_t idx, llama_token * out, llmrt_err * err) {
    return guarded(err, [&] { *out = llama_sampler_sample(smpl, ctx, idx); });
}

int llmrt_sampler_accept(llama_sampler * smpl, llama_token token, llmrt_err * err) {
    return guarded(err, [&] { llama_sampler_accept(smpl, token); });
}

int llmrt_sampler_reset(llama_sampler * smpl, llmrt_err * err) {
    return guarded(err, [&] { llama_sampler_reset(smpl); });
}

llama_sampler * llmrt_sampler_init_grammar(const llama_vocab * vocab, const char * grammar, const char * root, llmrt_err * err) {
    llama_sampler * s = nullptr;
    guarded(err, [&] { s = llama_sampler_init_grammar(vocab, grammar, root); });
    return s;
}

llama_model * llmrt_model_load(const char * path, llama_model_params params, llmrt_err * err) {
    llama_model * m = nullptr;
    guarded(err, [&] { m = llama_model_load_from_file(path, params); });
    return m;
}

llama_context * llmrt_init_from_model(llama_model * model, llama_context_params params, llmrt_err * err) {
    llama_context * c = nullptr;
    guarded(err, [&] { c = llama_init_from_model(model, params); });
    return c;
}

llama_adapter_lora * llmrt_adapter_lora_init(llama_model * model, const char * path, llmrt_err * err) {
    llama_adapter_lora * a = nullptr;
    guarded(err, [&] { a = llama_adapter_lora_init(model, path); });
    return a;
}

int llmrt_set_adapter_lora(llama_context * ctx, llama_adapter_lora * adapter, float scale, int32_t * out, llmrt_err * err) {
    return guarded(err, [&] { *out = llama_set_adapter_lora(ctx, adapter, scale); });
}

int llmrt_model_quantize(const char * in, const char * out_path, int32_t ftype, int32_t nthread, bool allow_requantize, bool pure,
                         uint32_t * out, llmrt_err * err) {
    return guarded(err, [&] {
        llama_model_quantize_params p = llama_model_quantize_default_params();
        p.ftype = (llama_ftype) ftype;
        p.nthread = nthread;
        p.allow_requantize = allow_requantize;
        p.pure = pure;
        *out = llama_model_quantize(in, out_path, &p);
    });
}

int llmrt_memory_seq_rm(llama_context * ctx, llama_seq_id seq, llama_pos p0, llama_pos p1, bool * out, llmrt_err * err) {
    return guarded(err, [&] { *out = llama_memory_seq_rm(llama_get_memory(ctx), seq, p0, p1); });
}

int llmrt_memory_seq_cp(llama_context * ctx, llama_seq_id src, llama_seq_id dst, llama_pos p0, llama_pos p1, llmrt_err * err) {
    return guarded(err, [&] { llama_memory_seq_cp(llama_get_memory(ctx), src, dst, p0, p1); });
}

int llmrt_memory_seq_keep(llama_context * ctx, llama_seq_id seq, llmrt_err * err) {
    return guarded(err, [&] { llama_memory_seq_keep(llama_get_memory(ctx), seq); });
}

int llmrt_memory_seq_add(llama_context * ctx, llama_seq_id seq, llama_pos p0, llama_pos p1, llama_pos delta, llmrt_err * err) {
    return guarded(err, [&] { llama_memory_seq_add(llama_get_memory(ctx), seq, p0, p1, delta); });
}

int llmrt_memory_clear(llama_context * ctx, bool data, llmrt_err * err) {
    return guarded(err, [&] { llama_memory_clear(llama_get_memory(ctx), data); });
}

} // extern "C"
