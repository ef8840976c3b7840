package finetune

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/lora/dataset"
	"github.com/llmrt/llmrt/models/testmodel"
)

// An F16 base trains on a Q8_0 copy (ggml has no F16 matmul backward; F32 here, as its rows do not split into Q8_0 blocks) and
// the adapter says so; bad lines reach Warn with their line numbers.
func TestTrainConvertsHalfBases(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f16 := filepath.Join(dir, "stories-f16.gguf")
	if err := kernels.Quantize(ctx, testmodel.Shared(t, "stories260K.gguf"), f16, kernels.FTypeF16, 2); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "d.jsonl")
	os.WriteFile(data, []byte(strings.Repeat(`{"prompt": "The dog", "completion": " ran to the park."}`+"\n", 3)+"{oops\n"), 0o644)
	var warns []error
	var loaded dataset.Stats
	steps := 0
	sum, err := Train(ctx, Spec{BasePath: f16, Data: data, Out: filepath.Join(dir, "a.gguf"), Epochs: 2, Rank: 4, Threads: 2, KeepCheckpoint: true},
		Hooks{Warn: func(e error) { warns = append(warns, e) }, Loaded: func(s dataset.Stats, _ int) { loaded = s },
			Progress: func(lora.Progress) { steps++ }})
	if err != nil {
		t.Fatal(err)
	}
	var le *dataset.LineError
	if len(warns) != 1 || !errors.As(warns[0], &le) || le.Line != 4 {
		t.Fatalf("warnings %v, want line 4", warns)
	}
	if loaded.Examples != 3 || steps != sum.Steps || sum.Steps == 0 {
		t.Fatalf("examples %d, %d progress calls for %d steps", loaded.Examples, steps, sum.Steps)
	}
	a, err := lora.ReadAdapter(filepath.Join(dir, "a.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Meta["llmrt.train.base_converted"] != "F16 -> F32" || a.Meta["llmrt.base"] != "stories-f16" {
		t.Fatalf("adapter metadata %v", a.Meta)
	}
	// KeepCheckpoint kept the checkpoint and the converted copy.
	for _, side := range []string{"a.ckpt.gguf", "a.base-f32.gguf"} {
		if _, err := os.Stat(filepath.Join(dir, side)); err != nil {
			t.Errorf("KeepCheckpoint: %v", err)
		}
	}
	// The adapter loads on the original F16 base.
	m, err := kernels.LoadModel(ctx, f16, kernels.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.LoadAdapter(filepath.Join(dir, "a.gguf")); err != nil {
		t.Fatal(err)
	}
	// A version of the adapter (a@2) trains on the same converted copy,
	// and, done without KeepCheckpoint, removes it and its checkpoint:
	// they only serve to resume.
	var status []string
	if _, err := Train(ctx, Spec{BasePath: f16, Data: data, Out: filepath.Join(dir, "a@2.gguf"), Epochs: 1, Rank: 4, Threads: 2},
		Hooks{Status: func(s string) { status = append(status, s) }}); err != nil {
		t.Fatal(err)
	}
	if len(status) != 0 {
		t.Fatalf("a version converted the base again: %q", status)
	}
	for _, side := range []string{"a@2.ckpt.gguf", "a.base-f32.gguf", "a@2.base-f32.gguf"} {
		if _, err := os.Stat(filepath.Join(dir, side)); !os.IsNotExist(err) {
			t.Errorf("a successful run left %s (%v)", side, err)
		}
	}
	// Validation fails before any work.
	if _, err := Train(ctx, Spec{BasePath: f16, Data: filepath.Join(dir, "missing.jsonl"), Out: filepath.Join(dir, "b.gguf")}, Hooks{}); err == nil {
		t.Fatal("missing data accepted")
	}
}
