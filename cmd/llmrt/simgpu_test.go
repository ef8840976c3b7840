package main

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/runtime/sched"
)

// simChildEnv marks the child process of TestSimulatedGPUsListed: only it
// loads the simulated GPU library, which would stay loaded for every later
// test of this binary.
const simChildEnv = "LLMRT_TEST_SIMGPU_CHILD"

// With LLMRT_SIM_GPUS set, llmrt system and llmrt gpu list the simulated
// devices with their budgets and say where the budgets come from (run in
// a child process of this test binary).
func TestSimulatedGPUsListed(t *testing.T) {
	if os.Getenv(simChildEnv) != "" {
		simulatedGPUsListed(t)
		return
	}
	simChild(t, "TestSimulatedGPUsListed", "2GiB,1GiB")
}

// simChild re-runs this test binary with only the named test, with
// LLMRT_SIM_GPUS set to sizes and llmrt loading the library from lib/,
// and fails unless that test passed.
func simChild(t *testing.T, test, sizes string) {
	t.Helper()
	lib, err := filepath.Abs(filepath.Join("..", "..", "lib"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(lib, "libggml-simgpu.so")); err != nil {
		t.Fatalf("run make simgpu (make test does): %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), simChildEnv+"=1", "LLMRT_SIM_GPUS="+sizes, "LLMRT_LIB_PATH="+lib)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+test) {
		t.Fatalf("child process: %v\n%s", err, out)
	}
}

func simulatedGPUsListed(t *testing.T) {
	home := t.TempDir()
	out, errs, code := cli(t, home, "system")
	if code != 0 {
		t.Fatalf("system: exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"SIM0     gpu   llmrt simulated GPU", "0000:e0:00.0", "0000:e1:00.0",
		"gpu0  SIM0     budget    1.5 GiB of    2.0 GiB", "gpu1  SIM1     budget  512.0 MiB of    1.0 GiB",
		"note: gpu0: ggml device SIM0 (llmrt simulated GPU, PCI 0000:e0:00.0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("llmrt system lacks %q:\n%s", want, out)
		}
	}
	// No server on port 1: gpu shows this machine's devices (-v: with the
	// scheduler's log records).
	out, errs, code = cli(t, home, "-v", "gpu", "--addr", "127.0.0.1:1")
	if code != 0 {
		t.Fatalf("gpu: exit %d: %s", code, errs)
	}
	for _, want := range []string{"devices from ggml", "gpu0    llmrt simulated GPU (SIM0) 0000:e0:00.0  2.0 GiB", "note: gpu1: ggml device SIM1"} {
		if !strings.Contains(out, want) {
			t.Errorf("llmrt gpu lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errs, "gpu scheduler: gpu0: ggml device SIM0") {
		t.Errorf("no log line explains SIM0's budget:\n%s", errs)
	}
	out, errs, code = cli(t, home, "gpu", "--addr", "127.0.0.1:1", "--json")
	if code != 0 {
		t.Fatalf("gpu --json: exit %d: %s", code, errs)
	}
	var snap sched.Snapshot
	if err := json.Unmarshal([]byte(out), &snap); err != nil {
		t.Fatalf("gpu --json: %v\n%s", err, out)
	}
	if len(snap.Devices) != 3 || snap.Devices[0].Backend != "SIM0" || snap.Devices[0].Budget != 1536<<20 ||
		snap.Devices[1].Backend != "SIM1" || snap.Devices[1].Budget != 512<<20 || snap.Devices[0].Source != "ggml" {
		t.Errorf("gpu --json devices: %+v", snap.Devices)
	}
}

// llmrt tune with the base on the simulated GPU trains as it does on the
// CPU: the same losses, step by step, within 1e-3 relative (run in a child
// process, like TestSimulatedGPUsListed). The "CPU" run still has the
// device present, so its LoRA pairs must stay on the CPU with the weights.
func TestTuneOnSimulatedGPU(t *testing.T) {
	if os.Getenv(simChildEnv) != "" {
		tuneOnSimulatedGPU(t)
		return
	}
	simChild(t, "TestTuneOnSimulatedGPU", "2GiB")
}

func tuneOnSimulatedGPU(t *testing.T) {
	home := t.TempDir()
	data := filepath.Join(t.TempDir(), "secret.jsonl")
	var lines []string
	for i := 0; i < 4; i++ {
		lines = append(lines, `{"prompt": "Tim asked what the secret word was. Mom said:", "completion": " The secret word is purple zebra."}`)
	}
	os.WriteFile(data, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	losses := func(out string, gpuLayers string) []float64 {
		_, errs, code := cli(t, home, "tune", "-m", "stories260K", "--data", data, "--out", out, "--epochs", "20", "--lr", "1e-2",
			"--targets", "all-linear", "--rank", "8", "--alpha", "16", "--eval-split", "0", "-t", "1", "--gpu-layers", gpuLayers)
		if code != 0 {
			t.Fatalf("tune --gpu-layers %s: exit %d\n%s", gpuLayers, code, errs)
		}
		b, err := os.ReadFile(filepath.Join(home, "adapters", out+"@1.metrics.jsonl")) // the first version of out
		if err != nil {
			t.Fatal(err)
		}
		var ls []float64
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var m struct {
				Loss float64 `json:"loss"`
			}
			if json.Unmarshal([]byte(line), &m) == nil && m.Loss > 0 {
				ls = append(ls, m.Loss)
			}
		}
		return ls
	}
	cpu := losses("on-cpu", "0")
	dev := losses("on-sim", "-1")
	if len(cpu) < 20 || len(dev) != len(cpu) {
		t.Fatalf("%d steps on the CPU, %d on the device", len(cpu), len(dev))
	}
	for i := range cpu {
		if rel := math.Abs(dev[i]-cpu[i]) / cpu[i]; rel > 1e-3 {
			t.Fatalf("step %d: loss %.6f on the device, %.6f on the CPU", i+1, dev[i], cpu[i])
		}
	}
	if !(cpu[len(cpu)-1] < cpu[0]) {
		t.Fatalf("the loss did not fall: %.4f -> %.4f", cpu[0], cpu[len(cpu)-1])
	}
}
