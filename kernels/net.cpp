// net.cpp: the llama-family forward graph, its loss and its LoRA training
// step, built with ggml over the weights that llama.cpp loaded. See net.h.
//
// The graph uses no in-place op on the gradient path (ggml's backward pass
// rejects them) and no flash attention or KV cache (neither has a backward
// pass): attention is softmax(K^T Q * scale + mask) V with an explicit mask
// that is causal inside each segment and closed across segments.

#include "net.h"
#include "llm_shape.h"
#include "q8amx.h"
#include "q8gemm.h"

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml-opt.h"
#include "llama-model.h"
#include "llama-impl.h"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <chrono>
#include <exception>
#include <stdexcept>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

// A trained low-rank pair for one base weight, with its gradient
// accumulators and AdamW moments (all F32, same shapes as a and b).
struct lora_pair {
    ggml_tensor * w = nullptr;           // the frozen base weight [n_in, n_out]
    ggml_tensor * t[4][2] = {};          // [kind][a|b]: value, grad, m, v
};

void set_err(char * err, size_t n, const char * fmt, ...) {
    if (!err || n == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

} // namespace

struct llmrt_net : llmrt::llm_shape {
    llama_model * model = nullptr;
    std::vector<ggml_backend_t> backends;
    ggml_backend_sched_t sched = nullptr;
    ggml_threadpool * pool = nullptr;   // the CPU backend's own, when tiles were asked for
    size_t graph_size = 0;
    std::vector<uint8_t> meta;          // tensor and graph headers of one call
    std::vector<std::vector<bool>> op_checked; // [backend][op x weight type]: fallback looked at

    // Trained tensors: one context and buffer per backend that holds some
    // (each pair lives where its base weight does).
    std::vector<ggml_context *> pctx;
    std::vector<ggml_backend_buffer_t> pbuf;
    std::vector<lora_pair> pairs;
    std::unordered_map<const ggml_tensor *, size_t> pair_of;
    std::vector<std::string> names;     // 2 per pair
    ggml_tensor * loss_grad = nullptr;  // constant 1: d loss / d loss
    float lora_scale = 0.0f;
    bool lora_off = false;              // graphs built now leave the LoRA terms out

    std::vector<float> host;            // staging for inputs
};

namespace {

// The tensors of one graph call and the context that holds their headers.
struct call {
    ggml_context * ctx = nullptr;
    ggml_cgraph * gf = nullptr;
    ggml_tensor * tok = nullptr;
    ggml_tensor * pos = nullptr;
    ggml_tensor * mask = nullptr;
    ~call() {
        if (ctx) {
            ggml_free(ctx);
        }
    }
};

bool begin(llmrt_net * n, call & c, bool grads) {
    ggml_init_params ip = {
        /*.mem_size   =*/ n->meta.size(),
        /*.mem_buffer =*/ n->meta.data(),
        /*.no_alloc   =*/ true,
    };
    c.ctx = ggml_init(ip);
    if (!c.ctx) {
        return false;
    }
    c.gf = ggml_new_graph_custom(c.ctx, n->graph_size, grads);
    return c.gf != nullptr;
}

// w x, plus the LoRA term scale * B (A x) when w has a trained pair.
ggml_tensor * mm(llmrt_net * n, ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
    ggml_tensor * y = ggml_mul_mat(ctx, w, x);
    auto it = n->pair_of.find(w);
    if (it != n->pair_of.end() && !n->lora_off) {
        const lora_pair & p = n->pairs[it->second];
        ggml_tensor * ax = ggml_mul_mat(ctx, p.t[0][0], x);
        ggml_tensor * bax = ggml_mul_mat(ctx, p.t[0][1], ax);
        y = ggml_add(ctx, y, ggml_scale(ctx, bax, n->lora_scale));
    }
    return y;
}

ggml_tensor * add_bias(ggml_context * ctx, ggml_tensor * x, ggml_tensor * b) {
    return b ? ggml_add(ctx, x, b) : x;
}

ggml_tensor * rms(llmrt_net * n, ggml_context * ctx, ggml_tensor * x, ggml_tensor * w) {
    return ggml_mul(ctx, ggml_rms_norm(ctx, x, n->eps), w);
}

// The position and mask inputs of a graph over L tokens in each of S rows.
void attn_inputs(call & c, int L, int S) {
    c.pos = ggml_new_tensor_1d(c.ctx, GGML_TYPE_I32, L * S);
    c.mask = ggml_new_tensor_4d(c.ctx, GGML_TYPE_F32, L, L, 1, S);
    ggml_set_input(c.pos);
    ggml_set_input(c.mask);
}

// One transformer block over x [n_embd, L*S]: returns its output.
ggml_tensor * block(llmrt_net * n, call & c, ggml_tensor * x, int il, int L, int S) {
    ggml_context * ctx = c.ctx;
    const int T = L * S;
    const int d = n->n_embd_head;
    const llama_layer & ly = n->model->layers[il];
    ggml_tensor * h = rms(n, ctx, x, ly.attn_norm);

    ggml_tensor * q = add_bias(ctx, mm(n, ctx, ly.wq, h), ly.bq);
    ggml_tensor * k = add_bias(ctx, mm(n, ctx, ly.wk, h), ly.bk);
    ggml_tensor * v = add_bias(ctx, mm(n, ctx, ly.wv, h), ly.bv);

    q = ggml_reshape_3d(ctx, q, d, n->n_head, T);
    k = ggml_reshape_3d(ctx, k, d, n->n_head_kv, T);
    v = ggml_reshape_3d(ctx, v, d, n->n_head_kv, T);
    if (ly.attn_q_norm) { // qwen3
        q = rms(n, ctx, q, ly.attn_q_norm);
    }
    if (ly.attn_k_norm) {
        k = rms(n, ctx, k, ly.attn_k_norm);
    }
    q = ggml_rope_ext(ctx, q, c.pos, ly.rope_freqs, n->n_rot, n->rope_type, n->n_ctx_orig, n->freq_base,
                      n->freq_scale, n->ext_factor, n->attn_factor, n->beta_fast, n->beta_slow);
    k = ggml_rope_ext(ctx, k, c.pos, ly.rope_freqs, n->n_rot, n->rope_type, n->n_ctx_orig, n->freq_base,
                      n->freq_scale, n->ext_factor, n->attn_factor, n->beta_fast, n->beta_slow);

    // [d, heads, L, S] -> [d, L, heads, S]: one attention per head and row.
    q = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, q, d, n->n_head, L, S), 0, 2, 1, 3));
    k = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, k, d, n->n_head_kv, L, S), 0, 2, 1, 3));
    // V transposed: [L, d, heads_kv, S].
    v = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, v, d, n->n_head_kv, L, S), 1, 2, 0, 3));

    ggml_tensor * kq = ggml_mul_mat(ctx, k, q); // [L_k, L_q, heads, S]; kv heads broadcast (GQA)
    ggml_mul_mat_set_prec(kq, GGML_PREC_F32);
    kq = ggml_soft_max_ext(ctx, kq, c.mask, n->kq_scale, 0.0f);
    ggml_tensor * o = ggml_mul_mat(ctx, v, kq); // [d, L_q, heads, S]
    o = ggml_cont_2d(ctx, ggml_permute(ctx, o, 0, 2, 1, 3), d * n->n_head, T);
    o = add_bias(ctx, mm(n, ctx, ly.wo, o), ly.bo);
    x = ggml_add(ctx, o, x);

    h = rms(n, ctx, x, ly.ffn_norm);
    ggml_tensor * g = add_bias(ctx, mm(n, ctx, ly.ffn_gate, h), ly.ffn_gate_b);
    ggml_tensor * u = add_bias(ctx, mm(n, ctx, ly.ffn_up, h), ly.ffn_up_b);
    h = ggml_swiglu_split(ctx, g, u);
    h = add_bias(ctx, mm(n, ctx, ly.ffn_down, h), ly.ffn_down_b);
    return ggml_add(ctx, h, x);
}

