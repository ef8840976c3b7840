package rag

import (
	"context"

	"github.com/llmrt/llmrt/runtime/eval"
)

// EvalRetriever serves a Store to runtime/eval's RAG arms.
type EvalRetriever struct {
	Store   *Store
	Options SearchOptions
}

var _ eval.Retriever = EvalRetriever{}

// Retrieve searches a collection for query.
func (r EvalRetriever) Retrieve(ctx context.Context, collection, query string, k int) ([]eval.Passage, error) {
	hits, err := r.Store.search(ctx, collection, query, k, r.Options)
	if err != nil {
		return nil, err
	}
	out := make([]eval.Passage, len(hits))
	for i, h := range hits {
		out[i] = eval.Passage{Source: h.Chunk.Source, Text: h.Chunk.Text, Score: h.Score}
	}
	return out, nil
}

// HasCollection reports whether the collection exists and opens with the
// store's embedding model.
func (r EvalRetriever) HasCollection(name string) bool {
	_, err := r.Store.Get(context.Background(), name)
	return err == nil
}
