package rag

import (
	"context"
	"errors"
	"fmt"

	"github.com/llmrt/llmrt/runtime/server"
)

// Retriever serves a Store to runtime/server's "rag" extension.
type Retriever struct {
	Store *Store
	// Options are the search options (K comes from the request).
	Options SearchOptions
}

var _ server.Retriever = Retriever{}

// Retrieve searches a collection; unknown collections give an error that
// matches server.ErrNoCollection.
func (r Retriever) Retrieve(ctx context.Context, collection, query string, k int) ([]server.Passage, error) {
	hits, err := r.Store.search(ctx, collection, query, k, r.Options)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", server.ErrNoCollection, err)
	}
	if err != nil {
		return nil, err
	}
	out := make([]server.Passage, len(hits))
	for i, h := range hits {
		out[i] = server.Passage{Source: h.Chunk.Source, Title: h.Chunk.Title, Start: h.Chunk.Start, End: h.Chunk.End, Score: h.Score, Text: h.Chunk.Text}
	}
	return out, nil
}

// search opens a collection and searches it for the k best hits.
func (s *Store) search(ctx context.Context, collection, query string, k int, opt SearchOptions) ([]Hit, error) {
	c, err := s.Get(ctx, collection)
	if err != nil {
		return nil, err
	}
	opt.K = k
	return c.Search(ctx, query, opt)
}
