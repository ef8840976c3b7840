package eval

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/rag"
	"github.com/llmrt/llmrt/runtime/rag/grounding"
)

// docsCollection builds a real collection "docs" of two Markdown files,
// embedded by e, and returns its retriever.
func docsCollection(t *testing.T, e *engine.Engine) *rag.Retriever {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "story.md"), []byte("# Story\n\nLily had a red ball. She played with it in the park every day.\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "sea.md"), []byte("# Sea\n\nTom went fishing in a small blue boat with his grandfather.\n"), 0o644)
	store, err := rag.OpenStore(filepath.Join(t.TempDir(), "collections"), rag.StoreOptions{Embedder: rag.EngineEmbedder{E: e, Model: "stories260K"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	c, err := store.Create(context.Background(), "docs", rag.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddPath(context.Background(), dir, rag.AddOptions{}); err != nil {
		t.Fatal(err)
	}
	return &rag.Retriever{Store: store}
}

func TestLoadQuestionsReportsLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "qa.jsonl")
	os.WriteFile(p, []byte("{\"question\": \"q\", \"answer\": \"a\"}\n\n{\"question\": \"q2\"}\n"), 0o644)
	if _, err := LoadQuestions(p); err == nil || !strings.Contains(err.Error(), "qa.jsonl:3") {
		t.Fatalf("missing answer: %v", err)
	}
	os.WriteFile(p, []byte("{\"question\": \"q\", \"answer\": \"a\"}\n{oops\n"), 0o644)
	if _, err := LoadQuestions(p); err == nil || !strings.Contains(err.Error(), "qa.jsonl:2") {
		t.Fatalf("bad json: %v", err)
	}
}

func TestMissingInputsFailBeforeWork(t *testing.T) {
	store, err := rag.OpenStore(t.TempDir(), rag.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	o := Options{Engine: &engine.Engine{}, Collection: "nope", Retriever: &rag.Retriever{Store: store}}
	if err := o.Check(); err == nil || !strings.Contains(err.Error(), `collection "nope"`) {
		t.Fatalf("missing collection: %v", err)
	}
	o = Options{Engine: &engine.Engine{}, AdapterFile: "/nonexistent/a.gguf"}
	if err := o.Check(); err == nil || !strings.Contains(err.Error(), "adapter") {
		t.Fatalf("missing adapter: %v", err)
	}
}

// Base and RAG arms end to end on stories260K; the files agree.
func TestRunBaseAndRAG(t *testing.T) {
	e, err := engine.Open(context.Background(), engine.Options{Path: testmodel.Shared(t, "stories260K.gguf"), NParallel: 2, CtxPerSeq: 512, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	qs := []Question{
		{Question: "Lily had a red ball", Answer: "Lily", ContextIDs: []string{"story.md"}, Line: 1},
		{Question: "The cat", Answer: "dog", Line: 2},
	}
	rep, err := Run(context.Background(), qs, Options{
		Engine: e, ModelName: "stories260K", Retriever: docsCollection(t, e),
		Collection: "docs", TopK: 1, Concurrency: 2, MaxTokens: 16,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Arms) != 2 || rep.Arms[0].Arm != ArmBase || rep.Arms[1].Arm != ArmRAG || len(rep.Answers) != 4 {
		t.Fatalf("arms %+v answers %d", rep.Arms, len(rep.Answers))
	}
	if rep.Arms[1].RetrievalHitAtK != 1 {
		t.Fatalf("retrieval hit %v", rep.Arms[1].RetrievalHitAtK)
	}
	for _, a := range rep.Answers {
		if a.CompletionTokens == 0 || a.LatencyS <= 0 {
			t.Fatalf("answer without cost: %+v", a)
		}
	}
	files, err := rep.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	b, _ := os.ReadFile(files.JSON)
	if err := json.Unmarshal(b, &back); err != nil || len(back.Answers) != 4 || back.Arms[0].F1 != rep.Arms[0].F1 {
		t.Fatalf("json: %v", err)
	}
	md, _ := os.ReadFile(files.Markdown)
	svg, _ := os.ReadFile(files.SVG)
	for _, a := range rep.Arms {
		if !strings.Contains(string(md), "| "+string(a.Arm)+" |") || !strings.Contains(string(svg), string(a.Arm)) {
			t.Fatalf("arm %s missing from report or chart", a.Arm)
		}
	}
}

// --ablation answers with the base model and retrieval under each stage
// set: the table has a row per stage (none, each alone, all), each over
// every question, in results.json and report.md.
func TestAblationHasARowPerStage(t *testing.T) {
	e, err := engine.Open(context.Background(), engine.Options{Path: testmodel.Shared(t, "stories260K.gguf"), NParallel: 2, CtxPerSeq: 1024, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	qs := []Question{
		{Question: "Lily had a red ball", Answer: "Lily", ContextIDs: []string{"story.md"}, Line: 1},
		{Question: "Who went fishing?", Answer: "Tom", ContextIDs: []string{"sea.md"}, Line: 2},
	}
	o := Options{Engine: e, ModelName: "stories260K", Retriever: docsCollection(t, e), Collection: "docs", TopK: 1, Concurrency: 2, MaxTokens: 8,
		Stages: grounding.Stages{Rerank: true}, Ablation: true}
	var last, total int
	o.Progress = func(done, n int) { last, total = done, n }
	rep, err := Run(context.Background(), qs, o)
	if err != nil {
		t.Fatal(err)
	}
	if total != len(qs)*o.Variants() || last != total || o.Variants() != 2+5 {
		t.Fatalf("progress %d/%d for %d variants", last, total, o.Variants())
	}
	want := []string{"none", "multi-query(3)", "hyde", "rerank", "multi-query(3)+hyde+rerank"}
	if len(rep.Ablation) != len(want) || len(rep.AblationAnswers) != len(want)*len(qs) || rep.Stages != "rerank" {
		t.Fatalf("%d ablation rows, %d answers, stages %q", len(rep.Ablation), len(rep.AblationAnswers), rep.Stages)
	}
	var md strings.Builder
	rep.Markdown(&md)
	for i, row := range rep.Ablation {
		if row.Stages != want[i] || row.Questions != len(qs) || row.HitAtK < 0 || row.HitAtK > 1 {
			t.Fatalf("row %d: %+v, want stages %s", i, row, want[i])
		}
		if !strings.Contains(md.String(), "| "+row.Stages+" | ") {
			t.Fatalf("report.md lacks the row %s:\n%s", row.Stages, md.String())
		}
	}
	// Each answer of a row carries what it retrieved and whether that hit.
	for _, a := range rep.AblationAnswers[:len(qs)] {
		if a.RetrievalHit == nil || len(a.RetrievedChunks) != 1 {
			t.Fatalf("answer %+v", a)
		}
	}
}
