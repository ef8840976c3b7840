package rag

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/rag/grounding"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/server"
)

// writeReranker generates a random reranking model: qwen3 with rank
// pooling and a yes/no classification head, GPT-2's tokenizer.
func writeReranker(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "reranker.gguf")
	err := testmodel.Write(context.Background(), p, testmodel.Spec{Arch: "qwen3", Name: "reranker-random", NEmbd: 64, NLayer: 2, NHead: 4, NHeadKV: 2,
		NFF: 128, NCtxTrain: 1024, VocabFile: testmodel.Shared(t, "ggml-vocab-gpt-2.gguf"), TiedEmbeddings: true,
		Type: gguf.TypeF32, RopeFreqBase: 10000, NormEps: 1e-6, Seed: 7, ClassLabels: []string{"yes", "no"}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var shelf = []string{
	"Lily had a red ball and played with it in the park every day.",
	"Tom went fishing in a small blue boat with his grandfather.",
	"The lighthouse keeper counted the ships that passed at night.",
	"Max the dog chased the red ball across the garden.",
	"Sue planted tomatoes and beans behind the old house.",
	"Ben built a tall tower of wooden blocks in his room.",
	"Mia read a book about whales and dolphins under a tree.",
	"The baker made bread with a crust as red as a ball.",
}

// The reranking model scores pairs with llama.cpp's rank pooling: scores
// are probabilities, differ between documents, and do not depend on which
// documents share a decode.
func TestRankPooling(t *testing.T) {
	ctx := context.Background()
	e, err := engine.Open(ctx, engine.Options{Path: writeReranker(t, t.TempDir()), NParallel: 1, CtxPerSeq: 512, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if !e.CanRank() {
		t.Fatal("the generated reranker does not ask for rank pooling")
	}
	all, err := e.Rank(ctx, "red ball", shelf)
	if err != nil {
		t.Fatal(err)
	}
	distinct := map[float32]bool{}
	for i, s := range all {
		if !(s > 0 && s < 1) {
			t.Fatalf("score %d = %v, want a probability", i, s)
		}
		distinct[s] = true
	}
	if len(distinct) < len(shelf)/2 {
		t.Fatalf("scores %v barely differ", all)
	}
	for i := range shelf {
		one, err := e.Rank(ctx, "red ball", shelf[i:i+1])
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(float64(one[0]-all[i])) > 1e-5 {
			t.Fatalf("document %d scores %v alone, %v among others", i, one[0], all[i])
		}
	}
	if name := (EngineReranker{E: e, Model: "reranker"}).Name(); name != "reranker (rank pooling)" {
		t.Fatalf("name %q", name)
	}
}

// Reranking keeps the candidates' K best by the reranker's scores, in
// that order, whatever order retrieval found them in.
func TestRerankReordersByTheRerankersScores(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	re, err := engine.Open(ctx, engine.Options{Path: writeReranker(t, dir), NParallel: 1, CtxPerSeq: 512, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	emb, err := engine.Open(ctx, engine.Options{Path: testmodel.Shared(t, "stories260K.gguf"), NParallel: 1, CtxPerSeq: 512, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	s, _ := openTestStore(t, EngineEmbedder{E: emb, Model: "stories260K"})
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
	reordered := 0
	for _, q := range []string{"red ball", "boat on the sea", "a tree and a book", "blocks"} {
		cands, err := c.Search(ctx, q, SearchOptions{K: len(shelf), Mode: Hybrid})
		if err != nil {
			t.Fatal(err)
		}
		texts := make([]string, len(cands))
		for i, h := range cands {
			texts[i] = EmbedText(h.Chunk.Title, h.Chunk.Text)
		}
		scores, err := re.Rank(ctx, q, texts)
		if err != nil {
			t.Fatal(err)
		}
		order := make([]int, len(cands))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return scores[order[a]] > scores[order[b]] })
		got, err := Retrieve(ctx, c, Request{Query: q, K: 3, Search: SearchOptions{Mode: Hybrid}, Stages: grounding.Stages{Rerank: true},
			Reranker: EngineReranker{E: re, Model: "reranker"}, RerankCandidates: len(shelf)})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Passages) != 3 || got.Reranker != "reranker (rank pooling)" {
			t.Fatalf("%q: %d passages, reranker %q", q, len(got.Passages), got.Reranker)
		}
		for i, p := range got.Passages {
			want := cands[order[i]]
			if p.ChunkID != want.Chunk.ID || p.Score != scores[order[i]] {
				t.Fatalf("%q: passage %d is chunk %d (score %v), the reranker ranks chunk %d (%v) there", q, i, p.ChunkID, p.Score, want.Chunk.ID, scores[order[i]])
			}
		}
		if got.Passages[0].ChunkID != cands[0].Chunk.ID || got.Passages[1].ChunkID != cands[1].Chunk.ID {
			reordered++
		}
	}
	if reordered == 0 {
		t.Fatal("reranking never changed retrieval's order")
	}
}

// POST /v1/rerank in llama-server's and Jina's shape, with the reranking
// model (rank pooling) and with a chat model (stories260K) as the
// fallback reranker.
func TestRerankAPI(t *testing.T) {
	dir := t.TempDir()
	writeReranker(t, dir)
	if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(dir, "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := registry.NewRegistry(registry.RegistryConfig{Resolver: registry.DirResolver{Dir: dir}, KeepAlive: -1, Logger: quiet,
		AdapterDir: filepath.Join(dir, "adapters"), Engine: engine.Options{NParallel: 2, CtxPerSeq: 512, Threads: 1}})
	defer reg.Close()
	srv := server.New(server.Config{DefaultModel: "stories260K", Logger: quiet}, reg)
	(&RerankAPI{Reg: reg, DefaultModel: "stories260K"}).Register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	url := "http://" + ln.Addr().String()

	type result struct {
		Index          int     `json:"index"`
		RelevanceScore float32 `json:"relevance_score"`
		Document       *struct {
			Text string `json:"text"`
		} `json:"document"`
	}
	var out struct {
		Object  string   `json:"object"`
		Model   string   `json:"model"`
		Results []result `json:"results"`
		Usage   struct {
			TotalTokens int `json:"total_tokens"`
		} `json:"usage"`
	}
	docs := []any{shelf[0], map[string]any{"text": shelf[1]}, shelf[3], shelf[6]}
	code, body := call(t, "POST", url+"/v1/rerank", map[string]any{"model": "reranker", "query": "red ball", "documents": docs, "top_n": 3, "return_documents": true})
	raw, _ := json.Marshal(body)
	if code != http.StatusOK || json.Unmarshal(raw, &out) != nil {
		t.Fatalf("rerank: %d %v", code, body)
	}
	lease, err := reg.Acquire(context.Background(), "reranker")
	if err != nil {
		t.Fatal(err)
	}
	want, err := lease.Engine.Rank(context.Background(), "red ball", []string{shelf[0], shelf[1], shelf[3], shelf[6]})
	lease.Release()
	if err != nil {
		t.Fatal(err)
	}
	if out.Object != "list" || out.Model != "reranker" || len(out.Results) != 3 || out.Usage.TotalTokens == 0 {
		t.Fatalf("response %+v", out)
	}
	for i, r := range out.Results {
		if r.RelevanceScore != want[r.Index] || (i > 0 && r.RelevanceScore > out.Results[i-1].RelevanceScore) {
			t.Fatalf("result %d %+v: scores %v, best first", i, r, want)
		}
		if r.Document == nil || !strings.Contains(fmt.Sprint(docs[r.Index]), r.Document.Text) {
			t.Fatalf("result %d does not return its document", i)
		}
	}
	seen := []int{out.Results[0].Index, out.Results[1].Index, out.Results[2].Index}
	slices.Sort(seen)
	if len(slices.Compact(seen)) != 3 {
		t.Fatalf("indexes %v repeat", seen)
	}

	// A chat model reranks by its yes/no answer (Cohere's path, no model
	// named: the default model).
	code, body = call(t, "POST", url+"/rerank", map[string]any{"query": "red ball", "documents": []string{shelf[0], shelf[1]}})
	if res, _ := body["results"].([]any); code != http.StatusOK || len(res) != 2 || body["model"] != "stories260K" {
		t.Fatalf("chat rerank: %d %v", code, body)
	}
	for _, bad := range []map[string]any{
		{"model": "reranker", "documents": []string{"x"}},
		{"model": "reranker", "query": "q", "documents": []string{}},
		{"model": "reranker", "query": "q", "documents": []any{3}},
		{"model": "reranker", "query": "q", "documents": []string{"x"}, "top_n": 0},
	} {
		if code, body = call(t, "POST", url+"/v1/rerank", bad); code != http.StatusBadRequest {
			t.Fatalf("%v: %d %v", bad, code, body)
		}
	}
	if code, body = call(t, "POST", url+"/v1/rerank", map[string]any{"model": "nope", "query": "q", "documents": []string{"x"}}); code != http.StatusNotFound {
		t.Fatalf("unknown model: %d %v", code, body)
	}
}
