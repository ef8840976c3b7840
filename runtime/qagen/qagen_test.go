package qagen

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/eval"
	"github.com/llmrt/llmrt/runtime/rag"
)

func TestSupports(t *testing.T) {
	passage := "The hub's local web interface runs on port 8087. Hold the Reset button for 10 seconds."
	for _, c := range []struct {
		answer string
		want   bool
	}{
		{"port 8087", true},
		{"8087", true},
		{"The Reset button", true},
		{"10 seconds.", true},
		{"port 8088", false},
		{"seconds 10", false},
		{"", false},
		{"the", false},
	} {
		if got := Supports(passage, c.answer); got != c.want {
			t.Errorf("Supports(%q) = %v, want %v", c.answer, got, c.want)
		}
	}
}

// aurora ingests the example handbook (Markdown, HTML, PDF) with
// stories260K and returns the engine and the collection's chunks.
func aurora(t *testing.T) (*engine.Engine, []rag.Chunk) {
	t.Helper()
	ctx := context.Background()
	e, err := engine.Open(ctx, engine.Options{Path: testmodel.Shared(t, "stories260K.gguf"), NParallel: 2, CtxPerSeq: 1024, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	st, err := rag.OpenStore(t.TempDir(), rag.StoreOptions{Embedder: rag.EngineEmbedder{E: e, Model: "stories260K"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := st.Create(ctx, "aurora", rag.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	handbook, _ := filepath.Abs("../../examples/aurora/handbook")
	if _, err := c.AddPath(ctx, handbook, rag.AddOptions{}); err != nil {
		t.Fatal(err)
	}
	return e, Chunks(c)
}

// Generated pairs from the handbook: a chunk's questions are all in the
// training file or all in the evaluation file, never both; every kept
// answer is supported by its chunk; no question is kept twice; the files
// load as llmrt tune and llmrt eval read them.
func TestGenerateSplitsByChunk(t *testing.T) {
	e, chunks := aurora(t)
	byID := map[uint64]rag.Chunk{}
	for _, c := range chunks {
		byID[c.ID] = c
	}
	var last int
	res, err := Generate(context.Background(), chunks, Options{Model: e, ModelName: "stories260K", PerChunk: 3, EvalShare: 0.3, Seed: 1,
		Concurrency: 2, Progress: func(done, _ int) { last = done }})
	if err != nil {
		t.Fatal(err)
	}
	if last != len(chunks) || res.Chunks != len(chunks) || res.Check != "lexical" {
		t.Fatalf("progress %d of %d chunks, %+v", last, len(chunks), res)
	}
	if res.Train == 0 || res.Eval == 0 || res.EvalChunks == 0 || res.EvalChunks == res.Chunks {
		t.Fatalf("train %d, eval %d pairs from %d of %d chunks: a split is empty", res.Train, res.Eval, res.EvalChunks, res.Chunks)
	}
	if res.Generated != res.Train+res.Eval+res.Unsupported+res.Leaky+res.Duplicates || res.Generated != len(res.Pairs) {
		t.Fatalf("counts do not add up: %+v", res)
	}
	split := map[uint64]string{}
	questions := map[string]bool{}
	for _, p := range res.Pairs {
		ch, ok := byID[p.ChunkID]
		if !ok || ch.Source != p.Source {
			t.Fatalf("pair %+v names no chunk of the collection", p)
		}
		if p.Dropped == "unsupported" && Supports(ch.Title+"\n"+ch.Text, p.Answer) {
			t.Fatalf("supported pair dropped: %+v", p)
		}
		if p.Split != "" && Supports(p.Question, p.Answer) {
			t.Fatalf("kept pair %+v gives its answer away in the question", p)
		}
		if p.Split == "" {
			continue
		}
		if !Supports(ch.Title+"\n"+ch.Text, p.Answer) {
			t.Fatalf("kept pair %+v is not supported by chunk %q", p, ch.Text)
		}
		if s, ok := split[p.ChunkID]; ok && s != p.Split {
			t.Fatalf("chunk %d has questions in both splits", p.ChunkID)
		}
		split[p.ChunkID] = p.Split
		key := eval.Normalize(p.Question)
		if questions[key] {
			t.Fatalf("question %q kept twice", p.Question)
		}
		questions[key] = true
	}

	dir := t.TempDir()
	files, err := res.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := eval.LoadQuestions(files.Eval)
	if err != nil || len(qs) != res.Eval {
		t.Fatalf("qa.jsonl: %d questions (%v), want %d", len(qs), err, res.Eval)
	}
	evalChunks := map[uint64]bool{}
	for _, q := range qs {
		if len(q.ChunkIDs) != 1 || split[q.ChunkIDs[0]] != "eval" || len(q.ContextIDs) != 1 {
			t.Fatalf("question %+v", q)
		}
		evalChunks[q.ChunkIDs[0]] = true
	}
	b, _ := os.ReadFile(files.Train)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != res.Train {
		t.Fatalf("train.jsonl has %d lines, want %d", len(lines), res.Train)
	}
	for _, l := range lines {
		var tl struct {
			Messages []struct{ Role, Content string }
			ChunkID  uint64 `json:"chunk_id"`
		}
		if err := json.Unmarshal([]byte(l), &tl); err != nil || len(tl.Messages) != 3 || tl.Messages[2].Role != "assistant" || tl.Messages[0].Content != DefaultSystem {
			t.Fatalf("train line %s (%v)", l, err)
		}
		if evalChunks[tl.ChunkID] {
			t.Fatalf("chunk %d is in both files", tl.ChunkID)
		}
	}
}

// With a judge model, the judge's yes/no decides support, and the summary
// says so.
func TestGenerateWithAJudge(t *testing.T) {
	e, chunks := aurora(t)
	res, err := Generate(context.Background(), chunks, Options{Model: e, ModelName: "stories260K", PerChunk: 2, MaxChunks: 4,
		Judge: e, JudgeName: "stories260K", Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Check != "judge stories260K" || res.Chunks != 4 || res.Generated == 0 ||
		res.Generated != res.Train+res.Eval+res.Unsupported+res.Leaky+res.Duplicates {
		t.Fatalf("%+v", res)
	}
}