// The forward pass over L tokens in each of S rows: returns the hidden
// state after the output norm, [n_embd, L*S]. Inputs (tok, pos, mask) are
// created here and filled by the caller after allocation. With inputs set,
// the input of every block and the last block's output are marked as
// outputs and collected there (for the checkpointed backward pass).
ggml_tensor * forward(llmrt_net * n, call & c, int L, int S, std::vector<ggml_tensor *> * inputs = nullptr) {
    c.tok = ggml_new_tensor_1d(c.ctx, GGML_TYPE_I32, L * S);
    ggml_set_input(c.tok);
    attn_inputs(c, L, S);
    ggml_tensor * x = ggml_get_rows(c.ctx, n->model->tok_embd, c.tok);
    for (int il = 0; il < n->n_layer; ++il) {
        if (inputs) {
            ggml_set_output(x);
            inputs->push_back(x);
        }
        x = block(n, c, x, il, L, S);
    }
    if (inputs) {
        ggml_set_output(x);
        inputs->push_back(x);
    }
    return rms(n, c.ctx, x, n->model->output_norm);
}

// Fills the mask of one row from segment ids: 0 where query i may see key
// j (same segment, j <= i), -inf elsewhere. A query that can see nothing
// (padding) sees itself, so that softmax never divides by zero.
void fill_mask(float * mask, const int32_t * seg, int L) {
    const float ninf = -INFINITY;
    for (int i = 0; i < L; ++i) {
        float * row = mask + (size_t) i * L;
        bool any = false;
        for (int j = 0; j < L; ++j) {
            const bool ok = j <= i && seg[j] == seg[i] && seg[i] >= 0;
            row[j] = ok ? 0.0f : ninf;
            any = any || ok;
        }
        if (!any) {
            row[i] = 0.0f;
        }
    }
}

// log_fallbacks says once per device, op and weight type when a weight on a device
// meets an op the device has no kernel for: ggml's scheduler then runs the
// op on the CPU and copies the weight there at every step. It looks at the
// graph before allocation, while sources still point at the weights.
void log_fallbacks(llmrt_net * n, call & c) {
    n->op_checked.resize(n->backends.size(), std::vector<bool>((size_t) GGML_OP_COUNT * GGML_TYPE_COUNT));
    for (int i = 0; i < ggml_graph_n_nodes(c.gf); ++i) {
        ggml_tensor * node = ggml_graph_node(c.gf, i);
        for (int s = 0; s < GGML_MAX_SRC && node->src[s]; ++s) {
            const ggml_tensor * src = node->src[s]->view_src ? node->src[s]->view_src : node->src[s];
            if (!src->buffer) {
                continue; // not a weight: allocated by the scheduler
            }
            for (size_t b = 0; b + 1 < n->backends.size(); ++b) {
                ggml_backend_t dev = n->backends[b];
                if (ggml_backend_buffer_get_type(src->buffer) != ggml_backend_get_default_buffer_type(dev)) {
                    continue;
                }
                // One look per device, op and weight type: the graphs of
                // every step repeat the same ops on the same weights.
                const size_t key = (size_t) node->op * GGML_TYPE_COUNT + src->type;
                if (n->op_checked[b][key]) {
                    continue;
                }
                n->op_checked[b][key] = true;
                if (!ggml_backend_supports_op(dev, node)) {
                    LLAMA_LOG_WARN("training: %s cannot run %s, so ggml runs it on the CPU and copies %s there at every step\n",
                                   ggml_backend_name(dev), ggml_op_desc(node), ggml_get_name(src));
                }
            }
        }
    }
}

bool alloc_graph(llmrt_net * n, call & c, char * err, size_t errlen) {
    if (n->backends.size() > 1) {
        log_fallbacks(n, c);
    }
    ggml_backend_sched_reset(n->sched);
    if (!ggml_backend_sched_alloc_graph(n->sched, c.gf)) {
        set_err(err, errlen, "allocating the compute buffers failed (out of memory?)");
        return false;
    }
    return true;
}

bool run(llmrt_net * n, call & c, char * err, size_t errlen) {
    const ggml_status st = ggml_backend_sched_graph_compute(n->sched, c.gf);
    if (st != GGML_STATUS_SUCCESS) {
        set_err(err, errlen, "graph compute failed: %s", ggml_status_to_string(st));
        return false;
    }
    return true;
}

bool check_tokens(const llmrt_net * n, const int32_t * tokens, int32_t n_tok, char * err, size_t errlen) {
    for (int i = 0; i < n_tok; ++i) {
        if (tokens[i] < 0 || tokens[i] >= n->n_vocab) {
            set_err(err, errlen, "token %d at position %d is outside the vocabulary (0..%d)", tokens[i], i, n->n_vocab - 1);
            return false;
        }
    }
    return true;
}

// Builds the graph of one row up to the logits [n_vocab, n_tok].
ggml_tensor * row_logits(llmrt_net * n, call & c, int n_tok) {
    ggml_tensor * h = forward(n, c, n_tok, 1);
    ggml_tensor * out = n->model->output ? n->model->output : n->model->tok_embd;
    return mm(n, c.ctx, out, h);
}

void set_row_inputs(llmrt_net * n, call & c, const int32_t * tokens, const int32_t * pos, const int32_t * seg, int n_tok) {
    if (c.tok && c.tok->buffer) {
        ggml_backend_tensor_set(c.tok, tokens, 0, sizeof(int32_t) * n_tok);
    }
    if (!c.mask || !c.mask->buffer) {
        return; // not in the graph
    }
    ggml_backend_tensor_set(c.pos, pos, 0, sizeof(int32_t) * n_tok);
    n->host.resize((size_t) n_tok * n_tok);
    fill_mask(n->host.data(), seg, n_tok);
    ggml_backend_tensor_set(c.mask, n->host.data(), 0, sizeof(float) * n->host.size());
}

// build_backward finishes c.gf for the loss node l: gradients of the LoRA
// tensors go straight into their persistent accumulators (so successive
// calls add up), the loss gradient is the constant 1.
void build_backward(llmrt_net * n, call & c, ggml_tensor * l) {
    ggml_set_loss(l);
    const int n_nodes = ggml_graph_n_nodes(c.gf);
    std::vector<ggml_tensor *> accs(n_nodes, nullptr);
    for (int i = 0; i < n_nodes; ++i) {
        ggml_tensor * node = ggml_graph_node(c.gf, i);
        if (node == l) {
            accs[i] = n->loss_grad;
            continue;
        }
        for (lora_pair & lp : n->pairs) {
            if (node == lp.t[0][0]) accs[i] = lp.t[1][0];
            if (node == lp.t[0][1]) accs[i] = lp.t[1][1];
        }
    }
    ggml_build_backward_expand(c.ctx, c.gf, accs.data());
    // ggml's allocator may compute RMS_NORM_BACK in place over its
    // incoming gradient, but the CPU kernel overwrites that gradient
    // before it has read it (it copies x into dx first). Marking the
    // gradient as an output keeps it out of in-place reuse.
    for (int i = 0; i < ggml_graph_n_nodes(c.gf); ++i) {
        ggml_tensor * node = ggml_graph_node(c.gf, i);
        if (node->op == GGML_OP_RMS_NORM_BACK) {
            ggml_set_output(node->src[0]);
        }
    }
}

