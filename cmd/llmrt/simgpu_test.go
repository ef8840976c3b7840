package main

import (
	"encoding/json"
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
	lib, err := filepath.Abs(filepath.Join("..", "..", "lib"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(lib, "libggml-simgpu.so")); err != nil {
		t.Fatalf("run make simgpu (make test does): %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSimulatedGPUsListed$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), simChildEnv+"=1", "LLMRT_SIM_GPUS=2GiB,1GiB", "LLMRT_LIB_PATH="+lib)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestSimulatedGPUsListed") {
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
	// No server on port 1: gpu shows this machine's devices.
	out, errs, code = cli(t, home, "gpu", "--addr", "127.0.0.1:1")
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
