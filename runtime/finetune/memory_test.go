package finetune

import (
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/sched"
)

// A run books its own copy of the base weights and sched.EstimateTraining's
// state for its rank, targets, row length and batch: on the first GPU, or
// the weights on the CPU when no layer is offloaded.
func TestTrainingMemory(t *testing.T) {
	base := testmodel.Shared(t, "stories260K.gguf")
	facts, err := registry.Facts("stories260K", base)
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{BasePath: base, Rank: 8, Targets: AllLinearTargets, Ctx: 64, Batch: 2, GPULayers: -1}
	state, err := sched.EstimateTraining(facts, sched.TrainingParams{Rank: 8, Targets: AllLinearTargets, SeqLen: 64, Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	parts, err := TrainingMemory(spec)
	if err != nil {
		t.Fatal(err)
	}
	want := state.Add(sched.Breakdown{Weights: facts.WeightBytes()})
	if len(parts) != 1 || parts[0].Device != "" || parts[0].Breakdown != want || state.Activations == 0 || state.Optimizer != 2*state.Adapter {
		t.Fatalf("offloaded run books %+v, want %+v on the first GPU", parts, want)
	}
	spec.GPULayers = 0
	if parts, err = TrainingMemory(spec); err != nil {
		t.Fatal(err)
	}
	if len(parts) != 1 || parts[0].Device != "cpu" || parts[0].Breakdown != want {
		t.Fatalf("CPU run books %+v", parts)
	}
	// A longer row books more activations.
	spec.Ctx = 256
	longer, _ := TrainingMemory(spec)
	if longer[0].Activations <= state.Activations {
		t.Fatalf("256-token rows book %d of activations, 64-token rows %d", longer[0].Activations, state.Activations)
	}
}

// Reserve books the memory as a training reservation, and a run larger
// than the machine is refused at once with the scheduler's explanation.
func TestReserve(t *testing.T) {
	base := testmodel.Shared(t, "stories260K.gguf")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := sched.New(sched.Config{NoNVML: true, CPULimit: 64 << 20, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	spec := Spec{BasePath: base, Rank: 4, Ctx: 64}
	r, err := Reserve(t.Context(), s, sched.Owner{Kind: "job", ID: "ftjob-1"}, spec)
	if err != nil {
		t.Fatal(err)
	}
	parts, _ := TrainingMemory(spec)
	var want int64
	for _, p := range parts {
		want += p.Total()
	}
	for _, d := range r.PerDevice() { // no GPU: the first GPU ("") is the CPU
		if d.Device != "cpu" {
			t.Fatalf("booked on %s without a GPU", d.Device)
		}
	}
	if r.Kind() != sched.KindTraining || r.Total() != want {
		t.Fatalf("reservation %s of %d bytes on %+v, want %d", r.Kind(), r.Total(), r.PerDevice(), want)
	}
	r.Release()
	spec.Ctx = 4096 // attention scores of 4096 x 4096 per head: far above 64 MiB
	_, err = Reserve(t.Context(), s, sched.Owner{Kind: "job", ID: "ftjob-2"}, spec)
	if !errors.Is(err, sched.ErrNeverFits) {
		t.Fatalf("a run larger than the machine: %v", err)
	}
	t.Logf("refused: %v", err)
}
