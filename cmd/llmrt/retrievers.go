package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/llmrt/llmrt/runtime/eval"
	"github.com/llmrt/llmrt/runtime/rag"
	"github.com/llmrt/llmrt/runtime/server"
)

// chatRetriever serves a collection store to the server's "rag" chat
// extension: hybrid search, hits as the server's passages.
type chatRetriever struct{ store *rag.Store }

func (r chatRetriever) Retrieve(ctx context.Context, collection, query string, k int) ([]server.Passage, error) {
	hits, err := r.store.Search(ctx, collection, query, k, rag.SearchOptions{Mode: rag.Hybrid})
	if errors.Is(err, rag.ErrNotFound) {
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

// evalRetriever serves a collection store to the RAG arms of eval.
type evalRetriever struct{ store *rag.Store }

func (r evalRetriever) Retrieve(ctx context.Context, collection, query string, k int) ([]eval.Passage, error) {
	hits, err := r.store.Search(ctx, collection, query, k, rag.SearchOptions{Mode: rag.Hybrid})
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
func (r evalRetriever) HasCollection(name string) bool {
	_, err := r.store.Get(context.Background(), name)
	return err == nil
}
