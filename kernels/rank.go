package kernels

/*
#include "bridge.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// PoolingRank runs the model's classification head over the pooled state
// (reranking models): a sequence's output is one score per class.
const PoolingRank Pooling = 4

// ClassOutputs is the number of outputs of the model's classification head
// (llama.cpp counts 1 when the GGUF names no labels).
func (m *Model) ClassOutputs() int { return int(C.llama_model_n_cls_out(m.c)) }

// ClassLabel is the label of classification output i, "" when the GGUF
// names none.
func (m *Model) ClassLabel(i int) string {
	if i < 0 || i >= m.ClassOutputs() {
		return ""
	}
	p := C.llama_model_cls_label(m.c, C.uint32_t(i))
	if p == nil {
		return ""
	}
	return C.GoString(p)
}

// SeqScores returns the classification outputs of sequence seq after a
// decode with PoolingRank, as a fresh slice.
func (c *Context) SeqScores(seq int) ([]float32, error) {
	if c.params.Pooling != PoolingRank {
		return nil, fmt.Errorf("scores: the context pools with type %d, not rank", c.params.Pooling)
	}
	p := C.llama_get_embeddings_seq(c.c, C.llama_seq_id(seq))
	if p == nil {
		return nil, fmt.Errorf("scores: sequence %d has no pooled output", seq)
	}
	return append([]float32(nil), unsafe.Slice((*float32)(unsafe.Pointer(p)), c.model.ClassOutputs())...), nil
}
