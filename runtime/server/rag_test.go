package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/eval"
	"github.com/llmrt/llmrt/runtime/rag"
	"github.com/llmrt/llmrt/runtime/rag/grounding"
	"github.com/llmrt/llmrt/runtime/registry"
)

// TestEvalPromptIsServedPrompt: for the same question and collection, the
// RAG arm of llmrt eval sends the model byte for byte the prompt that the
// server's chat "rag" extension builds, and the served request counts the
// same prompt tokens.
func TestEvalPromptIsServedPrompt(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(dir, "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	docs := filepath.Join(dir, "docs")
	os.MkdirAll(docs, 0o755)
	os.WriteFile(filepath.Join(docs, "lily.md"), []byte("# Lily\n\nLily had a red ball. She played with it in the park.\n\n## Max\n\nHer dog Max chased the ball every morning.\n"), 0o644)
	os.WriteFile(filepath.Join(docs, "tom.txt"), []byte("Tom went fishing in a small blue boat with his grandfather."), 0o644)

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := registry.NewRegistry(registry.RegistryConfig{Resolver: registry.DirResolver{Dir: dir}, KeepAlive: -1, Logger: quiet,
		AdapterDir: filepath.Join(dir, "adapters"), Engine: engine.Options{NParallel: 2, CtxPerSeq: 1024, Threads: 2}})
	defer reg.Close()
	store, err := rag.OpenStore(filepath.Join(dir, "collections"), rag.StoreOptions{Embedder: rag.RegistryEmbedder{Reg: reg, Model: "stories260K"}})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	c, err := store.Create(ctx, "docs", rag.CreateOptions{Chunking: rag.ChunkOptions{Size: 24, Overlap: 4}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddPath(ctx, docs, rag.AddOptions{}); err != nil {
		t.Fatal(err)
	}
	retriever := &rag.Retriever{Store: store}
	srv := New(Config{DefaultModel: "stories260K", Logger: quiet, Retriever: retriever}, reg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	defer func() { cancel(); <-done }()

	lease, err := reg.Acquire(ctx, "stories260K")
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	e := lease.Engine
	const system, question = "Answer the question briefly.", "What did Lily play with in the park?"

	// The eval side.
	o := eval.Options{Engine: e, System: system, Retriever: retriever, Collection: "docs", TopK: 3}
	msgs, ret, err := o.Prompt(ctx, eval.ArmRAG, eval.Question{Question: question, Answer: "a red ball"}, grounding.Stages{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ret.Passages) != 3 {
		t.Fatalf("eval retrieved %d passages, want 3", len(ret.Passages))
	}
	evalToks, err := e.ChatTokens(msgs, nil, true)
	if err != nil {
		t.Fatal(err)
	}

	// The server side, for the same messages.
	body := map[string]any{"model": "stories260K", "temperature": 0, "max_tokens": 4,
		"messages": []map[string]any{{"role": "system", "content": system}, {"role": "user", "content": question}},
		"rag":      map[string]any{"collection": "docs", "top_k": 3}}
	raw, _ := json.Marshal(body)
	var req ChatRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		t.Fatal(err)
	}
	plan, aerr := srv.planChat(httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(raw)), &req, lease)
	if aerr != nil {
		t.Fatal(aerr)
	}
	if !slices.Equal(plan.passages, ret.Passages) {
		t.Fatalf("server retrieved %+v, eval %+v", plan.passages, ret.Passages)
	}
	srvToks := plan.reqs[0].Prompt
	evalText, _ := e.Model().Detokenize(evalToks, false, true)
	srvText, _ := e.Model().Detokenize(srvToks, false, true)
	if !slices.Equal(srvToks, evalToks) || evalText != srvText {
		t.Fatalf("prompts differ:\nserver %q\neval   %q", srvText, evalText)
	}
	for _, p := range ret.Passages {
		if !strings.Contains(srvText, strings.TrimSpace(p.Text)) {
			t.Fatalf("passage %q is not in the prompt %q", p.Text, srvText)
		}
	}
	if !strings.Contains(srvText, grounding.Instruction) {
		t.Fatalf("the prompt lacks the grounding instruction: %q", srvText)
	}

	// Served over HTTP, the request counts exactly those prompt tokens.
	ts := &testServer{url: "http://" + ln.Addr().String()}
	resp, data := ts.post(t, "/v1/chat/completions", body)
	var out ChatResponse
	if resp.StatusCode != 200 || json.Unmarshal(data, &out) != nil {
		t.Fatalf("chat: %d %s", resp.StatusCode, data)
	}
	if out.Usage.PromptTokens != len(evalToks) || len(out.Retrieved) != 3 || out.Retrieved[0].ChunkID != ret.Passages[0].ChunkID {
		t.Fatalf("served prompt tokens %d (eval %d), retrieved %+v", out.Usage.PromptTokens, len(evalToks), out.Retrieved)
	}
}
