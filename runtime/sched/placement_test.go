package sched

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Hand arithmetic for the expectations below (n_ctx 4096, batch 512, f16
// KV cache, no flash attention; margin = max(512 MiB, 5% of the total)):
//
// llama-2-70b: one block = 0.605 B x 855,638,016 weights + norms =
// 517,726,532 B; its KV = 4096 cells x (1024 + 1024) x 2 B = 16 MiB; so
// 534,503,748 B per layer. A GPU running blocks but not the head reserves a
// 633,350,144 B compute buffer (the 4096x512x64 f32 attention scores are
// 512 MiB of it) plus room for the CPU-resident weights ggml copies in for
// large batches: two thirds of a block, 345,151,021 B. A 24 GiB GPU has a
// budget of 24 GiB - 5% = 24,481,313,588 B:
// (24,481,313,588 - 633,350,144 - 345,151,021) / 534,503,748 = 43.97, so
// 43 of the 81 layers (80 blocks + head) fit.
//
// llama-2-7b: one block = 122,469,741 B + 64 MiB KV = 189,578,605 B; the
// layer compute buffer is 335,554,560 B, the weight copies 81,646,494 B. On
// an 8 GiB GPU where another process holds 6 GiB the budget is
// 8 - 6 GiB - 512 MiB = 1,610,612,736 B:
// (1,610,612,736 - 335,554,560 - 81,646,494) / 189,578,605 = 6.3, so 6.
func TestPlacement(t *testing.T) {
	one24 := func() NVML { return fakeNVML(fakeGPU("NVIDIA GeForce RTX 4090", 24*GiB, 0)) }
	two80 := func() NVML {
		return fakeNVML(fakeGPU("NVIDIA A100-SXM4-80GB", 80*GiB, 0), fakeGPU("NVIDIA A100-SXM4-80GB", 80*GiB, 0))
	}
	busy8 := func() NVML {
		return fakeNVML(fakeGPU("NVIDIA GeForce RTX 3070", 8*GiB, 6*GiB, nvml.ProcessInfo{Pid: 4242, UsedGpuMemory: uint64(6 * GiB)}))
	}
	tests := []struct {
		name   string
		nvml   func() NVML
		cpu    int64
		model  ModelFacts
		layers int       // NGPULayers
		split  []float32 // TensorSplit
	}{
		{"0.5B on 24GB", one24, 64 * GiB, qwen05, 25, []float32{25}},
		{"7B on 24GB", one24, 64 * GiB, llama7, 33, []float32{33}},
		{"70B on 24GB", one24, 64 * GiB, llama70, 43, []float32{43}},
		{"70B on 2x80GB", two80, 64 * GiB, llama70, 81, []float32{41, 40}},
		{"7B on 2x80GB", two80, 64 * GiB, llama7, 33, []float32{17, 16}},
		{"0.5B on 8GB with 6GB used", busy8, 64 * GiB, qwen05, 25, []float32{25}},
		{"7B on 8GB with 6GB used", busy8, 64 * GiB, llama7, 6, []float32{6}},
		{"7B without NVML", func() NVML { return missingNVML() }, 16 * GiB, llama7, 0, nil},
		{"0.5B without NVML", func() NVML { return missingNVML() }, 16 * GiB, qwen05, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSched(t, Config{NVML: tc.nvml(), CPULimit: tc.cpu})
			m := tc.model
			r, err := s.Acquire(t.Context(), Request{Owner: Owner{"model", m.Name}, Model: &m, Context: ctx4k})
			if err != nil {
				t.Fatal(err)
			}
			p, ok := r.Placement()
			if !ok {
				t.Fatal("model reservation without placement")
			}
			if p.NGPULayers != tc.layers {
				t.Errorf("n_gpu_layers %d, want %d (%s)", p.NGPULayers, tc.layers, p.Explanation)
			}
			if !slicesEqual(p.TensorSplit, tc.split) {
				t.Errorf("tensor split %v, want %v", p.TensorSplit, tc.split)
			}
			if p.Full != (tc.layers == m.NLayer+1) {
				t.Errorf("full offload %v with %d layers", p.Full, p.NGPULayers)
			}
			checkPlacementBytes(t, s, m, p)
			if tc.layers > 0 && tc.layers <= m.NLayer && !strings.Contains(p.Explanation, "partially offloaded") {
				t.Errorf("explanation does not say partial: %s", p.Explanation)
			}
			if tc.layers == 0 && !strings.Contains(p.Explanation, "no GPU") {
				t.Errorf("explanation does not say there is no GPU: %s", p.Explanation)
			}
		})
	}
}

