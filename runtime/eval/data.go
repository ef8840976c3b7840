package eval

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Question is one line of qa.jsonl.
type Question struct {
	Question   string   `json:"question"`
	Answer     string   `json:"answer"`
	Aliases    []string `json:"aliases,omitempty"`
	ContextIDs []string `json:"context_ids,omitempty"`
	Line       int      `json:"line"`
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
