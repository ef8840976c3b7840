package kernels_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
)

// Attaching an adapter changes the logits; detaching it restores them
// exactly; a scale of 0 changes nothing.
func TestAdapterChangesAndRestoresLogits(t *testing.T) {
	base := testmodel.Shared(t, "stories260K.gguf")
	f, err := gguf.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "a.gguf")
	if err := lora.WriteAdapter(path, "llama", 8, lora.RandomAdapter(f, []string{"attn_q", "attn_v"}, 8, 0.2, 1), nil); err != nil {
		t.Fatal(err)
	}
	m := load(t, "stories260K.gguf")
	a, err := m.LoadAdapter(path)
	if err != nil {
		t.Fatal(err)
	}
	if meta := a.Meta(); meta["adapter.type"] != "lora" {
		t.Fatalf("adapter meta %v", meta)
	}
	c, err := m.NewContext(kernels.ContextParams{NCtx: 64, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, _ := kernels.NewBatch(64, 1)
	defer b.Close()
	toks, _ := m.Tokenize("Once upon a time", true, false)
	logits := func() []float32 {
		c.ClearMemory(true)
		b.Clear()
		idx, _ := b.AddTokens(toks, 0, 0, true)
		return decodeLogits(t, c, b, idx)
	}
	maxDiff := func(x, y []float32) float64 {
		d := 0.0
		for i := range x {
			d = math.Max(d, math.Abs(float64(x[i]-y[i])))
		}
		return d
	}
	before := logits()
	if err := c.SetAdapters([]kernels.AdapterScale{{Adapter: a, Scale: 1}}); err != nil {
		t.Fatal(err)
	}
	with := logits()
	if maxDiff(before, with) < 1e-3 {
		t.Fatal("the adapter did not change the logits")
	}
	if err := c.SetAdapters([]kernels.AdapterScale{{Adapter: a, Scale: 0}}); err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(before, logits()); d > 1e-5 {
		t.Fatalf("scale 0 changed the logits by %v", d)
	}
	if err := c.SetAdapters(nil); err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(before, logits()); d > 1e-6 {
		t.Fatalf("detaching did not restore the logits (diff %v)", d)
	}
	// A wrong-shape adapter is refused with llama.cpp's reason.
	bad := filepath.Join(t.TempDir(), "bad.gguf")
	pairs := lora.RandomAdapter(f, []string{"attn_q"}, 4, 0.1, 2)
	for n, p := range pairs {
		// Rows of A no longer match the base weight's input width.
		p.NIn = p.NIn / 2
		p.A = p.A[:p.NIn*p.Rank]
		pairs[n] = p
	}
	if err := lora.WriteAdapter(bad, "llama", 4, pairs, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.LoadAdapter(bad); err == nil {
		t.Fatal("a wrong-shape adapter loaded")
	}
}
