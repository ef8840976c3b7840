// Package grounding is what retrieval hands to generation: the query with
// the retrieval stages it asks for, the passages found, the one prompt
// builder that puts passages in front of a question, and the parser of the
// [n] citations in an answer.
//
// The server's chat "rag" extension and llmrt eval's RAG arms both build
// their prompts with Ground, so an evaluation measures exactly what is
// served. The package sits below runtime/rag, runtime/eval and
// runtime/server so that all three can share it.
package grounding

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/llmrt/llmrt/runtime/engine"
)

// Passage is a retrieved chunk of a document.
type Passage struct {
	ChunkID uint64 `json:"chunk_id"`
	// Source is the document's path or upload name; Title its section's
	// heading path.
	Source string `json:"source"`
	Title  string `json:"title,omitempty"`
	// Start and End are byte offsets of Text in the document's text.
	Start int     `json:"start"`
	End   int     `json:"end"`
	Score float32 `json:"score"`
	Text  string  `json:"text"`
}

// Stages switch the retrieval stages around the search itself.
type Stages struct {
	// MultiQuery > 0 asks the model for that many rewrites of the query
	// and fuses the searches of all of them (reciprocal rank).
	MultiQuery int `json:"multi_query,omitempty"`
	// HyDE asks the model for a hypothetical answer and searches with it
	// too (hypothetical document expansion).
	HyDE bool `json:"hyde,omitempty"`
	// Rerank scores the candidates with a reranker (a reranking model, or
	// the chat model when there is none) and keeps the best.
	Rerank bool `json:"rerank,omitempty"`
}

// Any reports whether a stage is on.
func (s Stages) Any() bool { return s.MultiQuery > 0 || s.HyDE || s.Rerank }

// String names the stages that are on ("none" when none is).
func (s Stages) String() string {
	var on []string
	if s.MultiQuery > 0 {
		on = append(on, fmt.Sprintf("multi-query(%d)", s.MultiQuery))
	}
	if s.HyDE {
		on = append(on, "hyde")
	}
	if s.Rerank {
		on = append(on, "rerank")
	}
	if len(on) == 0 {
		return "none"
	}
	return strings.Join(on, "+")
}

// Query is one retrieval from a collection.
type Query struct {
	Text string
	K    int
	// Mode is "vector", "hybrid" or "keyword" ("" : hybrid).
	Mode   string
	Stages Stages
	// RerankModel names the reranking model; "" uses the one the
	// retriever was configured with, else Model itself.
	RerankModel string
	// Model and Adapters are the model that answers: it rewrites the
	// query and, without a reranking model, reranks.
	Model    *engine.Engine
	Adapters []engine.AdapterRef
}

// Retrieval is what a query found.
type Retrieval struct {
	Passages []Passage `json:"passages"`
	// Queries are the rewritten queries searched besides the original
	// (multi-query), Hypothesis the hypothetical answer (HyDE).
	Queries    []string `json:"queries,omitempty"`
	Hypothesis string   `json:"hypothesis,omitempty"`
	// Reranker names what reranked the candidates ("" : none did).
	Reranker string `json:"reranker,omitempty"`
}

// ErrNoCollection is what a retriever's error matches for an unknown
// collection.
var ErrNoCollection = errors.New("no such collection")

// Instruction tells the model to answer from the numbered passages and to
// cite them.
const Instruction = "Answer using the numbered passages below. Cite the passages you use as [n]. If they do not contain the answer, say so."

// Context numbers the passages, one per paragraph:
//
//	[1] (guide.md: Install > Linux) text of the chunk
func Context(ps []Passage) string {
	var sb strings.Builder
	for i, p := range ps {
		label := filepath.Base(p.Source)
		if p.Title != "" && p.Title != label {
			label += ": " + p.Title
		}
		fmt.Fprintf(&sb, "[%d] (%s) %s\n\n", i+1, label, strings.TrimSpace(p.Text))
	}
	return sb.String()
}

// System is the system message that grounds an answer in the passages:
// Instruction, then Context.
func System(ps []Passage) string {
	return Instruction + "\n\n" + Context(ps)
}

// ErrNoUserTurn is returned by Ground for a conversation without a user
// message to retrieve for.
var ErrNoUserTurn = errors.New("no user message to retrieve for")

// LastUser is the index of the last user message, or -1.
func LastUser(msgs []engine.ChatMessage) int {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" {
			return i
		}
	}
	return -1
}

// Ground returns a copy of msgs with System(ps) inserted as a system
// message right before the last user turn (the one the passages were
// retrieved for); earlier system messages stay where they are.
func Ground(msgs []engine.ChatMessage, ps []Passage) ([]engine.ChatMessage, error) {
	last := LastUser(msgs)
	if last < 0 {
		return nil, ErrNoUserTurn
	}
	out := make([]engine.ChatMessage, 0, len(msgs)+1)
	out = append(out, msgs[:last]...)
	out = append(out, engine.ChatMessage{Role: "system", Content: System(ps)})
	out = append(out, msgs[last:]...)
	return out, nil
}

// citeRef matches [1], [1, 3], [2-4], [1][2] (each bracket on its own).
var (
	citeRef = regexp.MustCompile(`\[\s*(\d+(?:\s*(?:,|;|-|–|and)\s*\d+)*)\s*\]`)
	citeSep = regexp.MustCompile(`\s*(?:,|;|and)\s*`)
)

// Cited returns the passage numbers (1-based) an answer cites as [n], in
// the order of their first citation, each once. Numbers outside 1..n are
// ignored.
func Cited(answer string, n int) []int {
	var out []int
	seen := map[int]bool{}
	add := func(i int) {
		if i >= 1 && i <= n && !seen[i] {
			seen[i] = true
			out = append(out, i)
		}
	}
	for _, m := range citeRef.FindAllStringSubmatch(answer, -1) {
		for _, part := range citeSep.Split(m[1], -1) {
			lo, hi, isRange := strings.Cut(strings.ReplaceAll(part, "–", "-"), "-")
			a, err := strconv.Atoi(strings.TrimSpace(lo))
			if err != nil {
				continue
			}
			b := a
			if isRange {
				if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil || b < a || b-a > n {
					b = a
				}
			}
			for i := a; i <= b; i++ {
				add(i)
			}
		}
	}
	return out
}
