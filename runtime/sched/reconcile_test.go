package sched

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// NVML's GPUs and ggml's devices pair by PCI bus id (whatever the domain
// width) or UUID, never by position: a ggml GPU NVML does not list (the
// simulated one) keeps ggml's own figures, an NVML GPU without a ggml
// device is left out, and both are explained in the snapshot, in Format's
// text and in the log.
func TestDiscoverReconcilesByPCIAndUUID(t *testing.T) {
	a := withPCI(fakeGPU("NVIDIA A100", 80*GiB, 0), "00000000:01:00.0")
	b := withPCI(fakeGPU("NVIDIA RTX 4090", 24*GiB, 2*GiB), "00000000:02:00.0")
	c := withPCI(fakeGPU("NVIDIA RTX 4090", 24*GiB, 0), "00000000:03:00.0")
	backends := []BackendDevice{
		// The same name as c, but the PCI bus id of b: b it is.
		{Name: "CUDA0", Description: "NVIDIA RTX 4090", Type: "gpu", Total: uint64(24 * GiB), Free: uint64(20 * GiB), PCIBusID: "0000:02:00.0"},
		// No PCI bus id, a's UUID.
		{Name: "CUDA1", Description: "NVIDIA A100", Type: "gpu", Total: uint64(80 * GiB), ID: "gpu-nvidia a100"},
		// NVML does not know it, although its name is c's.
		{Name: "SIM0", Description: "NVIDIA RTX 4090", Type: "gpu", Total: uint64(2 * GiB), Free: uint64(2 * GiB), PCIBusID: "0000:e0:00.0", ID: "GPU-5111a7ed"},
		{Name: "CPU", Type: "cpu"},
	}
	var log bytes.Buffer
	s := newSched(t, Config{NVML: fakeNVML(a, b, c), Backends: backends, MarginBytes: -1, MarginFraction: -1,
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	devs := s.Devices()
	if len(devs) != 4 {
		t.Fatalf("devices %+v, want 3 GPUs and the CPU", devs)
	}
	want := []struct {
		backend, source, pci string
		total, others        int64
	}{
		{"CUDA0", "nvml", "00000000:02:00.0", 24 * GiB, 2 * GiB},
		{"CUDA1", "nvml", "00000000:01:00.0", 80 * GiB, 0},
		{"SIM0", "ggml", "0000:e0:00.0", 2 * GiB, 0},
	}
	for i, w := range want {
		d := devs[i]
		if d.Backend != w.backend || d.Source != w.source || d.PCIBusID != w.pci || d.Total != w.total || d.UsedByOthers != w.others || d.Budget != w.total-w.others || d.Index != i {
			t.Errorf("device %d: %+v, want %+v", i, d, w)
		}
	}
	snap := s.Snapshot()
	var text strings.Builder
	if err := Format(&text, snap); err != nil {
		t.Fatal(err)
	}
	for _, frag := range []string{
		"gpu0: ggml device CUDA0 (NVIDIA RTX 4090) is NVML device 1 (NVIDIA RTX 4090), matched by PCI bus id 0000:02:00.0",
		"gpu1: ggml device CUDA1 (NVIDIA A100) is NVML device 0 (NVIDIA A100), matched by UUID",
		"gpu2: ggml device SIM0 (NVIDIA RTX 4090, PCI 0000:e0:00.0, GPU-5111a7ed) has no NVML device (NVML does not list it); budget from ggml's own report: total 2.0 GiB",
		"NVML device 2 (NVIDIA RTX 4090, PCI 00000000:03:00.0, GPU-NVIDIA RTX 4090) has no ggml backend device: not used",
	} {
		for where, hay := range map[string]string{"snapshot": strings.Join(append(snap.Notes, snap.Warnings...), "\n"), "llmrt gpu": text.String(), "log": log.String()} {
			if !strings.Contains(hay, frag) {
				t.Errorf("%s lacks %q:\n%s", where, frag, hay)
			}
		}
		found := false
		for _, d := range snap.Decisions {
			found = found || (d.Action == "discovery" && strings.Contains(d.Reason, frag))
		}
		if !found {
			t.Errorf("no discovery decision says %q", frag)
		}
	}
	if len(snap.Warnings) != 1 {
		t.Errorf("warnings %q, want only the unused NVML GPU", snap.Warnings)
	}
}

// Without NVML the simulated GPUs are ledgers with ggml's total and free,
// and the notes say so.
func TestDiscoverGGMLOnlyWithoutNVML(t *testing.T) {
	backends := []BackendDevice{
		{Name: "SIM0", Description: "llmrt simulated GPU", Type: "gpu", Total: uint64(2 * GiB), Free: uint64(2 * GiB), PCIBusID: "0000:e0:00.0"},
		{Name: "SIM1", Description: "llmrt simulated GPU", Type: "gpu", Total: uint64(GiB), Free: uint64(GiB) - uint64(100*MiB), PCIBusID: "0000:e1:00.0"},
	}
	s := newSched(t, Config{NVML: missingNVML(), Backends: backends, MarginBytes: -1, MarginFraction: -1})
	devs := s.Devices()
	if len(devs) != 3 || devs[0].Backend != "SIM0" || devs[1].Backend != "SIM1" || devs[2].ID != "cpu" {
		t.Fatalf("devices %+v", devs)
	}
	if d := devs[1]; d.Source != "ggml" || d.Total != GiB || d.UsedByOthers != 100*MiB || d.Budget != GiB-100*MiB {
		t.Errorf("SIM1 ledger %+v", d)
	}
	snap := s.Snapshot()
	if snap.Source != "ggml" || len(snap.Notes) != 2 || !strings.Contains(snap.Notes[1], "gpu1: ggml device SIM1 (llmrt simulated GPU, PCI 0000:e1:00.0) has no NVML device (NVML is not available)") {
		t.Errorf("source %q, notes %q", snap.Source, snap.Notes)
	}
}

func TestSamePCI(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{"00000000:01:00.0", "0000:01:00.0", true},
		{"0000:0A:00.0", "00000000:0a:00.0", true},
		{"0000:01:00.0", "0000:01:00.1", false},
		{"0000:e0:00.0", "0000:01:00.0", false},
		{"", "", false},
		{"junk", "junk", false},
	} {
		if got := samePCI(c.a, c.b); got != c.same {
			t.Errorf("samePCI(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

// GPULimit caps every GPU's budget, at discovery and after Refresh.
func TestGPULimit(t *testing.T) {
	s := newSched(t, Config{NVML: fakeNVML(fakeGPU("RTX 4090", 24*GiB, 0)), GPULimit: 36 * MiB})
	if b := s.Devices()[0].Budget; b != 36*MiB {
		t.Fatalf("budget %s, want 36 MiB", FormatBytes(b))
	}
	if err := s.Refresh(); err != nil {
		t.Fatal(err)
	}
	if b := s.Devices()[0].Budget; b != 36*MiB {
		t.Fatalf("budget after refresh %s, want 36 MiB", FormatBytes(b))
	}
}
