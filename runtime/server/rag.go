package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/httpapi"
	"github.com/llmrt/llmrt/runtime/rag/grounding"
	"github.com/llmrt/llmrt/runtime/registry"
)

// Retriever finds passages for a query in a collection (runtime/rag's
// Retriever implements it). An unknown collection gives an error matching
// grounding.ErrNoCollection.
type Retriever interface {
	Retrieve(ctx context.Context, collection string, q grounding.Query) (grounding.Retrieval, error)
}

const maxRAGTopK = 32

// retrieve runs the "rag" extension: it retrieves passages for the last
// user turn (with the stages the request switches on; the requested model
// rewrites queries and, without a reranking model, reranks) and grounds
// the conversation in them with grounding.Ground, the prompt llmrt eval
// measures.
func (s *Server) retrieve(r *http.Request, opt *RAGOptions, msgs []engine.ChatMessage, lease *registry.Lease) ([]grounding.Passage, []engine.ChatMessage, *httpapi.APIError) {
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
	switch opt.Mode {
	case "", "vector", "hybrid", "keyword":
	default:
		return nil, nil, httpapi.BadRequest("rag.mode", "rag.mode must be vector, hybrid or keyword, got %q", opt.Mode)
	}
	if opt.MultiQuery < 0 || opt.MultiQuery > 8 {
		return nil, nil, httpapi.BadRequest("rag.multi_query", "rag.multi_query must be between 0 and 8, got %d", opt.MultiQuery)
	}
	last := grounding.LastUser(msgs)
	if last < 0 {
		return nil, nil, httpapi.BadRequest("messages", "rag needs a user message to retrieve for")
	}
	q := grounding.Query{Text: msgs[last].Content, K: k, Mode: opt.Mode, RerankModel: opt.RerankModel,
		Stages: grounding.Stages{MultiQuery: opt.MultiQuery, HyDE: opt.HyDE, Rerank: opt.Rerank || opt.RerankModel != ""},
		Model:  lease.Engine, Adapters: lease.Adapters}
	res, err := s.cfg.Retriever.Retrieve(r.Context(), opt.Collection, q)
	if errors.Is(err, grounding.ErrNoCollection) {
		return nil, nil, httpapi.NotFound("collection_not_found", "collection %q does not exist", opt.Collection)
	}
	if err != nil {
		return nil, nil, httpapi.Internal(fmt.Errorf("retrieve from %s: %w", opt.Collection, err))
	}
	grounded, err := grounding.Ground(msgs, res.Passages)
	if err != nil {
		return nil, nil, httpapi.BadRequest("messages", "rag: %v", err)
	}
	return res.Passages, grounded, nil
}

// citationsOf turns passages into the API's citation objects, numbered as
// the prompt numbered them.
func citationsOf(ps []grounding.Passage, numbers []int) []Citation {
	out := make([]Citation, 0, len(numbers))
	for _, n := range numbers {
		p := ps[n-1]
		out = append(out, Citation{Index: n, ChunkID: p.ChunkID, Source: p.Source, Title: p.Title, Start: p.Start, End: p.End, Score: p.Score, Excerpt: p.Text})
	}
	return out
}

// allNumbers is 1..n.
func allNumbers(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

// cited is the passages the answers cite as [n], in order of first
// citation over the answers, each once.
func cited(ps []grounding.Passage, answers []string) []Citation {
	var nums []int
	seen := map[int]bool{}
	for _, a := range answers {
		for _, n := range grounding.Cited(a, len(ps)) {
			if !seen[n] {
				seen[n] = true
				nums = append(nums, n)
			}
		}
	}
	return citationsOf(ps, nums)
}
