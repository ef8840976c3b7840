package rag

import (
	"context"
	"errors"
	"fmt"

	"github.com/llmrt/llmrt/runtime/rag/grounding"
)

// Search opens a collection and searches it for the k best hits. An
// unknown or invalid collection name gives an error matching ErrNotFound.
func (s *Store) Search(ctx context.Context, collection, query string, k int, opt SearchOptions) ([]Hit, error) {
	c, err := s.Get(ctx, collection)
	if err != nil {
		return nil, err
	}
	opt.K = k
	return c.Search(ctx, query, opt)
}

// Passage is the hit as generation sees it.
func (h Hit) Passage() grounding.Passage {
	c := h.Chunk
	return grounding.Passage{ChunkID: c.ID, Source: c.Source, Title: c.Title, Start: c.Start, End: c.End, Score: h.Score, Text: c.Text}
}

// Passages converts hits in order.
func Passages(hits []Hit) []grounding.Passage {
	out := make([]grounding.Passage, len(hits))
	for i, h := range hits {
		out[i] = h.Passage()
	}
	return out
}

// Retriever answers grounding queries from a Store's collections, through
// the retrieval stages the query switches on. It is the one retrieval path
// of the chat "rag" extension and of llmrt eval's RAG arms.
type Retriever struct {
	Store *Store
	// RerankModel is the reranking model used when a query asks for
	// reranking without naming one ("" : the answering model reranks).
	RerankModel string
	// Rerankers returns the reranker of a model name (nil: only the
	// answering model can rerank).
	Rerankers func(model string) Reranker
}

// HasCollection reports whether the collection exists and opens with the
// store's embedding model.
func (r *Retriever) HasCollection(name string) bool {
	_, err := r.Store.Get(context.Background(), name)
	return err == nil
}

// Retrieve runs q against a collection. An unknown collection gives an
// error matching both ErrNotFound and grounding.ErrNoCollection.
func (r *Retriever) Retrieve(ctx context.Context, collection string, q grounding.Query) (grounding.Retrieval, error) {
	c, err := r.Store.Get(ctx, collection)
	if errors.Is(err, ErrNotFound) {
		return grounding.Retrieval{}, fmt.Errorf("%w: %w", grounding.ErrNoCollection, err)
	}
	if err != nil {
		return grounding.Retrieval{}, err
	}
	mode := Hybrid
	if q.Mode != "" {
		if mode, err = ParseMode(q.Mode); err != nil {
			return grounding.Retrieval{}, err
		}
	}
	req := Request{Query: q.Text, K: q.K, Search: SearchOptions{Mode: mode}, Stages: q.Stages}
	if q.Model != nil {
		req.Generator = EngineGenerator{E: q.Model, Adapters: q.Adapters}
	}
	if q.Stages.Rerank {
		if req.Reranker, err = r.reranker(q); err != nil {
			return grounding.Retrieval{}, err
		}
	}
	res, err := Retrieve(ctx, c, req)
	if err != nil {
		return grounding.Retrieval{}, fmt.Errorf("retrieve from %s: %w", collection, err)
	}
	return res, nil
}

// reranker picks the query's reranking model, else the configured one,
// else the answering model.
func (r *Retriever) reranker(q grounding.Query) (Reranker, error) {
	name := q.RerankModel
	if name == "" {
		name = r.RerankModel
	}
	if name != "" {
		if r.Rerankers == nil {
			return nil, fmt.Errorf("reranking model %q: this retriever has no reranking models", name)
		}
		return r.Rerankers(name), nil
	}
	if q.Model == nil {
		return nil, errors.New("reranking needs a reranking model or the answering model")
	}
	return EngineReranker{E: q.Model, Adapters: q.Adapters}, nil
}
