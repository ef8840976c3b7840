package sched

import (
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

const (
	MiB = int64(1) << 20
	GiB = int64(1) << 30
)

// Model shapes from the issue: Qwen2.5-0.5B (Q8_0), Llama-2-7B and
// Llama-2-70B (Q4_K_M, about 4.85 bits per weight).
var (
	q8_0   = 34.0 / 32
	q4km   = 0.605
	qwen05 = FactsFromShape(Shape{Name: "qwen2.5-0.5b", Architecture: "qwen2", NLayer: 24, NEmbd: 896, NHead: 14, NHeadKV: 2,
		NFF: 4864, NVocab: 151936, NCtxTrain: 32768, QKVBias: true, TiedEmbd: true}, q8_0)
	llama7 = FactsFromShape(Shape{Name: "llama-2-7b", Architecture: "llama", NLayer: 32, NEmbd: 4096, NHead: 32, NHeadKV: 32,
		NFF: 11008, NVocab: 32000, NCtxTrain: 4096}, q4km)
	llama70 = FactsFromShape(Shape{Name: "llama-2-70b", Architecture: "llama", NLayer: 80, NEmbd: 8192, NHead: 64, NHeadKV: 8,
		NFF: 28672, NVocab: 32000, NCtxTrain: 4096}, q4km)
	ctx4k = ContextParams{NCtx: 4096}
)

// fakeGPU is a go-nvml mock device with total memory of which used is held
// by other processes, at PCI bus id 00000000:01:00.0 (see withPCI).
func fakeGPU(name string, total, used int64, procs ...nvml.ProcessInfo) *mock.Device {
	return withPCI(&mock.Device{
		GetNameFunc: func() (string, nvml.Return) { return name, nvml.SUCCESS },
		GetUUIDFunc: func() (string, nvml.Return) { return "GPU-" + name, nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: uint64(total), Used: uint64(used), Free: uint64(total - used)}, nvml.SUCCESS
		},
		GetCudaComputeCapabilityFunc:   func() (int, int, nvml.Return) { return 8, 9, nvml.SUCCESS },
		GetUtilizationRatesFunc:        func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 7, Memory: 3}, nvml.SUCCESS },
		GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) { return procs, nvml.SUCCESS },
	}, "00000000:01:00.0")
}

// withPCI gives a mock device the PCI bus id NVML would report.
func withPCI(d *mock.Device, busID string) *mock.Device {
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		var p nvml.PciInfo
		for i := 0; i < len(busID) && i < len(p.BusId)-1; i++ {
			p.BusId[i] = int8(busID[i])
		}
		return p, nvml.SUCCESS
	}
	return d
}

// fakeNVML is a go-nvml mock library with the given devices.
func fakeNVML(devs ...*mock.Device) *mock.Interface {
	var mu sync.Mutex
	inits := 0
	return &mock.Interface{
		InitFunc:           func() nvml.Return { mu.Lock(); inits++; mu.Unlock(); return nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { return nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= len(devs) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return devs[i], nvml.SUCCESS
		},
	}
}

// missingNVML behaves like nvml.New() on a machine without the library.
func missingNVML() *mock.Interface {
	return &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
}

func newSched(t *testing.T, cfg Config) *Scheduler {
	t.Helper()
	if cfg.CPULimit == 0 {
		cfg.CPULimit = 64 * GiB
	}
	if cfg.Logger == nil { // double releases are logged as errors: keep test output clean
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
