package sched_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"

	"github.com/llmrt/llmrt/runtime/sched"
)

// quiet drops the scheduler's log (the example's double release is logged
// as an error).
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// A 24 GiB GPU as go-nvml's mock reports it; in production Config.NVML is
// left nil and the system's NVML is used.
func gpu24() sched.NVML {
	dev := &mock.Device{
		GetNameFunc: func() (string, nvml.Return) { return "NVIDIA GeForce RTX 4090", nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 24 << 30, Free: 24 << 30}, nvml.SUCCESS
		},
		GetUUIDFunc:                    func() (string, nvml.Return) { return "GPU-0", nvml.SUCCESS },
		GetPciInfoFunc:                 func() (nvml.PciInfo, nvml.Return) { return nvml.PciInfo{}, nvml.SUCCESS },
		GetCudaComputeCapabilityFunc:   func() (int, int, nvml.Return) { return 8, 9, nvml.SUCCESS },
		GetUtilizationRatesFunc:        func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.SUCCESS },
		GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS },
	}
	return &mock.Interface{
		InitFunc:                   func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:               func() nvml.Return { return nvml.SUCCESS },
		DeviceGetCountFunc:         func() (int, nvml.Return) { return 1, nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(int) (nvml.Device, nvml.Return) { return dev, nvml.SUCCESS },
	}
}

// Place Llama-2-70B (Q4_K_M) on a 24 GiB GPU: the layers that fit go to the
// GPU, the rest stay on the CPU, and the engine loads with exactly the
// numbers of the placement.
func Example() {
	s, err := sched.New(sched.Config{NVML: gpu24(), CPULimit: 64 << 30, Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	facts := sched.FactsFromShape(sched.Shape{Name: "llama-2-70b", Architecture: "llama", NLayer: 80, NEmbd: 8192,
		NHead: 64, NHeadKV: 8, NFF: 28672, NVocab: 32000, NCtxTrain: 4096}, 0.605)
	var res *sched.Reservation
	res, err = s.Acquire(context.Background(), sched.Request{
		Owner:   sched.Owner{Kind: "model", ID: "llama-2-70b"},
		Reason:  "first chat request",
		Model:   &facts,
		Context: sched.ContextParams{NCtx: 4096},
		Evict:   func(context.Context) error { return res.Release() }, // the engine unloads, then releases
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	p, _ := res.Placement()
	fmt.Printf("n_gpu_layers=%d tensor_split=%v main_gpu=%d\n", p.NGPULayers, p.TensorSplit, p.MainGPU)
	for _, d := range p.PerDevice {
		fmt.Printf("%s: %d layers, %s\n", d.Device, d.Layers, sched.FormatBytes(d.Total()))
	}

	done, _ := res.Use() // serving a request: not evictable meanwhile
	done()
	if err := res.Release(); err != nil {
		fmt.Println(err)
	}
	if err := res.Release(); err != nil { // a bug, detected
		fmt.Println("second release:", err)
	}
	// Output:
	// n_gpu_layers=43 tensor_split=[43] main_gpu=0
	// gpu0: 43 layers, 22.3 GiB
	// cpu: 38 layers, 19.3 GiB
	// second release: release reservation 1 of model llama-2-70b: reservation released twice
}

// The state, as `llmrt gpu` prints it.
func ExampleFormat() {
	s, err := sched.New(sched.Config{NoNVML: true, CPULimit: 8 << 30})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	var out strings.Builder
	_ = sched.Format(&out, s.Snapshot())
	// The report names the time and this machine's memory; print the lines
	// that do not depend on them.
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "DEVICE") || strings.HasPrefix(line, "STATS") || strings.HasPrefix(line, "  (") {
			fmt.Println(strings.Join(strings.Fields(line), " "))
		}
	}
	// Output:
	// DEVICE NAME TOTAL OTHERS MARGIN BUDGET RESERVED AVAILABLE UTIL
	// (none)
	// (none)
	// (empty)
	// STATS granted 0, released 0, queued 0, evicted 0 (failed 0), refused 0, timed out 0, double releases 0
}
