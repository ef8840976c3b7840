package sched

import (
	"math"
	"testing"
)

// The shapes of the two small real models in ../shared/models (read from
// their GGUF headers).
var (
	stories260K = ModelFacts{Name: "stories260K", Architecture: "llama", NLayer: 5, LayerBytes: make([]int64, 5),
		NEmbd: 64, NHead: 8, NHeadKV: 4, HeadDimK: 8, HeadDimV: 8, NFF: 172, NVocab: 512, NCtxTrain: 2048}
	tinyRandom = ModelFacts{Name: "llama-2-tiny-random", Architecture: "llama", NLayer: 1, LayerBytes: make([]int64, 1),
		NEmbd: 8, NHead: 2, NHeadKV: 2, HeadDimK: 4, HeadDimV: 4, NFF: 32, NVocab: 32000, NCtxTrain: 4096}
)

// TestEstimateMatchesLlamaCPP compares the estimates with what llama.cpp
// (ollama v0.17.4's vendored copy, through our kernels binding, CPU backend)
// logged when creating contexts on the real files: "CPU compute buffer
// size", "CPU KV buffer size" and "CPU output buffer size", in MiB with two
// decimals. The compute buffer is the hard part: it is ggml-alloc's layout
// of the worst-case graph.
func TestEstimateMatchesLlamaCPP(t *testing.T) {
	tests := []struct {
		f                   ModelFacts
		ctx                 ContextParams
		compute, kv, output float64 // MiB as llama.cpp printed them
	}{
		{stories260K, ContextParams{NCtx: 512, NBatch: 512}, 9.63, 0.31, 0.00},
		{stories260K, ContextParams{NCtx: 512, NBatch: 512, FlashAttn: true}, 2.35, 0.31, 0.00},
		{stories260K, ContextParams{NCtx: 2048, NBatch: 512}, 36.63, 1.25, 0.00},
		{stories260K, ContextParams{NCtx: 2048, NBatch: 512, FlashAttn: true}, 6.51, 1.25, 0.00},
		{stories260K, ContextParams{NCtx: 4096, NBatch: 512, NSeq: 4}, 72.63, 2.50, 0.01},
		{stories260K, ContextParams{NCtx: 4096, NBatch: 512, NSeq: 4, FlashAttn: true}, 12.51, 2.50, 0.01},
		{stories260K, ContextParams{NCtx: 4096, NBatch: 2048, NSeq: 4}, 290.54, 2.50, 0.01},
		{stories260K, ContextParams{NCtx: 1024, NBatch: 256}, 9.32, 0.62, 0.00},
		{stories260K, ContextParams{NCtx: 1024, NBatch: 256, FlashAttn: true}, 1.76, 0.62, 0.00},
		{stories260K, ContextParams{NCtx: 4096, NBatch: 512, NSeq: 4, KVPerSeq: true}, 18.63, 2.50, 0.01},
		{stories260K, ContextParams{NCtx: 4096, NBatch: 512, NSeq: 4, KVPerSeq: true, FlashAttn: true}, 3.51, 2.50, 0.01},
		{stories260K, ContextParams{NCtx: 1024, NBatch: 2048, NUBatch: 256}, 9.32, 0.62, 0.00},
		{stories260K, ContextParams{NCtx: 1024, NBatch: 512, NSeq: 3}, 18.67, 0.62, 0.01},
		{stories260K, ContextParams{NCtx: 1024, NBatch: 512, NSeq: 3, FlashAttn: true}, 3.52, 0.62, 0.01},
		{stories260K, ContextParams{NCtx: 3000, NBatch: 512}, 54.63, 1.88, 0.00},
		{stories260K, ContextParams{NCtx: 2048, NBatch: 512, NSeq: 2, KVPerSeq: true}, 18.63, 1.25, 0.00},
		{tinyRandom, ContextParams{NCtx: 512, NBatch: 512}, 62.53, 0.02, 0.12},
		{tinyRandom, ContextParams{NCtx: 512, NBatch: 512, FlashAttn: true}, 62.52, 0.02, 0.12},
		{tinyRandom, ContextParams{NCtx: 4096, NBatch: 512, NSeq: 4}, 62.53, 0.12, 0.49},
		{tinyRandom, ContextParams{NCtx: 4096, NBatch: 2048, NSeq: 4}, 250.12, 0.12, 0.49},
		{tinyRandom, ContextParams{NCtx: 1024, NBatch: 256, FlashAttn: true}, 31.26, 0.03, 0.12},
	}
	mib := func(n int64) float64 { return math.Round(float64(n)/float64(MiB)*100) / 100 }
	for _, tc := range tests {
		e, err := EstimateModel(tc.f, tc.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := mib(e.Compute); math.Abs(got-tc.compute) > 0.011 {
			t.Errorf("%s %+v: compute buffer %.2f MiB, llama.cpp allocated %.2f MiB", tc.f.Name, tc.ctx, got, tc.compute)
		}
		if got := mib(e.Total.KV); math.Abs(got-tc.kv) > 0.011 {
			t.Errorf("%s %+v: KV cache %.2f MiB, llama.cpp allocated %.2f MiB", tc.f.Name, tc.ctx, got, tc.kv)
		}
		if got := mib(e.Output); math.Abs(got-tc.output) > 0.011 {
			t.Errorf("%s %+v: output buffer %.2f MiB, llama.cpp allocated %.2f MiB", tc.f.Name, tc.ctx, got, tc.output)
		}
	}
}

func TestKVCacheTypes(t *testing.T) {
	// llama-2-7b at 4096 cells: 32 layers x 4096 x (4096 + 4096) elements.
	elems := int64(32 * 4096 * 8192)
	for _, tc := range []struct {
		typ  string
		want int64
	}{
		{"f16", elems * 2},
		{"f32", elems * 4},
		{"q8_0", elems / 32 * 34},
		{"q4_0", elems / 32 * 18},
	} {
		e, err := EstimateModel(llama7, ContextParams{NCtx: 4096, TypeK: tc.typ, TypeV: tc.typ})
		if err != nil {
			t.Fatal(err)
		}
		if e.Total.KV != tc.want {
			t.Errorf("KV %s: %d bytes, want %d", tc.typ, e.Total.KV, tc.want)
		}
	}
	if _, err := EstimateModel(llama7, ContextParams{TypeK: "q3_weird"}); err == nil {
		t.Error("unknown KV cache type accepted")
	}
}

func TestContextNormalize(t *testing.T) {
	// llama.cpp pads n_ctx to 256 and bounds the batch by the context.
	e, err := EstimateModel(stories260K, ContextParams{NCtx: 1000, NBatch: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if e.Context.NCtx != 1024 || e.Context.NBatch != 1024 || e.Context.NUBatch != 1024 {
		t.Errorf("normalized %+v, want n_ctx 1024, n_batch 1024, n_ubatch 1024", e.Context)
	}
	// 0 takes the training context.
	e, _ = EstimateModel(stories260K, ContextParams{})
	if e.Context.NCtx != 2048 {
		t.Errorf("default n_ctx %d, want the training context 2048", e.Context.NCtx)
	}
	// Per-sequence streams are padded each.
	e, _ = EstimateModel(stories260K, ContextParams{NCtx: 1000, NSeq: 3, KVPerSeq: true})
	if e.Context.NCtx != 3*512 {
		t.Errorf("per-seq n_ctx %d, want 3 x 512", e.Context.NCtx)
	}
}

func TestFactsFromShape(t *testing.T) {
	for _, tc := range []struct {
		f        ModelFacts
		min, max int64
	}{
		{qwen05, 480 * MiB, 560 * MiB},   // Qwen2.5-0.5B Q8_0 is about 0.5 GB
		{llama7, 3700 * MiB, 4100 * MiB}, // Llama-2-7B Q4_K_M is 4.08 GB
		{llama70, 38 * GiB, 40 * GiB},    // Llama-2-70B Q4_K_M is 41.4 GB
	} {
		if w := tc.f.WeightBytes(); w < tc.min || w > tc.max {
			t.Errorf("%s: weights %s, want %s..%s", tc.f.Name, FormatBytes(w), FormatBytes(tc.min), FormatBytes(tc.max))
		}
		if err := tc.f.Validate(); err != nil {
			t.Error(err)
		}
	}
	if err := (ModelFacts{Name: "x", NLayer: 2, LayerBytes: []int64{1}}).Validate(); err == nil {
		t.Error("facts with a missing layer size validated")
	}
}

func TestEstimateTraining(t *testing.T) {
	b, err := EstimateTraining(llama7, TrainingParams{Rank: 16, SeqLen: 512})
	if err != nil {
		t.Fatal(err)
	}
	// r=16 on q,k,v,o of a 4096-wide model: 4 x 16 x (4096+4096) per layer.
	params := int64(32 * 4 * 16 * 8192)
	if b.Adapter != params*4 || b.Gradients != params*4 || b.Optimizer != params*8 {
		t.Errorf("adapter/gradients/moments %d/%d/%d, want %d/%d/%d", b.Adapter, b.Gradients, b.Optimizer, params*4, params*4, params*8)
	}
	if b.Activations <= b.Adapter {
		t.Errorf("activations %s should dominate a rank-16 adapter", FormatBytes(b.Activations))
	}
	b2, _ := EstimateTraining(llama7, TrainingParams{Rank: 16, SeqLen: 1024})
	if b2.Activations <= b.Activations {
		t.Error("activations do not grow with the sequence")
	}
	if _, err := EstimateTraining(llama7, TrainingParams{Rank: 8, Targets: []string{"lm_head"}}); err == nil {
		t.Error("unknown target accepted")
	}
}
