// decode.cpp: the llama-family inference graph with a KV cache and a LoRA
// adapter per sequence. See decode.h.
//
// The graph follows llama.cpp's llama/qwen2/qwen3 graphs op for op (the
// non-flash-attention path: F16 K cache, transposed F16 V cache,
// softmax(K^T Q * scale + mask) V in F32), so that greedy decoding gives
// llama.cpp's tokens. Projections run once over every row of the step;
// attention runs per sequence over that sequence's cells; the LoRA delta of
// each adapted projection is two ggml_mul_mat_id over the stacked adapters,
// scaled per row.

#include "decode.h"
#include "llm_shape.h"
#include "net.h"

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "gguf.h"
#include "llama-model.h"
#include "llama-arch.h"
#include "llama-impl.h"

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

void dset_err(char * err, size_t n, const char * fmt, ...) {
    if (!err || n == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

// The seven projections of a layer, in LLMRT_LORA_* bit order.
constexpr int n_proj = 7;

ggml_tensor * proj_weight(const llama_layer & ly, int p) {
    switch (p) {
        case 0: return ly.wq;
        case 1: return ly.wk;
        case 2: return ly.wv;
        case 3: return ly.wo;
        case 4: return ly.ffn_gate;
        case 5: return ly.ffn_up;
        case 6: return ly.ffn_down;
    }
    return nullptr;
}

const char * proj_name(int p) {
    static const char * names[n_proj] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    return p >= 0 && p < n_proj ? names[p] : "?";
}

// The stacked adapters of one base weight: slot s of a holds A_s [n_in, r]
// and of b holds B_s [r, n_out], zero-padded to the stacks' rank.
struct lora_stack {
    ggml_tensor * w = nullptr;
    ggml_tensor * a = nullptr; // [n_in, rank, n_adapters]
    ggml_tensor * b = nullptr; // [rank, n_out, n_adapters]
    bool on_cpu = false;       // in a CPU buffer: the B product can run as lora_b below
};

// An adapted weight read from a file: its A and B in the adapter's type
// (F16 or BF16 when all its tensors are, else F32).
struct host_pair {
    const ggml_tensor * w = nullptr;
    int64_t n_in = 0, n_out = 0, rank = 0;
    const ggml_tensor * fa = nullptr, * fb = nullptr; // in the file
    std::vector<uint8_t> a, b;
};

} // namespace

struct llmrt_lora {
    float alpha = 0.0f;
    ggml_type type = GGML_TYPE_COUNT; // common type of its tensors (F32 when mixed)
    int32_t rank = 0;
    uint32_t targets = 0;
    bool with_data = false;
    std::string unsupported;
    std::vector<host_pair> pairs;
};

struct llmrt_dec : llmrt::llm_shape {
    llama_model * model = nullptr;
    std::vector<ggml_backend_t> backends; // the model's devices, then the CPU
    ggml_backend_sched_t sched = nullptr;
    size_t graph_size = 0;
    std::vector<uint8_t> meta;

    int n_embd_kv = 0;

    int n_seq = 0, n_ctx = 0;
    std::vector<ggml_tensor *> k, v; // per layer: K [n_embd_kv, n_ctx*n_seq], V^T [n_ctx, n_embd_kv*n_seq]

    int n_adapters = 0, rank = 0;
    uint32_t targets = 0;
    ggml_type lora_type = GGML_TYPE_F32;
    std::vector<lora_stack> stacks;
    std::unordered_map<const ggml_tensor *, size_t> stack_of;
    std::vector<float> slot_alpha;  // alpha of the adapter in each slot
    std::vector<int> slot_rank;     // its rank
    std::vector<bool> slot_loaded;

    std::vector<ggml_context *> ctxs;      // tensor headers of the KV cache and stacks, one per backend
    std::vector<ggml_backend_buffer_t> bufs;
    size_t kv_bytes = 0, lora_bytes = 0, compute_bytes = 0;

    std::vector<float> logits; // n_out * n_vocab of the last step
    int n_out = 0;
    std::vector<uint8_t> staging;
};

namespace {

// The per-row LoRA inputs of a graph: which stack slot each row reads and
// the row's scale (0 for rows without an adapter).
//
// Rows go in pieces. A prompt chunk of several tokens under an adapter is
// its own piece, computed with plain matmuls on its slot's A and B exactly
// as llama.cpp computes that chunk alone (ggml picks another kernel for a
// multi-row matmul than ggml_mul_mat_id uses, and the rounding difference,
// stored in the F16 KV cache, would grow into other tokens); the other rows
// (one-token steps, rows without adapter) go through ggml_mul_mat_id, which
// for one row computes what llama.cpp's matmul does.
struct lora_piece {
    int r0 = 0, n = 0;  // rows
    int slot = -1;      // >= 0: a prompt chunk under this slot
    int rank = 0;       // its adapter's rank
    float scale = 0.0f; // its scale
};

struct lora_rows {
    ggml_tensor * ids = nullptr;   // I32 [1, rows]
    ggml_tensor * scale = nullptr; // F32 [1, rows]
    std::vector<lora_piece> pieces;
};

ggml_tensor * add_bias(ggml_context * ctx, ggml_tensor * x, ggml_tensor * b) {
    return b ? ggml_add(ctx, x, b) : x;
}

ggml_tensor * rms(const llmrt_dec * d, ggml_context * ctx, ggml_tensor * x, ggml_tensor * w) {
    return ggml_mul(ctx, ggml_rms_norm(ctx, x, d->eps), w);
}

// lora_b computes dst[:, t] = B_s ax[:, t] for every row t, s = ids[t],
// with B the stacked [rank, n_out, slots] matrices (F32 or F16) and ax
// [rank, rows]: what ggml_mul_mat_id computes, to the bit. Each output is
// ggml's one-row dot product (ggml_vec_dot_f32 / _f16 for a row shorter
// than its SIMD step: products added in order, F32 with the same
// contraction, F16 in double, the activations rounded to F16 first), but
// 16 outputs run their chains of dependent additions side by side instead
// of one after the other, which left a rank-16 B product latency-bound.
void lora_b(ggml_tensor * dst, int ith, int nth, void * /*userdata*/) {
    const ggml_tensor * ax = dst->src[0];
    const ggml_tensor * b = dst->src[1];
    const ggml_tensor * ids = dst->src[2];
    const int64_t R = b->ne[0], n_out = b->ne[1], rows = ax->ne[1];
    constexpr int W = 16;      // outputs side by side
    constexpr int max_r = 32;  // callers send ranks below 32
    if (R > max_r) {
        return;
    }
    // Outputs in blocks of W, split across threads.
    const int64_t blocks = (n_out + W - 1) / W;
    const int64_t per = (blocks + nth - 1) / nth;
    const int64_t b0 = per * ith, b1 = std::min(blocks, b0 + per);
    const bool f16 = b->type == GGML_TYPE_F16;
    if (b0 >= b1) {
        return;
    }
    // The rows' activations (rounded to F16 first for F16 weights, as
    // ggml converts them for an F16 dot product).
    std::vector<float> acts((size_t) rows * R);
    ggml_fp16_t a16[max_r];
    for (int64_t t = 0; t < rows; ++t) {
        const float * a = (const float *) ((const char *) ax->data + t * ax->nb[1]);
        if (f16) {
            ggml_fp32_to_fp16_row(a, a16, R);
            ggml_fp16_to_fp32_row(a16, &acts[(size_t) t * R], R);
        } else {
            std::copy(a, a + R, &acts[(size_t) t * R]);
        }
    }
    float bf[W * max_r];
    int32_t have = -1; // the slot whose block is in bf (F16)
    // Blocks outside, rows inside: a block's weights stay in cache for
    // every row that reads the same adapter.
    for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t o0 = blk * W, n = std::min<int64_t>(W, n_out - o0);
        have = -1;
        for (int64_t t = 0; t < rows; ++t) {
            const int32_t slot = *(const int32_t *) ((const char *) ids->data + t * ids->nb[1]);
            const float * arow = &acts[(size_t) t * R];
            const char * col = (const char *) b->data + (size_t) slot * b->nb[2] + o0 * b->nb[1];
            const float * bw = (const float *) col; // W outputs' R weights, output after output
            if (f16 || n < W) {
                if (slot != have || n < W) {
                    if (f16) {
                        ggml_fp16_to_fp32_row((const ggml_fp16_t *) col, bf, n * R);
                    } else {
                        std::copy(bw, bw + n * R, bf);
                    }
                    std::fill(bf + n * R, bf + W * R, 0.0f); // the last block: zero weights past the end
                    have = slot;
                }
                bw = bf;
            }
            float * out = (float *) ((char *) dst->data + t * dst->nb[1]);
            if (f16) {
                double acc[W] = {};
                for (int64_t r = 0; r < R; ++r) {
                    for (int j = 0; j < W; ++j) {
                        acc[j] += (double) (bw[j * R + r] * arow[r]);
                    }
                }
                for (int64_t j = 0; j < n; ++j) {
                    out[o0 + j] = (float) acc[j];
                }
            } else {
                float acc[W] = {};
                for (int64_t r = 0; r < R; ++r) {
                    for (int j = 0; j < W; ++j) {
                        acc[j] += bw[j * R + r] * arow[r];
                    }
                }
                for (int64_t j = 0; j < n; ++j) {
                    out[o0 + j] = acc[j];
                }
            }
        }
    }
}

// w x, plus s_row * B_row (A_row x) for every row when w has a stack and
// the step has adapters. x is contiguous [n_in, rows].
ggml_tensor * mm(const llmrt_dec * d, ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, const lora_rows * lr) {
    ggml_tensor * y = ggml_mul_mat(ctx, w, x);
    if (!lr) {
        return y;
    }
    auto it = d->stack_of.find(w);
    if (it == d->stack_of.end()) {
        return y;
    }
    const lora_stack & st = d->stacks[it->second];
    const int64_t n_in = x->ne[0], n_out = w->ne[1];
    ggml_tensor * delta = nullptr;
    for (const lora_piece & p : lr->pieces) {
        ggml_tensor * xs = lr->pieces.size() == 1 ? x : ggml_view_2d(ctx, x, n_in, p.n, x->nb[1], (size_t) p.r0 * x->nb[1]);
        ggml_tensor * part;
        if (p.slot >= 0) {
            ggml_tensor * a = ggml_view_2d(ctx, st.a, n_in, p.rank, st.a->nb[1], (size_t) p.slot * st.a->nb[2]);
            ggml_tensor * b = ggml_view_2d(ctx, st.b, p.rank, n_out, st.b->nb[1], (size_t) p.slot * st.b->nb[2]);
            part = ggml_scale(ctx, ggml_mul_mat(ctx, b, ggml_mul_mat(ctx, a, xs)), p.scale);
        } else {
            ggml_tensor * ids = ggml_view_2d(ctx, lr->ids, 1, p.n, lr->ids->nb[1], (size_t) p.r0 * lr->ids->nb[1]);
            ggml_tensor * sc = ggml_view_2d(ctx, lr->scale, 1, p.n, lr->scale->nb[1], (size_t) p.r0 * lr->scale->nb[1]);
            ggml_tensor * x3 = ggml_reshape_3d(ctx, xs, n_in, 1, p.n);
            ggml_tensor * ax = ggml_mul_mat_id(ctx, st.a, x3, ids); // [rank, 1, n]
            ggml_tensor * bax;
            // Ranks of 32 and more take ggml's SIMD dot product, which is
            // not latency-bound and which lora_b does not reproduce.
            if (st.on_cpu && st.b->ne[0] < 32 && (st.b->type == GGML_TYPE_F32 || st.b->type == GGML_TYPE_F16)) {
                ggml_tensor * args[3] = {ggml_reshape_2d(ctx, ax, ax->ne[0], p.n), st.b, ids};
                bax = ggml_custom_4d(ctx, GGML_TYPE_F32, n_out, p.n, 1, 1, args, 3, lora_b, GGML_N_TASKS_MAX, nullptr);
            } else {
                bax = ggml_reshape_2d(ctx, ggml_mul_mat_id(ctx, st.b, ax, ids), n_out, p.n); // [n_out, n]
            }
            part = ggml_mul(ctx, bax, sc);
        }
        delta = delta ? ggml_concat(ctx, delta, part, 1) : part;
    }
    return ggml_add(ctx, y, delta);
}

// The backend whose buffers hold w (the CPU, last, when none does).
size_t home_of(const llmrt_dec * d, const ggml_tensor * w) {
    const size_t n_be = d->backends.size();
    if (w && w->buffer) {
        ggml_backend_buffer_type_t bt = ggml_backend_buffer_get_type(w->buffer);
        for (size_t i = 0; i + 1 < n_be; ++i) {
            if (ggml_backend_get_default_buffer_type(d->backends[i]) == bt) {
                return i;
            }
        }
    }
    return n_be - 1;
}

// Which projection of which layer w is; false when it is none of them.
bool find_proj(const llama_model * m, const ggml_tensor * w, int * layer, int * proj) {
    for (size_t il = 0; il < m->layers.size(); ++il) {
        for (int p = 0; p < n_proj; ++p) {
            if (proj_weight(m->layers[il], p) == w) {
                *layer = (int) il;
                *proj = p;
                return true;
            }
        }
    }
    return false;
}

// Reads a tensor of an adapter file, converted to type (the tensor's own,
// or F32).
void read_tensor(FILE * f, const gguf_context * g, const ggml_tensor * t, ggml_type type, std::vector<uint8_t> & out) {
    const int64_t id = gguf_find_tensor(g, t->name);
    if (id < 0) {
        throw std::runtime_error(std::string("tensor ") + t->name + " is missing");
    }
    const size_t off = gguf_get_data_offset(g) + gguf_get_tensor_offset(g, id);
    const size_t size = ggml_nbytes(t);
    std::vector<uint8_t> raw(size);
    if (fseeko(f, (off_t) off, SEEK_SET) != 0 || fread(raw.data(), 1, size, f) != size) {
        throw std::runtime_error(std::string("cannot read tensor ") + t->name + " (file truncated?)");
    }
    if (t->type == type) {
        out = std::move(raw);
        return;
    }
    const int64_t n = ggml_nelements(t);
    const ggml_type_traits * tr = ggml_get_type_traits(t->type);
    if (type != GGML_TYPE_F32 || !tr || !tr->to_float || (ggml_is_quantized(t->type) && n % ggml_blck_size(t->type) != 0)) {
        throw std::runtime_error(std::string("tensor ") + t->name + " has type " + ggml_type_name(t->type) + ", which cannot be read as F32");
    }
    out.resize(sizeof(float) * n);
    tr->to_float(raw.data(), (float *) out.data(), n);
}

// Converts n values of type (F32, F16 or BF16) to F32.
void to_f32(const uint8_t * src, ggml_type type, float * dst, int64_t n) {
    switch (type) {
        case GGML_TYPE_F16: ggml_fp16_to_fp32_row((const ggml_fp16_t *) src, dst, n); break;
        case GGML_TYPE_BF16: ggml_bf16_to_fp32_row((const ggml_bf16_t *) src, dst, n); break;
        default: memcpy(dst, src, sizeof(float) * n);
    }
}

void read_lora(llama_model * m, const char * path, bool with_data, llmrt_lora & l) {
    ggml_context * meta = nullptr;
    gguf_init_params gp = {/*.no_alloc =*/ true, /*.ctx =*/ &meta};
    gguf_context * g = gguf_init_from_file(path, gp);
    if (!g) {
        throw std::runtime_error("not a readable GGUF file");
    }
    std::unique_ptr<gguf_context, void (*)(gguf_context *)> gk(g, gguf_free);
    std::unique_ptr<ggml_context, void (*)(ggml_context *)> mk(meta, ggml_free);

    auto get_str = [&](const char * key) -> std::string {
        const int64_t id = gguf_find_key(g, key);
        return id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_STRING ? "" : gguf_get_val_str(g, id);
    };
    if (get_str("general.type") != "adapter") {
        throw std::runtime_error("general.type is not \"adapter\"");
    }
    if (llm_arch_from_string(get_str("general.architecture")) != m->arch) {
        throw std::runtime_error("the adapter's architecture is not the model's");
    }
    if (get_str("adapter.type") != "lora") {
        throw std::runtime_error("adapter.type is not \"lora\"");
    }
    const int64_t ka = gguf_find_key(g, "adapter.lora.alpha");
    if (ka >= 0) {
        if (gguf_get_kv_type(g, ka) != GGUF_TYPE_FLOAT32) {
            throw std::runtime_error("adapter.lora.alpha is not an f32");
        }
        l.alpha = gguf_get_val_f32(g, ka);
    }
    if (gguf_find_key(g, "adapter.alora.invocation_tokens") >= 0) {
        l.unsupported = "it is an activated LoRA (aLoRA)";
    }

    struct ab { ggml_tensor * a = nullptr; ggml_tensor * b = nullptr; };
    std::vector<std::pair<std::string, ab>> order;
    std::unordered_map<std::string, size_t> idx;
    auto ends = [](const std::string & s, const char * suf) {
        const size_t n = strlen(suf);
        return s.size() >= n && s.compare(s.size() - n, n, suf) == 0;
    };
    for (ggml_tensor * t = ggml_get_first_tensor(meta); t; t = ggml_get_next_tensor(meta, t)) {
        std::string name = t->name;
        bool is_a = ends(name, ".lora_a"), is_b = ends(name, ".lora_b");
        if (!is_a && !is_b) {
            if (ends(name, "_norm.weight")) {
                continue; // llama.cpp ignores these too
            }
            throw std::runtime_error("tensor " + name + " has an unexpected suffix");
        }
        name.resize(name.size() - 7);
        auto it = idx.find(name);
        if (it == idx.end()) {
            it = idx.emplace(name, order.size()).first;
            order.push_back({name, ab{}});
        }
        (is_a ? order[it->second].second.a : order[it->second].second.b) = t;
    }
    if (order.empty()) {
        throw std::runtime_error("the adapter has no LoRA tensors");
    }
    std::unique_ptr<FILE, int (*)(FILE *)> f(nullptr, fclose);
    if (with_data) {
        f.reset(fopen(path, "rb"));
        if (!f) {
            throw std::runtime_error("cannot open the file");
        }
    }
    for (auto & [name, p] : order) {
        if (!p.a || !p.b) {
            throw std::runtime_error("LoRA pair of " + name + " is missing one of its tensors");
        }
        const ggml_tensor * w = m->get_tensor(name.c_str());
        if (!w) {
            throw std::runtime_error("tensor " + name + " is not in the model (adapter for another base?)");
        }
        const bool token_embd = ends(name, "token_embd.weight");
        if (token_embd) {
            if (w->ne[0] != p.b->ne[1] || w->ne[1] != p.a->ne[1]) {
                throw std::runtime_error("tensor " + name + " has the wrong shape for this model");
            }
        } else {
            if (w->ne[0] != p.a->ne[0] || w->ne[1] != p.b->ne[1]) {
                throw std::runtime_error("tensor " + name + " has the wrong shape for this model");
            }
            if (p.a->ne[1] != p.b->ne[0]) {
                throw std::runtime_error("lora_a of " + name + " is not transposed");
            }
        }
        int layer = 0, proj = 0;
        if (token_embd || !find_proj(m, w, &layer, &proj)) {
            if (l.unsupported.empty()) {
                l.unsupported = "it adapts " + name + ", outside the attention and MLP projections";
            }
            continue;
        }
        l.targets |= 1u << proj;
        l.rank = std::max<int32_t>(l.rank, (int32_t) p.b->ne[0]);
        for (const ggml_tensor * t : {p.a, p.b}) {
            const bool half = t->type == GGML_TYPE_F16 || t->type == GGML_TYPE_BF16;
            l.type = l.type == GGML_TYPE_COUNT && half ? t->type : l.type == t->type ? l.type : GGML_TYPE_F32;
        }
        host_pair hp;
        hp.w = w;
        hp.n_in = w->ne[0];
        hp.n_out = w->ne[1];
        hp.rank = p.b->ne[0];
        hp.fa = p.a;
        hp.fb = p.b;
        l.pairs.push_back(std::move(hp));
    }
    if (l.type == GGML_TYPE_COUNT) {
        l.type = GGML_TYPE_F32;
    }
    for (host_pair & hp : l.pairs) {
        if (with_data) {
            read_tensor(f.get(), g, hp.fa, l.type, hp.a);
            read_tensor(f.get(), g, hp.fb, l.type, hp.b);
        }
        hp.fa = hp.fb = nullptr; // the file's headers go with this function
    }
    l.with_data = with_data;
}

bool check_step(const llmrt_dec * d, const int32_t * tokens, const llmrt_dec_seq * seqs, int32_t n_seq, char * err, size_t errlen) {
    if (n_seq <= 0) {
        dset_err(err, errlen, "no sequences");
        return false;
    }
    std::vector<bool> seen(d->n_seq, false);
    int off = 0;
    for (int i = 0; i < n_seq; ++i) {
        const llmrt_dec_seq & s = seqs[i];
        if (s.seq < 0 || s.seq >= d->n_seq || seen[s.seq]) {
            dset_err(err, errlen, "sequence %d: slot %d is out of range (0..%d) or repeated", i, s.seq, d->n_seq - 1);
            return false;
        }
        seen[s.seq] = true;
        if (s.n_tok <= 0 || s.pos < 0 || (int64_t) s.pos + s.n_tok > d->n_ctx) {
            dset_err(err, errlen, "sequence %d: %d tokens at position %d do not fit its %d cells", i, s.n_tok, s.pos, d->n_ctx);
            return false;
        }
        if (s.adapter < -1 || s.adapter >= d->n_adapters || (s.adapter >= 0 && !d->slot_loaded[s.adapter])) {
            dset_err(err, errlen, "sequence %d: adapter slot %d holds no adapter", i, s.adapter);
            return false;
        }
        for (int t = 0; t < s.n_tok; ++t) {
            const int32_t tok = tokens[off + t];
            if (tok < 0 || tok >= d->n_vocab) {
                dset_err(err, errlen, "sequence %d: token %d is outside the vocabulary (0..%d)", i, tok, d->n_vocab - 1);
                return false;
            }
        }
        off += s.n_tok;
    }
    return true;
}

// An upper bound on the graph nodes of a step of n_seq sequences whose
// LoRA rows fall in n_pieces pieces: per layer about 100 for the
// projections, norms, RoPE and cache writes, 16 per sequence's attention
// and 10 per piece and adapted projection.
size_t graph_nodes(const llmrt_dec * d, int n_seq, int n_pieces) {
    return 1024 + (size_t) d->n_layer * (128 + 16 * (size_t) n_seq + (size_t) n_proj * 10 * (n_pieces + 1));
}

// (Re)creates the scheduler and the graph header buffer for graphs of up
// to n nodes.
void size_graph(llmrt_dec * d, size_t n) {
    if (d->sched && n <= d->graph_size) {
        return;
    }
    if (d->sched) {
        ggml_backend_sched_free(d->sched);
        d->sched = nullptr;
    }
    d->graph_size = n;
    d->meta.resize(ggml_tensor_overhead() * n * 2 + ggml_graph_overhead_custom(n, false));
    d->sched = ggml_backend_sched_new(d->backends.data(), nullptr, (int) d->backends.size(), n, false, true);
    if (!d->sched) {
        throw std::runtime_error("cannot create the backend scheduler");
    }
}

// The LoRA scale of a sequence's rows, computed as llama.cpp computes it:
// user scale * alpha / rank (the user scale alone without alpha).
float row_scale(const llmrt_dec * d, const llmrt_dec_seq & s) {
    const float alpha = d->slot_alpha[s.adapter];
    return alpha != 0.0f ? s.scale * alpha / (float) d->slot_rank[s.adapter] : s.scale;
}

// The cells a sequence's attention spans: its tokens so far, padded as
// llama.cpp pads them (a multiple of 256, at most the slot), so that the
// attention matmuls have llama.cpp's shapes and take its kernels (which
// round differently for other shapes); padding cells are masked.
int span(const llmrt_dec * d, const llmrt_dec_seq & s) {
    return std::min(d->n_ctx, std::max(256, GGML_PAD(s.pos + s.n_tok, 256)));
}

// One step's graph and its inputs.
struct step_graph {
    ggml_context * ctx = nullptr;
    ggml_cgraph * gf = nullptr;
    ggml_tensor * tok = nullptr, * pos = nullptr, * kidx = nullptr, * vidx = nullptr, * mask = nullptr, * out_ids = nullptr;
    // The one-token sequences (first n_one of the step) attend together:
    // their slots lo.. lo+S-1 as a 4-D batch of n_kv cells each.
    int n_one = 0, lo = 0, S = 0, n_kv = 0;
    ggml_tensor * qrows = nullptr; // I32 [S]: each slot's query row (0 for slots not in the step)
    ggml_tensor * orows = nullptr; // I32 [n_one]: each one-token sequence's slot - lo
    ggml_tensor * mask4 = nullptr; // F32 [n_kv, 1, 1, S]
    lora_rows all, out;
    ggml_tensor * logits = nullptr;
    ~step_graph() {
        if (ctx) {
            ggml_free(ctx);
        }
    }
};

void build_step(llmrt_dec * d, step_graph & g, const llmrt_dec_seq * seqs, int n_seq, int T, int n_out, bool lora) {
    ggml_init_params ip = {d->meta.size(), d->meta.data(), true};
    g.ctx = ggml_init(ip);
    if (!g.ctx) {
        throw std::runtime_error("out of memory");
    }
    ggml_context * ctx = g.ctx;
    g.gf = ggml_new_graph_custom(ctx, d->graph_size, false);
    const llama_model * m = d->model;
    const int dh = d->n_embd_head;

    auto input = [&](ggml_type t, int64_t ne0, int64_t ne1 = 1) {
        ggml_tensor * x = ggml_new_tensor_2d(ctx, t, ne0, ne1);
        ggml_set_input(x);
        return x;
    };
    g.tok = input(GGML_TYPE_I32, T);
    g.pos = input(GGML_TYPE_I32, T);
    g.kidx = input(GGML_TYPE_I64, T);
    g.vidx = input(GGML_TYPE_I64, (int64_t) T * d->n_embd_kv);
    while (g.n_one < n_seq && seqs[g.n_one].n_tok == 1) {
        g.n_one++;
    }
    if (g.n_one > 0) {
        int hi = 0;
        g.lo = d->n_seq;
        for (int i = 0; i < g.n_one; ++i) {
            g.lo = std::min(g.lo, (int) seqs[i].seq);
            hi = std::max(hi, (int) seqs[i].seq);
            g.n_kv = std::max(g.n_kv, span(d, seqs[i]));
        }
        g.S = hi - g.lo + 1;
        g.qrows = input(GGML_TYPE_I32, g.S);
        g.orows = input(GGML_TYPE_I32, g.n_one);
        g.mask4 = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, g.n_kv, 1, 1, g.S);
        ggml_set_input(g.mask4);
    }
    int64_t mask_len = 0;
    for (int i = g.n_one; i < n_seq; ++i) {
        mask_len += (int64_t) span(d, seqs[i]) * seqs[i].n_tok;
    }
    if (mask_len > 0) {
        g.mask = input(GGML_TYPE_F32, mask_len);
    }
    const bool subset = n_out > 0 && n_out < T;
    if (subset) {
        g.out_ids = input(GGML_TYPE_I32, n_out);
    }
    if (lora) {
        g.all.ids = input(GGML_TYPE_I32, 1, T);
        g.all.scale = input(GGML_TYPE_F32, 1, T);
        int r0 = 0;
        for (int i = 0; i < n_seq; ++i) {
            const llmrt_dec_seq & s = seqs[i];
            if (s.adapter >= 0 && s.n_tok > 1) {
                g.all.pieces.push_back({r0, s.n_tok, s.adapter, d->slot_rank[s.adapter], row_scale(d, s)});
            } else if (!g.all.pieces.empty() && g.all.pieces.back().slot < 0) {
                g.all.pieces.back().n += s.n_tok;
            } else {
                g.all.pieces.push_back({r0, s.n_tok, -1, 0, 0.0f});
            }
            r0 += s.n_tok;
        }
        if (subset) {
            // One row per sequence: ggml_mul_mat_id for all.
            g.out.ids = input(GGML_TYPE_I32, 1, n_out);
            g.out.scale = input(GGML_TYPE_F32, 1, n_out);
            g.out.pieces.push_back({0, n_out, -1, 0, 0.0f});
        } else {
            g.out = g.all;
        }
    }
    const lora_rows * lr_all = lora ? &g.all : nullptr;
    const lora_rows * lr_out = lora ? &g.out : nullptr;

    ggml_tensor * x = ggml_get_rows(ctx, m->tok_embd, g.tok);
    for (int il = 0; il < d->n_layer; ++il) {
        const llama_layer & ly = m->layers[il];
        ggml_tensor * inp = x;
        ggml_tensor * cur = rms(d, ctx, x, ly.attn_norm);
        ggml_tensor * q = add_bias(ctx, mm(d, ctx, ly.wq, cur, lr_all), ly.bq);
        ggml_tensor * k = add_bias(ctx, mm(d, ctx, ly.wk, cur, lr_all), ly.bk);
        ggml_tensor * v = add_bias(ctx, mm(d, ctx, ly.wv, cur, lr_all), ly.bv);
        q = ggml_reshape_3d(ctx, q, dh, d->n_head, T);
        k = ggml_reshape_3d(ctx, k, dh, d->n_head_kv, T);
        v = ggml_reshape_3d(ctx, v, dh, d->n_head_kv, T);
        if (ly.attn_q_norm) { // qwen3
            q = rms(d, ctx, q, ly.attn_q_norm);
        }
        if (ly.attn_k_norm) {
            k = rms(d, ctx, k, ly.attn_k_norm);
        }
        q = ggml_rope_ext(ctx, q, g.pos, ly.rope_freqs, d->n_rot, d->rope_type, d->n_ctx_orig, d->freq_base, d->freq_scale,
                          d->ext_factor, d->attn_factor, d->beta_fast, d->beta_slow);
        k = ggml_rope_ext(ctx, k, g.pos, ly.rope_freqs, d->n_rot, d->rope_type, d->n_ctx_orig, d->freq_base, d->freq_scale,
                          d->ext_factor, d->attn_factor, d->beta_fast, d->beta_slow);

        // Store this step's K and V: first, so that the attention below
        // (which reads the cache) runs after the writes.
        ggml_tensor * kc = d->k[il];
        ggml_tensor * vc = d->v[il];
        ggml_build_forward_expand(g.gf, ggml_set_rows(ctx, kc, ggml_view_2d(ctx, k, d->n_embd_kv, T, k->nb[2], 0), g.kidx));
        ggml_build_forward_expand(g.gf, ggml_set_rows(ctx, ggml_reshape_2d(ctx, vc, 1, ggml_nelements(vc)),
                                                      ggml_reshape_2d(ctx, v, 1, (int64_t) d->n_embd_kv * T), g.vidx));
        if (n_out == 0 && il == d->n_layer - 1) {
            return; // a prompt chunk without outputs: the cache is all it leaves
        }

        // Attention. The one-token sequences together, as llama.cpp does
        // with one KV stream per sequence: their queries gathered into
        // their slots' order, each slot's cells a batch of the 4-D views.
        ggml_tensor * attn = nullptr;
        if (g.n_one > 0) {
            const int64_t nq = (int64_t) dh * d->n_head;
            ggml_tensor * qg = ggml_get_rows(ctx, ggml_reshape_2d(ctx, q, nq, T), g.qrows); // [dh*heads, S]
            qg = ggml_permute(ctx, ggml_reshape_4d(ctx, qg, dh, d->n_head, 1, g.S), 0, 2, 1, 3); // [dh, 1, heads, S]
            const size_t krow = ggml_row_size(kc->type, d->n_embd_kv);
            ggml_tensor * k4 = ggml_view_4d(ctx, kc, dh, g.n_kv, d->n_head_kv, g.S, krow, ggml_row_size(kc->type, dh), krow * d->n_ctx,
                                            krow * d->n_ctx * g.lo);
            const size_t vslot = ggml_row_size(vc->type, (int64_t) d->n_ctx * d->n_embd_kv);
            ggml_tensor * v4 = ggml_view_4d(ctx, vc, g.n_kv, dh, d->n_head_kv, g.S, ggml_row_size(vc->type, d->n_ctx),
                                            ggml_row_size(vc->type, (int64_t) d->n_ctx * dh), vslot, vslot * g.lo);
            ggml_tensor * kq = ggml_mul_mat(ctx, k4, qg); // [n_kv, 1, heads, S]
            ggml_mul_mat_set_prec(kq, GGML_PREC_F32);
            kq = ggml_soft_max_ext(ctx, kq, g.mask4, d->kq_scale, 0.0f);
            ggml_tensor * o = ggml_mul_mat(ctx, v4, kq); // [dh, 1, heads, S]
            o = ggml_cont_2d(ctx, ggml_permute(ctx, o, 0, 2, 1, 3), nq, g.S);
            attn = ggml_get_rows(ctx, o, g.orows); // [dh*heads, n_one] in step order
        }
        // Prompt chunks one at a time over their own cells.
        int t0 = g.n_one;
        int64_t moff = 0;
        for (int i = g.n_one; i < n_seq; ++i) {
            const llmrt_dec_seq & s = seqs[i];
            const int n = s.n_tok, n_kv = span(d, s);
            ggml_tensor * qs = ggml_view_3d(ctx, q, dh, d->n_head, n, q->nb[1], q->nb[2], (size_t) t0 * q->nb[2]);
            qs = ggml_permute(ctx, qs, 0, 2, 1, 3); // [dh, n, heads]
            ggml_tensor * ks = ggml_view_3d(ctx, kc, dh, n_kv, d->n_head_kv, ggml_row_size(kc->type, d->n_embd_kv),
                                            ggml_row_size(kc->type, dh), ggml_row_size(kc->type, (int64_t) d->n_embd_kv * d->n_ctx) * s.seq);
            ggml_tensor * vs = ggml_view_3d(ctx, vc, n_kv, dh, d->n_head_kv, ggml_row_size(vc->type, d->n_ctx),
                                            ggml_row_size(vc->type, (int64_t) d->n_ctx * dh),
                                            ggml_row_size(vc->type, (int64_t) d->n_ctx * d->n_embd_kv) * s.seq);
            ggml_tensor * kq = ggml_mul_mat(ctx, ks, qs); // [n_kv, n, heads]; KV heads broadcast (GQA)
            ggml_mul_mat_set_prec(kq, GGML_PREC_F32);
            ggml_tensor * ms = ggml_view_2d(ctx, g.mask, n_kv, n, (size_t) n_kv * sizeof(float), (size_t) moff * sizeof(float));
            kq = ggml_soft_max_ext(ctx, kq, ms, d->kq_scale, 0.0f);
            ggml_tensor * o = ggml_mul_mat(ctx, vs, kq); // [dh, n, heads]
            o = ggml_cont_2d(ctx, ggml_permute(ctx, o, 0, 2, 1, 3), (int64_t) dh * d->n_head, n);
            attn = attn ? ggml_concat(ctx, attn, o, 1) : o;
            t0 += n;
            moff += (int64_t) n_kv * n;
        }
        cur = add_bias(ctx, mm(d, ctx, ly.wo, attn, lr_all), ly.bo);

        const lora_rows * lr = lr_all;
        if (il == d->n_layer - 1 && subset) {
            cur = ggml_get_rows(ctx, cur, g.out_ids);
            inp = ggml_get_rows(ctx, inp, g.out_ids);
            lr = lr_out;
        }
        ggml_tensor * ffn_inp = ggml_add(ctx, cur, inp);
        cur = rms(d, ctx, ffn_inp, ly.ffn_norm);
        ggml_tensor * up = add_bias(ctx, mm(d, ctx, ly.ffn_up, cur, lr), ly.ffn_up_b);
        ggml_tensor * gate = add_bias(ctx, mm(d, ctx, ly.ffn_gate, cur, lr), ly.ffn_gate_b);
        cur = ggml_swiglu_split(ctx, gate, up);
        cur = add_bias(ctx, mm(d, ctx, ly.ffn_down, cur, lr), ly.ffn_down_b);
        x = ggml_add(ctx, cur, ffn_inp);
    }
    x = rms(d, ctx, x, m->output_norm);
    g.logits = ggml_mul_mat(ctx, m->output ? m->output : m->tok_embd, x);
    ggml_set_output(g.logits);
    ggml_build_forward_expand(g.gf, g.logits);
}

