// llm_shape.h: what llmrt's own graphs over a llama-family model (net.cpp,
// training and embeddings; decode.cpp, the multi-adapter decoder) read from
// its hyper-parameters, and the backends they run on. Internal to kernels,
// C++ only.
#pragma once

#include "ggml-backend.h"
#include "llama-model.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace llmrt {

// The shape and RoPE settings of a llama-family model, as llama.cpp's own
// graphs use them.
struct llm_shape {
    int n_embd = 0, n_layer = 0, n_vocab = 0, n_head = 0, n_head_kv = 0, n_embd_head = 0, n_rot = 0;
    float eps = 0, kq_scale = 0;
    int rope_type = 0, n_ctx_orig = 0;
    float freq_base = 0, freq_scale = 0, ext_factor = 0, attn_factor = 0, beta_fast = 0, beta_slow = 0;
};

inline llm_shape shape_of(const llama_model * m) {
    const llama_hparams & hp = m->hparams;
    llm_shape s;
    s.n_embd = hp.n_embd;
    s.n_layer = hp.n_layer;
    s.n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(m));
    s.n_head = hp.n_head(0);
    s.n_head_kv = hp.n_head_kv(0);
    s.n_embd_head = hp.n_embd_head_k;
    s.n_rot = hp.n_rot;
    s.eps = hp.f_norm_rms_eps;
    // llama.cpp's qwen2/qwen3 graphs use 1/sqrt(head size); llama's
    // honours the model's attention scale.
    s.kq_scale = m->arch == LLM_ARCH_LLAMA && hp.f_attention_scale != 0.0f ? hp.f_attention_scale : 1.0f / sqrtf((float) s.n_embd_head);
    s.rope_type = llama_model_rope_type(m);
    s.n_ctx_orig = hp.n_ctx_orig_yarn ? hp.n_ctx_orig_yarn : hp.n_ctx_train;
    s.freq_base = hp.rope_freq_base_train;
    s.freq_scale = hp.rope_scaling_type_train == LLAMA_ROPE_SCALING_TYPE_NONE ? 1.0f : hp.rope_freq_scale_train;
    s.ext_factor = 0.0f;
    s.attn_factor = hp.yarn_attn_factor * hp.rope_attn_factor;
    s.beta_fast = hp.yarn_beta_fast;
    s.beta_slow = hp.yarn_beta_slow;
    return s;
}

// init_backends appends the backends of a graph over m's weights to out:
// the devices llama.cpp placed layers on, then the CPU. Every backend that
// takes a thread count gets n_threads (<= 0: every core): the CPU, and
// devices that compute on the CPU, like the simulated GPU; left at ggml's
// default of 4 on a 2-core machine, their spinning barriers made a
// training step hundreds of times slower. It throws on failure, leaving
// the backends made so far in out for the caller to free.
inline void init_backends(const llama_model * m, int n_threads, std::vector<ggml_backend_t> & out) {
    for (ggml_backend_dev_t dev : m->devices) {
        ggml_backend_t be = ggml_backend_dev_init(dev, nullptr);
        if (!be) {
            throw std::runtime_error(std::string("cannot initialise backend ") + ggml_backend_dev_name(dev));
        }
        out.push_back(be);
    }
    ggml_backend_dev_t cpu_dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    ggml_backend_t cpu = cpu_dev ? ggml_backend_dev_init(cpu_dev, nullptr) : nullptr;
    if (!cpu) {
        throw std::runtime_error("cannot initialise the CPU backend");
    }
    out.push_back(cpu);
    if (n_threads <= 0) {
        n_threads = (int) std::thread::hardware_concurrency();
    }
    for (ggml_backend_t be : out) {
        ggml_backend_dev_t dev = ggml_backend_get_device(be);
        ggml_backend_reg_t reg = dev ? ggml_backend_dev_backend_reg(dev) : nullptr;
        auto set_threads = reg ? (ggml_backend_set_n_threads_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads") : nullptr;
        if (set_threads) {
            set_threads(be, n_threads);
        }
    }
}

// free_graph_resources frees what llmrt_net and llmrt_dec own in common:
// the scheduler, buffers, tensor contexts and backends.
inline void free_graph_resources(ggml_backend_sched_t sched, std::vector<ggml_backend_buffer_t> & bufs, std::vector<ggml_context *> & ctxs,
                                 std::vector<ggml_backend_t> & backends) {
    if (sched) {
        ggml_backend_sched_free(sched);
    }
    for (ggml_backend_buffer_t b : bufs) {
        ggml_backend_buffer_free(b);
    }
    for (ggml_context * c : ctxs) {
        if (c) {
            ggml_free(c);
        }
    }
    for (ggml_backend_t be : backends) {
        ggml_backend_free(be);
    }
    bufs.clear();
    ctxs.clear();
    backends.clear();
}

} // namespace llmrt
