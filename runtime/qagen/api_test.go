package qagen

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/eval"
	"github.com/llmrt/llmrt/runtime/rag"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/server"
)

// POST /v1/qagen runs a generation in the background; GET /v1/qagen/{id}
// reports it with its pairs and files.
func TestQAGenAPI(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(dir, "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := registry.NewRegistry(registry.RegistryConfig{Resolver: registry.DirResolver{Dir: dir}, KeepAlive: -1, Logger: quiet,
		AdapterDir: filepath.Join(dir, "adapters"), Engine: engine.Options{NParallel: 2, CtxPerSeq: 1024, Threads: 1}})
	defer reg.Close()
	store, err := rag.OpenStore(filepath.Join(dir, "collections"), rag.StoreOptions{Embedder: rag.RegistryEmbedder{Reg: reg, Model: "stories260K"}})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	c, err := store.Create(context.Background(), "aurora", rag.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	handbook, _ := filepath.Abs("../../examples/aurora/handbook")
	if _, err := c.AddPath(context.Background(), handbook, rag.AddOptions{}); err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{DefaultModel: "stories260K", Logger: quiet}, reg)
	(&Service{Dir: filepath.Join(dir, "qagen"), Registry: reg, Collections: store, Logger: quiet}).Register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	url := "http://" + ln.Addr().String() + "/v1/qagen"
	post := func(body any) (int, map[string]any) {
		b, _ := json.Marshal(body)
		resp, err := http.Post(url, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	for body, want := range map[string]int{
		`{"collection": "nope", "model": "stories260K"}`:                    http.StatusNotFound,
		`{"collection": "aurora"}`:                                          http.StatusBadRequest,
		`{"collection": "aurora", "model": "nope"}`:                         http.StatusNotFound,
		`{"collection": "aurora", "model": "stories260K", "per_chunk": 99}`: http.StatusBadRequest,
	} {
		var m map[string]any
		json.Unmarshal([]byte(body), &m)
		if code, out := post(m); code != want {
			t.Fatalf("%s: %d %v, want %d", body, code, out, want)
		}
	}
	code, j := post(map[string]any{"collection": "aurora", "model": "stories260K", "max_chunks": 10, "per_chunk": 2, "eval_share": 0.5, "concurrency": 2})
	if code != http.StatusOK || j["status"] != "running" {
		t.Fatalf("create: %d %v", code, j)
	}
	var got struct {
		Status string
		Result *Result
		Files  *Files
	}
	for deadline := time.Now().Add(10 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(url + "/" + j["id"].(string))
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if got.Status != "running" {
			break
		}
	}
	if got.Status != "succeeded" || got.Result == nil || got.Files == nil || got.Result.Chunks != 10 || len(got.Result.Pairs) != got.Result.Generated {
		t.Fatalf("generation: %+v", got)
	}
	qs, err := eval.LoadQuestions(got.Files.Eval)
	if err != nil && got.Result.Eval > 0 || len(qs) != got.Result.Eval {
		t.Fatalf("qa.jsonl: %d questions (%v), summary says %d", len(qs), err, got.Result.Eval)
	}
	if resp, _ := http.Get(url + "/qagen-nope"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown generation: %d", resp.StatusCode)
	}
}