void set_step_inputs(llmrt_dec * d, step_graph & g, const int32_t * tokens, const llmrt_dec_seq * seqs, int n_seq, int T) {
    std::vector<int32_t> pos(T), ids, out_ids, ids_o;
    std::vector<int64_t> kidx(T), vidx((size_t) T * d->n_embd_kv);
    std::vector<float> mask, scale, scale_o;
    // Rows without an adapter read a slot some other row of the step
    // uses, with scale 0, so no extra stack slice is touched.
    int any_slot = 0;
    for (int i = 0; i < n_seq; ++i) {
        if (seqs[i].adapter >= 0) {
            any_slot = seqs[i].adapter;
            break;
        }
    }
    int t = 0;
    for (int i = 0; i < n_seq; ++i) {
        const llmrt_dec_seq & s = seqs[i];
        const int n_kv = span(d, s);
        const int slot = s.adapter >= 0 ? s.adapter : any_slot;
        const float sc = s.adapter >= 0 ? row_scale(d, s) : 0.0f;
        for (int j = 0; j < s.n_tok; ++j, ++t) {
            const int p = s.pos + j;
            pos[t] = p;
            const int64_t cell = (int64_t) s.seq * d->n_ctx + p;
            kidx[t] = cell;
            for (int c = 0; c < d->n_embd_kv; ++c) {
                vidx[(size_t) t * d->n_embd_kv + c] = (int64_t) s.seq * d->n_ctx * d->n_embd_kv + (int64_t) c * d->n_ctx + p;
            }
            for (int c = 0; i >= g.n_one && c < n_kv; ++c) {
                mask.push_back(c <= p ? 0.0f : -INFINITY);
            }
            ids.push_back(slot);
            scale.push_back(sc);
            if (s.logits && j == s.n_tok - 1) {
                out_ids.push_back(t);
                ids_o.push_back(slot);
                scale_o.push_back(sc);
            }
        }
    }
    auto set = [](ggml_tensor * x, const void * data, size_t size) {
        if (x && x->buffer) {
            ggml_backend_tensor_set(x, data, 0, size);
        }
    };
    set(g.tok, tokens, sizeof(int32_t) * T);
    set(g.pos, pos.data(), sizeof(int32_t) * T);
    set(g.kidx, kidx.data(), sizeof(int64_t) * kidx.size());
    set(g.vidx, vidx.data(), sizeof(int64_t) * vidx.size());
    set(g.mask, mask.data(), sizeof(float) * mask.size());
    if (g.n_one > 0) {
        std::vector<int32_t> qrows(g.S, 0), orows(g.n_one);
        std::vector<float> mask4((size_t) g.n_kv * g.S, -INFINITY);
        for (int s = 0; s < g.S; ++s) {
            mask4[(size_t) s * g.n_kv] = 0.0f; // a slot not in the step sees one cell: no empty softmax
        }
        for (int i = 0; i < g.n_one; ++i) {
            const int s = seqs[i].seq - g.lo;
            qrows[s] = i;
            orows[i] = s;
            std::fill(mask4.begin() + (size_t) s * g.n_kv, mask4.begin() + (size_t) s * g.n_kv + seqs[i].pos + 1, 0.0f);
        }
        set(g.qrows, qrows.data(), sizeof(int32_t) * qrows.size());
        set(g.orows, orows.data(), sizeof(int32_t) * orows.size());
        set(g.mask4, mask4.data(), sizeof(float) * mask4.size());
    }
    set(g.out_ids, out_ids.data(), sizeof(int32_t) * out_ids.size());
    if (g.all.ids) {
        set(g.all.ids, ids.data(), sizeof(int32_t) * ids.size());
        set(g.all.scale, scale.data(), sizeof(float) * scale.size());
        if (g.out.ids != g.all.ids) {
            set(g.out.ids, ids_o.data(), sizeof(int32_t) * ids_o.size());
            set(g.out.scale, scale_o.data(), sizeof(float) * scale_o.size());
        }
    }
}

} // namespace

