package lora

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/lora/dataset"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
)

// TestTrainedAdapterLoadsAndAnswers trains a LoRA adapter on stories260K
// with the ggml training graph until it memorises one answer, then checks
// that llama.cpp loads the adapter file, that our graph's logits with the
// adapter match llama.cpp's, and that generation through the engine gives
// the memorised answer with the adapter and not without.
func TestTrainedAdapterLoadsAndAnswers(t *testing.T) {
	ctx := context.Background()
	path := testmodel.Shared(t, "stories260K.gguf")
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
		var d, top float64
		for k := 0; k < V; k++ {
			d = math.Max(d, math.Abs(float64(ours[i*V+k]-theirs[k])))
			top = math.Max(top, math.Abs(float64(theirs[k])))
		}
		// llama.cpp keeps K and V in F16: its logits carry a relative
		// error of about 1e-3 of their scale, which grows as the adapter
		// sharpens them.
		if d > 4e-3*max(top, 10) {
			t.Fatalf("position %d: logits with the adapter differ from llama.cpp's by %g (largest logit %g)", i, d, top)
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

	// Merged into the base, the adapter's answer needs no adapter, and
	// the merged model's logits are the base+adapter ones.
	ra, err := ReadAdapter(out)
	if err != nil {
		t.Fatal(err)
	}
	merged := filepath.Join(t.TempDir(), "merged.gguf")
	calls := 0
	if err := Merge(path, ra, 1, merged, func(done, total int) { calls++ }); err != nil {
		t.Fatal(err)
	}
	if calls != len(ra.Pairs) {
		t.Fatalf("progress called %d times for %d pairs", calls, len(ra.Pairs))
	}
	mm, err := kernels.LoadModel(ctx, merged, kernels.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer mm.Close()
	ml := llamaLogits(t, mm, nil, full)
	for i := range full {
		theirs, _ := lc.Logits(i)
		var d float64
		for k := 0; k < V; k++ {
			d = math.Max(d, math.Abs(float64(ml[i][k]-theirs[k])))
		}
		if d > 5e-2 {
			t.Fatalf("position %d: merged logits differ from base+adapter by %g", i, d)
		}
	}
	me, err := engine.Open(ctx, engine.Options{Path: merged, NParallel: 1, CtxPerSeq: 128, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer me.Close()
	r, err := me.Generate(ctx, engine.Request{Prompt: p, MaxTokens: 32})
	if err != nil || !strings.Contains(r.Text, "purple zebra") {
		t.Fatalf("merged model: %q, %v", r.Text, err)
	}
}

// llamaLogits decodes toks with llama.cpp (with the adapter when set).
func llamaLogits(t *testing.T, m *kernels.Model, ad *kernels.Adapter, toks []int32) [][]float32 {
	t.Helper()
	lc, err := m.NewContext(kernels.ContextParams{NCtx: 128, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if ad != nil {
		if err := lc.SetAdapters([]kernels.AdapterScale{{Adapter: ad, Scale: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := kernels.NewBatch(len(toks), 1)
	defer b.Close()
	for i, tok := range toks {
		b.Add(tok, i, 0, true)
	}
	if err := lc.Decode(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	out := make([][]float32, len(toks))
	for i := range toks {
		l, _ := lc.Logits(i)
		out[i] = append([]float32(nil), l...)
	}
	return out
}

// TestGraphMatchesLlamaCppOnGeneratedModels checks the training graph's
// forward pass against llama.cpp on generated llama and qwen2 models (f32
// and Q8_0), without an adapter and with the adapter SaveAdapter wrote.
func TestGraphMatchesLlamaCppOnGeneratedModels(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	vocab := testmodel.SharedDir()
	specs := []testmodel.Spec{
		{Arch: "llama", Name: "tiny-llama", NEmbd: 64, NLayer: 2, NHead: 4, NHeadKV: 2, NFF: 128, NCtxTrain: 256,
			VocabFile: filepath.Join(vocab, "ggml-vocab-llama-spm.gguf"), Type: gguf.TypeF32, RopeFreqBase: 10000, NormEps: 1e-5, Seed: 1},
		{Arch: "qwen2", Name: "tiny-qwen2", NEmbd: 64, NLayer: 2, NHead: 4, NHeadKV: 2, NFF: 128, NCtxTrain: 256,
			VocabFile: filepath.Join(vocab, "ggml-vocab-gpt-2.gguf"), TiedEmbeddings: true, QKVBias: true, Type: gguf.TypeF32,
			RopeFreqBase: 1000000, NormEps: 1e-6, Seed: 2},
		{Arch: "qwen2", Name: "tiny-qwen2-q8", NEmbd: 64, NLayer: 2, NHead: 4, NHeadKV: 2, NFF: 128, NCtxTrain: 256,
			VocabFile: filepath.Join(vocab, "ggml-vocab-gpt-2.gguf"), TiedEmbeddings: true, QKVBias: true, Type: gguf.TypeQ8_0,
			RopeFreqBase: 1000000, NormEps: 1e-6, Seed: 3},
	}
	for _, s := range specs {
		t.Run(s.Name, func(t *testing.T) {
			path := filepath.Join(dir, s.Name+".gguf")
			if err := testmodel.Write(ctx, path, s); err != nil {
				t.Fatal(err)
			}
			m, err := kernels.LoadModel(ctx, path, kernels.ModelParams{NoRepack: true})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			net, err := kernels.NewNet(m, kernels.NetParams{Threads: 2, Rank: 4, Alpha: 8, Seed: 5, Targets: []string{"attn_q", "attn_v", "ffn_down"}})
			if err != nil {
				t.Fatal(err)
			}
			defer net.Close()
			toks, _ := m.Tokenize("The quick brown fox jumps over the lazy dog near the river bank.", true, false)
			pos, seg := make([]int32, len(toks)), make([]int32, len(toks))
			for i := range pos {
				pos[i] = int32(i)
			}
			V := m.Info().Vocab
			compare := func(what string, ad *kernels.Adapter) {
				ours, err := net.Logits(toks, pos, seg)
				if err != nil {
					t.Fatal(err)
				}
				theirs := llamaLogits(t, m, ad, toks)
				var d, scale float64
				for i := range toks {
					for k := 0; k < V; k++ {
						d = math.Max(d, math.Abs(float64(ours[i*V+k]-theirs[i][k])))
						scale = math.Max(scale, math.Abs(float64(theirs[i][k])))
					}
				}
				// Relative to the largest logit: llama.cpp keeps K/V in f16.
				if d > 1e-2*scale+1e-4 {
					t.Fatalf("%s: logits differ from llama.cpp by %g (largest logit %g)", what, d, scale)
				}
			}
			compare("without an adapter", nil) // B = 0: the adapter is the identity
			b, err := NewNetBackend(net, s.Arch, 8, kernels.DefaultAdam)
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range net.Params() {
				if strings.HasSuffix(p.Name, ".lora_b") {
					v := make([]float32, p.Shape[0]*p.Shape[1])
					for k := range v {
						v[k] = float32(math.Sin(float64(k+i))) * 0.5
					}
					net.Set(i, kernels.ParamValue, v)
				}
			}
			ap := filepath.Join(dir, s.Name+"-lora.gguf")
			if err := b.SaveAdapter(ap, nil); err != nil {
				t.Fatal(err)
			}
			ad, err := m.LoadAdapter(ap)
			if err != nil {
				t.Fatal(err)
			}
			compare("with the adapter", ad)
		})
	}
}

// TestResumeGivesTheSameAdapter trains N steps in one run and N/2, stop,
// resume, N/2 in another: the adapters agree.
func TestResumeGivesTheSameAdapter(t *testing.T) {
	ctx := context.Background()
	m, err := kernels.LoadModel(ctx, testmodel.Shared(t, "stories260K.gguf"), kernels.ModelParams{NoRepack: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var exs []dataset.Example
	for _, s := range []string{"Lily found a shiny red stone by the river.", "Tom built a tall tower of blue blocks.", "The cat slept on the warm mat all day.", "Ben and Sue shared a big green apple."} {
		toks, _ := m.Tokenize(s, true, false)
		tr := make([]bool, len(toks))
		for i := 3; i < len(tr); i++ {
			tr[i] = true
		}
		exs = append(exs, dataset.Example{Tokens: toks, Train: tr})
	}
	var st dataset.Stats
	rows := dataset.Pack(exs, 16, &st)
	train := func(out string, epochs int, resume bool) map[string]Pair {
		net, err := kernels.NewNet(m, kernels.NetParams{Threads: 2, Rank: 4, Alpha: 8, Seed: 9, Targets: []string{"attn_q", "attn_v"}})
		if err != nil {
			t.Fatal(err)
		}
		defer net.Close()
		b, _ := NewNetBackend(net, "llama", 8, kernels.DefaultAdam)
		cfg := Config{Epochs: epochs, LR: 1e-2, Schedule: Constant, Batch: 1, GradAccum: 2, Seed: 4, Out: out, Resume: resume, CheckpointEvery: 1}
		if _, err := Run(ctx, b, Data{Train: rows, Stats: st}, cfg, nil); err != nil {
			t.Fatal(err)
		}
		p, _ := b.Pairs()
		return p
	}
	dir := t.TempDir()
	whole := train(filepath.Join(dir, "whole.gguf"), 4, false)
	half := filepath.Join(dir, "half.gguf")
	train(half, 2, false)
	resumed := train(half, 4, true)
	for name, w := range whole {
		r := resumed[name]
		for k := range w.B {
			if d := math.Abs(float64(w.B[k] - r.B[k])); d > 1e-5 {
				t.Fatalf("%s B[%d]: %g in one run, %g resumed", name, k, w.B[k], r.B[k])
			}
		}
		for k := range w.A {
			if d := math.Abs(float64(w.A[k] - r.A[k])); d > 1e-5 {
				t.Fatalf("%s A[%d]: %g in one run, %g resumed", name, k, w.A[k], r.A[k])
			}
		}
	}
}

// TestQ4KBaseTrains: a Q4_K_M base (quantized from a generated tiny llama
// whose rows split into 256-value blocks) trains through ggml's quantized
// matmul backward, and its logits match llama.cpp's.
func TestQ4KBaseTrains(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f32 := filepath.Join(dir, "tiny-f32.gguf")
	if err := testmodel.Write(ctx, f32, testmodel.TinyLlama(testmodel.SharedDir())); err != nil {
		t.Fatal(err)
	}
	q4 := filepath.Join(dir, "tiny-q4k.gguf")
	if err := kernels.Quantize(ctx, f32, q4, kernels.FTypeQ4_K_M, 2); err != nil {
		t.Fatal(err)
	}
	m, err := kernels.LoadModel(ctx, q4, kernels.ModelParams{NoRepack: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	net, err := kernels.NewNet(m, kernels.NetParams{Threads: 2, Rank: 4, Alpha: 8, Seed: 1, Targets: []string{"attn_q", "attn_v", "ffn_down"}})
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	toks, _ := m.Tokenize("The quick brown fox jumps over the lazy dog.", true, false)
	pos, seg, labels := make([]int32, len(toks)), make([]int32, len(toks)), make([]int32, len(toks))
	for i := range toks {
		pos[i] = int32(i)
		labels[i] = -1
		if i+1 < len(toks) {
			labels[i] = toks[i+1]
		}
	}
	ours, err := net.Logits(toks, pos, seg)
	if err != nil {
		t.Fatal(err)
	}
	theirs := llamaLogits(t, m, nil, toks)
	V := m.Info().Vocab
	var d, scale float64
	for i := range toks {
		for k := 0; k < V; k++ {
			d = math.Max(d, math.Abs(float64(ours[i*V+k]-theirs[i][k])))
			scale = math.Max(scale, math.Abs(float64(theirs[i][k])))
		}
	}
	// Q4_K matmuls quantize their activations to Q8_K, which amplifies
	// the f16-KV differences a little: 5% of the largest logit (a wrong
	// graph is off by its whole size).
	if d > 5e-2*scale {
		t.Fatalf("Q4_K logits differ from llama.cpp by %g (largest %g)", d, scale)
	}
	b, _ := NewNetBackend(net, "llama", 8, kernels.DefaultAdam)
	first, _, err := b.Eval(toks, pos, seg, labels)
	if err != nil {
		t.Fatal(err)
	}
	var last float32
	for s := 0; s < 30; s++ {
		if last, _, err = b.Accumulate(toks, pos, seg, labels); err != nil {
			t.Fatal(err)
		}
		if err := b.Step(1e-2); err != nil {
			t.Fatal(err)
		}
	}
	if !(last < first*0.7) {
		t.Fatalf("Q4_K base: loss %.3f -> %.3f", first, last)
	}
}
