package sched

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// The real library satisfies the interface (and so does the mock, used in
// every test here).
var (
	_ NVML = nvml.New()
	_ NVML = (*mock.Interface)(nil)
)

func TestDiscoverNVML(t *testing.T) {
	self := uint32(os.Getpid())
	dev := fakeGPU("NVIDIA GeForce RTX 4090", 24*GiB, 5*GiB,
		nvml.ProcessInfo{Pid: self, UsedGpuMemory: uint64(2 * GiB)}, // ours: not another process
		nvml.ProcessInfo{Pid: 999, UsedGpuMemory: uint64(3 * GiB)})
	s := newSched(t, Config{NVML: fakeNVML(dev), MarginBytes: 1 * GiB, MarginFraction: -1})
	devs := s.Devices()
	if len(devs) != 2 || devs[0].ID != "gpu0" || devs[1].ID != "cpu" {
		t.Fatalf("devices %+v", devs)
	}
	g := devs[0]
	if g.Source != "nvml" || g.Name != "NVIDIA GeForce RTX 4090" || g.UUID == "" || g.ComputeCapability != "8.9" || g.UtilizationGPU != 7 {
		t.Errorf("gpu %+v", g)
	}
	// 5 GiB used of which 2 GiB is ours: others hold 3 GiB.
	if g.UsedByOthers != 3*GiB || g.Margin != GiB || g.Budget != 20*GiB {
		t.Errorf("used by others %s, margin %s, budget %s; want 3, 1, 20 GiB", FormatBytes(g.UsedByOthers), FormatBytes(g.Margin), FormatBytes(g.Budget))
	}
	if len(g.Processes) != 1 || g.Processes[0].PID != 999 {
		t.Errorf("other processes %+v", g.Processes)
	}
	if s.Snapshot().Source != "nvml" {
		t.Error("source not nvml")
	}
}

func TestDiscoverMatchesGGMLOrder(t *testing.T) {
	nv := fakeNVML(fakeGPU("NVIDIA A100-SXM4-80GB", 80*GiB, 0), fakeGPU("NVIDIA GeForce RTX 4090", 24*GiB, 0))
	// CUDA orders the faster card first; ggml's order is what the tensor
	// split indexes.
	backends := []BackendDevice{
		{Name: "CUDA0", Description: "NVIDIA GeForce RTX 4090", Type: "gpu", Total: uint64(24 * GiB), Free: uint64(23 * GiB)},
		{Name: "CUDA1", Description: "NVIDIA A100-SXM4-80GB", Type: "gpu", Total: uint64(80 * GiB), Free: uint64(79 * GiB)},
		{Name: "CPU", Description: "AMD EPYC", Type: "cpu", Total: uint64(64 * GiB), Free: uint64(60 * GiB)},
	}
	s := newSched(t, Config{NVML: nv, Backends: backends})
	devs := s.Devices()
	if devs[0].Backend != "CUDA0" || devs[0].Total != 24*GiB || devs[0].Index != 0 ||
		devs[1].Backend != "CUDA1" || devs[1].Total != 80*GiB || devs[1].Index != 1 {
		t.Fatalf("devices not in ggml order: %+v", devs[:2])
	}
	m := llama70
	p, err := s.Plan(Request{Owner: Owner{"model", m.Name}, Model: &m, Context: ctx4k})
	if err != nil {
		t.Fatal(err)
	}
	if p.MainGPU != 1 || p.TensorSplit[1] <= p.TensorSplit[0] {
		t.Errorf("the 80 GB card (ggml index 1) should take most layers: split %v, main %d", p.TensorSplit, p.MainGPU)
	}
}

