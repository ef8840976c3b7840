package simgputest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/testmodel"
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

// useCUDA is set by LLMRT_TEST_DEVICE=cuda (scripts/gpu-check.sh): the
// device tests run on the CUDA devices of lib/libggml-cuda.so instead of
// the simulated ones, and the tests of the simulated device itself skip.
var useCUDA = os.Getenv("LLMRT_TEST_DEVICE") == "cuda"

// cudaBase is each CUDA device's memory in use after warm-up (CUDA's
// context and cuBLAS's handles stay for the process).
var cudaBase []int64

func TestMain(m *testing.M) {
	if useCUDA {
		kernels.SetLogger(captureLogger())
		dir := filepath.Dir(libPath())
		if _, err := kernels.LoadBackends(dir); err != nil {
			loadErr = fmt.Errorf("load the CUDA backend from %s: %w", dir, err)
		} else if len(simDevices()) == 0 {
			loadErr = fmt.Errorf("LLMRT_TEST_DEVICE=cuda but ggml sees no CUDA device in %s (run make cuda)", dir)
		} else {
			loadErr = warmUpCUDA()
		}
		os.Exit(m.Run())
	}
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

// needSim fails the test when the library is not loaded; on CUDA it skips
// the tests of the simulated device itself.
func needSim(t *testing.T) {
	t.Helper()
	if useCUDA {
		t.Skip("a test of the simulated device (LLMRT_TEST_DEVICE=cuda)")
	}
	needDevice(t)
}

// needDevice fails the test when the devices under test are not there.
func needDevice(t *testing.T) {
	t.Helper()
	if loadErr != nil {
		t.Fatal(loadErr)
	}
}

// warmUpCUDA runs stories260K once on the first CUDA device, then records
// each device's use as the baseline simStats counts from.
func warmUpCUDA() error {
	path := filepath.Join(testmodel.SharedDir(), "stories260K.gguf")
	m, err := kernels.LoadModel(context.Background(), path, kernels.ModelParams{GPULayers: -1, TensorSplit: []float32{1}})
	if err != nil {
		return fmt.Errorf("warm up CUDA with %s: %w", path, err)
	}
	defer m.Close()
	c, err := m.NewContext(kernels.ContextParams{NCtx: 64, Threads: testThreads})
	if err != nil {
		return fmt.Errorf("warm up CUDA: %w", err)
	}
	defer c.Close()
	b, err := kernels.NewBatch(8, 1)
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := b.AddTokens([]int32{1, 2, 3}, 0, 0, true); err != nil {
		return err
	}
	if err := c.Decode(context.Background(), b); err != nil {
		return fmt.Errorf("warm up CUDA: %w", err)
	}
	c.Close()
	m.Close()
	for _, d := range simDevices() {
		cudaBase = append(cudaBase, int64(d.Total-d.Free))
	}
	return nil
}

// tolerance is how far logits on the device may be from the CPU's: the
// simulated device runs the CPU's kernels; CUDA's matmuls round otherwise.
func tolerance() float64 {
	if useCUDA {
		return 2e-2
	}
	return 1e-4
}
