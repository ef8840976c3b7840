package simgputest_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
)

// The library's ggml calls reach the executable's ggml: the address of
// ggml_backend_reg_count it resolved is the executable's, it sees the same
// registry (a second ggml-base would have its own, without the CPU backend
// and without SIM), and its log lines arrive at kernels' Go logger (a
// second ggml-base would print them to stderr with its default logger).
func TestOneGGML(t *testing.T) {
	needSim(t)
	b, err := kernels.SimGPUBinding()
	if err != nil {
		t.Fatal(err)
	}
	if b.LibRegCountAddr != b.ExeRegCountAddr {
		t.Fatalf("ggml_backend_reg_count: library binds %#x, executable has %#x: two ggml copies", b.LibRegCountAddr, b.ExeRegCountAddr)
	}
	if b.LibRegs != b.ExeRegs || b.ExeRegs < 2 {
		t.Fatalf("backends registered: %d as the library sees them, %d as the executable does", b.LibRegs, b.ExeRegs)
	}
	var found bool
	for _, l := range loggedLines() {
		found = found || strings.Contains(l, "simgpu: SIM1 (0000:e1:00.0")
	}
	if !found {
		t.Fatalf("the library's start-up line did not reach the Go logger; lines seen: %q", loggedLines())
	}
}

// Devices lists the simulated devices as GPUs with their configured sizes
// and distinct ids; free memory drops while a model is on the device, by
// what the device counts, and returns to the total when it is closed.
func TestDevicesAndMemory(t *testing.T) {
	needSim(t)
	ds := simDevices()
	if len(ds) != 2 {
		t.Fatalf("simulated devices %+v, want 2", ds)
	}
	for i, want := range []uint64{2 * gib, 1 * gib} {
		d := ds[i]
		if d.Name != "SIM"+string(rune('0'+i)) || d.Type != kernels.DeviceGPU || d.Total != want || d.Free != want ||
			d.Description != "llmrt simulated GPU" || d.PCIBusID == "" || d.ID == "" {
			t.Fatalf("device %d: %+v, want SIM%d, gpu, %d bytes free of %d", i, d, i, want, want)
		}
	}
	if ds[0].PCIBusID == ds[1].PCIBusID || ds[0].ID == ds[1].ID {
		t.Fatalf("devices share an id: %+v", ds)
	}
	if !kernels.SupportsGPUOffload() {
		t.Fatal("llama.cpp sees no device that can hold layers")
	}

	m := load(t, modelPath(t, "stories260K"), kernels.ModelParams{GPULayers: -1, TensorSplit: []float32{1, 0}})
	st := simStats(t, 0)
	if st.Allocated == 0 || st.Buffers == 0 {
		t.Fatalf("SIM0 holds nothing after loading every layer on it: %+v", st)
	}
	if d := simDevices()[0]; d.Free != d.Total-st.Allocated {
		t.Fatalf("SIM0 reports %d free of %d with %d allocated", d.Free, d.Total, st.Allocated)
	}
	c, err := m.NewContext(kernels.ContextParams{NCtx: 128, Threads: testThreads})
	if err != nil {
		t.Fatal(err)
	}
	// The device's own count against llama.cpp's ledger for it: weights,
	// KV cache and compute buffers, up to the device's 128-byte rounding.
	byBuf, err := c.MemoryByBuffer()
	if err != nil {
		t.Fatal(err)
	}
	st = simStats(t, 0)
	ledger := byBuf["SIM0"]
	if ledger.Weights == 0 || ledger.KV == 0 || ledger.Compute == 0 {
		t.Fatalf("llama.cpp's ledger for SIM0: %+v (all buffers %+v)", ledger, byBuf)
	}
	if got, want := int64(st.Allocated), ledger.Total(); got < want || got > want+128*int64(st.Buffers) {
		t.Fatalf("SIM0 counts %d bytes in %d buffers, llama.cpp's ledger says %d (%+v)", got, st.Buffers, want, ledger)
	}
	if s1 := simStats(t, 1); s1.Allocated != 0 {
		t.Fatalf("SIM1 holds %d bytes with a split of {1, 0}", s1.Allocated)
	}
	if st.Peak < st.Allocated {
		t.Fatalf("peak %d below the %d bytes allocated", st.Peak, st.Allocated)
	}
	c.Close()
	if st, _ := kernels.SimGPUStatsOf(0, true); st.Peak != st.Allocated || st.Allocated >= uint64(ledger.Total()) {
		t.Fatalf("after closing the context and resetting the peak: %+v", st)
	}
	m.Close()
	for i, d := range simDevices() {
		if st := simStats(t, i); d.Free != d.Total || st.Allocated != 0 || st.Buffers != 0 {
			t.Fatalf("after closing: %+v, stats %+v", d, st)
		}
	}
}