func TestDiscoverWithoutNVML(t *testing.T) {
	meminfo := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(meminfo, []byte("MemTotal:       16777216 kB\nMemFree:         1000 kB\nMemAvailable:   10485760 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("cpu only", func(t *testing.T) {
		s, err := New(Config{NVML: missingNVML(), MeminfoPath: meminfo})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		devs := s.Devices()
		if len(devs) != 1 || devs[0].ID != "cpu" || devs[0].Source != "meminfo" {
			t.Fatalf("devices %+v", devs)
		}
		// MemAvailable 10 GiB minus max(512 MiB, 5% of 16 GiB).
		want := 10*GiB - fivePercent(16*GiB)
		if devs[0].Total != 16*GiB || devs[0].Budget != want {
			t.Errorf("cpu total %d budget %d, want %d %d", devs[0].Total, devs[0].Budget, 16*GiB, want)
		}
		snap := s.Snapshot()
		if snap.Source != "cpu" || len(snap.Warnings) != 1 || !strings.Contains(snap.Warnings[0], "ERROR_LIBRARY_NOT_FOUND") {
			t.Errorf("source %q warnings %q", snap.Source, snap.Warnings)
		}
	})
	t.Run("ggml gpu", func(t *testing.T) {
		s, err := New(Config{NVML: missingNVML(), MeminfoPath: meminfo, Backends: []BackendDevice{
			{Name: "Vulkan0", Description: "AMD Radeon RX 7900 XTX", Type: "gpu", Total: uint64(24 * GiB), Free: uint64(22 * GiB)},
			{Name: "CPU", Type: "cpu"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		g := s.Devices()[0]
		if g.Source != "ggml" || g.Backend != "Vulkan0" || g.UsedByOthers != 2*GiB || g.Budget != 22*GiB-fivePercent(24*GiB) {
			t.Errorf("ggml gpu %+v", g)
		}
	})
	t.Run("no meminfo", func(t *testing.T) {
		if _, err := New(Config{NoNVML: true, MeminfoPath: filepath.Join(t.TempDir(), "missing")}); err == nil {
			t.Error("no host memory information and no limit: New succeeded")
		}
	})
}

func TestDiscoverNVMLWithoutGGMLBackend(t *testing.T) {
	// NVML sees a GPU but ggml has only its CPU backend (no CUDA library
	// loaded): the GPU cannot hold layers and is left out.
	s := newSched(t, Config{NVML: fakeNVML(fakeGPU("RTX 4090", 24*GiB, 0)), Backends: []BackendDevice{{Name: "CPU", Type: "cpu"}}})
	if devs := s.Devices(); len(devs) != 1 || devs[0].ID != "cpu" {
		t.Errorf("devices %+v", devs)
	}
	if w := s.Snapshot().Warnings; len(w) != 1 || !strings.Contains(w[0], "no ggml backend") {
		t.Errorf("warnings %q", w)
	}
}

func TestRefresh(t *testing.T) {
	var used atomic.Int64
	dev := fakeGPU("RTX 4090", 24*GiB, 0)
	dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		u := uint64(used.Load())
		return nvml.Memory{Total: uint64(24 * GiB), Used: u, Free: uint64(24*GiB) - u}, nvml.SUCCESS
	}
	dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: 4242, UsedGpuMemory: uint64(used.Load())}}, nvml.SUCCESS
	}
	var shutdowns atomic.Int32
	nv := fakeNVML(dev)
	nv.ShutdownFunc = func() nvml.Return { shutdowns.Add(1); return nvml.SUCCESS }
	s, err := New(Config{NVML: nv, CPULimit: 8 * GiB})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Acquire(t.Context(), Request{Owner: Owner{"job", "a"}, Bytes: []DeviceBytes{{Device: "gpu0", Breakdown: Breakdown{Weights: 20 * GiB}}}})
	if err != nil {
		t.Fatal(err)
	}
	used.Store(6 * GiB) // another process grew
	if err := s.Refresh(); err != nil {
		t.Fatal(err)
	}
	g := s.Devices()[0]
	if g.UsedByOthers != 6*GiB || g.Budget != 24*GiB-6*GiB-fivePercent(24*GiB) {
		t.Errorf("after refresh: others %s, budget %s", FormatBytes(g.UsedByOthers), FormatBytes(g.Budget))
	}
	if d := last(s.Snapshot().Decisions); d.Action != "over-budget" || !strings.Contains(d.Reason, "gpu0") {
		t.Errorf("over-budget not logged: %+v", d)
	}
	r.Release()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if shutdowns.Load() != 1 {
		t.Errorf("nvml shut down %d times, want 1", shutdowns.Load())
	}
}

func fivePercent(n int64) int64 { f := 0.05; return int64(f * float64(n)) }

// TestSystemNVML uses the real library: on a machine without NVIDIA's
// driver Init fails and the scheduler manages host RAM alone; with one, the
// GPUs come first.
func TestSystemNVML(t *testing.T) {
	s := newSched(t, Config{CPULimit: GiB})
	devs := s.Devices()
	if devs[len(devs)-1].ID != "cpu" {
		t.Fatalf("devices %+v: the CPU is not last", devs)
	}
	snap := s.Snapshot()
	switch {
	case len(devs) == 1:
		if snap.Source != "cpu" || len(snap.Warnings) == 0 || !strings.Contains(snap.Warnings[0], "NVML") {
			t.Errorf("no GPU: source %q, warnings %q", snap.Source, snap.Warnings)
		}
	default:
		if snap.Source != "nvml" || devs[0].Total <= 0 {
			t.Errorf("GPUs: source %q, first %+v", snap.Source, devs[0])
		}
	}
	t.Logf("source %s, %d devices, warnings %q", snap.Source, len(devs), snap.Warnings)
}