extern "C" {

int llmrt_dec_check(const llama_model * m, char * err, size_t errlen) {
    if (!m) {
        dset_err(err, errlen, "no model");
        return -1;
    }
    const llama_hparams & hp = m->hparams;
    switch (m->arch) {
        case LLM_ARCH_LLAMA:
        case LLM_ARCH_QWEN2:
        case LLM_ARCH_QWEN3:
            break;
        default:
            dset_err(err, errlen, "architecture %s has no multi-adapter decoder (llama, mistral, qwen2, qwen3 have)", llm_arch_name(m->arch));
            return -1;
    }
    if (hp.n_layer == 0 || m->layers.size() != hp.n_layer || !m->tok_embd || !m->output_norm) {
        dset_err(err, errlen, "the model has no weights (vocab-only file?)");
        return -1;
    }
    if (hp.n_expert > 0 || hp.use_kq_norm || hp.n_embd_head_k != hp.n_embd_head_v || hp.n_rot != hp.n_embd_head_k ||
        hp.f_max_alibi_bias != 0.0f || hp.attn_soft_cap || hp.swa_type != LLAMA_SWA_TYPE_NONE) {
        dset_err(err, errlen, "this llama variant (experts, head sizes %u/%u, rope dims %u, sliding window or ALiBi) has no multi-adapter decoder",
                 hp.n_embd_head_k, hp.n_embd_head_v, hp.n_rot);
        return -1;
    }
    if (hp.rope_scaling_type_train == LLAMA_ROPE_SCALING_TYPE_YARN || hp.yarn_ext_factor > 0.0f) {
        dset_err(err, errlen, "YaRN rope scaling has no multi-adapter decoder");
        return -1;
    }
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        const llama_layer & ly = m->layers[il];
        if (!ly.wq || !ly.wk || !ly.wv || !ly.wo || !ly.ffn_gate || !ly.ffn_up || !ly.ffn_down || !ly.attn_norm || !ly.ffn_norm ||
            hp.n_head(il) != hp.n_head(0) || hp.n_head_kv(il) != hp.n_head_kv(0)) {
            dset_err(err, errlen, "layer %u has a layout the multi-adapter decoder does not support", il);
            return -1;
        }
    }
    return 0;
}

