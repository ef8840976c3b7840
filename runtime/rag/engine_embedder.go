package rag

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/llmrt/llmrt/runtime/engine"
)

// EngineEmbedder embeds with a model loaded by runtime/engine (an embedding
// model such as a BERT or nomic GGUF; any model works, pooled over its last
// hidden states).
type EngineEmbedder struct {
	E *engine.Engine
	// Model names the model in collection manifests (default: the GGUF
	// file name without its directory).
	Model string
}

var _ Embedder = EngineEmbedder{}

// Embed tokenizes the texts (with the model's BOS/EOS as it wants them),
// cuts inputs longer than MaxTokens, and embeds them in one engine call.
func (e EngineEmbedder) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	limit := e.E.EmbedLimit()
	in := make([][]int32, len(texts))
	for i, t := range texts {
		if strings.TrimSpace(t) == "" {
			t = " "
		}
		toks, err := e.E.Tokenize(t, true, false)
		if err != nil {
			return nil, fmt.Errorf("tokenize input %d: %w", i, err)
		}
		if len(toks) == 0 {
			return nil, fmt.Errorf("input %d has no tokens", i)
		}
		if len(toks) > limit {
			toks = toks[:limit]
		}
		in[i] = toks
	}
	return e.E.Embed(ctx, in)
}

// Tokenize returns the model's tokens for text, without special tokens.
func (e EngineEmbedder) Tokenize(text string) ([]int32, error) {
	return e.E.Tokenize(text, false, false)
}

// Shape is the model's embedding width, and the engine's embedding input
// limit less two tokens for the BOS/EOS that Embed adds.
func (e EngineEmbedder) Shape(context.Context) (Shape, error) {
	return Shape{Dim: e.E.Info().Embd, MaxTokens: max(1, e.E.EmbedLimit()-2)}, nil
}

// Name is Model, or the model file's name.
func (e EngineEmbedder) Name() string {
	if e.Model != "" {
		return e.Model
	}
	return filepath.Base(e.E.Options().Path)
}