// A differentiable input of a checkpointed piece: its gradient is read
// back after the computation.
ggml_tensor * grad_input(call & c, int64_t ne0, int64_t ne1) {
    ggml_tensor * t = ggml_new_tensor_2d(c.ctx, GGML_TYPE_F32, ne0, ne1);
    ggml_set_input(t);
    ggml_set_param(t);
    return t;
}

// Labelled rows per head piece of the checkpointed backward pass.
constexpr int head_chunk = 64;

// save_inputs runs the forward pass of one row and returns the input of
// every block and the last block's output (all of them when all is set,
// else only the last), each n_embd * n_tok floats.
bool save_inputs(llmrt_net * n, const int32_t * tokens, const int32_t * pos, const int32_t * seg, int n_tok, bool all,
                 std::vector<std::vector<float>> & xs, char * err, size_t errlen) {
    const size_t width = (size_t) n->n_embd * n_tok;
    call c;
    if (!begin(n, c, false)) {
        set_err(err, errlen, "out of memory");
        return false;
    }
    std::vector<ggml_tensor *> ins;
    forward(n, c, n_tok, 1, &ins);
    if (!all) {
        ins.erase(ins.begin(), ins.end() - 1);
    }
    for (ggml_tensor * t : ins) {
        ggml_build_forward_expand(c.gf, t);
    }
    if (!alloc_graph(n, c, err, errlen)) {
        return false;
    }
    set_row_inputs(n, c, tokens, pos, seg, n_tok);
    if (!run(n, c, err, errlen)) {
        return false;
    }
    xs.resize(ins.size());
    for (size_t i = 0; i < ins.size(); ++i) {
        xs[i].resize(width);
        ggml_backend_tensor_get(ins[i], xs[i].data(), 0, sizeof(float) * width);
    }
    return true;
}

// A piece of the head pass: count labelled rows idx[start..start+count).
struct head_piece {
    int start = 0, count = 0;
};

// head_pass runs the output norm and head over the labelled rows of a row
// whose last hidden state is x, piece by piece. Piece k's value is
// scale * (sum of -log p(label) over its rows) and lands in out[k]; with g
// set, the gradient of that value with respect to x is added to g. A
// row's gradient touches only its own column of x.
bool head_pass(llmrt_net * n, const std::vector<float> & x, int n_tok, const int32_t * labels, const std::vector<int32_t> & idx,
               const std::vector<head_piece> & pieces, float scale, std::vector<float> * g, std::vector<double> & out, char * err,
               size_t errlen) {
    const size_t width = (size_t) n->n_embd * n_tok;
    ggml_tensor * head = n->model->output ? n->model->output : n->model->tok_embd;
    std::vector<float> part(g ? width : 0);
    out.assign(pieces.size(), 0.0);
    for (size_t k = 0; k < pieces.size(); ++k) {
        const int c0 = pieces[k].start, cn = pieces[k].count;
        call c;
        if (!begin(n, c, g != nullptr)) {
            set_err(err, errlen, "out of memory");
            return false;
        }
        ggml_tensor * xin = g ? grad_input(c, n->n_embd, n_tok) : ggml_new_tensor_2d(c.ctx, GGML_TYPE_F32, n->n_embd, n_tok);
        ggml_set_input(xin);
        ggml_tensor * h = rms(n, c.ctx, xin, n->model->output_norm);
        ggml_tensor * rows = ggml_new_tensor_1d(c.ctx, GGML_TYPE_I32, cn);
        ggml_set_input(rows);
        ggml_tensor * logits = mm(n, c.ctx, head, ggml_get_rows(c.ctx, h, rows));
        ggml_tensor * onehot = ggml_new_tensor_2d(c.ctx, GGML_TYPE_F32, n->n_vocab, cn);
        ggml_set_input(onehot);
        // The cross-entropy is a mean over the piece's rows: times cn it
        // is their summed negative log-likelihood.
        ggml_tensor * l = ggml_scale(c.ctx, ggml_cross_entropy_loss(c.ctx, logits, onehot), (float) cn * scale);
        ggml_set_output(l);
        ggml_build_forward_expand(c.gf, l);
        ggml_tensor * gx = nullptr;
        if (g) {
            build_backward(n, c, l);
            gx = ggml_graph_get_grad(c.gf, xin);
            ggml_set_output(gx);
        }
        if (!alloc_graph(n, c, err, errlen)) {
            return false;
        }
        ggml_backend_tensor_set(xin, x.data(), 0, sizeof(float) * width);
        ggml_backend_tensor_set(rows, idx.data() + c0, 0, sizeof(int32_t) * cn);
        ggml_backend_tensor_memset(onehot, 0, 0, ggml_nbytes(onehot));
        const float one = 1.0f;
        for (int r = 0; r < cn; ++r) {
            ggml_backend_tensor_set(onehot, &one, ((size_t) r * n->n_vocab + labels[idx[c0 + r]]) * sizeof(float), sizeof(float));
        }
        if (!run(n, c, err, errlen)) {
            return false;
        }
        float lc = 0.0f;
        ggml_backend_tensor_get(l, &lc, 0, sizeof(float));
        out[k] = lc;
        if (g) {
            ggml_backend_tensor_get(gx, part.data(), 0, sizeof(float) * width);
            for (size_t i = 0; i < width; ++i) {
                (*g)[i] += part[i];
            }
        }
    }
    return true;
}

// blocks_backward takes dL/dy at the last block's output (g) through the
// blocks from last to first, each recomputed from its saved input xs[il]
// with the surrogate loss sum(y * dL/dy), whose gradients are the chain
// rule's; the LoRA gradients land in the accumulators.
bool blocks_backward(llmrt_net * n, const int32_t * tokens, const int32_t * pos, const int32_t * seg, int n_tok,
                     const std::vector<std::vector<float>> & xs, std::vector<float> & g, char * err, size_t errlen) {
    const size_t width = (size_t) n->n_embd * n_tok;
    for (int il = n->n_layer - 1; il >= 0; --il) {
        call c;
        if (!begin(n, c, true)) {
            set_err(err, errlen, "out of memory");
            return false;
        }
        attn_inputs(c, n_tok, 1);
        // The first block's input is the token embedding: no gradient.
        ggml_tensor * xin = il > 0 ? grad_input(c, n->n_embd, n_tok) : ggml_new_tensor_2d(c.ctx, GGML_TYPE_F32, n->n_embd, n_tok);
        ggml_set_input(xin);
        ggml_tensor * y = block(n, c, xin, il, n_tok, 1);
        ggml_tensor * gy = ggml_new_tensor_2d(c.ctx, GGML_TYPE_F32, n->n_embd, n_tok);
        ggml_set_input(gy);
        ggml_tensor * l = ggml_sum(c.ctx, ggml_mul(c.ctx, y, gy));
        ggml_build_forward_expand(c.gf, l);
        build_backward(n, c, l);
        ggml_tensor * gx = il > 0 ? ggml_graph_get_grad(c.gf, xin) : nullptr;
        if (gx) {
            ggml_set_output(gx);
        }
        if (!alloc_graph(n, c, err, errlen)) {
            return false;
        }
        set_row_inputs(n, c, tokens, pos, seg, n_tok);
        ggml_backend_tensor_set(xin, xs[il].data(), 0, sizeof(float) * width);
        ggml_backend_tensor_set(gy, g.data(), 0, sizeof(float) * width);
        if (!run(n, c, err, errlen)) {
            return false;
        }
        if (gx) {
            ggml_backend_tensor_get(gx, g.data(), 0, sizeof(float) * width);
        }
    }
    return true;
}

