package qagen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/llmrt/llmrt/internal/atomicfile"
	"github.com/llmrt/llmrt/runtime/eval"
)

// Files are a generation's outputs.
type Files struct {
	// Train is chat JSONL for llmrt tune, Eval questions for llmrt eval,
	// Pairs every generated pair with its split or why it was dropped,
	// Summary the figures.
	Train, Eval, Pairs, Summary string
}

// trainLine is one chat training line, with the chunk it came from (extra
// fields are ignored by llmrt tune).
type trainLine struct {
	Messages []message `json:"messages"`
	ChunkID  uint64    `json:"chunk_id"`
	Source   string    `json:"source"`
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// TrainLines are the kept training pairs as chat lines.
func (r *Result) TrainLines() []any {
	var out []any
	for _, p := range r.Pairs {
		if p.Split != "train" {
			continue
		}
		var msgs []message
		if r.System != "" {
			msgs = append(msgs, message{"system", r.System})
		}
		msgs = append(msgs, message{"user", p.Question}, message{"assistant", p.Answer})
		out = append(out, trainLine{Messages: msgs, ChunkID: p.ChunkID, Source: p.Source})
	}
	return out
}

// EvalQuestions are the kept evaluation pairs as llmrt eval questions,
// scored for retrieval on their chunk.
func (r *Result) EvalQuestions() []eval.Question {
	var out []eval.Question
	for _, p := range r.Pairs {
		if p.Split == "eval" {
			out = append(out, eval.Question{Question: p.Question, Answer: p.Answer,
				ContextIDs: []string{filepath.Base(p.Source)}, ChunkIDs: []uint64{p.ChunkID}})
		}
	}
	return out
}

// Write writes train.jsonl, qa.jsonl, pairs.jsonl and summary.json into
// dir, each atomically.
func (r *Result) Write(dir string) (Files, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Files{}, fmt.Errorf("qagen: %w", err)
	}
	f := Files{Train: filepath.Join(dir, "train.jsonl"), Eval: filepath.Join(dir, "qa.jsonl"),
		Pairs: filepath.Join(dir, "pairs.jsonl"), Summary: filepath.Join(dir, "summary.json")}
	var qs []any
	for _, q := range r.EvalQuestions() {
		qs = append(qs, evalLine{Question: q.Question, Answer: q.Answer, ContextIDs: q.ContextIDs, ChunkIDs: q.ChunkIDs})
	}
	pairs := make([]any, len(r.Pairs))
	for i, p := range r.Pairs {
		pairs[i] = p
	}
	for path, lines := range map[string][]any{f.Train: r.TrainLines(), f.Eval: qs, f.Pairs: pairs} {
		if err := writeJSONL(path, lines); err != nil {
			return f, err
		}
	}
	sum := *r
	sum.Pairs = nil
	if err := atomicfile.WriteJSON(f.Summary, sum); err != nil {
		return f, fmt.Errorf("qagen: %w", err)
	}
	return f, nil
}

// evalLine is a question as qa.jsonl holds it (no line number).
type evalLine struct {
	Question   string   `json:"question"`
	Answer     string   `json:"answer"`
	ContextIDs []string `json:"context_ids,omitempty"`
	ChunkIDs   []uint64 `json:"chunk_ids,omitempty"`
}

func writeJSONL(path string, lines []any) error {
	err := atomicfile.Write(path, func(f *os.File) error {
		w := bufio.NewWriter(f)
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, l := range lines {
			if err := enc.Encode(l); err != nil {
				return err
			}
		}
		return w.Flush()
	})
	if err != nil {
		return fmt.Errorf("qagen: write %s: %w", path, err)
	}
	return nil
}