// checkPlacementBytes checks that the placement accounts for every weight
// and KV byte, and that each device stays within its budget.
func checkPlacementBytes(t *testing.T, s *Scheduler, f ModelFacts, p Placement) {
	t.Helper()
	e, err := EstimateModel(f, ctx4k)
	if err != nil {
		t.Fatal(err)
	}
	var weights, kv int64
	layers := 0
	for _, d := range p.PerDevice {
		weights += d.Weights
		kv += d.KV
		layers += d.Layers
	}
	wantW := f.WeightBytes()
	if f.TiedOutput && p.Full { // the head is a copy of the embeddings on the GPU
		wantW += f.OutputBytes
	}
	if !f.TiedOutput || p.Full {
		if weights != wantW {
			t.Errorf("placement holds %d weight bytes, model has %d", weights, wantW)
		}
	}
	if kv != e.Total.KV {
		t.Errorf("placement holds %d KV bytes, estimate %d", kv, e.Total.KV)
	}
	if layers != f.NLayer+1 {
		t.Errorf("placement places %d layers, model has %d + head", layers, f.NLayer)
	}
	for _, d := range s.Devices() {
		var used int64
		for _, b := range p.PerDevice {
			if b.Device == d.ID {
				used += b.Total()
			}
		}
		if used > d.Budget {
			t.Errorf("%s: placement uses %d > budget %d", d.ID, used, d.Budget)
		}
	}
}

func slicesEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTensorSplitProportional: with unequal free memory the layers follow
// the free memory, and llama.cpp's own split rule (upper_bound over the
// normalised cumulative split) reproduces the counts exactly.
func TestTensorSplitProportional(t *testing.T) {
	nv := fakeNVML(fakeGPU("A100", 80*GiB, 0), fakeGPU("A100", 80*GiB, 40*GiB, nvml.ProcessInfo{Pid: 7, UsedGpuMemory: uint64(40 * GiB)}))
	s := newSched(t, Config{NVML: nv})
	m := llama70
	p, err := s.Plan(Request{Owner: Owner{"model", m.Name}, Model: &m, Context: ctx4k})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Full || len(p.TensorSplit) != 2 {
		t.Fatalf("placement %+v", p)
	}
	// Budgets 76 GiB and 36 GiB (less one compute buffer each): about 2:1.
	c0, c1 := int(p.TensorSplit[0]), int(p.TensorSplit[1])
	if c0+c1 != 81 || c0 < 54 || c0 > 57 {
		t.Errorf("split %v, want about 55/26", p.TensorSplit)
	}
	// llama.cpp: layer il (0..n_layer, the head last) goes to the first
	// device whose normalised cumulative split exceeds il/act.
	var sum float32
	cum := make([]float32, 2)
	for i, x := range p.TensorSplit {
		sum += x
		cum[i] = sum
	}
	got := []int{0, 0}
	for il := 0; il <= m.NLayer; il++ {
		for g := range cum {
			if cum[g]/sum > float32(il)/float32(81) {
				got[g]++
				break
			}
		}
	}
	if got[0] != c0 || got[1] != c1 {
		t.Errorf("llama.cpp would place %v layers, placement says %v", got, p.TensorSplit)
	}
	if p.MainGPU != 0 {
		t.Errorf("main gpu %d, want the one with most layers (0)", p.MainGPU)
	}
}