// loss_checkpointed is the backward pass in pieces, so that memory holds
// one block's activations (and a chunk of vocabulary-wide logits) at a
// time instead of the whole graph's: a forward pass that keeps only each
// block's input, then the head in chunks of labelled rows giving dL/dx at
// the last block's output, then the blocks from last to first.
bool loss_checkpointed(llmrt_net * n, const int32_t * tokens, const int32_t * pos, const int32_t * seg, const int32_t * labels,
                       int n_tok, const std::vector<int32_t> & idx, float * loss, char * err, size_t errlen) {
    std::vector<std::vector<float>> xs;
    if (!save_inputs(n, tokens, pos, seg, n_tok, true, xs, err, errlen)) {
        return false;
    }
    const int n_lab = (int) idx.size();
    std::vector<head_piece> pieces;
    for (int c0 = 0; c0 < n_lab; c0 += head_chunk) {
        pieces.push_back({c0, std::min(head_chunk, n_lab - c0)});
    }
    // Each piece's summed loss over all labelled rows: their sum is the mean.
    std::vector<float> g((size_t) n->n_embd * n_tok, 0.0f);
    std::vector<double> parts;
    if (!head_pass(n, xs.back(), n_tok, labels, idx, pieces, 1.0f / (float) n_lab, &g, parts, err, errlen)) {
        return false;
    }
    double sum = 0.0;
    for (double p : parts) {
        sum += p;
    }
    *loss = (float) sum;
    return blocks_backward(n, tokens, pos, seg, n_tok, xs, g, err, errlen);
}

// seq_pieces splits the labelled rows of a row by segment (s in
// [0, n_seg)) into head pieces that never span two segments: the summed
// log-probability of each segment then comes out of its own pieces.
// piece_seg[k] is piece k's segment.
bool seq_pieces(const int32_t * seg, const int32_t * labels, int n_tok, int n_seg, int n_vocab, std::vector<int32_t> & idx,
                std::vector<head_piece> & pieces, std::vector<int> & piece_seg, char * err, size_t errlen) {
    std::vector<std::vector<int32_t>> by(n_seg);
    for (int i = 0; i < n_tok; ++i) {
        if (labels[i] < 0) {
            continue;
        }
        if (labels[i] >= n_vocab) {
            set_err(err, errlen, "label %d at position %d is outside the vocabulary", labels[i], i);
            return false;
        }
        if (seg[i] < 0 || seg[i] >= n_seg) {
            set_err(err, errlen, "labelled position %d is in segment %d, outside 0..%d", i, seg[i], n_seg - 1);
            return false;
        }
        by[seg[i]].push_back(i);
    }
    for (int s = 0; s < n_seg; ++s) {
        for (size_t c0 = 0; c0 < by[s].size(); c0 += head_chunk) {
            const int cn = (int) std::min(by[s].size() - c0, (size_t) head_chunk);
            pieces.push_back({(int) idx.size(), cn});
            piece_seg.push_back(s);
            idx.insert(idx.end(), by[s].begin() + c0, by[s].begin() + c0 + cn);
        }
    }
    return true;
}

// Scoped switch of the LoRA terms (the reference model of DPO is the base).
struct lora_off_scope {
    llmrt_net * n;
    bool was;
    lora_off_scope(llmrt_net * n, bool off) : n(n), was(n->lora_off) { n->lora_off = off; }
    ~lora_off_scope() { n->lora_off = was; }
};

double log_sigmoid(double z) {
    return z >= 0 ? -std::log1p(std::exp(-z)) : z - std::log1p(std::exp(z));
}

double sigmoid(double z) {
    return z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z));
}

} // namespace

