package quant

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
)

// quantized writes stories260K as ft into dir and returns both files.
func quantizedStories(t *testing.T, ft kernels.FType) (in, out *gguf.File, path string) {
	t.Helper()
	src := testmodel.Shared(t, "stories260K.gguf")
	path = filepath.Join(t.TempDir(), "q.gguf")
	if err := kernels.Quantize(context.Background(), src, path, ft, 1); err != nil {
		t.Fatal(err)
	}
	in, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	out, err = gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return in, out, path
}

// stories260K's rows are 64 and 172 values long: Q4_K_M falls back for
// every matrix, and the summary says which went where and why.
func TestExplainNamesFallbacks(t *testing.T) {
	in, out, _ := quantizedStories(t, kernels.FTypeQ4_K_M)
	spec, _ := SpecOf(kernels.FTypeQ4_K_M)
	groups := Explain(in, out, spec)
	byType := map[gguf.Type]Group{}
	total := 0
	for _, g := range groups {
		byType[g.Type] = g
		total += g.Count
	}
	if total != len(out.Tensors) {
		t.Fatalf("groups cover %d of %d tensors", total, len(out.Tensors))
	}
	f16 := byType[gguf.TypeF16]
	if !f16.Fallback || f16.Count != 5 || !strings.Contains(f16.Why, "172") || strings.Join(f16.Names, ",") != "blk.*.ffn_down.weight ×5" {
		t.Fatalf("F16 group %+v", f16)
	}
	q5 := byType[gguf.TypeQ5_0]
	if !q5.Fallback || !strings.Contains(q5.Why, "fallback for Q4_K") || !strings.Contains(q5.Why, "64") {
		t.Fatalf("Q5_0 group %+v", q5)
	}
	if f32 := byType[gguf.TypeF32]; f32.Fallback || !strings.HasPrefix(f32.Why, "kept") || f32.Count != 11 {
		t.Fatalf("F32 group %+v", f32)
	}
	if !groups[0].Fallback {
		t.Fatalf("fallbacks are not listed first: %+v", groups)
	}
	sum := strings.Join(Summary(in, groups, spec), "\n")
	for _, want := range []string{"37 of 37 weight matrices fell back from Q4_K_M", "fit every tensor of this model: F32, F16, BF16", "blk.*.ffn_down.weight ×5"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary lacks %q:\n%s", want, sum)
		}
	}
	// A file that fits its type has no fallback note.
	in, out, _ = quantizedStories(t, kernels.FTypeF16)
	spec, _ = SpecOf(kernels.FTypeF16)
	if sum := strings.Join(Summary(in, Explain(in, out, spec), spec), "\n"); strings.Contains(sum, "fell back") || !strings.Contains(sum, "as requested") {
		t.Fatalf("F16 summary:\n%s", sum)
	}
}

// Q8_0 has no fallback: llama.cpp refuses stories260K, and Unfit says why
// and which types do apply.
func TestUnfitSuggestsTypesThatFit(t *testing.T) {
	src := testmodel.Shared(t, "stories260K.gguf")
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := kernels.Quantize(context.Background(), src, filepath.Join(t.TempDir(), "q8.gguf"), kernels.FTypeQ8_0, 1); err == nil {
		t.Fatal("llama.cpp quantized rows of 172 to Q8_0")
	}
	q8, _ := SpecOf(kernels.FTypeQ8_0)
	err = Unfit(f, q8)
	if err == nil {
		t.Fatal("no explanation")
	}
	for _, want := range []string{"rows of 172 values", "blk.*.ffn_down.weight ×5", "blocks of 32", "fit every tensor: F32, F16, BF16", "Q4_K_M, Q5_K_M, Q6_K"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("explanation lacks %q: %v", want, err)
		}
	}
	for _, ft := range []kernels.FType{kernels.FTypeQ4_K_M, kernels.FTypeF16} {
		s, _ := SpecOf(ft)
		if err := Unfit(f, s); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
	}
}

// The trainable copy of a Q4_K_M result turns its F16 matrices into F32
// with the same values, copies every other tensor byte for byte, and
// loads in llama.cpp.
func TestTrainableCopyOfQuantizedBase(t *testing.T) {
	_, q, path := quantizedStories(t, kernels.FTypeQ4_K_M)
	half, names, to := Half(q)
	if half != "F16" || len(names) != 5 || to != gguf.TypeF32 {
		t.Fatalf("Half: %s %v -> %s", half, names, to)
	}
	out := filepath.Join(t.TempDir(), "copy.gguf")
	if err := TrainableCopy(context.Background(), path, out); err != nil {
		t.Fatal(err)
	}
	c, err := gguf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	read := func(f *gguf.File, p string, ti gguf.TensorInfo) []byte {
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		b := make([]byte, ti.Size())
		if _, err := io.ReadFull(io.NewSectionReader(fh, f.TensorDataOffset(ti), ti.Size()), b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	if len(c.Tensors) != len(q.Tensors) || len(c.KV) != len(q.KV) {
		t.Fatalf("copy has %d tensors, %d keys; the base %d, %d", len(c.Tensors), len(c.KV), len(q.Tensors), len(q.KV))
	}
	for _, ti := range q.Tensors {
		ci, ok := c.Tensor(ti.Name)
		if !ok {
			t.Fatalf("%s missing", ti.Name)
		}
		a, b := read(q, path, ti), read(c, out, ci)
		if ti.Type != gguf.TypeF16 {
			if ci.Type != ti.Type || !bytes.Equal(a, b) {
				t.Fatalf("%s (%s) changed to %s", ti.Name, ti.Type, ci.Type)
			}
			continue
		}
		want, err := kernels.Dequantize(uint32(ti.Type), a, int(ti.NElements()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := kernels.Dequantize(uint32(ci.Type), b, int(ci.NElements()))
		if err != nil || ci.Type != gguf.TypeF32 {
			t.Fatalf("%s: %s, %v", ti.Name, ci.Type, err)
		}
		for i := range want {
			if want[i] != got[i] {
				t.Fatalf("%s[%d]: %g became %g", ti.Name, i, want[i], got[i])
			}
		}
	}
	m, err := kernels.LoadModel(context.Background(), out, kernels.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}