llmrt_dec * llmrt_dec_new(llama_model * m, const llmrt_dec_params * p, char * err, size_t errlen) {
    if (!p || llmrt_dec_check(m, err, errlen) != 0) {
        return nullptr;
    }
    if (p->lora_type != GGML_TYPE_F32 && p->lora_type != GGML_TYPE_F16 && p->lora_type != GGML_TYPE_BF16) {
        dset_err(err, errlen, "adapter stacks of type %d: F32, F16 or BF16 only", p->lora_type);
        return nullptr;
    }
    if (p->n_seq <= 0 || p->n_ctx <= 0 || p->n_adapters < 0 || (p->n_adapters > 0 && (p->lora_rank <= 0 || p->lora_targets == 0))) {
        dset_err(err, errlen, "bad decoder parameters: %d sequences of %d cells, %d adapters of rank %d", p->n_seq, p->n_ctx, p->n_adapters,
                 p->lora_rank);
        return nullptr;
    }

    llmrt_dec * d = new (std::nothrow) llmrt_dec();
    if (!d) {
        dset_err(err, errlen, "out of memory");
        return nullptr;
    }
    try {
        d->model = m;
        static_cast<llmrt::llm_shape &>(*d) = llmrt::shape_of(m);
        d->n_embd_kv = d->n_embd_head * d->n_head_kv;
        d->n_seq = p->n_seq;
        d->n_ctx = p->n_ctx;
        d->n_adapters = p->n_adapters;
        d->rank = p->n_adapters > 0 ? p->lora_rank : 0;
        d->targets = p->n_adapters > 0 ? p->lora_targets : 0;
        d->lora_type = (ggml_type) p->lora_type;
        d->slot_alpha.assign(std::max(d->n_adapters, 0), 0.0f);
        d->slot_rank.assign(std::max(d->n_adapters, 0), 0);
        d->slot_loaded.assign(std::max(d->n_adapters, 0), false);

        llmrt::init_backends(m, p->n_threads, d->backends);

        // Sized for steps of one-token sequences; grown for larger ones.
        size_graph(d, graph_nodes(d, d->n_seq, 1));

        // The KV cache and the stacks of a layer live where the layer's
        // weights do.
        const size_t n_be = d->backends.size();
        d->ctxs.assign(n_be, nullptr);
        const size_t per_layer = 2 + 2 * n_proj;
        for (size_t i = 0; i < n_be; ++i) {
            ggml_init_params ip = {ggml_tensor_overhead() * (per_layer * d->n_layer + 1), nullptr, true};
            d->ctxs[i] = ggml_init(ip);
            if (!d->ctxs[i]) {
                throw std::runtime_error("out of memory");
            }
        }
        for (int il = 0; il < d->n_layer; ++il) {
            const llama_layer & ly = m->layers[il];
            ggml_context * c = d->ctxs[home_of(d, ly.wq)];
            ggml_tensor * k = ggml_new_tensor_2d(c, GGML_TYPE_F16, d->n_embd_kv, (int64_t) d->n_ctx * d->n_seq);
            ggml_tensor * v = ggml_new_tensor_2d(c, GGML_TYPE_F16, d->n_ctx, (int64_t) d->n_embd_kv * d->n_seq);
            ggml_format_name(k, "dec_k_l%d", il);
            ggml_format_name(v, "dec_v_l%d", il);
            d->k.push_back(k);
            d->v.push_back(v);
            d->kv_bytes += ggml_nbytes(k) + ggml_nbytes(v);
            for (int pj = 0; pj < n_proj && d->n_adapters > 0; ++pj) {
                if (!(d->targets & (1u << pj))) {
                    continue;
                }
                ggml_tensor * w = proj_weight(ly, pj);
                ggml_context * wc = d->ctxs[home_of(d, w)];
                lora_stack st;
                st.w = w;
                st.a = ggml_new_tensor_3d(wc, d->lora_type, w->ne[0], d->rank, d->n_adapters);
                st.b = ggml_new_tensor_3d(wc, d->lora_type, d->rank, w->ne[1], d->n_adapters);
                ggml_format_name(st.a, "%s.lora_a_stack", ggml_get_name(w));
                ggml_format_name(st.b, "%s.lora_b_stack", ggml_get_name(w));
                st.on_cpu = home_of(d, w) + 1 == d->backends.size();
                d->lora_bytes += ggml_nbytes(st.a) + ggml_nbytes(st.b);
                d->stack_of[w] = d->stacks.size();
                d->stacks.push_back(st);
            }
        }
        for (size_t i = 0; i < n_be; ++i) {
            if (!ggml_get_first_tensor(d->ctxs[i])) {
                continue;
            }
            ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(d->ctxs[i], d->backends[i]);
            if (!buf) {
                throw std::runtime_error(std::string("cannot allocate the KV cache and adapter stacks on ") + ggml_backend_name(d->backends[i]));
            }
            // Zero: masked cells are multiplied by 0 and must not be NaN;
            // empty adapter slots contribute nothing.
            ggml_backend_buffer_clear(buf, 0);
            d->bufs.push_back(buf);
        }
    } catch (const std::exception & e) {
        dset_err(err, errlen, "%s", e.what());
        llmrt_dec_free(d);
        return nullptr;
    } catch (...) {
        dset_err(err, errlen, "unknown C++ exception");
        llmrt_dec_free(d);
        return nullptr;
    }
    return d;
}