// placement is how a model is spread over the devices.
type placement struct {
	name   string
	layers func(nLayer int) int // GPULayers
	split  []float32
	want   [2]bool // which devices must hold weights
}

var placements = []placement{
	{"all-on-SIM0", func(int) int { return -1 }, []float32{1, 0}, [2]bool{true, false}},
	{"half-on-SIM0", func(n int) int { return n / 2 }, []float32{1, 0}, [2]bool{true, false}},
	{"split-1-1", func(int) int { return -1 }, []float32{1, 1}, [2]bool{true, true}},
}

// Greedy generation with layers on the simulated devices equals the CPU's,
// token for token and in the logits, for three models and three
// placements; the devices really hold the layers.
func TestGreedyMatchesCPU(t *testing.T) {
	needDevice(t)
	const prompt, n = "Once upon a time", 24
	for _, name := range []string{"stories260K", "llama", "qwen2"} {
		t.Run(name, func(t *testing.T) {
			path := modelPath(t, name)
			cpuModel := load(t, path, kernels.ModelParams{})
			before := [2]int64{simStats(t, 0).Graphs, simStats(t, 1).Graphs}
			want := greedy(t, cpuModel, prompt, n)
			for i := range 2 {
				if s := simStats(t, i); s.Allocated != 0 || s.Graphs != before[i] {
					t.Fatalf("a CPU-only model used SIM%d: %+v", i, s)
				}
			}
			if name == "stories260K" {
				text, _ := cpuModel.Detokenize(want.tokens, false, false)
				if !strings.HasPrefix(text, ", there was a little girl named Lily") {
					t.Fatalf("CPU baseline continues %q", text)
				}
			}
			nLayer := cpuModel.Info().Layers
			cpuModel.Close()
			var allOnSIM0 uint64
			for _, p := range placements {
				t.Run(p.name, func(t *testing.T) {
					if p.want[1] && len(simDevices()) < 2 {
						t.Skip("one device only")
					}
					m := load(t, path, kernels.ModelParams{GPULayers: p.layers(nLayer), TensorSplit: p.split})
					var weights [2]uint64
					for i := range weights {
						weights[i] = simStats(t, i).Allocated
						if (weights[i] > 0) != p.want[i] {
							t.Fatalf("SIM%d holds %d bytes of weights", i, weights[i])
						}
					}
					switch p.name {
					case "all-on-SIM0":
						allOnSIM0 = weights[0]
					case "half-on-SIM0":
						if allOnSIM0 > 0 && weights[0] >= allOnSIM0 {
							t.Fatalf("half the layers take %d bytes on SIM0, all of them %d", weights[0], allOnSIM0)
						}
					}
					var graphs [2]int64
					for i := range graphs {
						graphs[i] = simStats(t, i).Graphs
					}
					got := greedy(t, m, prompt, n)
					// Every decode step computed part of its graph on
					// each device that holds layers, and none elsewhere.
					for i := range graphs {
						ran := simStats(t, i).Graphs - graphs[i]
						if !useCUDA && ((p.want[i] && ran < n) || (!p.want[i] && ran != 0)) { // CUDA counts no graphs
							t.Fatalf("SIM%d computed %d graphs in %d decode steps", i, ran, n)
						}
					}
					sameRun(t, p.name, want, got, tolerance())
				})
			}
		})
	}
}