func TestNeverFits(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		req  func() Request
		say  string
	}{
		{"70B without a GPU", Config{NVML: missingNVML(), CPULimit: 16 * GiB}, func() Request {
			m := llama70
			return Request{Owner: Owner{"model", m.Name}, Model: &m, Context: ctx4k}
		}, "there is no GPU"},
		{"70B on 24GB with 8GB of RAM", Config{NVML: fakeNVML(fakeGPU("RTX 4090", 24*GiB, 0)), CPULimit: 8 * GiB}, func() Request {
			m := llama70
			return Request{Owner: Owner{"model", m.Name}, Model: &m, Context: ctx4k}
		}, "does not fit in the CPU's budget"},
		{"index bigger than the GPU", Config{NVML: fakeNVML(fakeGPU("RTX 4090", 24*GiB, 0))}, func() Request {
			return Request{Owner: Owner{"collection", "docs"}, Kind: KindIndex, Bytes: []DeviceBytes{{Device: "gpu0", Breakdown: Breakdown{Index: 30 * GiB}}}}
		}, "can never fit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.MaxWait = 24 * time.Hour // a never-fit must not wait
			s := newSched(t, tc.cfg)
			_, err := s.Acquire(t.Context(), tc.req())
			var fe *FitError
			if !errors.As(err, &fe) || !errors.Is(err, ErrNeverFits) || !fe.Never {
				t.Fatalf("err %v, want a FitError wrapping ErrNeverFits", err)
			}
			if !strings.Contains(fe.Explanation, tc.say) || !strings.Contains(fe.Explanation, "budget") {
				t.Errorf("explanation %q lacks %q or the budgets", fe.Explanation, tc.say)
			}
			if len(fe.Devices) == 0 || fe.Total.Total() <= 0 {
				t.Errorf("no device figures or need in the error: %+v", fe)
			}
			snap := s.Snapshot()
			if snap.Stats.Refused != 1 || last(snap.Decisions).Action != "refused" {
				t.Errorf("refusal not logged: %+v", last(snap.Decisions))
			}
		})
	}
}

func last(ds []Decision) Decision {
	if len(ds) == 0 {
		return Decision{}
	}
	return ds[len(ds)-1]
}

// TestTrainingSharesGPUOnlyWhenBothFit: a training job (no Evict: it runs
// until done) and a model share the GPU only as far as both fit; the model
// gets the layers that fit beside the job, and full offload after it.
func TestTrainingSharesGPUOnlyWhenBothFit(t *testing.T) {
	var violations int
	s := newSched(t, Config{NVML: fakeNVML(fakeGPU("RTX 4090", 24*GiB, 0)), OnChange: func(ls []LedgerState) {
		for _, l := range ls {
			if l.Reserved > l.Budget {
				violations++
			}
		}
	}})
	job, err := s.Acquire(t.Context(), Request{Owner: Owner{"job", "ft-1"}, Kind: KindTraining, Reason: "LoRA r=16",
		Bytes: []DeviceBytes{{Device: "gpu0", Breakdown: Breakdown{Adapter: 1 * GiB, Gradients: 1 * GiB, Optimizer: 2 * GiB, Activations: 16 * GiB}}}})
	if err != nil {
		t.Fatal(err)
	}
	m := llama7
	r, err := s.Acquire(t.Context(), Request{Owner: Owner{"model", m.Name}, Model: &m, Context: ctx4k})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := r.Placement()
	if p.NGPULayers == 0 || p.Full {
		t.Errorf("beside a 20 GiB job the 7B should be partially offloaded, got %d layers", p.NGPULayers)
	}
	r.Release()
	job.Release()
	r, err = s.Acquire(t.Context(), Request{Owner: Owner{"model", m.Name}, Model: &m, Context: ctx4k})
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := r.Placement(); !p.Full {
		t.Errorf("after the job the 7B should be fully offloaded, got %d layers", p.NGPULayers)
	}
	if violations != 0 {
		t.Errorf("%d ledger states over budget", violations)
	}
}