void llmrt_dec_free(llmrt_dec * d) {
    if (!d) {
        return;
    }
    llmrt::free_graph_resources(d->sched, d->bufs, d->ctxs, d->backends);
    delete d;
}

void llmrt_dec_memory(const llmrt_dec * d, size_t * kv, size_t * lora, size_t * compute) {
    *kv = d->kv_bytes;
    *lora = d->lora_bytes;
    *compute = d->compute_bytes;
}

int llmrt_dec_step(llmrt_dec * d, const int32_t * tokens, const llmrt_dec_seq * seqs, int32_t n_seq, char * err, size_t errlen) {
    d->n_out = 0;
    if (!check_step(d, tokens, seqs, n_seq, err, errlen)) {
        return -1;
    }
    try {
        // The step runs its one-token sequences first (they attend
        // together), then the prompt chunks; outputs go back in the
        // caller's order.
        std::vector<int> first_tok(n_seq), order;
        int T = 0, n_out = 0;
        bool lora = false;
        for (int i = 0; i < n_seq; ++i) {
            first_tok[i] = T;
            T += seqs[i].n_tok;
            n_out += seqs[i].logits != 0;
            lora = lora || seqs[i].adapter >= 0;
        }
        for (int pass = 0; pass < 2; ++pass) {
            for (int i = 0; i < n_seq; ++i) {
                if ((seqs[i].n_tok == 1) == (pass == 0)) {
                    order.push_back(i);
                }
            }
        }
        std::vector<llmrt_dec_seq> iseqs;
        std::vector<int32_t> itoks;
        std::vector<int> out_at; // the caller's output index of each output, in step order
        std::vector<int> caller_out(n_seq, -1);
        for (int i = 0, k = 0; i < n_seq; ++i) {
            if (seqs[i].logits) {
                caller_out[i] = k++;
            }
        }
        for (int i : order) {
            iseqs.push_back(seqs[i]);
            itoks.insert(itoks.end(), tokens + first_tok[i], tokens + first_tok[i] + seqs[i].n_tok);
            if (seqs[i].logits) {
                out_at.push_back(caller_out[i]);
            }
        }

        size_graph(d, graph_nodes(d, n_seq, 2 * n_seq));
        step_graph g;
        build_step(d, g, iseqs.data(), n_seq, T, n_out, lora);
        ggml_backend_sched_reset(d->sched);
        if (!ggml_backend_sched_alloc_graph(d->sched, g.gf)) {
            dset_err(err, errlen, "allocating the compute buffers failed (out of memory?)");
            return -1;
        }
        size_t compute = 0;
        for (ggml_backend_t be : d->backends) {
            compute += ggml_backend_sched_get_buffer_size(d->sched, be);
        }
        d->compute_bytes = std::max(d->compute_bytes, compute);
        set_step_inputs(d, g, itoks.data(), iseqs.data(), n_seq, T);
        const ggml_status st = ggml_backend_sched_graph_compute(d->sched, g.gf);
        if (st != GGML_STATUS_SUCCESS) {
            dset_err(err, errlen, "graph compute failed: %s", ggml_status_to_string(st));
            return -1;
        }
        if (n_out > 0) {
            const size_t row = sizeof(float) * d->n_vocab;
            d->logits.resize((size_t) n_out * d->n_vocab);
            for (int j = 0; j < n_out; ++j) {
                ggml_backend_tensor_get(g.logits, d->logits.data() + (size_t) out_at[j] * d->n_vocab, (size_t) j * row, row);
            }
            d->n_out = n_out;
        }
    } catch (const std::exception & e) {
        dset_err(err, errlen, "%s", e.what());
        return -1;
    } catch (...) {
        dset_err(err, errlen, "unknown C++ exception");
        return -1;
    }
    return 0;
}