extern "C" {

llmrt_net * llmrt_net_new(llama_model * m, const llmrt_net_params * p, char * err, size_t errlen) {
    if (!m || !p) {
        set_err(err, errlen, "no model");
        return nullptr;
    }
    const llama_hparams & hp = m->hparams;
    switch (m->arch) {
        case LLM_ARCH_LLAMA:
        case LLM_ARCH_QWEN2:
        case LLM_ARCH_QWEN3:
            break;
        default:
            set_err(err, errlen, "architecture %s is not supported by llmrt's training and embedding graph (llama, mistral, qwen2, qwen3 are)",
                    llm_arch_name(m->arch));
            return nullptr;
    }
    if (hp.n_layer == 0 || m->layers.size() != hp.n_layer || !m->tok_embd || !m->output_norm) {
        set_err(err, errlen, "the model has no weights (vocab-only file?)");
        return nullptr;
    }
    if (hp.n_expert > 0) {
        set_err(err, errlen, "mixture-of-experts models are not supported by the training graph");
        return nullptr;
    }
    if (hp.use_kq_norm || hp.n_embd_head_k != hp.n_embd_head_v || hp.n_rot != hp.n_embd_head_k) {
        set_err(err, errlen, "this llama variant (head sizes %u/%u, rope dims %u) is not supported by the training graph",
                hp.n_embd_head_k, hp.n_embd_head_v, hp.n_rot);
        return nullptr;
    }
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const llama_layer & ly = m->layers[il];
        if (!ly.wq || !ly.wk || !ly.wv || !ly.wo || !ly.ffn_gate || !ly.ffn_up || !ly.ffn_down || !ly.attn_norm || !ly.ffn_norm ||
            hp.n_head(il) != hp.n_head(0) || hp.n_head_kv(il) != hp.n_head_kv(0)) {
            set_err(err, errlen, "layer %u has a layout the training graph does not support", il);
            return nullptr;
        }
    }
    if (p->lora_rank > 0) {
        // The matmul backward pass (OUT_PROD) has no F16/BF16 kernel on the
        // CPU at the pinned ggml: it would abort the process mid-step.
        auto bad = [](const ggml_tensor * w) { return w && (w->type == GGML_TYPE_F16 || w->type == GGML_TYPE_BF16); };
        bool any = bad(m->output) || (!m->output && bad(m->tok_embd));
        for (uint32_t il = 0; il < hp.n_layer && !any; ++il) {
            const llama_layer & ly = m->layers[il];
            any = bad(ly.wq) || bad(ly.wk) || bad(ly.wv) || bad(ly.wo) || bad(ly.ffn_gate) || bad(ly.ffn_up) || bad(ly.ffn_down);
        }
        if (any) {
            set_err(err, errlen, "the model has F16/BF16 weights, which ggml cannot train through on this backend: "
                                 "convert the base first (llmrt quantize BASE OUTPUT --type Q8_0, or F32)");
            return nullptr;
        }
    }
    if (hp.rope_scaling_type_train == LLAMA_ROPE_SCALING_TYPE_YARN || hp.yarn_ext_factor > 0.0f) {
        set_err(err, errlen, "YaRN rope scaling is not supported by the training graph");
        return nullptr;
    }

    llmrt_net * n = new (std::nothrow) llmrt_net();
    if (!n) {
        set_err(err, errlen, "out of memory");
        return nullptr;
    }
    try {
        n->model = m;
        static_cast<llmrt::llm_shape &>(*n) = llmrt::shape_of(m);
        // Backends: the GPUs llama.cpp placed layers on, then the CPU.
        llmrt::init_backends(m, p->n_threads, n->backends);
        if (p->tiles && llmrt_q8_amx_available()) {
            // A thread pool of the net's own, which q8gemm.c recognises in
            // its matmuls' parameters and lets use the tiles.
            ggml_threadpool_params tpp = ggml_threadpool_params_default(p->n_threads > 0 ? p->n_threads : (int) std::thread::hardware_concurrency());
            tpp.poll = 1; // ggml's default spins up to ~0.3 s for work after each graph; no faster here
            n->pool = ggml_threadpool_new(&tpp);
            if (!n->pool) {
                throw std::runtime_error("cannot create the CPU thread pool");
            }
            // With more than 64 such nets at once the others run without.
            (void) llmrt_q8_tiles_allow(n->pool);
            ggml_backend_cpu_set_threadpool(n->backends.back(), n->pool);
        }

        n->graph_size = 4096 + (size_t) n->n_layer * 512;
        n->meta.resize(ggml_tensor_overhead() * n->graph_size * 2 + ggml_graph_overhead_custom(n->graph_size, true));
        n->sched = ggml_backend_sched_new(n->backends.data(), nullptr, (int) n->backends.size(), n->graph_size, false, true);
        if (!n->sched) {
            throw std::runtime_error("cannot create the backend scheduler");
        }

        // Each LoRA pair lives on the backend that holds its base weight,
        // the CPU when no device's buffers hold it (layers not offloaded).
        // A pair on another backend than its weight made ggml's scheduler
        // accumulate part of its gradient into a copy: with a GPU present
        // and layers left on the CPU, attn_output's gradients came out wrong.
        std::vector<ggml_tensor *> targets;
        if (p->lora_rank > 0) {
            for (uint32_t il = 0; il < hp.n_layer; ++il) {
                const llama_layer & ly = m->layers[il];
                const uint32_t t = p->lora_targets;
                if (t & LLMRT_LORA_Q) targets.push_back(ly.wq);
                if (t & LLMRT_LORA_K) targets.push_back(ly.wk);
                if (t & LLMRT_LORA_V) targets.push_back(ly.wv);
                if (t & LLMRT_LORA_O) targets.push_back(ly.wo);
                if (t & LLMRT_LORA_GATE) targets.push_back(ly.ffn_gate);
                if (t & LLMRT_LORA_UP) targets.push_back(ly.ffn_up);
                if (t & LLMRT_LORA_DOWN) targets.push_back(ly.ffn_down);
            }
            if (targets.empty()) {
                throw std::runtime_error("no LoRA targets selected");
            }
        }
        const size_t n_be = n->backends.size(); // the CPU is last
        auto home_of = [&](const ggml_tensor * w) -> size_t {
            if (w && w->buffer) {
                ggml_backend_buffer_type_t bt = ggml_backend_buffer_get_type(w->buffer);
                for (size_t i = 0; i + 1 < n_be; ++i) {
                    if (ggml_backend_get_default_buffer_type(n->backends[i]) == bt) {
                        return i;
                    }
                }
            }
            return n_be - 1;
        };
        n->pctx.assign(n_be, nullptr);
        for (size_t i = 0; i < n_be; ++i) {
            ggml_init_params ip = {
                /*.mem_size   =*/ ggml_tensor_overhead() * (targets.size() * 8 + 1),
                /*.mem_buffer =*/ nullptr,
                /*.no_alloc   =*/ true,
            };
            n->pctx[i] = ggml_init(ip);
            if (!n->pctx[i]) {
                throw std::runtime_error("out of memory");
            }
        }
        const int r = p->lora_rank;
        n->lora_scale = r > 0 ? p->lora_alpha / (float) r : 0.0f;
        for (ggml_tensor * w : targets) {
            ggml_context * pc = n->pctx[home_of(w)];
            lora_pair lp;
            lp.w = w;
            const int64_t n_in = w->ne[0], n_out = w->ne[1];
            for (int kind = 0; kind < 4; ++kind) {
                lp.t[kind][0] = ggml_new_tensor_2d(pc, GGML_TYPE_F32, n_in, r);
                lp.t[kind][1] = ggml_new_tensor_2d(pc, GGML_TYPE_F32, r, n_out);
            }
            ggml_set_param(lp.t[0][0]);
            ggml_set_param(lp.t[0][1]);
            const std::string base = ggml_get_name(w);
            ggml_set_name(lp.t[0][0], (base + ".lora_a").c_str());
            ggml_set_name(lp.t[0][1], (base + ".lora_b").c_str());
            n->names.push_back(base + ".lora_a");
            n->names.push_back(base + ".lora_b");
            n->pair_of[w] = n->pairs.size();
            n->pairs.push_back(lp);
        }
        // The loss gradient constant goes with the output head's weights.
        const ggml_tensor * head = m->output ? m->output : m->tok_embd;
        n->loss_grad = ggml_new_tensor_1d(n->pctx[home_of(head)], GGML_TYPE_F32, 1);
        for (size_t i = 0; i < n_be; ++i) {
            if (!ggml_get_first_tensor(n->pctx[i])) {
                continue; // nothing lives on this backend
            }
            ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(n->pctx[i], n->backends[i]);
            if (!buf) {
                throw std::runtime_error(std::string("cannot allocate the LoRA tensors on ") + ggml_backend_name(n->backends[i]));
            }
            ggml_backend_buffer_clear(buf, 0); // B, gradients and moments start at zero
            n->pbuf.push_back(buf);
        }
        const float one = 1.0f;
        ggml_backend_tensor_set(n->loss_grad, &one, 0, sizeof(one));

        // A ~ U(-1/sqrt(n_in), 1/sqrt(n_in)) (PEFT's default); B = 0, so a
        // fresh adapter leaves the model unchanged.
        std::mt19937_64 rng(p->seed);
        for (lora_pair & lp : n->pairs) {
            ggml_tensor * a = lp.t[0][0];
            const float bound = 1.0f / sqrtf((float) a->ne[0]);
            std::uniform_real_distribution<float> dist(-bound, bound);
            std::vector<float> buf(ggml_nelements(a));
            for (float & f : buf) {
                f = dist(rng);
            }
            ggml_backend_tensor_set(a, buf.data(), 0, ggml_nbytes(a));
        }
    } catch (const std::exception & e) {
        set_err(err, errlen, "%s", e.what());
        llmrt_net_free(n);
        return nullptr;
    } catch (...) {
        set_err(err, errlen, "unknown C++ exception");
        llmrt_net_free(n);
        return nullptr;
    }
    return n;
}

void llmrt_net_free(llmrt_net * n) {
    if (!n) {
        return;
    }
    llmrt::free_graph_resources(n->sched, n->pbuf, n->pctx, n->backends);
    if (n->pool) {
        llmrt_q8_tiles_revoke(n->pool);
        ggml_threadpool_free(n->pool);
    }
    delete n;
}

