package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
)

// A collection built with -m is queried, extended and evaluated without
// repeating -m: it records its model and uses it; another -m is refused
// with a hint.
func TestCollectionUsesItsOwnModel(t *testing.T) {
	home := t.TempDir()
	docs := filepath.Join(t.TempDir(), "docs")
	os.MkdirAll(docs, 0o755)
	os.WriteFile(filepath.Join(docs, "tom.txt"), []byte("Tom went fishing in a small blue boat with his grandfather.\n"), 0o644)
	os.WriteFile(filepath.Join(docs, "lily.md"), []byte("# Lily\n\nLily had a red ball and a dog named Max.\n"), 0o644)
	tiny := testmodel.Shared(t, "llama-2-tiny-random.gguf")
	if out, errOut, code := cli(t, home, "index", "add", "-m", tiny, "-c", "tiny", docs); code != 0 {
		t.Fatalf("add: %d %s %s", code, out, errOut)
	}
	out, errOut, code := cli(t, home, "index", "query", "-c", "tiny", "-k", "2", "fishing boat")
	if code != 0 || !strings.Contains(out, "tom.txt") || !strings.Contains(errOut, "llama-2-tiny-random") {
		t.Fatalf("query without -m: %d\n%s\n%s", code, out, errOut)
	}
	os.WriteFile(filepath.Join(docs, "sea.txt"), []byte("The lighthouse keeper counted the ships.\n"), 0o644)
	if out, _, code = cli(t, home, "index", "add", "-c", "tiny", docs); code != 0 || !strings.Contains(out, "1 added") {
		t.Fatalf("add without -m: %d %s", code, out)
	}
	if out, _, code = cli(t, home, "index", "stats", "-c", "tiny"); code != 0 || !strings.Contains(out, "model "+tiny+", 8 dims") {
		t.Fatalf("stats: %d %s", code, out)
	}
	if _, errOut, code = cli(t, home, "index", "query", "-m", "stories260K", "-c", "tiny", "boat"); code != 1 || !strings.Contains(errOut, "leave out -m") {
		t.Fatalf("query with another model: %d %s", code, errOut)
	}
}

// The documents-to-model loop as a user runs it, from the documents
// alone: ingest, generate QA, tune on the documents and the generated
// chat lines, evaluate the four arms with the ablation table (reranking
// with a generated reranking model).
func TestDocumentsToModelLoop(t *testing.T) {
	home := t.TempDir()
	dir := t.TempDir()
	reranker := filepath.Join(dir, "reranker.gguf")
	err := testmodel.Write(context.Background(), reranker, testmodel.Spec{Arch: "qwen3", Name: "reranker-random", NEmbd: 64, NLayer: 2, NHead: 4, NHeadKV: 2,
		NFF: 128, NCtxTrain: 1024, VocabFile: testmodel.Shared(t, "ggml-vocab-gpt-2.gguf"), TiedEmbeddings: true,
		Type: gguf.TypeF32, RopeFreqBase: 10000, NormEps: 1e-6, Seed: 7, ClassLabels: []string{"yes", "no"}})
	if err != nil {
		t.Fatal(err)
	}
	handbook, _ := filepath.Abs("../../examples/aurora/handbook")
	run := func(args ...string) string {
		t.Helper()
		out, errOut, code := cli(t, home, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s\n%s", args, code, out, errOut)
		}
		return out
	}
	run("index", "add", "-c", "aurora", handbook)
	qa := filepath.Join(dir, "qa")
	out := run("qagen", "-c", "aurora", "-o", qa, "--max-chunks", "10", "--per-chunk", "2", "--eval-share", "0.5", "-t", "1")
	if !strings.Contains(out, "10 chunks") || !strings.Contains(out, "evaluation questions") {
		t.Fatalf("qagen printed %s", out)
	}
	out = run("tune", "--collection", "aurora", "--data", filepath.Join(qa, "train.jsonl"), "--out", "aurora", "--ctx", "256",
		"--epochs", "1", "--rank", "2", "--targets", "attn_q", "--eval-split", "0", "-t", "1")
	if !strings.Contains(out, "windows of longer texts") {
		t.Fatalf("tune printed %s", out)
	}
	report := filepath.Join(dir, "report")
	out = run("eval", "--data", filepath.Join(qa, "qa.jsonl"), "--collection", "aurora", "--adapter", "aurora", "--ablation",
		"--rerank-model", reranker, "--max-tokens", "8", "--concurrency", "2", "--out", report, "-t", "1")
	var rep struct {
		Arms     []struct{ Arm string }
		Ablation []struct {
			Stages string  `json:"stages"`
			HitAtK float64 `json:"retrieval_hit_at_k"`
		}
	}
	b, err := os.ReadFile(filepath.Join(report, "results.json"))
	if err != nil || json.Unmarshal(b, &rep) != nil {
		t.Fatalf("results.json: %v", err)
	}
	if len(rep.Arms) != 4 || len(rep.Ablation) != 5 {
		t.Fatalf("%d arms, %d ablation rows", len(rep.Arms), len(rep.Ablation))
	}
	for _, row := range rep.Ablation {
		if !strings.Contains(out, "\n"+row.Stages+"  ") {
			t.Fatalf("the printed report lacks the ablation row %q:\n%s", row.Stages, out)
		}
	}
}
