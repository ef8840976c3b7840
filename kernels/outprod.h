#pragma once
#include <stdint.h>
#include "ggml.h"

// llmrt's kernel for the matmul backward pass: ggml computes the gradient
// of y = W x with respect to x as OUT_PROD(W, transpose(dy)), which its CPU
// backend runs as rank-1 updates. This routes that shape to a blocked
// matrix product instead, hooked at link time (see outprod.c).

// Routes matching OUT_PROD nodes to the kernel (on != 0) or leaves them to
// ggml (on == 0). Process-wide; the default is on.
void llmrt_outprod_enable(int on);

// Whether the kernel is on.
int llmrt_outprod_enabled(void);

// How many OUT_PROD nodes the kernel has computed in this process.
long long llmrt_outprod_calls(void);

// How many threads' shares of them ran on AMX-BF16 tiles (training's
// input gradients through Q8_0 weights, see outprod.c).
long long llmrt_outprod_amx_calls(void);

// dst = OUT_PROD(w, transpose(g)) (transposed != 0: g holds m rows of k
// floats per head, one per token, as a gradient does) or OUT_PROD(w, g) (g
// holds k rows of m floats per head) through ggml's CPU backend on
// `threads` threads, in `heads` batches: w holds w_heads slices (heads is a
// multiple; each serves heads/w_heads batches, as ggml broadcasts) of k
// rows of n floats, stored as wtype (GGML_TYPE_F32, or GGML_TYPE_Q8_0
// quantized as a model stores it), dst m rows of n floats per head; with
// tiles != 0 on a thread pool allowed the AMX tiles (q8gemm.h). For
// tests comparing the kernel with ggml's loop. Returns 0, or -1.
int llmrt_outprod_graph(int n, int m, int k, int heads, int w_heads, int wtype, const float * w, const float * g, int transposed, float * dst,
                        int threads, int tiles);
