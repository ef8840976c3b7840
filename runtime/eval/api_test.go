package eval

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
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/server"
)

func TestEvalAPI(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(dir, "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := registry.NewRegistry(registry.RegistryConfig{Resolver: registry.DirResolver{Dir: dir}, KeepAlive: -1, Logger: quiet,
		Engine: engine.Options{NParallel: 2, CtxPerSeq: 512, Threads: 2}})
	defer reg.Close()
	srv := server.New(server.Config{DefaultModel: "stories260K", Logger: quiet}, reg)
	(&Service{Dir: filepath.Join(dir, "evals"), Registry: reg, Logger: quiet}).Register(srv)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	url := "http://" + ln.Addr().String() + "/v1/evals"
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
	qs := []map[string]any{{"question": "Who was the little girl?", "answer": "Lily"}, {"question": "What did she love?", "answer": "to play outside"}}
	if code, _ := post(map[string]any{"model": "nope", "questions": qs}); code != http.StatusNotFound {
		t.Fatalf("unknown model: %d", code)
	}
	if code, _ := post(map[string]any{"model": "stories260K", "questions": qs, "collection": "none"}); code != http.StatusNotFound {
		t.Fatalf("unknown collection: %d", code)
	}
	if code, _ := post(map[string]any{"model": "stories260K"}); code != http.StatusBadRequest {
		t.Fatalf("no questions: %d", code)
	}
	code, job := post(map[string]any{"model": "stories260K", "questions": qs, "max_tokens": 8})
	if code != http.StatusOK || job["status"] != "running" {
		t.Fatalf("create: %d %v", code, job)
	}
	id := job["id"].(string)
	var got map[string]any
	for i := 0; i < 2400; i++ { // up to 2 minutes: the race detector on a busy machine is slow
		resp, err := http.Get(url + "/" + id)
		if err != nil {
			t.Fatal(err)
		}
		got = nil
		json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if got["status"] != "running" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got["status"] != "succeeded" {
		t.Fatalf("eval: %v", got)
	}
	rep := got["report"].(map[string]any)
	if len(rep["answers"].([]any)) != 2 || len(rep["arms"].([]any)) != 1 || got["report_markdown"] == "" {
		t.Fatalf("report %v", rep)
	}
	if _, err := os.Stat(filepath.Join(dir, "evals", id+".json")); err != nil {
		t.Fatalf("report not saved: %v", err)
	}
	if resp, _ := http.Get(url + "/eval-nope"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown eval: %d", resp.StatusCode)
	}
	// The list has the run with its arms but not its answers, from memory
	// and, after a restart, from the saved report.
	listed := func(url string) map[string]any {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var l struct{ Data []map[string]any }
		json.NewDecoder(resp.Body).Decode(&l)
		if len(l.Data) != 1 || l.Data[0]["id"] != id || l.Data[0]["status"] != "succeeded" {
			t.Fatalf("list: %v", l.Data)
		}
		rep := l.Data[0]["report"].(map[string]any)
		if len(rep["arms"].([]any)) != 1 || rep["answers"] != nil || l.Data[0]["report_markdown"] != nil {
			t.Fatalf("listed report %v", l.Data[0])
		}
		return rep
	}
	listed(url)
	srv2 := server.New(server.Config{DefaultModel: "stories260K", Logger: quiet}, reg)
	(&Service{Dir: filepath.Join(dir, "evals"), Registry: reg, Logger: quiet}).Register(srv2)
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- srv2.Serve(ctx2, ln2) }()
	defer func() { cancel2(); <-done2 }()
	listed("http://" + ln2.Addr().String() + "/v1/evals")
	// One evaluation, after the restart, comes whole from its saved file.
	resp, err := http.Get("http://" + ln2.Addr().String() + "/v1/evals/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var saved map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&saved); err != nil || resp.StatusCode != http.StatusOK || saved["id"] != id {
		t.Fatalf("saved evaluation after a restart: %d %v %v", resp.StatusCode, saved["id"], err)
	}
	if rep, _ := saved["report"].(map[string]any); rep == nil || len(rep["answers"].([]any)) != 2 {
		t.Fatalf("saved evaluation lost its answers: %v", saved)
	}
}