int llmrt_net_embed(llmrt_net * n, const int32_t * tokens, const int32_t * lens, int32_t n_seq, float * out, char * err, size_t errlen) {
    if (n_seq <= 0) {
        set_err(err, errlen, "no sequences");
        return -1;
    }
    int L = 0, total = 0;
    for (int s = 0; s < n_seq; ++s) {
        if (lens[s] <= 0) {
            set_err(err, errlen, "sequence %d is empty", s);
            return -1;
        }
        L = std::max(L, (int) lens[s]);
        total += lens[s];
    }
    if (!check_tokens(n, tokens, total, err, errlen)) {
        return -1;
    }
    try {
        call c;
        if (!begin(n, c, false)) {
            set_err(err, errlen, "out of memory");
            return -1;
        }
        const int S = n_seq;
        ggml_tensor * h = forward(n, c, L, S); // [n_embd, L*S]
        // Mean pooling: pooled[:, s] = sum_l h[:, l, s] * w[l, s], with
        // w = 1/len on the sequence's tokens and 0 on its padding.
        ggml_tensor * ht = ggml_cont(c.ctx, ggml_permute(c.ctx, ggml_reshape_3d(c.ctx, h, n->n_embd, L, S), 1, 0, 2, 3));
        ggml_tensor * wpool = ggml_new_tensor_3d(c.ctx, GGML_TYPE_F32, L, 1, S);
        ggml_set_input(wpool);
        ggml_tensor * pooled = ggml_mul_mat(c.ctx, ht, wpool); // [n_embd, 1, S]
        ggml_set_output(pooled);
        ggml_build_forward_expand(c.gf, pooled);
        if (!alloc_graph(n, c, err, errlen)) {
            return -1;
        }

        std::vector<int32_t> tok((size_t) L * S, 0), pos((size_t) L * S, 0), seg(L);
        std::vector<float> mask((size_t) L * L * S), w((size_t) L * S, 0.0f);
        int off = 0;
        for (int s = 0; s < S; ++s) {
            for (int i = 0; i < L; ++i) {
                const bool real = i < lens[s];
                tok[(size_t) s * L + i] = real ? tokens[off + i] : 0;
                pos[(size_t) s * L + i] = i;
                seg[i] = real ? 0 : -1;
                w[(size_t) s * L + i] = real ? 1.0f / (float) lens[s] : 0.0f;
            }
            fill_mask(mask.data() + (size_t) s * L * L, seg.data(), L);
            off += lens[s];
        }
        ggml_backend_tensor_set(c.tok, tok.data(), 0, sizeof(int32_t) * tok.size());
        ggml_backend_tensor_set(c.pos, pos.data(), 0, sizeof(int32_t) * pos.size());
        ggml_backend_tensor_set(c.mask, mask.data(), 0, sizeof(float) * mask.size());
        ggml_backend_tensor_set(wpool, w.data(), 0, sizeof(float) * w.size());
        if (!run(n, c, err, errlen)) {
            return -1;
        }
        ggml_backend_tensor_get(pooled, out, 0, sizeof(float) * (size_t) n->n_embd * S);
    } catch (const std::exception & e) {
        set_err(err, errlen, "%s", e.what());
        return -1;
    } catch (...) {
        set_err(err, errlen, "unknown C++ exception");
        return -1;
    }
    return 0;
}

int llmrt_net_logits(llmrt_net * n, const int32_t * tokens, const int32_t * pos, const int32_t * seg, int32_t n_tok, float * out,
                     char * err, size_t errlen) {
    if (n_tok <= 0) {
        set_err(err, errlen, "no tokens");
        return -1;
    }
    if (!check_tokens(n, tokens, n_tok, err, errlen)) {
        return -1;
    }
    try {
        call c;
        if (!begin(n, c, false)) {
            set_err(err, errlen, "out of memory");
            return -1;
        }
        ggml_tensor * logits = row_logits(n, c, n_tok);
        ggml_set_output(logits);
        ggml_build_forward_expand(c.gf, logits);
        if (!alloc_graph(n, c, err, errlen)) {
            return -1;
        }
        set_row_inputs(n, c, tokens, pos, seg, n_tok);
        if (!run(n, c, err, errlen)) {
            return -1;
        }
        ggml_backend_tensor_get(logits, out, 0, sizeof(float) * (size_t) n_tok * n->n_vocab);
    } catch (const std::exception & e) {
        set_err(err, errlen, "%s", e.what());
        return -1;
    } catch (...) {
        set_err(err, errlen, "unknown C++ exception");
        return -1;
    }
    return 0;
}

int llmrt_net_loss(llmrt_net * n, const int32_t * tokens, const int32_t * pos, const int32_t * seg, const int32_t * labels,
                   int32_t n_tok, int32_t backward, float * loss, int32_t * n_labelled, char * err, size_t errlen) {
    *loss = 0.0f;
    *n_labelled = 0;
    if (n_tok <= 0) {
        set_err(err, errlen, "no tokens");
        return -1;
    }
    if (backward && n->pairs.empty()) {
        set_err(err, errlen, "the net has no LoRA tensors to train");
        return -1;
    }
    if (!check_tokens(n, tokens, n_tok, err, errlen)) {
        return -1;
    }
    int n_lab = 0;
    for (int i = 0; i < n_tok; ++i) {
        if (labels[i] >= n->n_vocab) {
            set_err(err, errlen, "label %d at position %d is outside the vocabulary", labels[i], i);
            return -1;
        }
        n_lab += labels[i] >= 0;
    }
    if (n_lab == 0) {
        return 0; // nothing to learn from this row
    }
    std::vector<int32_t> idx;
    idx.reserve(n_lab);
    for (int i = 0; i < n_tok; ++i) {
        if (labels[i] >= 0) {
            idx.push_back(i);
        }
    }
    if (backward) {
        try {
            if (!loss_checkpointed(n, tokens, pos, seg, labels, n_tok, idx, loss, err, errlen)) {
                return -1;
            }
        } catch (const std::exception & e) {
            set_err(err, errlen, "%s", e.what());
            return -1;
        } catch (...) {
            set_err(err, errlen, "unknown C++ exception");
            return -1;
        }
        *n_labelled = n_lab;
        return 0;
    }
    try {
        call c;
        if (!begin(n, c, false)) {
            set_err(err, errlen, "out of memory");
            return -1;
        }
        // Only labelled positions reach the head: ggml's cross-entropy
        // backward assumes every target row sums to one, so unlabelled rows
        // must not be there at all (and the head is the costliest matmul).
        ggml_tensor * h = forward(n, c, n_tok, 1);
        ggml_tensor * rows = ggml_new_tensor_1d(c.ctx, GGML_TYPE_I32, n_lab);
        ggml_set_input(rows);
        h = ggml_get_rows(c.ctx, h, rows);
        ggml_tensor * head = n->model->output ? n->model->output : n->model->tok_embd;
        ggml_tensor * logits = mm(n, c.ctx, head, h); // [n_vocab, n_lab]
        ggml_tensor * onehot = ggml_new_tensor_2d(c.ctx, GGML_TYPE_F32, n->n_vocab, n_lab);
        ggml_set_input(onehot);
        ggml_tensor * l = ggml_cross_entropy_loss(c.ctx, logits, onehot); // mean over the labelled rows
        ggml_set_output(l);
        ggml_build_forward_expand(c.gf, l);
        if (!alloc_graph(n, c, err, errlen)) {
            return -1;
        }
        set_row_inputs(n, c, tokens, pos, seg, n_tok);
        // The one-hot targets are set in place (zeros, then one float per
        // labelled row): no vocabulary-wide host copy.
        ggml_backend_tensor_set(rows, idx.data(), 0, sizeof(int32_t) * idx.size());
        ggml_backend_tensor_memset(onehot, 0, 0, ggml_nbytes(onehot));
        const float one = 1.0f;
        for (size_t r = 0; r < idx.size(); ++r) {
            ggml_backend_tensor_set(onehot, &one, (r * n->n_vocab + labels[idx[r]]) * sizeof(float), sizeof(float));
        }
        if (!run(n, c, err, errlen)) {
            return -1;
        }
        ggml_backend_tensor_get(l, loss, 0, sizeof(float));
        *n_labelled = n_lab;
    } catch (const std::exception & e) {
        set_err(err, errlen, "%s", e.what());
        return -1;
    } catch (...) {
        set_err(err, errlen, "unknown C++ exception");
        return -1;
    }
    return 0;
}

// check_seq_row validates the common inputs of the per-segment calls.
static bool check_seq_row(llmrt_net * n, const int32_t * tokens, int32_t n_tok, int32_t n_seg, char * err, size_t errlen) {
    if (n_tok <= 0) {
        set_err(err, errlen, "no tokens");
        return false;
    }
    if (n_seg <= 0) {
        set_err(err, errlen, "no segments");
        return false;
    }
    return check_tokens(n, tokens, n_tok, err, errlen);
}

