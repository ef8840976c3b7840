package rag

import (
	"context"
	"errors"
)

// Embedder turns texts into vectors of one model. Vectors should have unit
// length when the collection uses the cosine metric.
type Embedder interface {
	// Embed returns one vector of length Shape().Dim per text.
	Embed(ctx context.Context, texts []string) ([][]float32, error)
	// Tokenize splits text into the model's tokens (no special tokens);
	// the chunker counts tokens with it.
	Tokenize(text string) ([]int32, error)
	// Shape is the vectors' length and the longest input Embed accepts;
	// an embedder that loads its model on demand says here why it cannot.
	Shape(ctx context.Context) (Shape, error)
	// Name identifies the model; a collection records the name it was
	// built with and refuses another model.
	Name() string
}

// Shape is what a collection needs to know of its embedding model.
type Shape struct {
	Dim       int // length of the vectors
	MaxTokens int // longest input Embed accepts, in tokens
}

// ErrNoEmbedder is returned by operations that need an Embedder on a store
// opened without one.
var ErrNoEmbedder = errors.New("rag: no embedding model")