const float * llmrt_dec_logits(const llmrt_dec * d, int32_t i) {
    if (i < 0 || i >= d->n_out) {
        return nullptr;
    }
    return d->logits.data() + (size_t) i * d->n_vocab;
}

int llmrt_dec_set_adapter(llmrt_dec * d, int32_t slot, const llmrt_lora * l, char * err, size_t errlen) {
    if (slot < 0 || slot >= d->n_adapters) {
        dset_err(err, errlen, "adapter slot %d is out of range (the decoder has %d)", slot, d->n_adapters);
        return -1;
    }
    if (!l->with_data) {
        dset_err(err, errlen, "the adapter was read without its tensors");
        return -1;
    }
    if (!l->unsupported.empty()) {
        dset_err(err, errlen, "the decoder cannot serve this adapter: %s", l->unsupported.c_str());
        return -1;
    }
    if (l->rank > d->rank) {
        dset_err(err, errlen, "the adapter's rank %d exceeds the decoder's %d", l->rank, d->rank);
        return -1;
    }
    for (int p = 0; p < n_proj; ++p) {
        if ((l->targets & (1u << p)) && !(d->targets & (1u << p))) {
            dset_err(err, errlen, "the adapter adapts %s, which the decoder's stacks do not cover", proj_name(p));
            return -1;
        }
    }
    try {
        std::unordered_map<const ggml_tensor *, const host_pair *> by_w;
        for (const host_pair & hp : l->pairs) {
            by_w[hp.w] = &hp;
        }
        // The row scale is alpha / rank (see row_scale); a pair of another
        // rank than the adapter's largest gets the difference folded into B.
        const float base = l->alpha != 0.0f ? l->alpha / (float) l->rank : 1.0f;
        d->slot_loaded[slot] = false;
        const int R = d->rank;
        const ggml_type st_type = d->lora_type;
        const size_t es = ggml_type_size(st_type), hs = ggml_type_size(l->type);
        // Values in the adapter's type go into a stack of that type as
        // they are; others through F32.
        std::vector<float> f32;
        auto convert = [&](const uint8_t * src, int64_t n, uint8_t * dst) {
            if (l->type == st_type) {
                memcpy(dst, src, es * n);
                return;
            }
            f32.resize(n);
            to_f32(src, l->type, f32.data(), n);
            switch (st_type) {
                case GGML_TYPE_F16: ggml_fp32_to_fp16_row(f32.data(), (ggml_fp16_t *) dst, n); break;
                case GGML_TYPE_BF16: ggml_fp32_to_bf16_row(f32.data(), (ggml_bf16_t *) dst, n); break;
                default: memcpy(dst, f32.data(), sizeof(float) * n);
            }
        };
        std::vector<uint8_t> & buf = d->staging;
        std::vector<float> row;
        for (const lora_stack & st : d->stacks) {
            const int64_t n_in = st.a->ne[0], n_out = st.b->ne[1];
            auto it = by_w.find(st.w);
            const host_pair * hp = it == by_w.end() ? nullptr : it->second;
            // A [n_in, r], then zero rows up to R.
            buf.assign(es * n_in * R, 0);
            if (hp) {
                convert(hp->a.data(), n_in * hp->rank, buf.data());
            }
            ggml_backend_tensor_set(st.a, buf.data(), (size_t) slot * st.a->nb[2], buf.size());
            // B [r, n_out]: each output's r values, zero-padded to R.
            buf.assign(es * R * n_out, 0);
            if (hp) {
                const float fold = l->alpha != 0.0f ? (l->alpha / (float) hp->rank) / base : 1.0f;
                for (int64_t o = 0; o < n_out; ++o) {
                    const uint8_t * src = hp->b.data() + hs * o * hp->rank;
                    uint8_t * dst = buf.data() + es * o * R;
                    if (fold == 1.0f) {
                        convert(src, hp->rank, dst);
                        continue;
                    }
                    row.resize(hp->rank);
                    to_f32(src, l->type, row.data(), hp->rank);
                    for (float & x : row) {
                        x *= fold;
                    }
                    switch (st_type) {
                        case GGML_TYPE_F16: ggml_fp32_to_fp16_row(row.data(), (ggml_fp16_t *) dst, hp->rank); break;
                        case GGML_TYPE_BF16: ggml_fp32_to_bf16_row(row.data(), (ggml_bf16_t *) dst, hp->rank); break;
                        default: memcpy(dst, row.data(), sizeof(float) * hp->rank);
                    }
                }
            }
            ggml_backend_tensor_set(st.b, buf.data(), (size_t) slot * st.b->nb[2], buf.size());
        }
        d->slot_alpha[slot] = l->alpha;
        d->slot_rank[slot] = l->rank;
        d->slot_loaded[slot] = true;
    } catch (const std::exception & e) {
        dset_err(err, errlen, "%s", e.what());
        return -1;
    }
    return 0;
}

