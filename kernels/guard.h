// guard.h: exception-safe entry points into llama.cpp.
//
// llama.cpp's C API is implemented in C++, and some of its calls throw: a
// token id outside the vocabulary makes llama_detokenize and
// llama_token_to_piece throw std::out_of_range, a grammar with no
// continuation makes llama_sampler_accept throw std::runtime_error, and any
// allocation can throw std::bad_alloc. An exception that unwinds into a cgo
// frame terminates the whole process, so every llama.cpp call that can
// throw is made through one of these wrappers. Each catches everything,
// writes what happened into err (when not NULL) and returns LLMRT_EXCEPTION; otherwise it returns 0 and passes llama.cpp's
// own result through an out parameter.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LLMRT_EXCEPTION (-1000)

// Where a wrapper writes a caught exception's message (NUL-terminated).
typedef struct {
    char msg[256];
} llmrt_err;

int llmrt_tokenize(const struct llama_vocab * vocab, const char * text, int32_t text_len, llama_token * tokens,
                   int32_t n_tokens_max, bool add_special, bool parse_special, int32_t * out, llmrt_err * err);
int llmrt_detokenize(const struct llama_vocab * vocab, const llama_token * tokens, int32_t n_tokens, char * text,
                     int32_t text_len_max, bool remove_special, bool unparse_special, int32_t * out, llmrt_err * err);
int llmrt_token_to_piece(const struct llama_vocab * vocab, llama_token token, char * buf, int32_t length, int32_t lstrip,
                         bool special, int32_t * out, llmrt_err * err);
// Token attributes: *out is 1 or 0.
int llmrt_vocab_is_eog(const struct llama_vocab * vocab, llama_token token, bool * out, llmrt_err * err);
int llmrt_vocab_is_control(const struct llama_vocab * vocab, llama_token token, bool * out, llmrt_err * err);

int llmrt_chat_apply_template(const char * tmpl, const struct llama_chat_message * chat, size_t n_msg, bool add_ass,
                              char * buf, int32_t length, int32_t * out, llmrt_err * err);

// *out is llama_decode's return code.
int llmrt_decode(struct llama_context * ctx, struct llama_batch batch, int32_t * out, llmrt_err * err);

int llmrt_sampler_sample(struct llama_sampler * smpl, struct llama_context * ctx, int32_t idx, llama_token * out,
                         llmrt_err * err);
int llmrt_sampler_accept(struct llama_sampler * smpl, llama_token token, llmrt_err * err);
int llmrt_sampler_reset(struct llama_sampler * smpl, llmrt_err * err);
// NULL when the grammar does not parse or an exception was caught.
struct llama_sampler * llmrt_sampler_init_grammar(const struct llama_vocab * vocab, const char * grammar, const char * root,
                                                  llmrt_err * err);

// A sampler to chain right after a grammar. When the grammar rejects every
// candidate (a token it names is end-of-generation, or no token of this
// vocabulary can continue it), llama.cpp's dist sampler asserts and aborts
// the process. This one sets *tripped instead and leaves the first candidate
// standing so the chain completes; the sample is then refused by the
// grammar's accept (an exception that llmrt_sampler_sample catches) and
// the caller reports *tripped. *tripped lives as long as the sampler.
struct llama_sampler * llmrt_sampler_init_dead_end(int32_t ** tripped);

// A sampler to chain after the grammar and the dead-end guard (closer.cpp):
// it steers the output so that it completes grammar within budget tokens
// and sets *closed when it had to write the shortest completion itself.
// NULL when the grammar does not parse or an exception was caught.
struct llama_sampler * llmrt_sampler_init_close_within(const struct llama_vocab * vocab, const char * grammar, int32_t budget,
                                                       int32_t ** closed);

// NULL on failure (llama.cpp logs why; err holds an exception's message).
struct llama_model * llmrt_model_load(const char * path, struct llama_model_params params, llmrt_err * err);
struct llama_context * llmrt_init_from_model(struct llama_model * model, struct llama_context_params params, llmrt_err * err);
struct llama_adapter_lora * llmrt_adapter_lora_init(struct llama_model * model, const char * path, llmrt_err * err);
// *out is llama_set_adapter_lora's return code.
int llmrt_set_adapter_lora(struct llama_context * ctx, struct llama_adapter_lora * adapter, float scale, int32_t * out,
                           llmrt_err * err);
// *out is llama_model_quantize's return code.
int llmrt_model_quantize(const char * in, const char * out_path, int32_t ftype, int32_t nthread, bool allow_requantize,
                         bool pure, uint32_t * out, llmrt_err * err);

// KV-cache edits of one context's memory.
int llmrt_memory_seq_rm(struct llama_context * ctx, llama_seq_id seq, llama_pos p0, llama_pos p1, bool * out, llmrt_err * err);
int llmrt_memory_seq_cp(struct llama_context * ctx, llama_seq_id src, llama_seq_id dst, llama_pos p0, llama_pos p1,
                        llmrt_err * err);
int llmrt_memory_seq_keep(struct llama_context * ctx, llama_seq_id seq, llmrt_err * err);
int llmrt_memory_seq_add(struct llama_context * ctx, llama_seq_id seq, llama_pos p0, llama_pos p1, llama_pos delta,
                         llmrt_err * err);
int llmrt_memory_clear(struct llama_context * ctx, bool data, llmrt_err * err);

#ifdef __cplusplus
}
#endif
