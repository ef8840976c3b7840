package simgputest_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
)

// TestDecoderOnDevice runs the multi-adapter decoder on a model whose
// layers are on the device: its KV cache and adapter stacks go there too,
// and two sequences, one under an adapter and one under none, decoded in
// the same steps, give the tokens and logits the CPU's llama.cpp gives each
// alone.
func TestDecoderOnDevice(t *testing.T) {
	needDevice(t)
	for _, name := range []string{"stories260K", "qwen2"} {
		t.Run(name, func(t *testing.T) {
			base := modelPath(t, name)
			adapter := filepath.Join(t.TempDir(), "a.gguf")
			targets := []string{"attn_q", "attn_v", "attn_output", "ffn_up", "ffn_down"}
			if err := testmodel.WriteAdapter(adapter, base, testmodel.AdapterSpec{Targets: targets, Rank: 8, Alpha: 16, Std: 0.2,
				Type: gguf.TypeF16, Seed: 4}); err != nil {
				t.Fatal(err)
			}
			cpu := load(t, base, kernels.ModelParams{})
			a, err := cpu.LoadAdapter(adapter)
			if err != nil {
				t.Fatal(err)
			}
			prompts := []string{"Once upon a time", "The little dog ran"}
			const n = 12
			want := []run{greedyAdapter(t, cpu, a, prompts[0], n), greedy(t, cpu, prompts[1], n)}

			m := load(t, base, kernels.ModelParams{GPULayers: -1, TensorSplit: []float32{1, 0}})
			before := simStats(t, 0).Allocated
			d, err := kernels.NewDecoder(m, kernels.DecoderParams{Threads: testThreads, Seqs: 2, CtxPerSeq: 128, Adapters: 2, Rank: 8,
				Targets: targets, Type: "f16"})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			mem := d.Memory()
			if grew := int64(simStats(t, 0).Allocated - before); grew < mem.KV+mem.LoRA {
				t.Fatalf("the device holds %d more bytes for a decoder of %d bytes of KV cache and stacks", grew, mem.KV+mem.LoRA)
			}
			l, err := kernels.ReadLoRA(m, adapter, true)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.SetAdapter(1, l); err != nil {
				t.Fatal(err)
			}
			l.Close()
			got := make([]run, 2)
			feed := make([][]int32, 2)
			pos := make([]int, 2)
			for i, p := range prompts {
				if feed[i], err = m.Tokenize(p, true, false); err != nil {
					t.Fatal(err)
				}
			}
			for step := 0; step < n; step++ {
				seqs := []kernels.DecodeSeq{
					{Seq: 0, Pos: pos[0], Tokens: feed[0], Adapter: 1, Scale: 1, Logits: true},
					{Seq: 1, Pos: pos[1], Tokens: feed[1], Adapter: -1, Logits: true},
				}
				if err := d.Step(seqs); err != nil {
					t.Fatal(err)
				}
				for i := range seqs {
					lg, err := d.Logits(i)
					if err != nil {
						t.Fatal(err)
					}
					got[i].logits = append(got[i].logits, append([]float32(nil), lg...))
					tok := argmax(lg)
					got[i].tokens = append(got[i].tokens, tok)
					pos[i] += len(feed[i])
					feed[i] = []int32{tok}
				}
			}
			// In a batch of two, ggml may take other kernels than alone
			// (and the F16 KV cache carries their rounding on): a looser
			// bound than the device tests' alone.
			for i := range got {
				sameRun(t, fmt.Sprintf("sequence %d", i), want[i], got[i], 5e-2)
			}
		})
	}
}

// greedyAdapter is greedy with adapter a applied to the context.
func greedyAdapter(t *testing.T, m *kernels.Model, a *kernels.Adapter, prompt string, n int) run {
	t.Helper()
	c, err := m.NewContext(kernels.ContextParams{NCtx: 128, Threads: testThreads})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetAdapters([]kernels.AdapterScale{{Adapter: a, Scale: 1}}); err != nil {
		t.Fatal(err)
	}
	b, err := kernels.NewBatch(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	toks, err := m.Tokenize(prompt, true, false)
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := b.AddTokens(toks, 0, 0, true)
	var r run
	for pos := len(toks); len(r.tokens) < n; pos++ {
		if err := c.Decode(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		l, err := c.Logits(idx)
		if err != nil {
			t.Fatal(err)
		}
		r.logits = append(r.logits, append([]float32(nil), l...))
		tok := argmax(l)
		r.tokens = append(r.tokens, tok)
		b.Clear()
		idx, _ = b.Add(tok, pos, 0, true)
	}
	return r
}