// Pooled embeddings computed on the device equal the CPU's.
func TestEmbeddingsMatchCPU(t *testing.T) {
	needDevice(t)
	path := modelPath(t, "stories260K")
	embed := func(p kernels.ModelParams) []float32 {
		m := load(t, path, p)
		defer m.Close()
		c, err := m.NewContext(kernels.ContextParams{NCtx: 128, Threads: testThreads, Embeddings: true, Pooling: kernels.PoolingMean})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b, _ := kernels.NewBatch(64, 1)
		defer b.Close()
		toks, _ := m.Tokenize("The little girl went to the park to play", true, false)
		for i, tok := range toks {
			b.Add(tok, i, 0, true)
		}
		if err := c.Decode(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		e, err := c.SeqEmbedding(0)
		if err != nil {
			t.Fatal(err)
		}
		if p.GPULayers != 0 && simStats(t, 0).Allocated == 0 {
			t.Fatal("nothing on SIM0")
		}
		return e
	}
	want := embed(kernels.ModelParams{})
	got := embed(kernels.ModelParams{GPULayers: -1, TensorSplit: []float32{1, 0}})
	if d := maxDiff(want, got); d > tolerance() {
		t.Fatalf("embeddings differ from the CPU's by %g", d)
	}
}

// A runtime LoRA adapter over a base on the device (its tensors go to the
// device too) gives the CPU's logits, and does change them.
func TestAdapterOnDevice(t *testing.T) {
	needDevice(t)
	base := modelPath(t, "stories260K")
	f, err := gguf.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	adapter := filepath.Join(t.TempDir(), "a.gguf")
	if err := lora.WriteAdapter(adapter, "llama", 8, lora.RandomAdapter(f, []string{"attn_q", "attn_v", "ffn_up"}, 8, 0.2, 1), nil); err != nil {
		t.Fatal(err)
	}
	logits := func(p kernels.ModelParams, scale float32) []float32 {
		m := load(t, base, p)
		defer m.Close()
		before := simStats(t, 0).Allocated
		a, err := m.LoadAdapter(adapter)
		if err != nil {
			t.Fatal(err)
		}
		if grew := simStats(t, 0).Allocated > before; grew != (p.GPULayers != 0) {
			t.Fatalf("adapter on SIM0: %v, base offloaded: %v", grew, p.GPULayers != 0)
		}
		c, err := m.NewContext(kernels.ContextParams{NCtx: 64, Threads: testThreads})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.SetAdapters([]kernels.AdapterScale{{Adapter: a, Scale: scale}}); err != nil {
			t.Fatal(err)
		}
		b, _ := kernels.NewBatch(64, 1)
		defer b.Close()
		toks, _ := m.Tokenize("Once upon a time", true, false)
		idx, _ := b.AddTokens(toks, 0, 0, true)
		if err := c.Decode(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		l, err := c.Logits(idx)
		if err != nil {
			t.Fatal(err)
		}
		return append([]float32(nil), l...)
	}
	onSim := kernels.ModelParams{GPULayers: -1, TensorSplit: []float32{1, 0}}
	want := logits(kernels.ModelParams{}, 1)
	got := logits(onSim, 1)
	if d := maxDiff(want, got); d > tolerance() {
		t.Fatalf("with the adapter, logits on SIM0 differ from the CPU's by %g", d)
	}
	if d := maxDiff(got, logits(onSim, 0)); d < 1e-3 {
		t.Fatalf("the adapter changed the logits on SIM0 by only %g", d)
	}
}

// child re-runs this test binary with only the named test and env, and
// fails unless that test passed: for LLMRT_SIM_GPUS values other than the
// package's (the library reads the variable once per process), and so that
// a crash shows as a failure here instead of killing the run.
func child(t *testing.T, test string, env ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.v", "-test.count=1")
	cmd.Env = append(append(os.Environ(), childEnv+"=1"), env...)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+test) {
		t.Fatalf("child process %s %v: %v\n%s", test, env, err, out)
	}
}

// onlyInChild skips tests that child runs.
func onlyInChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("run in a child process by the test without the Child suffix")
	}
}

