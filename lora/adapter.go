package lora

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/llmrt/llmrt/models/gguf"
)

// Pair is one adapted weight: A has ggml shape [n_in, r] and B [r, n_out],
// both row-major float32 (ggml order: the first dimension varies fastest).
type Pair struct {
	NIn, NOut, Rank int
	A, B            []float32
}

// WriteAdapter writes a LoRA adapter in the format llama.cpp loads
// (llama_adapter_lora_init): general.type "adapter", adapter.type "lora",
// adapter.lora.alpha as f32, and tensors "<base>.lora_a" / "<base>.lora_b".
// The file is written atomically; meta adds string metadata.
func WriteAdapter(path, arch string, alpha float32, pairs map[string]Pair, meta map[string]string) error {
	names := make([]string, 0, len(pairs))
	for n := range pairs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := pairs[n]
		if len(p.A) != p.NIn*p.Rank || len(p.B) != p.Rank*p.NOut {
			return fmt.Errorf("adapter %s: tensor %s has %d/%d values, its shape needs %d/%d", path, n, len(p.A), len(p.B), p.NIn*p.Rank, p.Rank*p.NOut)
		}
	}
	return gguf.WriteFileAtomic(path, func(w *gguf.Writer) error {
		w.AddKV("general.type", "adapter")
		w.AddKV("general.architecture", arch)
		w.AddKV("adapter.type", "lora")
		w.AddKV("adapter.lora.alpha", alpha)
		keys := make([]string, 0, len(meta))
		for k := range meta {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			w.AddKV(k, meta[k])
		}
		for _, n := range names {
			p := pairs[n]
			w.AddTensor(n+".lora_a", gguf.TypeF32, []uint64{uint64(p.NIn), uint64(p.Rank)}, f32bytes(p.A))
			w.AddTensor(n+".lora_b", gguf.TypeF32, []uint64{uint64(p.Rank), uint64(p.NOut)}, f32bytes(p.B))
		}
		return nil
	})
}

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// RandomAdapter builds a rank-r adapter with random A and B (standard
// deviation std) for every 2-D base tensor whose name contains one of the
// targets (e.g. "attn_q", "attn_v"), reading shapes from the base GGUF.
func RandomAdapter(base *gguf.File, targets []string, rank int, std float64, seed uint64) map[string]Pair {
	r := rand.New(rand.NewPCG(seed, 1))
	pairs := map[string]Pair{}
	for _, t := range base.Tensors {
		if len(t.Dims) != 2 || !strings.HasSuffix(t.Name, ".weight") {
			continue
		}
		hit := false
		for _, tg := range targets {
			hit = hit || strings.Contains(t.Name, tg)
		}
		if !hit {
			continue
		}
		p := Pair{NIn: int(t.Dims[0]), NOut: int(t.Dims[1]), Rank: rank}
		p.A = make([]float32, p.NIn*rank)
		p.B = make([]float32, rank*p.NOut)
		for i := range p.A {
			p.A[i] = float32(r.NormFloat64() * std)
		}
		for i := range p.B {
			p.B[i] = float32(r.NormFloat64() * std)
		}
		pairs[t.Name] = p
	}
	return pairs
}
