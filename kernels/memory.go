package kernels

/*
#include "memory.h"
*/
import "C"

import "errors"

// Memory is what llama.cpp allocated for a context, in bytes.
type Memory struct {
	Weights int64 // the model's weights on every device
	KV      int64 // the KV cache (llama.cpp's "context" memory)
	Compute int64 // compute buffers
}

// Total is the sum.
func (m Memory) Total() int64 { return m.Weights + m.KV + m.Compute }

// Memory returns llama.cpp's own accounting of this context's memory.
func (c *Context) Memory() (Memory, error) {
	var mdl, ctx, comp C.size_t
	if C.llmrt_ctx_memory(c.c, &mdl, &ctx, &comp) != 0 {
		return Memory{}, errors.New("memory breakdown: llama.cpp failed")
	}
	return Memory{Weights: int64(mdl), KV: int64(ctx), Compute: int64(comp)}, nil
}

// MemoryByBuffer is Memory per buffer type, keyed by its name ("CPU",
// "CUDA0", "SIM1", ...): which device holds which part of the context.
func (c *Context) MemoryByBuffer() (map[string]Memory, error) {
	for max := 8; ; max *= 2 {
		names := make([]*C.char, max)
		mdl := make([]C.size_t, max)
		ctx := make([]C.size_t, max)
		comp := make([]C.size_t, max)
		n := int(C.llmrt_ctx_memory_by_buft(c.c, &names[0], &mdl[0], &ctx[0], &comp[0], C.int(max)))
		if n < 0 {
			return nil, errors.New("memory breakdown: llama.cpp failed")
		}
		if n > max {
			continue
		}
		out := make(map[string]Memory, n)
		for i := 0; i < n; i++ {
			m := out[C.GoString(names[i])]
			m.Weights += int64(mdl[i])
			m.KV += int64(ctx[i])
			m.Compute += int64(comp[i])
			out[C.GoString(names[i])] = m
		}
		return out, nil
	}
}
