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
