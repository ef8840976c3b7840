package eval

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/llmrt/llmrt/runtime/rag/grounding"
)

// Question is one line of qa.jsonl.
type Question struct {
	Question   string   `json:"question"`
	Answer     string   `json:"answer"`
	Aliases    []string `json:"aliases,omitempty"`
	ContextIDs []string `json:"context_ids,omitempty"`
	// ChunkIDs are the collection chunks the answer comes from (generated
	// questions carry them); retrieval is scored on them when present.
	ChunkIDs []uint64 `json:"chunk_ids,omitempty"`
	Line     int      `json:"line"`
}

// retrievalHit reports whether a gold context is among the passages: a
// gold chunk when the question names chunks, else a gold source (its path,
// or its file name). ok is false when the question names neither.
func (q Question) retrievalHit(ps []grounding.Passage) (hit, ok bool) {
	switch {
	case len(q.ChunkIDs) > 0:
		for _, p := range ps {
			if slices.Contains(q.ChunkIDs, p.ChunkID) {
				return true, true
			}
		}
		return false, true
	case len(q.ContextIDs) > 0:
		for _, p := range ps {
			for _, id := range q.ContextIDs {
				if p.Source == id || strings.HasSuffix(p.Source, "/"+id) || filepath.Base(p.Source) == id {
					return true, true
				}
			}
		}
		return false, true
	}
	return false, false
}

// Golds are the accepted answers.
func (q Question) Golds() []string { return append([]string{q.Answer}, q.Aliases...) }

// LoadQuestions reads qa.jsonl. A line that does not parse, or lacks a
// question or an answer, is an error naming its line.
func LoadQuestions(path string) ([]Question, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("questions: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var out []Question
	line := 0
	for sc.Scan() {
		line++
		raw := strings.TrimSpace(sc.Text())
		if raw == "" {
			continue
		}
		var q Question
		dec := json.NewDecoder(strings.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&q); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		if strings.TrimSpace(q.Question) == "" || strings.TrimSpace(q.Answer) == "" {
			return nil, fmt.Errorf("%s:%d: \"question\" and \"answer\" are required", path, line)
		}
		q.Line = line
		out = append(out, q)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: after line %d: %w", path, line, err)
	}
	if len(out) == 0 {
		return nil, errors.New(path + ": no questions")
	}
	return out, nil
}
