package finetune

import (
	"context"
	"fmt"

	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/sched"
)

// TrainingMemory is what a run of spec holds while it trains, by device:
// its own copy of the base weights (Train loads the base itself; on the
// first GPU unless spec.GPULayers is 0) and, from sched.EstimateTraining,
// the LoRA tensors, their gradients, AdamW's moments and the activations of
// a micro-batch, which kernels.NewNet keeps beside the weights they train.
// Device "" is the scheduler's first GPU, or the CPU on a machine without
// one.
func TrainingMemory(spec Spec) ([]sched.DeviceBytes, error) {
	spec.defaults()
	facts, err := registry.Facts(spec.BaseName, spec.BasePath)
	if err != nil {
		return nil, fmt.Errorf("training memory of %s: %w", spec.BasePath, err)
	}
	state, err := sched.EstimateTraining(facts, sched.TrainingParams{Rank: spec.Rank, Targets: spec.Targets, SeqLen: spec.Ctx, Batch: spec.Batch})
	if err != nil {
		return nil, fmt.Errorf("training memory of %s: %w", spec.BasePath, err)
	}
	weights := sched.DeviceBytes{Device: "", Breakdown: sched.Breakdown{Weights: facts.WeightBytes()}}
	if spec.GPULayers == 0 {
		return []sched.DeviceBytes{{Device: "cpu", Breakdown: state.Add(weights.Breakdown)}}, nil
	}
	return []sched.DeviceBytes{{Device: "", Breakdown: state.Add(weights.Breakdown)}}, nil
}

// Reserve books a training run's memory (TrainingMemory) with the
// scheduler as owner, waiting in its queue while it does not fit. Release
// the reservation when the run ends.
func Reserve(ctx context.Context, s *sched.Scheduler, owner sched.Owner, spec Spec) (*sched.Reservation, error) {
	parts, err := TrainingMemory(spec)
	if err != nil {
		return nil, err
	}
	r, err := s.Acquire(ctx, sched.Request{
		Owner: owner, Kind: sched.KindTraining,
		Reason: fmt.Sprintf("LoRA training of %s (rank %d, %d targets, %d tokens x %d rows)", spec.BaseName, spec.Rank, len(spec.Targets), spec.Ctx, spec.Batch),
		Bytes:  parts,
	})
	if err != nil {
		return nil, fmt.Errorf("reserve memory for %s: %w", owner, err)
	}
	return r, nil
}
