package simgputest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/llmrt/llmrt/kernels"
)

// The devices every test in this binary sees (the library reads the
// variable once, when it is loaded).
const simGPUs = "2GiB,1GiB"

const gib = 1 << 30

// testThreads is the thread count of every context here. With layers on
// the device, the context's CPU workers and the device's (a CPU backend of
// its own) take turns within each token; at two threads each, their
// spinning barriers on a 2-core machine made some runs 100 times slower
// whenever another process was busy. The results do not depend on it.
const testThreads = 1

// libPath is lib/libggml-simgpu.so in the repository, found from this file.
func libPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "lib", "libggml-simgpu.so")
}

// loadErr is why the library did not load; every test fails with it.
var loadErr error

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "" {
		os.Setenv("LLMRT_SIM_GPUS", simGPUs)
	}
	// Info lines from inside the library must reach kernels' logger.
	os.Setenv("LLMRT_LLAMA_LOG", "info")
	kernels.SetLogger(captureLogger())
	p := libPath()
	if _, err := os.Stat(p); err != nil {
		loadErr = fmt.Errorf("%s missing: run `make simgpu` (make test does): %w", p, err)
	} else if name, err := kernels.LoadBackend(p); err != nil {
		loadErr = err
	} else if name != kernels.SimGPUBackend {
		loadErr = fmt.Errorf("%s registered backend %q, want %q", p, name, kernels.SimGPUBackend)
	}
	os.Exit(m.Run())
}

// needSim fails the test when the library is not loaded.
func needSim(t *testing.T) {
	t.Helper()
	if loadErr != nil {
		t.Fatal(loadErr)
	}
}
