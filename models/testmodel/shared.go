package testmodel

// The small real GGUF models that tests use: read from $LLMRT_TEST_MODELS,
// or from the first "shared/models" folder found beside or above the
// working directory (the layout of a checkout next to ../shared). Where
// neither exists, `make test-models` (scripts/fetchmodels) downloads them
// from their public sources and checks their sha256 digests.

import (
	"os"
	"path/filepath"
	"testing"
)

// SharedDir returns the test-model folder, or "" if none is found.
func SharedDir() string {
	if d := os.Getenv("LLMRT_TEST_MODELS"); d != "" {
		if abs, err := filepath.Abs(d); err == nil {
			return abs
		}
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		cand := filepath.Join(dir, "shared", "models")
		if st, err := os.Stat(cand); err == nil && st.IsDir() {
			return cand
		}
		if filepath.Dir(dir) == dir {
			return ""
		}
	}
}

// Shared returns the path of a test model by file name (e.g.
// "stories260K.gguf"), failing the test when it is not available.
func Shared(t testing.TB, name string) string {
	t.Helper()
	dir := SharedDir()
	if dir == "" {
		t.Fatalf("test models not found: set LLMRT_TEST_MODELS or run `make test-models`")
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test model %s: %v (run `make test-models`)", name, err)
	}
	return p
}
