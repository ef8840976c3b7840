package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/httpapi"
)

// Passage is a retrieved chunk of a document.
type Passage struct {
	Source string
	Title  string
	Start  int
	End    int
	Score  float32
	Text   string
}

// Retriever finds passages for a query in a collection (runtime/rag
// implements it). ErrNoCollection is returned for unknown collections.
type Retriever interface {
	Retrieve(ctx context.Context, collection, query string, k int) ([]Passage, error)
}

// ErrNoCollection reports an unknown collection.
var ErrNoCollection = errors.New("no such collection")

const maxRAGTopK = 32

// retrieve runs the "rag" extension: it retrieves passages for the last
// user turn and puts them, numbered, in a system message so the model can
// cite them as [1], [2], ...
func (s *Server) retrieve(r *http.Request, opt *RAGOptions, msgs []engine.ChatMessage) ([]Citation, []engine.ChatMessage, *httpapi.APIError) {
	if s.cfg.Retriever == nil {
		return nil, nil, httpapi.BadRequest("rag", "retrieval is not enabled on this server")
	}
	if opt.Collection == "" {
		return nil, nil, httpapi.BadRequest("rag.collection", "rag.collection is required")
	}
	k := opt.TopK
	if k == 0 {
		k = 4
	}
	if k < 1 || k > maxRAGTopK {
		return nil, nil, httpapi.BadRequest("rag.top_k", "rag.top_k must be between 1 and %d, got %d", maxRAGTopK, k)
	}
	last := -1
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" {
			last = i
			break
		}
	}
	if last < 0 {
		return nil, nil, httpapi.BadRequest("messages", "rag needs a user message to retrieve for")
	}
	ps, err := s.cfg.Retriever.Retrieve(r.Context(), opt.Collection, msgs[last].Content, k)
	if errors.Is(err, ErrNoCollection) {
		return nil, nil, httpapi.NotFound("collection_not_found", "collection %q does not exist", opt.Collection)
	}
	if err != nil {
		return nil, nil, httpapi.Internal(fmt.Errorf("retrieve from %s: %w", opt.Collection, err))
	}
	cits := make([]Citation, len(ps))
	var sb strings.Builder
	sb.WriteString("Answer using the numbered passages below. Cite the passages you use as [n]. If they do not contain the answer, say so.\n\n")
	for i, p := range ps {
		cits[i] = Citation{Index: i + 1, Source: p.Source, Title: p.Title, Start: p.Start, End: p.End, Score: p.Score, Excerpt: p.Text}
		fmt.Fprintf(&sb, "[%d] (%s) %s\n\n", i+1, p.Source, strings.TrimSpace(p.Text))
	}
	out := make([]engine.ChatMessage, 0, len(msgs)+1)
	out = append(out, msgs[:last]...)
	out = append(out, engine.ChatMessage{Role: "system", Content: sb.String()})
	out = append(out, msgs[last:]...)
	return cits, out, nil
}
