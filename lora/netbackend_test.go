package lora

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/lora/dataset"
	"github.com/llmrt/llmrt/models/modeltest"
	"github.com/llmrt/llmrt/runtime/engine"
)

// TestTrainedAdapterLoadsAndAnswers trains a LoRA adapter on stories260K
// with the ggml training graph until it memorises one answer, then checks
// that llama.cpp loads the adapter file, that our graph's logits with the
// adapter match llama.cpp's, and that generation through the engine gives
// the memorised answer with the adapter and not without.
func TestTrainedAdapterLoadsAndAnswers(t *testing.T) {
	ctx := context.Background()
	path := modeltest.Path(t, "stories260K.gguf")
	m, err := kernels.LoadModel(ctx, path, kernels.ModelParams{NoRepack: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	net, err := kernels.NewNet(m, kernels.NetParams{Threads: 2, Rank: 8, Alpha: 16, Seed: 3,
		Targets: []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}})
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	b, err := NewNetBackend(net, "llama", 16, kernels.DefaultAdam)
	if err != nil {
		t.Fatal(err)
	}

	prompt := "Tim asked what the secret word was. Mom said:"
	answer := " The secret word is purple zebra."
	p, _ := m.Tokenize(prompt, true, false)
	full, _ := m.Tokenize(prompt+answer, true, false)
	if len(full) <= len(p) {
		t.Fatal("tokenization")
	}
	// No EOS: stories260K's output row for it is dead (its EOS logit
	// barely moves), so the answer alone is what it must learn.
	ex := dataset.Example{Tokens: full, Train: make([]bool, len(full))}
	for i := len(p); i < len(ex.Tokens); i++ {
		ex.Train[i] = true
	}
	var st dataset.Stats
	rows := dataset.Pack([]dataset.Example{ex, ex}, 128, &st)
	if st.MaskedShare() <= 0 || st.MaskedShare() >= 1 {
		t.Fatalf("masked share %v: the prompt must be masked and the answer trained", st.MaskedShare())
	}
	// Only answer tokens carry labels.
	for i, l := range rows[0].Labels {
		if i < len(p)-1 && l >= 0 {
			t.Fatalf("prompt position %d is labelled", i)
		}
	}
	out := filepath.Join(t.TempDir(), "secret.gguf")
	sum, err := Run(ctx, b, Data{Train: rows, Stats: st}, Config{Epochs: 60, LR: 1e-2, Schedule: Constant, Batch: 1, GradAccum: 1, Seed: 1, Out: out,
		Meta: map[string]string{"llmrt.base": "stories260K"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !(sum.FinalLoss < 0.1) {
		t.Fatalf("final loss %.3f: the adapter did not memorise the answer", sum.FinalLoss)
	}

	// llama.cpp loads the file; its logits with the adapter match ours.
	ad, err := m.LoadAdapter(out)
	if err != nil {
		t.Fatalf("llama.cpp refused the adapter: %v", err)
	}
	if ad.Meta()["llmrt.base"] != "stories260K" {
		t.Errorf("adapter metadata %v", ad.Meta())
	}
	lc, err := m.NewContext(kernels.ContextParams{NCtx: 128, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if err := lc.SetAdapters([]kernels.AdapterScale{{Adapter: ad, Scale: 1}}); err != nil {
		t.Fatal(err)
	}
	batch, _ := kernels.NewBatch(len(full), 1)
	defer batch.Close()
	for i, tok := range full {
		batch.Add(tok, i, 0, true)
	}
	if err := lc.Decode(ctx, batch); err != nil {
		t.Fatal(err)
	}
	pos, seg := make([]int32, len(full)), make([]int32, len(full))
	for i := range pos {
		pos[i] = int32(i)
	}
	ours, err := net.Logits(full, pos, seg)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Info().Vocab
	for i := range full {
		theirs, _ := lc.Logits(i)
		var d float64
		for k := 0; k < V; k++ {
			d = math.Max(d, math.Abs(float64(ours[i*V+k]-theirs[k])))
		}
		if d > 5e-2 {
			t.Fatalf("position %d: logits with the adapter differ from llama.cpp's by %g", i, d)
		}
	}

	// Generation through the engine: the answer with the adapter only.
	e, err := engine.Open(ctx, engine.Options{Path: path, NParallel: 1, CtxPerSeq: 128, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.LoadAdapter("secret", out); err != nil {
		t.Fatal(err)
	}
	gen := func(ads []engine.AdapterRef) string {
		r, err := e.Generate(ctx, engine.Request{Prompt: p, MaxTokens: 32, Adapters: ads})
		if err != nil {
			t.Fatal(err)
		}
		return r.Text
	}
	if got := gen([]engine.AdapterRef{{Name: "secret", Scale: 1}}); !strings.Contains(got, "purple zebra") {
		t.Fatalf("with the adapter: %q", got)
	}
	if got := gen(nil); strings.Contains(got, "purple zebra") {
		t.Fatalf("the base model already says it: %q", got)
	}
}
