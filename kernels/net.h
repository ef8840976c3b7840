// net.h: our own ggml graph over the weights of a loaded llama-family model.
//
// llama.cpp's inference graph cannot do two things llmrt needs:
//   - embeddings without the output head: in embedding mode it still
//     multiplies every token by the vocabulary-wide head, which is most of
//     the work for a small model;
//   - LoRA training: its graph uses in-place ops that ggml's backward pass
//     rejects, it cannot mask prompt tokens, and it never trains adapter
//     tensors (the design notes in ../shared/DESIGN.md, "LoRA trainer").
// The net builds the llama forward graph itself (RMSNorm, Q/K/V with
// optional LoRA, RoPE, causal attention without a KV cache, SwiGLU MLP),
// on the tensors llama.cpp loaded, so it runs where llama.cpp placed them.
//
// Every function returns 0 on success and -1 on failure with a message in
// err (errlen bytes). No function aborts on bad input.
#pragma once
#include <stdint.h>
#include <stddef.h>
#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct llmrt_net llmrt_net;

// Which projections get a LoRA pair (bit mask).
enum {
    LLMRT_LORA_Q    = 1 << 0,
    LLMRT_LORA_K    = 1 << 1,
    LLMRT_LORA_V    = 1 << 2,
    LLMRT_LORA_O    = 1 << 3,
    LLMRT_LORA_GATE = 1 << 4,
    LLMRT_LORA_UP   = 1 << 5,
    LLMRT_LORA_DOWN = 1 << 6,
};

struct llmrt_net_params {
    int32_t  n_threads;   // CPU threads (<= 0: all cores)
    int32_t  lora_rank;   // 0: no LoRA (embeddings, parity checks)
    float    lora_alpha;  // scale = alpha / rank
    uint32_t lora_targets;
    uint64_t seed;        // initialisation of the A matrices
    int32_t  tiles;       // != 0: Q8_0 matmuls may use AMX tiles (q8gemm.h), on the net's own thread pool
};

// Creates a net over model m. The model must outlive the net.
llmrt_net * llmrt_net_new(struct llama_model * m, const struct llmrt_net_params * p, char * err, size_t errlen);
void llmrt_net_free(llmrt_net * n);

// Mean-pooled last hidden state (after the output norm, before the head)
// of n_seq sequences, concatenated in tokens with lengths lens. out holds
// n_seq * n_embd floats.
int llmrt_net_embed(llmrt_net * n, const int32_t * tokens, const int32_t * lens, int32_t n_seq, float * out, char * err, size_t errlen);

// Logits of one row of n tokens (out: n * n_vocab floats). pos are the
// RoPE positions, seg the example each token belongs to: a token attends
// to earlier tokens of its own segment only.
int llmrt_net_logits(llmrt_net * n, const int32_t * tokens, const int32_t * pos, const int32_t * seg, int32_t n_tok, float * out, char * err, size_t errlen);

// Mean cross-entropy of one row over its labelled positions (labels[i] is
// the token to predict at i, or -1). With backward != 0 the gradients of
// that mean are added to the LoRA gradient accumulators.
int llmrt_net_loss(llmrt_net * n, const int32_t * tokens, const int32_t * pos, const int32_t * seg, const int32_t * labels,
                   int32_t n_tok, int32_t backward, float * loss, int32_t * n_labelled, char * err, size_t errlen);

// Summed log-probability of the labelled tokens of each segment s in
// [0, n_seg): out[s] = sum of log p(labels[i]) over i with seg[i] == s
// (0 for a segment without labels). use_lora == 0 leaves the LoRA terms
// out: the base model's log-probabilities, with no second copy of it.
int llmrt_net_seq_logprobs(llmrt_net * n, const int32_t * tokens, const int32_t * pos, const int32_t * seg, const int32_t * labels,
                           int32_t n_tok, int32_t n_seg, int32_t use_lora, float * out, char * err, size_t errlen);

// DPO over one row of preference pairs: segment 2k holds pair k's prompt
// and chosen answer, segment 2k+1 its prompt and rejected answer, each
// answer labelled. ref[s] is segment s's log-probability under the
// reference model (llmrt_net_seq_logprobs with use_lora 0). loss is the
// sum over pairs of -log sigmoid(beta((pi_c - ref_c) - (pi_r - ref_r)))
// plus sft times the chosen answer's mean negative log-likelihood (RPO;
// sft 0 is plain DPO); policy[s] is the policy's log-probability of
// segment s (n_seg floats). With backward != 0 the gradients of that sum
// are added to the accumulators.
int llmrt_net_dpo(llmrt_net * n, const int32_t * tokens, const int32_t * pos, const int32_t * seg, const int32_t * labels,
                  int32_t n_tok, int32_t n_seg, const float * ref, float beta, float sft, int32_t backward, float * loss,
                  float * policy, char * err, size_t errlen);

// One AdamW step on every LoRA tensor with the accumulated gradients
// multiplied by grad_scale, then clears the accumulators. t is AdamW's
// step count after this step (1 for the first).
int llmrt_net_adamw(llmrt_net * n, float lr, float beta1, float beta2, float eps, float wd, float grad_scale, int32_t t,
                    char * err, size_t errlen);

// The trained tensors: 2 per adapted weight (A then B).
int32_t      llmrt_net_n_params(const llmrt_net * n);
const char * llmrt_net_param_name(const llmrt_net * n, int32_t i);     // "<base tensor>.lora_a" / ".lora_b"
void         llmrt_net_param_shape(const llmrt_net * n, int32_t i, int64_t * ne0, int64_t * ne1);

// Copy a trained tensor (kind 0), its gradient accumulator (1) or its
// AdamW moments m (2) and v (3) to or from host memory (ne0*ne1 floats).
int llmrt_net_param_get(const llmrt_net * n, int32_t i, int32_t kind, float * out, char * err, size_t errlen);
int llmrt_net_param_set(llmrt_net * n, int32_t i, int32_t kind, const float * in, char * err, size_t errlen);

// Bytes held by the net's own buffers (LoRA tensors, gradients, moments).
size_t llmrt_net_param_bytes(const llmrt_net * n);

// The reference trainer of the benchmarks: full fine-tuning with ggml-opt,
// the optimizer and backward pass behind llama.cpp's llama_opt_epoch and its
// llama-finetune example, over this net's graph of the model (llama.cpp's
// own graph writes the KV cache in place, which ggml's backward pass
// rejects). Every weight but the token embedding trains with AdamW, one
// step per row of n_ctx tokens (tokens and labels hold n_rows rows).
// seconds is the time of the rows after the first; first_loss is the
// first row's loss before training, last_loss the same row's after it. The model's weights must be writable (loaded
// without mmap); they are trained in place, so the model and net are spent
// afterwards.
int llmrt_net_reference_finetune(llmrt_net * n, const int32_t * tokens, const int32_t * labels, int32_t n_rows, int32_t n_ctx,
                                 double * seconds, float * first_loss, float * last_loss, char * err, size_t errlen);

#ifdef __cplusplus
}
#endif
