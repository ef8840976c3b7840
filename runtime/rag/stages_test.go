package rag

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/rag/grounding"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/server"
)

// recorder is a Searcher that remembers what it was asked and answered.
type recorder struct {
	c       *Collection
	queries []string
	lists   [][]Hit
}

func (r *recorder) Search(ctx context.Context, q string, opt SearchOptions) ([]Hit, error) {
	hits, err := r.c.Search(ctx, q, opt)
	r.queries = append(r.queries, q)
	r.lists = append(r.lists, hits)
	return hits, err
}

// Query rewriting with the answering model: multi-query searches with the
// model's rewrites (lines of its answer to MultiQueryPrompt), HyDE with
// its hypothetical answer, and the results are the reciprocal-rank fusion
// of all the searches.
func TestQueryRewritingFusesSearches(t *testing.T) {
	ctx := context.Background()
	e, err := engine.Open(ctx, engine.Options{Path: testmodel.Shared(t, "stories260K.gguf"), NParallel: 2, CtxPerSeq: 512, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s, _ := openTestStore(t, EngineEmbedder{E: e, Model: "stories260K"})
	c, err := s.Create(ctx, "shelf", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	docs := t.TempDir()
	for i, text := range shelf {
		writeFile(t, filepath.Join(docs, fmt.Sprintf("d%d.txt", i)), text)
	}
	if _, err := c.AddPath(ctx, docs, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	gen := EngineGenerator{E: e}
	const q = "Who played with the red ball?"
	rec := &recorder{c: c}
	got, err := Retrieve(ctx, rec, Request{Query: q, K: 3, Search: SearchOptions{Mode: Hybrid}, Generator: gen,
		Stages: grounding.Stages{MultiQuery: 2, HyDE: true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Queries) == 0 || len(got.Queries) > 2 || got.Hypothesis == "" {
		t.Fatalf("rewrites %q, hypothesis %q", got.Queries, got.Hypothesis)
	}
	multi, _ := gen.Generate(ctx, []engine.ChatMessage{{Role: "user", Content: fmt.Sprintf(MultiQueryPrompt, 2, q)}}, 96)
	for _, rw := range got.Queries {
		if rw == q || !strings.Contains(multi, rw) {
			t.Fatalf("rewrite %q is not a line of the model's answer %q", rw, multi)
		}
	}
	want := append(append([]string{q}, got.Queries...), got.Hypothesis)
	if strings.Join(rec.queries, "\n") != strings.Join(want, "\n") {
		t.Fatalf("searched %q, want %q", rec.queries, want)
	}
	// Reciprocal-rank fusion, computed here from the searches' answers.
	score := map[uint64]float64{}
	for _, l := range rec.lists {
		for rank, h := range l {
			score[h.Chunk.ID] += 1 / float64(60+rank+1)
		}
	}
	ids := make([]uint64, 0, len(score))
	for id := range score {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return score[ids[a]] > score[ids[b]] })
	if len(got.Passages) != 3 {
		t.Fatalf("%d passages", len(got.Passages))
	}
	for i, p := range got.Passages {
		if score[p.ChunkID] != score[ids[i]] {
			t.Fatalf("passage %d: chunk %d (fused %v), want fused score %v", i, p.ChunkID, score[p.ChunkID], score[ids[i]])
		}
	}
	// Every stage off: one search, exactly Search's answer.
	rec = &recorder{c: c}
	plain, err := Retrieve(ctx, rec, Request{Query: q, K: 3, Search: SearchOptions{Mode: Hybrid}})
	if err != nil || len(rec.queries) != 1 || len(plain.Passages) != 3 || plain.Passages[0].ChunkID != rec.lists[0][0].Chunk.ID || plain.Queries != nil {
		t.Fatalf("no stages: %v, searched %q, %+v", err, rec.queries, plain)
	}
	if _, err := Retrieve(ctx, c, Request{Query: q, Stages: grounding.Stages{HyDE: true}}); err == nil {
		t.Fatal("rewriting without a model accepted")
	}
}

// The chat "rag" extension switches the stages per request: rewriting by
// the chat model, reranking by the server's reranking model or the chat
// model.
func TestChatRAGStagesPerRequest(t *testing.T) {
	dir := t.TempDir()
	writeReranker(t, dir)
	if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(dir, "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	docs := filepath.Join(dir, "docs")
	os.MkdirAll(docs, 0o755)
	for i, text := range shelf {
		writeFile(t, filepath.Join(docs, fmt.Sprintf("d%d.txt", i)), text)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := registry.NewRegistry(registry.RegistryConfig{Resolver: registry.DirResolver{Dir: dir}, KeepAlive: -1, Logger: quiet,
		AdapterDir: filepath.Join(dir, "adapters"), Engine: engine.Options{NParallel: 2, CtxPerSeq: 1024, Threads: 1}})
	defer reg.Close()
	store, err := OpenStore(filepath.Join(dir, "collections"), StoreOptions{Embedder: RegistryEmbedder{Reg: reg, Model: "stories260K"}})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	c, err := store.Create(context.Background(), "shelf", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddPath(context.Background(), docs, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	retriever := &Retriever{Store: store, Rerankers: func(m string) Reranker { return RegistryReranker{Reg: reg, Model: m} }}
	srv := server.New(server.Config{DefaultModel: "stories260K", Logger: quiet, Retriever: retriever}, reg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	base := "http://" + ln.Addr().String() + "/v1"

	const q = "Who played with the red ball?"
	chat := func(rag map[string]any) []uint64 {
		out := ragServerChat(t, base, map[string]any{"model": "stories260K", "max_tokens": 4, "temperature": 0,
			"messages": []map[string]any{{"role": "user", "content": q}}, "rag": rag})
		var ids []uint64
		for _, r := range out["retrieved"].([]any) {
			ids = append(ids, uint64(r.(map[string]any)["chunk_id"].(float64)))
		}
		return ids
	}
	for _, rag := range []map[string]any{
		{"collection": "shelf", "top_k": 3, "multi_query": 2, "hyde": true},
		{"collection": "shelf", "top_k": 3, "rerank": true},
	} {
		if ids := chat(rag); len(ids) != 3 {
			t.Fatalf("%v: retrieved %v", rag, ids)
		}
	}
	// With the reranking model, the passages are the reranker's best.
	ids := chat(map[string]any{"collection": "shelf", "top_k": 3, "rerank_model": "reranker"})
	want, err := retriever.Retrieve(context.Background(), "shelf", grounding.Query{Text: q, K: 3, Stages: grounding.Stages{Rerank: true}, RerankModel: "reranker"})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range want.Passages {
		if ids[i] != p.ChunkID {
			t.Fatalf("served %v, the reranker ranks %+v", ids, want.Passages)
		}
	}
	if code := ragServerChatStatus(t, base, map[string]any{"messages": []map[string]any{{"role": "user", "content": q}},
		"rag": map[string]any{"collection": "shelf", "multi_query": 99}}); code != 400 {
		t.Fatalf("multi_query 99: %d", code)
	}
}