llmrt_lora * llmrt_lora_read(llama_model * m, const char * path, int32_t with_data, char * err, size_t errlen) {
    if (!m || !path) {
        dset_err(err, errlen, "no model or path");
        return nullptr;
    }
    llmrt_lora * l = new (std::nothrow) llmrt_lora();
    if (!l) {
        dset_err(err, errlen, "out of memory");
        return nullptr;
    }
    try {
        read_lora(m, path, with_data != 0, *l);
    } catch (const std::exception & e) {
        dset_err(err, errlen, "%s", e.what());
        delete l;
        return nullptr;
    } catch (...) {
        dset_err(err, errlen, "unknown C++ exception");
        delete l;
        return nullptr;
    }
    return l;
}

void llmrt_lora_free(llmrt_lora * l) {
    delete l;
}

int32_t llmrt_lora_rank(const llmrt_lora * l) {
    return l->rank;
}

uint32_t llmrt_lora_targets(const llmrt_lora * l) {
    return l->targets;
}

size_t llmrt_lora_bytes(const llmrt_lora * l) {
    size_t n = 0;
    for (const host_pair & hp : l->pairs) {
        n += hp.a.size() + hp.b.size();
    }
    return n;
}

int32_t llmrt_lora_type(const llmrt_lora * l) {
    return l->type;
}

const char * llmrt_lora_unsupported(const llmrt_lora * l) {
    return l->unsupported.c_str();
}

int llmrt_sampler_sample_logits(llama_sampler * smpl, const float * logits, int32_t n_vocab, llama_token * out, llmrt_err * err) {
    try {
        std::vector<llama_token_data> cur((size_t) n_vocab);
        for (llama_token id = 0; id < n_vocab; ++id) {
            cur[id] = llama_token_data{id, logits[id], 0.0f};
        }
        llama_token_data_array arr = {cur.data(), cur.size(), -1, false};
        llama_sampler_apply(smpl, &arr);
        if (arr.selected < 0 || arr.selected >= (int64_t) arr.size) {
            throw std::runtime_error("the sampler chain selected no token");
        }
        *out = arr.data[arr.selected].id;
        llama_sampler_accept(smpl, *out);
    } catch (const std::exception & e) {
        if (err) {
            snprintf(err->msg, sizeof(err->msg), "%s", e.what());
        }
        return LLMRT_EXCEPTION;
    } catch (...) {
        if (err) {
            snprintf(err->msg, sizeof(err->msg), "unknown C++ exception");
        }
        return LLMRT_EXCEPTION;
    }
    return 0;
}

} // extern "C"
