package sched

import (
	"fmt"
	"math"
	"testing"
)

// storiesTensors is stories260K.gguf's tensor table (all F32): 48 tensors,
// 292,800 parameters.
func storiesTensors() []TensorSize {
	f32 := func(name string, dims ...uint64) TensorSize {
		n := uint64(1)
		for _, d := range dims {
			n *= d
		}
		return TensorSize{Name: name, Dims: dims, Bytes: int64(4 * n)}
	}
	ts := []TensorSize{f32("token_embd.weight", 64, 512), f32("output_norm.weight", 64), f32("output.weight", 64, 512)}
	for i := 0; i < 5; i++ {
		p := fmt.Sprintf("blk.%d.", i)
		ts = append(ts, f32(p+"attn_norm.weight", 64), f32(p+"attn_q.weight", 64, 64), f32(p+"attn_k.weight", 64, 32),
			f32(p+"attn_v.weight", 64, 32), f32(p+"attn_output.weight", 64, 64), f32(p+"ffn_norm.weight", 64),
			f32(p+"ffn_gate.weight", 64, 172), f32(p+"ffn_down.weight", 172, 64), f32(p+"ffn_up.weight", 64, 172))
	}
	return ts
}

func storiesMeta(key string) (uint64, bool) {
	v, ok := map[string]uint64{
		"llama.block_count": 5, "llama.embedding_length": 64, "llama.attention.head_count": 8,
		"llama.attention.head_count_kv": 4, "llama.feed_forward_length": 172, "llama.context_length": 2048,
	}[key]
	return v, ok
}

func TestFactsFromMetadata(t *testing.T) {
	f, err := FactsFromMetadata("stories260K", "llama", storiesMeta, storiesTensors())
	if err != nil {
		t.Fatal(err)
	}
	if f.NVocab != 512 || f.HeadDimK != 8 || f.HeadDimV != 8 || f.NHeadKV != 4 || f.TiedOutput {
		t.Errorf("facts %+v", f)
	}
	if f.WeightBytes() != 292800*4 || f.LayerBytes[0] != 45440*4 || f.OutputBytes != (32768+64)*4 || f.TokenEmbdBytes != 32768*4 {
		t.Errorf("weights %d (want %d), layer %d, output %d, embd %d", f.WeightBytes(), 292800*4, f.LayerBytes[0], f.OutputBytes, f.TokenEmbdBytes)
	}

	// Tied embeddings: no output.weight.
	var tied []TensorSize
	for _, ts := range storiesTensors() {
		if ts.Name != "output.weight" {
			tied = append(tied, ts)
		}
	}
	ft, err := FactsFromMetadata("tied", "llama", storiesMeta, tied)
	if err != nil {
		t.Fatal(err)
	}
	if !ft.TiedOutput || ft.OutputBytes != (32768+64)*4 || ft.WeightBytes() != (292800-32768)*4 {
		t.Errorf("tied facts: output %d, weights %d", ft.OutputBytes, ft.WeightBytes())
	}

	bad := append(storiesTensors(), TensorSize{Name: "blk.9.attn_q.weight", Bytes: 4})
	if _, err := FactsFromMetadata("bad", "llama", storiesMeta, bad); err == nil {
		t.Error("a tensor of layer 9 in a 5-layer model was accepted")
	}
	if _, err := FactsFromMetadata("none", "llama", func(string) (uint64, bool) { return 0, false }, nil); err == nil {
		t.Error("facts without a block count were accepted")
	}
}

// TestTotalEstimateWithinTenPercent: weights + KV + compute + output against
// the sum of the buffers llama.cpp allocated for stories260K.gguf on the CPU
// (model 1.12 MiB, KV, compute, output as logged; see
// TestEstimateMatchesLlamaCPP).
func TestTotalEstimateWithinTenPercent(t *testing.T) {
	f, err := FactsFromMetadata("stories260K", "llama", storiesMeta, storiesTensors())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ctx    ContextParams
		actual float64 // MiB
	}{
		{ContextParams{NCtx: 512, NBatch: 512}, 1.12 + 0.31 + 9.63},
		{ContextParams{NCtx: 512, NBatch: 512, FlashAttn: true}, 1.12 + 0.31 + 2.35},
		{ContextParams{NCtx: 2048, NBatch: 512, FlashAttn: true}, 1.12 + 1.25 + 6.51},
		{ContextParams{NCtx: 4096, NBatch: 512, NSeq: 4}, 1.12 + 2.50 + 72.63 + 0.01},
	} {
		e, err := EstimateModel(f, tc.ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := float64(e.Total.Total()) / float64(MiB)
		if math.Abs(got-tc.actual)/tc.actual > 0.10 {
			t.Errorf("%+v: estimate %.2f MiB, llama.cpp %.2f MiB", tc.ctx, got, tc.actual)
		}
	}
}