int llmrt_net_seq_logprobs(llmrt_net * n, const int32_t * tokens, const int32_t * pos, const int32_t * seg, const int32_t * labels,
                           int32_t n_tok, int32_t n_seg, int32_t use_lora, float * out, char * err, size_t errlen) {
    if (!check_seq_row(n, tokens, n_tok, n_seg, err, errlen)) {
        return -1;
    }
    try {
        std::vector<int32_t> idx;
        std::vector<head_piece> pieces;
        std::vector<int> piece_seg;
        if (!seq_pieces(seg, labels, n_tok, n_seg, n->n_vocab, idx, pieces, piece_seg, err, errlen)) {
            return -1;
        }
        std::fill(out, out + n_seg, 0.0f);
        if (pieces.empty()) {
            return 0;
        }
        lora_off_scope off(n, !use_lora);
        std::vector<std::vector<float>> xs;
        if (!save_inputs(n, tokens, pos, seg, n_tok, false, xs, err, errlen)) {
            return -1;
        }
        std::vector<double> nll;
        if (!head_pass(n, xs.back(), n_tok, labels, idx, pieces, 1.0f, nullptr, nll, err, errlen)) {
            return -1;
        }
        std::vector<double> sum(n_seg, 0.0);
        for (size_t k = 0; k < pieces.size(); ++k) {
            sum[piece_seg[k]] -= nll[k];
        }
        for (int s = 0; s < n_seg; ++s) {
            out[s] = (float) sum[s];
        }
    } catch (const std::exception & e) {
        set_err(err, errlen, "%s", e.what());
        return -1;
    } catch (...) {
        set_err(err, errlen, "unknown C++ exception");
        return -1;
    }
    return 0;
}

int llmrt_net_dpo(llmrt_net * n, const int32_t * tokens, const int32_t * pos, const int32_t * seg, const int32_t * labels,
                  int32_t n_tok, int32_t n_seg, const float * ref, float beta, float sft, int32_t backward, float * loss,
                  float * policy, char * err, size_t errlen) {
    *loss = 0.0f;
    if (!check_seq_row(n, tokens, n_tok, n_seg, err, errlen)) {
        return -1;
    }
    if (n_seg % 2 != 0) {
        set_err(err, errlen, "%d segments: DPO rows hold pairs (chosen, rejected)", n_seg);
        return -1;
    }
    if (!(beta > 0.0f) || !std::isfinite(beta)) {
        set_err(err, errlen, "DPO beta must be positive, got %g", beta);
        return -1;
    }
    if (!(sft >= 0.0f) || !std::isfinite(sft)) {
        set_err(err, errlen, "the chosen answers' loss weight must be >= 0, got %g", sft);
        return -1;
    }
    if (backward && n->pairs.empty()) {
        set_err(err, errlen, "the net has no LoRA tensors to train");
        return -1;
    }
    try {
        std::vector<int32_t> idx;
        std::vector<head_piece> pieces;
        std::vector<int> piece_seg;
        if (!seq_pieces(seg, labels, n_tok, n_seg, n->n_vocab, idx, pieces, piece_seg, err, errlen)) {
            return -1;
        }
        std::vector<int> labelled(n_seg, 0);
        for (size_t k = 0; k < pieces.size(); ++k) {
            labelled[piece_seg[k]] += pieces[k].count;
        }
        for (int s = 0; s < n_seg; ++s) {
            if (labelled[s] == 0) {
                set_err(err, errlen, "segment %d (pair %d, %s answer) has no labelled tokens", s, s / 2, s % 2 ? "rejected" : "chosen");
                return -1;
            }
        }
        std::vector<std::vector<float>> xs;
        if (!save_inputs(n, tokens, pos, seg, n_tok, backward != 0, xs, err, errlen)) {
            return -1;
        }
        const size_t width = (size_t) n->n_embd * n_tok;
        std::vector<float> g(backward ? width : 0, 0.0f);
        std::vector<double> nll;
        if (!head_pass(n, xs.back(), n_tok, labels, idx, pieces, 1.0f, backward ? &g : nullptr, nll, err, errlen)) {
            return -1;
        }
        std::vector<double> pi(n_seg, 0.0);
        for (size_t k = 0; k < pieces.size(); ++k) {
            pi[piece_seg[k]] -= nll[k];
        }
        // Per pair: z = beta((pi_c - ref_c) - (pi_r - ref_r)), loss
        // -log sigmoid(z) + sft * (-pi_c / n_c), the second term the chosen
        // answer's mean negative log-likelihood (RPO; 0 for plain DPO).
        // d loss / d pi_c = -beta sigmoid(-z) - sft / n_c, d loss / d pi_r =
        // beta sigmoid(-z). The head gave d(-pi_s)/dx in segment s's
        // columns, so column factors are -d loss / d pi_s.
        std::vector<float> factor(n_seg, 0.0f);
        double total = 0.0;
        for (int k = 0; k < n_seg / 2; ++k) {
            const double z = (double) beta * ((pi[2 * k] - ref[2 * k]) - (pi[2 * k + 1] - ref[2 * k + 1]));
            total -= log_sigmoid(z);
            total -= (double) sft * pi[2 * k] / labelled[2 * k];
            const double w = (double) beta * sigmoid(-z);
            factor[2 * k] = (float) (w + (double) sft / labelled[2 * k]);
            factor[2 * k + 1] = (float) -w;
        }
        *loss = (float) total;
        for (int s = 0; s < n_seg; ++s) {
            policy[s] = (float) pi[s];
        }
        if (!backward) {
            return 0;
        }
        const int E = n->n_embd;
        for (int i = 0; i < n_tok; ++i) {
            const float f = seg[i] >= 0 && seg[i] < n_seg ? factor[seg[i]] : 0.0f;
            for (int e = 0; e < E; ++e) {
                g[(size_t) i * E + e] *= f;
            }
        }
        if (!blocks_backward(n, tokens, pos, seg, n_tok, xs, g, err, errlen)) {
            return -1;
        }
    } catch (const std::exception & e) {
        set_err(err, errlen, "%s", e.what());
        return -1;
    } catch (...) {
        set_err(err, errlen, "unknown C++ exception");
        return -1;
    }
    return 0;
}

int llmrt_net_adamw(llmrt_net * n, float lr, float beta1, float beta2, float eps, float wd, float grad_scale, int32_t t,
                    char * err, size_t errlen) {
    if (n->pairs.empty()) {
        set_err(err, errlen, "the net has no LoRA tensors to train");
        return -1;
    }
    if (t < 1) {
        set_err(err, errlen, "AdamW step %d: must be >= 1", t);
        return -1;
    }
    try {
        call c;
        if (!begin(n, c, false)) {
            set_err(err, errlen, "out of memory");
            return -1;
        }
        ggml_tensor * par = ggml_new_tensor_1d(c.ctx, GGML_TYPE_F32, 7);
        ggml_set_input(par);
        for (lora_pair & lp : n->pairs) {
            for (int ab = 0; ab < 2; ++ab) {
                ggml_tensor * g = ggml_scale(c.ctx, lp.t[1][ab], grad_scale);
                ggml_build_forward_expand(c.gf, ggml_opt_step_adamw(c.ctx, lp.t[0][ab], g, lp.t[2][ab], lp.t[3][ab], par));
            }
        }
        if (!alloc_graph(n, c, err, errlen)) {
            return -1;
        }
        const float pv[7] = {lr, beta1, beta2, eps, wd, 1.0f / (1.0f - powf(beta1, (float) t)), 1.0f / (1.0f - powf(beta2, (float) t))};
        ggml_backend_tensor_set(par, pv, 0, sizeof(pv));
        if (!run(n, c, err, errlen)) {
            return -1;
        }
        for (lora_pair & lp : n->pairs) {
            ggml_backend_tensor_memset(lp.t[1][0], 0, 0, ggml_nbytes(lp.t[1][0]));
            ggml_backend_tensor_memset(lp.t[1][1], 0, 0, ggml_nbytes(lp.t[1][1]));
        }
    } catch (const std::exception & e) {
        set_err(err, errlen, "%s", e.what());
        return -1;
    } catch (...) {
        set_err(err, errlen, "unknown C++ exception");
        return -1;
    }
    return 0;
}

