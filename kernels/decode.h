// decode.h: llmrt's own inference graph for llama-family models, with a KV
// cache and a LoRA adapter per sequence.
//
// llama.cpp applies one adapter set to every token of a llama_decode, so
// requests for different adapters cannot share a step. The decoder builds
// the llama forward graph itself (as net.h does for training) over the
// weights llama.cpp loaded, keeps a KV cache of its own (one slot of n_ctx
// cells per sequence, F16 like llama.cpp's) and computes, for every row,
// y = W x + s_i * B_i (A_i x) with the adapter i of the row's sequence: the
// resident adapters' A and B are stacked per base weight and selected per
// row with ggml_mul_mat_id, so a step costs two extra matmuls per adapted
// projection however many adapters it mixes.
//
// Every function returns 0 on success and -1 on failure with a message in
// err (errlen bytes). No function aborts on bad input.
#pragma once
#include <stdint.h>
#include <stddef.h>
#include "llama.h"
#include "guard.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct llmrt_dec llmrt_dec;
typedef struct llmrt_lora llmrt_lora;

struct llmrt_dec_params {
    int32_t  n_threads;    // CPU threads (<= 0: all cores)
    int32_t  n_seq;        // sequences (KV slots)
    int32_t  n_ctx;        // KV cells per sequence
    int32_t  n_adapters;   // resident adapter slots (0: no LoRA)
    int32_t  lora_rank;    // rank of the stacks: the largest rank a resident adapter may have
    uint32_t lora_targets; // projections the stacks cover (LLMRT_LORA_* bits of net.h)
    int32_t  lora_type;    // ggml type of the stacks: GGML_TYPE_F32, F16 or BF16
};

// 0 when a decoder can be built over model m, else -1 and why in err.
int llmrt_dec_check(const struct llama_model * m, char * err, size_t errlen);

// Creates a decoder over model m. The model must outlive it.
llmrt_dec * llmrt_dec_new(struct llama_model * m, const struct llmrt_dec_params * p, char * err, size_t errlen);
void llmrt_dec_free(llmrt_dec * d);

// Bytes held by the KV cache, the adapter stacks, and the compute buffers
// of the largest step so far.
void llmrt_dec_memory(const llmrt_dec * d, size_t * kv, size_t * lora, size_t * compute);

// One sequence's part of a step: n_tok tokens at positions pos.. of KV
// slot seq, under resident adapter slot adapter (-1: none) with the
// user's scale. With logits set, the logits of its last token are kept.
struct llmrt_dec_seq {
    int32_t seq;
    int32_t pos;
    int32_t n_tok;
    int32_t adapter;
    float   scale;
    int32_t logits;
};

// Runs one step over n_seq sequences (distinct slots); tokens holds their
// tokens one sequence after the other. Cells at and after each sequence's
// pos are overwritten; cells before it are the sequence's history.
int llmrt_dec_step(llmrt_dec * d, const int32_t * tokens, const struct llmrt_dec_seq * seqs, int32_t n_seq, char * err,
                   size_t errlen);

// Logits of the i-th sequence of the last step that asked for them
// (n_vocab floats, valid until the next step); NULL if there is none.
const float * llmrt_dec_logits(const llmrt_dec * d, int32_t i);

// Copies adapter l into resident slot (zero-padding ranks below the
// stacks' and projections it does not adapt).
int llmrt_dec_set_adapter(llmrt_dec * d, int32_t slot, const llmrt_lora * l, char * err, size_t errlen);

// An adapter file read against a model: validated as llama.cpp does, with
// its tensors converted to F32 in host memory when with_data is set (else
// only its description).
llmrt_lora * llmrt_lora_read(struct llama_model * m, const char * path, int32_t with_data, char * err, size_t errlen);
void llmrt_lora_free(llmrt_lora * l);
int32_t  llmrt_lora_rank(const llmrt_lora * l);    // largest rank of its pairs
uint32_t llmrt_lora_targets(const llmrt_lora * l); // LLMRT_LORA_* bits of the projections it adapts
size_t   llmrt_lora_bytes(const llmrt_lora * l);   // host bytes of its tensors (0 without data)
int32_t  llmrt_lora_type(const llmrt_lora * l);    // ggml type of its tensors: F16 or BF16 when all are, else F32
// Why the decoder cannot serve it (an adapted weight outside the seven
// projections, aLoRA), or "" when it can.
const char * llmrt_lora_unsupported(const llmrt_lora * l);

// Samples from raw logits (n_vocab floats) with chain smpl and accepts the
// token into its state, as llama_sampler_sample does for a context.
int llmrt_sampler_sample_logits(struct llama_sampler * smpl, const float * logits, int32_t n_vocab, llama_token * out,
                                llmrt_err * err);

#ifdef __cplusplus
}
#endif
