package server

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/llmrt/llmrt/runtime/engine"
)

// TestOpenAINodeClient runs the official OpenAI Node client (scripts/apitest,
// installed by `make test` or .ci/run with npm ci) against a real server.
func TestOpenAINodeClient(t *testing.T) {
	dir, err := filepath.Abs("../../scripts/apitest")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil {
		t.Fatalf("the openai npm package is not installed: run `npm ci` in %s (make test does): %v", dir, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required for the API compatibility test: %v", err)
	}
	ts := startServer(t, Config{}, engine.Options{NParallel: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "api.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LLMRT_BASE_URL="+ts.url+"/v1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("openai node client tests failed: %v", err)
	}
}