// A model that does not fit the device is refused with an error, not a
// crash: the child's only device is 256 KiB (stories260K's layers take
// about 1 MiB), and it then still runs the model on the CPU.
func TestTinyDeviceRefusesModel(t *testing.T) {
	needSim(t)
	child(t, "TestTinyDeviceChild", "LLMRT_SIM_GPUS=256KiB")
}

func TestTinyDeviceChild(t *testing.T) {
	onlyInChild(t)
	needSim(t)
	if ds := simDevices(); len(ds) != 1 || ds[0].Total != 256<<10 {
		t.Fatalf("devices %+v, want one of 256 KiB", ds)
	}
	path := modelPath(t, "stories260K")
	m, err := kernels.LoadModel(context.Background(), path, kernels.ModelParams{GPULayers: -1})
	if err == nil {
		m.Close()
		t.Fatal("a model larger than the device loaded on it")
	}
	t.Logf("load error: %v", err)
	if !strings.Contains(err.Error(), "SIM0") {
		t.Fatalf("error does not name the device: %v", err)
	}
	st := simStats(t, 0)
	if st.Failed == 0 || st.Allocated != 0 || st.Buffers != 0 {
		t.Fatalf("after the refused load: %+v", st)
	}
	// The process carries on: the same model runs on the CPU.
	cpu := load(t, path, kernels.ModelParams{})
	if r := greedy(t, cpu, "Once upon a time", 4); len(r.tokens) != 4 {
		t.Fatal("no tokens")
	}
}

// Without sizes the library loads and registers no device, so llama.cpp
// sees no GPU; a malformed value makes the load fail with the reason.
func TestUnsetAndBadSpec(t *testing.T) {
	needSim(t)
	child(t, "TestNoDevicesChild", "LLMRT_SIM_GPUS=")
	child(t, "TestBadSpecChild", "LLMRT_SIM_GPUS=2GiB,lots")
}

func TestNoDevicesChild(t *testing.T) {
	onlyInChild(t)
	needSim(t)
	if ds := simDevices(); len(ds) != 0 || kernels.SupportsGPUOffload() {
		t.Fatalf("devices %+v with LLMRT_SIM_GPUS empty", ds)
	}
}

func TestBadSpecChild(t *testing.T) {
	onlyInChild(t)
	if loadErr == nil || !strings.Contains(loadErr.Error(), `bad size "lots"`) {
		t.Fatalf("load error %v, want the bad size named", loadErr)
	}
	if len(simDevices()) != 0 {
		t.Fatal("devices registered from a malformed LLMRT_SIM_GPUS")
	}
}

// LoadBackend names a missing file, and loading the library again neither
// fails nor registers its devices twice.
func TestLoadBackendAgainAndMissing(t *testing.T) {
	needSim(t)
	if _, err := kernels.LoadBackend(filepath.Join(t.TempDir(), "libggml-none.so")); err == nil || !strings.Contains(err.Error(), "libggml-none.so") {
		t.Fatalf("missing file: %v", err)
	}
	if name, err := kernels.LoadBackend(libPath()); err != nil || name != kernels.SimGPUBackend {
		t.Fatalf("second load: %q %v", name, err)
	}
	if n := len(simDevices()); n != 2 {
		t.Fatalf("%d simulated devices after loading the library twice", n)
	}
}
