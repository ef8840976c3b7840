package finetune

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/server"
)

// serve runs a real server on 127.0.0.1 with the fine-tuning service over
// home (models in home/models), and returns its URL and a stop function.
func serve(t *testing.T, home string) (string, *Service, func()) {
	t.Helper()
	models := filepath.Join(home, "models")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	res := registry.DirResolver{Dir: models}
	reg := registry.NewRegistry(registry.RegistryConfig{Resolver: res, KeepAlive: -1, Logger: quiet,
		AdapterDir: filepath.Join(home, "adapters"), Engine: engine.Options{NParallel: 2, CtxPerSeq: 512, Threads: 2}})
	svc, err := Open(Config{Dir: filepath.Join(home, "finetune"), AdapterDir: filepath.Join(home, "adapters"), Registry: reg,
		Resolve: res.Resolve, Threads: 2, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{DefaultModel: "stories260K", Logger: quiet}, reg)
	svc.Register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	stop := func() {
		cancel()
		<-done
		svc.Close()
		reg.Close()
	}
	return "http://" + ln.Addr().String(), svc, stop
}

func TestFineTuningWithOpenAINodeClient(t *testing.T) {
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
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, "models"), 0o755)
	if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(home, "models", "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	url, _, stop := serve(t, home)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "finetune.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LLMRT_BASE_URL="+url+"/v1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	stop()
	if err != nil {
		t.Fatalf("openai node client fine-tuning tests failed: %v", err)
	}

	// Jobs, files and the fine-tuned model survive a restart.
	url, svc, stop := serve(t, home)
	defer stop()
	jobs, err := svc.st.jobs()
	if err != nil || len(jobs) < 2 {
		t.Fatalf("%d jobs after a restart (%v)", len(jobs), err)
	}
	var ok bool
	for _, a := range svc.cfg.Registry.(*registry.Registry).AdapterList() {
		ok = ok || a.Name == "ft:stories260K:secret"
	}
	if !ok {
		t.Fatal("the fine-tuned model is not served after a restart")
	}
	_ = url
}