int32_t llmrt_net_n_params(const llmrt_net * n) {
    return (int32_t) n->pairs.size() * 2;
}

const char * llmrt_net_param_name(const llmrt_net * n, int32_t i) {
    if (i < 0 || i >= llmrt_net_n_params(n)) {
        return nullptr;
    }
    return n->names[i].c_str();
}

static ggml_tensor * param(const llmrt_net * n, int32_t i, int32_t kind) {
    if (i < 0 || i >= llmrt_net_n_params(n) || kind < 0 || kind > 3) {
        return nullptr;
    }
    return n->pairs[i / 2].t[kind][i % 2];
}

void llmrt_net_param_shape(const llmrt_net * n, int32_t i, int64_t * ne0, int64_t * ne1) {
    ggml_tensor * t = param(n, i, 0);
    *ne0 = t ? t->ne[0] : 0;
    *ne1 = t ? t->ne[1] : 0;
}

int llmrt_net_param_get(const llmrt_net * n, int32_t i, int32_t kind, float * out, char * err, size_t errlen) {
    ggml_tensor * t = param(n, i, kind);
    if (!t) {
        set_err(err, errlen, "no trained tensor %d of kind %d", i, kind);
        return -1;
    }
    ggml_backend_tensor_get(t, out, 0, ggml_nbytes(t));
    return 0;
}

int llmrt_net_param_set(llmrt_net * n, int32_t i, int32_t kind, const float * in, char * err, size_t errlen) {
    ggml_tensor * t = param(n, i, kind);
    if (!t) {
        set_err(err, errlen, "no trained tensor %d of kind %d", i, kind);
        return -1;
    }
    ggml_backend_tensor_set(t, in, 0, ggml_nbytes(t));
    return 0;
}

size_t llmrt_net_param_bytes(const llmrt_net * n) {
    size_t total = 0;
    for (ggml_backend_buffer_t b : n->pbuf) {
        total += ggml_backend_buffer_get_size(b);
    }
    return total;
}

int llmrt_net_reference_finetune(llmrt_net * n, const int32_t * tokens, const int32_t * labels, int32_t n_rows, int32_t n_ctx,
                                 double * seconds, float * first_loss, float * last_loss, char * err, size_t errlen) {
    if (n_rows < 2 || n_ctx < 1 || !n->pairs.empty()) {
        set_err(err, errlen, "reference fine-tuning needs 2 or more rows and a net without LoRA");
        return -1;
    }
    for (int32_t i = 0; i < n_rows * n_ctx; ++i) {
        if (labels[i] < 0 || labels[i] >= n->n_vocab) {
            set_err(err, errlen, "label %d at %d is outside the vocabulary", labels[i], i);
            return -1;
        }
    }
    if (!check_tokens(n, tokens, n_rows * n_ctx, err, errlen)) {
        return -1;
    }
    // What llama_opt_init marks trainable: every weight of every layer and
    // the output norm and head, not the token embedding.
    llama_model * m = n->model;
    for (ggml_tensor * t : {m->output_norm, m->output_norm_b, m->output, m->output_b}) {
        if (t) {
            ggml_set_param(t);
        }
    }
    for (llama_layer & ly : m->layers) {
        for (size_t i = 0; i < sizeof(ly) / sizeof(ggml_tensor *); ++i) {
            ggml_tensor * t = reinterpret_cast<ggml_tensor **>(&ly)[i];
            if (t && t->type == GGML_TYPE_F32) {
                ggml_set_param(t);
            }
        }
    }
    ggml_opt_params op = ggml_opt_default_params(n->sched, GGML_OPT_LOSS_TYPE_CROSS_ENTROPY);
    op.opt_period = 1;
    op.optimizer = GGML_OPT_OPTIMIZER_TYPE_ADAMW;
    ggml_opt_optimizer_params adam = ggml_opt_get_default_optimizer_params(nullptr);
    adam.adamw.alpha = 1e-4f;
    op.get_opt_pars = ggml_opt_get_constant_optimizer_params;
    op.get_opt_pars_ud = &adam;
    ggml_opt_context_t oc = ggml_opt_init(op);
    ggml_opt_result_t res = ggml_opt_result_init();
    if (!oc || !res) {
        if (oc) ggml_opt_free(oc);
        if (res) ggml_opt_result_free(res);
        set_err(err, errlen, "out of memory");
        return -1;
    }
    // The compute context holds the forward graph and, once ggml-opt has
    // built them there, the gradient and optimizer graphs.
    const size_t meta = 4 * n->graph_size * ggml_tensor_overhead() + 2 * ggml_graph_overhead_custom(n->graph_size, true);
    std::vector<int32_t> pos(n_ctx), seg(n_ctx, 0);
    for (int i = 0; i < n_ctx; ++i) {
        pos[i] = i;
    }
    std::vector<float> onehot((size_t) n->n_vocab * n_ctx);
    std::chrono::steady_clock::time_point t0, t1;
    int rc = 0;
    // Rows 0..n_rows-1 train; then row 0 again, forward only, for the loss
    // after training.
    for (int32_t i = 0; i <= n_rows && rc == 0; ++i) {
        const int32_t r = i % n_rows;
        const bool train = i < n_rows;
        if (i == 1) {
            t0 = std::chrono::steady_clock::now();
        }
        if (i == n_rows) {
            t1 = std::chrono::steady_clock::now();
        }
        call c;
        ggml_init_params ip = {meta, nullptr, true};
        c.ctx = ggml_init(ip);
        c.gf = c.ctx ? ggml_new_graph_custom(c.ctx, n->graph_size, false) : nullptr;
        if (!c.gf) {
            set_err(err, errlen, "out of memory");
            rc = -1;
            break;
        }
        ggml_tensor * logits = row_logits(n, c, n_ctx);
        ggml_build_forward_expand(c.gf, logits);
        ggml_opt_prepare_alloc(oc, c.ctx, c.gf, c.tok, logits);
        ggml_opt_alloc(oc, train);
        set_row_inputs(n, c, tokens + (size_t) r * n_ctx, pos.data(), seg.data(), n_ctx);
        std::fill(onehot.begin(), onehot.end(), 0.0f);
        for (int j = 0; j < n_ctx; ++j) {
            onehot[(size_t) j * n->n_vocab + labels[(size_t) r * n_ctx + j]] = 1.0f;
        }
        ggml_backend_tensor_set(ggml_opt_labels(oc), onehot.data(), 0, sizeof(float) * onehot.size());
        ggml_opt_result_reset(res);
        ggml_opt_eval(oc, res);
        double loss = 0;
        ggml_opt_result_loss(res, &loss, nullptr);
        if (!std::isfinite(loss)) {
            set_err(err, errlen, "row %d: loss %f", r, loss);
            rc = -1;
        }
        if (i == 0) {
            *first_loss = (float) loss;
        }
        *last_loss = (float) loss;
    }
    *seconds = std::chrono::duration<double>(t1 - t0).count();
    ggml_opt_result_free(res);
    ggml_opt_free(oc);
    return rc;
}

} // extern "C"
