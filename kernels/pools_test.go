package kernels_test

import (
	"testing"

	"github.com/llmrt/llmrt/kernels"
)

// Each context decodes on worker pools of its own, one per thread count
// (single tokens, batches), and resizing them keeps the results: a prompt's
// logits and the next token's agree across pool sizes and after SetThreads.
// (At most 2 threads: on a 2-core machine more would spin against each
// other at ggml's barriers.)
func TestContextWorkerPools(t *testing.T) {
	m := load(t, "stories260K.gguf")
	toks, err := m.Tokenize("Once upon a time", true, false)
	if err != nil {
		t.Fatal(err)
	}
	logits := func(c *kernels.Context, b *kernels.Batch) []float32 {
		t.Helper()
		c.SeqRemove(0, -1, -1)
		b.Clear()
		idx, err := b.AddTokens(toks, 0, 0, true)
		if err != nil {
			t.Fatal(err)
		}
		return decodeLogits(t, c, b, idx)
	}
	step := func(c *kernels.Context, b *kernels.Batch) []float32 {
		t.Helper()
		b.Clear()
		idx, err := b.Add(toks[0], len(toks), 0, true)
		if err != nil {
			t.Fatal(err)
		}
		return decodeLogits(t, c, b, idx)
	}
	one, b1 := contextAndBatch(t, m, kernels.ContextParams{NCtx: 128, Threads: 1})
	ref := logits(one, b1)
	refStep := step(one, b1)
	c, b := contextAndBatch(t, m, kernels.ContextParams{NCtx: 128, Threads: 2, ThreadsBatch: 1})
	if d, bt, ok := c.Pooled(); !ok || d != 2 || bt != 1 {
		t.Fatalf("pools: %d, %d threads, attached %v; want 2 and 1", d, bt, ok)
	}
	same := func(what string, got, want []float32) {
		t.Helper()
		for i := range want {
			if d := got[i] - want[i]; d > 1e-4 || d < -1e-4 {
				t.Fatalf("%s: logit %d is %g, want %g", what, i, got[i], want[i])
			}
		}
	}
	same("prompt, 2/1 threads", logits(c, b), ref)
	same("one token, 2/1 threads", step(c, b), refStep)
	c.SetThreads(1, 2)
	if d, bt, ok := c.Pooled(); !ok || d != 1 || bt != 2 {
		t.Fatalf("pools after SetThreads(1, 2): %d, %d threads, attached %v", d, bt, ok)
	}
	same("prompt after SetThreads(1, 2)", logits(c, b), ref)
	same("one token after SetThreads(1, 2)", step(c, b), refStep)
}
