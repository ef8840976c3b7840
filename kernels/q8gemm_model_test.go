package kernels_test

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
)

// decodeStep feeds four sequences a prompt each, then decodes one token per
// sequence in a single batch (a decode step of 4), and returns that step's
// logits per sequence and how many matmuls the Q8_0 kernel ran in
// the step.
func decodeStep(t *testing.T, m *kernels.Model) ([][]float32, int64) {
	t.Helper()
	c, b := contextAndBatch(t, m, kernels.ContextParams{NCtx: 256, NSeqMax: 4, Threads: 2})
	prompts := []string{"Once upon a time", "The cat sat on", "Tom and Sue went to", "A big dog"}
	pos := make([]int, len(prompts))
	for s, p := range prompts {
		toks, err := m.Tokenize(p, true, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.AddTokens(toks, 0, s, false); err != nil {
			t.Fatal(err)
		}
		pos[s] = len(toks)
	}
	if err := c.Decode(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Clear()
	for s := range prompts {
		if _, err := b.Add(int32(100+s), pos[s], s, true); err != nil {
			t.Fatal(err)
		}
	}
	before := kernels.Q8GEMMCalls()
	if err := c.Decode(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	ran := kernels.Q8GEMMCalls() - before
	out := make([][]float32, len(prompts))
	for s := range prompts {
		l, err := c.Logits(s)
		if err != nil {
			t.Fatal(err)
		}
		out[s] = append([]float32(nil), l...) // the slice dies with the context
	}
	return out, ran
}

// TestQ8GEMMDecodeStep decodes four sequences at once on a Q8_0 model
// with the Q8_0 kernel routed in and out: the kernel runs for the
// step's matmuls and the logits agree with ggml's to float rounding.
func TestQ8GEMMDecodeStep(t *testing.T) {
	spec := testmodel.TinyLlama(testmodel.SharedDir())
	spec.Type = gguf.TypeQ8_0
	path := filepath.Join(t.TempDir(), "tiny-q8.gguf")
	if err := testmodel.Write(context.Background(), path, spec); err != nil {
		t.Fatal(err)
	}
	m, err := kernels.LoadModel(context.Background(), path, kernels.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer kernels.EnableQ8GEMM(true)

	kernels.EnableQ8GEMM(false)
	want, ran := decodeStep(t, m)
	if ran != 0 {
		t.Fatalf("kernel switched off but ran %d times", ran)
	}
	kernels.EnableQ8GEMM(true)
	got, ran := decodeStep(t, m)
	if kernels.Q8GEMMAvailable() {
		// 7 weight matmuls per layer (q, k, v, o, gate, up, down) and the
		// output head.
		if wantRan := int64(7*spec.NLayer + 1); ran != wantRan {
			t.Fatalf("kernel ran %d times in a 4-sequence decode step, want %d", ran, wantRan)
		}
	}
	for s := range want {
		var maxDiff, maxAbs float64
		for i := range want[s] {
			maxDiff = max(maxDiff, math.Abs(float64(got[s][i]-want[s][i])))
			maxAbs = max(maxAbs, math.Abs(float64(want[s][i])))
		}
		if maxDiff > 1e-3*maxAbs {
			t.Errorf("sequence %d: logits differ by up to %g (largest logit %g)", s, maxDiff, maxAbs)
		}
	}
}
