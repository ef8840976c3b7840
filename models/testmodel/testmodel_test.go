package testmodel

import (
	"context"
	"crypto/sha256"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/gguf"
)

func small(arch string, typ gguf.Type) Spec {
	return Spec{Arch: arch, NEmbd: 64, NLayer: 2, NHead: 4, NHeadKV: 2, NFF: 128, NCtxTrain: 512, NVocab: 50304,
		VocabFile: filepath.Join(SharedDir(), "ggml-vocab-gpt-2.gguf"), QKVBias: arch == "qwen2", TiedEmbeddings: arch != "llama",
		Type: typ, RopeFreqBase: 10000, NormEps: 1e-6, Seed: 3}
}

// Generated models of every architecture and type load in llama.cpp and
// generate; the padded vocabulary has the requested size.
func TestGeneratedModelsLoadAndRun(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		arch string
		typ  gguf.Type
	}{{"llama", gguf.TypeF32}, {"qwen2", gguf.TypeF16}, {"qwen2", gguf.TypeQ8_0}, {"qwen3", gguf.TypeF32}} {
		t.Run(c.arch+"-"+c.typ.String(), func(t *testing.T) {
			p := filepath.Join(dir, c.arch+c.typ.String()+".gguf")
			s := small(c.arch, c.typ)
			if err := Write(context.Background(), p, s); err != nil {
				t.Fatal(err)
			}
			f, err := gguf.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			toks, _ := f.Strings("tokenizer.ggml.tokens")
			if len(toks) != 50304 || f.Architecture() != c.arch {
				t.Fatalf("vocab %d arch %s", len(toks), f.Architecture())
			}
			m, err := kernels.LoadModel(context.Background(), p, kernels.ModelParams{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if m.Info().Vocab != 50304 || m.Info().Layers != 2 || m.Info().Params != uint64(f.ParamCount()) {
				t.Fatalf("llama.cpp sees %+v", m.Info())
			}
			ids, err := m.Tokenize("Hello world", true, false)
			if err != nil || len(ids) == 0 {
				t.Fatalf("tokenize: %v", err)
			}
			for _, id := range ids {
				if id >= 50257 {
					t.Fatalf("tokenizer produced a padding token %d", id)
				}
			}
			ctx, err := m.NewContext(kernels.ContextParams{NCtx: 64, Threads: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer ctx.Close()
			b, _ := kernels.NewBatch(64, 1)
			defer b.Close()
			idx, _ := b.AddTokens(ids, 0, 0, true)
			if err := ctx.Decode(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			l, err := ctx.Logits(idx)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range l[:100] {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					t.Fatal("non-finite logits")
				}
			}
		})
	}
}

func TestDeterministic(t *testing.T) {
	dir := t.TempDir()
	s := small("qwen2", gguf.TypeQ8_0)
	a, b := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf")
	Write(context.Background(), a, s)
	Write(context.Background(), b, s)
	s.Seed++
	c := filepath.Join(dir, "c.gguf")
	Write(context.Background(), c, s)
	sum := func(p string) [32]byte { d, _ := os.ReadFile(p); return sha256.Sum256(d) }
	if sum(a) != sum(b) || sum(a) == sum(c) {
		t.Fatal("same spec must give the same bytes, another seed other bytes")
	}
	p1, err := CachedPath(context.Background(), dir, s)
	if err != nil {
		t.Fatal(err)
	}
	st1, _ := os.Stat(p1)
	p2, _ := CachedPath(context.Background(), dir, s)
	st2, _ := os.Stat(p2)
	if p1 != p2 || !st1.ModTime().Equal(st2.ModTime()) {
		t.Fatal("CachedPath rewrote the model")
	}
}

func TestF16AndRefusals(t *testing.T) {
	for _, c := range []struct {
		f    float32
		want uint16
	}{{1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {1e6, 0x7c00}, {0.0000610352, 0x0400}, {0, 0}} {
		if got := F16(c.f); got != c.want {
			t.Errorf("F16(%v) = %#x, want %#x", c.f, got, c.want)
		}
	}
	s := small("gpt2", gguf.TypeF32)
	if err := Write(context.Background(), filepath.Join(t.TempDir(), "x.gguf"), s); err == nil || !strings.Contains(err.Error(), "gpt2") {
		t.Fatalf("unsupported arch: %v", err)
	}
}

// A generated F16 model quantizes to Q4_K_M with llama.cpp and still runs.
func TestQuantizeGeneratedToQ4KM(t *testing.T) {
	dir := t.TempDir()
	s := small("qwen2", gguf.TypeF16)
	s.NEmbd, s.NFF, s.NHead, s.NHeadKV = 256, 512, 4, 2 // K-quant blocks are 256 wide
	f16 := filepath.Join(dir, "f16.gguf")
	if err := Write(context.Background(), f16, s); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "q4km.gguf")
	if err := kernels.Quantize(context.Background(), f16, q, kernels.FTypeQ4_K_M, 2); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(q)
	if err != nil {
		t.Fatal(err)
	}
	if ft, _ := f.Uint("general.file_type"); ft != 15 {
		t.Fatalf("file_type %d, want 15 (Q4_K_M)", ft)
	}
	if tt, _ := f.Tensor("blk.0.attn_q.weight"); tt.Type != gguf.TypeQ4_K && tt.Type != gguf.TypeQ5_K && tt.Type != gguf.TypeQ6_K {
		t.Fatalf("attn_q is %s", tt.Type)
	}
	m, err := kernels.LoadModel(context.Background(), q, kernels.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}
