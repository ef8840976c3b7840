package dltest_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/llmrt/llmrt/kernels"
)

// TestLoadBackendsFromLibDir loads the CPU backend that `make backends`
// builds as a shared library (with CMake, from the dependency's own ggml
// source, exactly as `make cuda` builds the CUDA one) through the same
// path llmrt loads GPU backends from at start.
func TestLoadBackendsFromLibDir(t *testing.T) {
	dir := os.Getenv("LLMRT_TEST_BACKENDS")
	if dir == "" {
		dir, _ = filepath.Abs("../../lib/test-backends")
	}
	if _, err := os.Stat(filepath.Join(dir, "libggml-cpu-x64.so")); err != nil {
		t.Fatalf("no dynamically loadable backend in %s: run `make backends` (make test does): %v", dir, err)
	}
	before := len(kernels.Devices())
	loaded, err := kernels.LoadBackends(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(loaded, "CPU") {
		t.Fatalf("backends registered from %s: %v, want the CPU one", dir, loaded)
	}
	if after := len(kernels.Devices()); after != before+1 {
		t.Fatalf("%d devices after loading, %d before", after, before)
	}
	// A missing folder is not an error; a file is.
	if l, err := kernels.LoadBackends(filepath.Join(t.TempDir(), "none")); err != nil || len(l) != 0 {
		t.Fatalf("missing folder: %v %v", l, err)
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := kernels.LoadBackends(f); err == nil {
		t.Fatal("a file loaded as a backend folder")
	}
}
