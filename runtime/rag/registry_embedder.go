package rag

import (
	"context"
	"fmt"

	"github.com/llmrt/llmrt/runtime/registry"
)

// RegistryEmbedder embeds with a model of the server's registry, so the
// embedding model loads on first use, unloads after keep-alive and holds
// its memory through the scheduler like any served model.
type RegistryEmbedder struct {
	Reg   Leaser
	Model string
}

// Leaser leases loaded models by id (runtime/registry's Registry).
type Leaser interface {
	Acquire(ctx context.Context, id string) (*registry.Lease, error)
}

var _ Embedder = RegistryEmbedder{}

func (e RegistryEmbedder) with(ctx context.Context, f func(EngineEmbedder) error) error {
	l, err := e.Reg.Acquire(ctx, e.Model)
	if err != nil {
		return fmt.Errorf("embedding model %s: %w", e.Model, err)
	}
	defer l.Release()
	return f(EngineEmbedder{E: l.Engine, Model: e.Model})
}

// Embed embeds texts with the registry's model.
func (e RegistryEmbedder) Embed(ctx context.Context, texts []string) (out [][]float32, err error) {
	err = e.with(ctx, func(ee EngineEmbedder) error {
		out, err = ee.Embed(ctx, texts)
		return err
	})
	return out, err
}

// Tokenize returns the model's tokens for text.
func (e RegistryEmbedder) Tokenize(text string) (out []int32, err error) {
	err = e.with(context.Background(), func(ee EngineEmbedder) error {
		out, err = ee.Tokenize(text)
		return err
	})
	return out, err
}

// Shape loads the model if needed and returns its shape, or why it cannot
// load.
func (e RegistryEmbedder) Shape(ctx context.Context) (sh Shape, err error) {
	err = e.with(ctx, func(ee EngineEmbedder) error {
		sh, err = ee.Shape(ctx)
		return err
	})
	return sh, err
}

// Name is the model's id.
func (e RegistryEmbedder) Name() string { return e.Model }
