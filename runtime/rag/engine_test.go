package rag

import (
	"context"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/registry"
)

// The engine adapter with a real model (stories260K: a tiny llama whose
// mean-pooled hidden states serve as embeddings).
func TestEngineEmbedder(t *testing.T) {
	ctx := context.Background()
	e, err := engine.Open(ctx, engine.Options{Path: testmodel.Shared(t, "stories260K.gguf"), CtxPerSeq: 256, NParallel: 1, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	emb := EngineEmbedder{E: e}
	if sh, err := emb.Shape(ctx); err != nil || sh.Dim != 64 || emb.Name() != "stories260K.gguf" || sh.MaxTokens != 254 {
		t.Fatalf("shape %+v (%v), name %q", sh, err, emb.Name())
	}
	toks, err := emb.Tokenize("Once upon a time")
	if err != nil || len(toks) == 0 || toks[0] == 1 {
		t.Fatalf("tokens %v (no BOS wanted), err %v", toks, err)
	}
	// Over-long inputs are cut to the model's limit instead of failing.
	long := ""
	for i := 0; i < 400; i++ {
		long += "the cat sat. "
	}
	vs, err := emb.Embed(ctx, []string{"Lily liked to play.", long, ""})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		var n float64
		for _, x := range v {
			n += float64(x) * float64(x)
		}
		if len(v) != 64 || math.Abs(n-1) > 1e-3 {
			t.Fatalf("vector %d: width %d, norm² %v", i, len(v), n)
		}
	}

	s, _ := openTestStore(t, emb)
	c, err := s.Create(ctx, "stories", CreateOptions{Chunking: ChunkOptions{Size: 64, Overlap: 8}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "lily.md"), "# Lily\n\nLily was a little girl who loved to play outside in the sun with her dog.\n")
	writeFile(t, filepath.Join(dir, "tom.md"), "# Tom\n\nTom had a big red ball. He threw it high and his friend caught it.\n")
	rep, err := c.AddPath(ctx, dir, AddOptions{})
	if err != nil || len(rep.Added) != 2 {
		t.Fatalf("report %+v, err %v", rep, err)
	}
	for _, p := range []string{"lily.md", "tom.md"} {
		ch := c.Chunks(filepath.Join(dir, p))[0]
		if n, _ := emb.Tokenize(ch.Text); len(n) != ch.Tokens {
			t.Errorf("%s: chunk records %d tokens, the model counts %d", p, ch.Tokens, len(n))
		}
		// The exact text that was embedded comes back first, cosine 1.
		hits, err := c.Search(ctx, EmbedText(ch.Title, ch.Text), SearchOptions{K: 2})
		if err != nil {
			t.Fatal(err)
		}
		if hits[0].Chunk.ID != ch.ID || hits[0].Score < 0.999 || hits[1].Score > 0.9999 {
			t.Errorf("%s: hits %+v", p, hits)
		}
	}
}

// An embedding model that cannot load says why, where collections are
// created and opened (it used to read as "dimension 0").
func TestRegistryEmbedderSaysWhy(t *testing.T) {
	ctx := context.Background()
	reg := registry.NewRegistry(registry.RegistryConfig{Resolver: registry.DirResolver{Dir: t.TempDir()}, KeepAlive: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer reg.Close()
	emb := RegistryEmbedder{Reg: reg, Model: "missing-model"}
	if _, err := emb.Shape(ctx); err == nil || !strings.Contains(err.Error(), "missing-model") {
		t.Fatalf("shape of a model that cannot load: %v", err)
	}
	s, err := OpenStore(t.TempDir(), StoreOptions{Embedder: emb})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Create(ctx, "kb", CreateOptions{}); err == nil || !strings.Contains(err.Error(), "missing-model") || strings.Contains(err.Error(), "dimension 0") {
		t.Fatalf("create with a model that cannot load: %v", err)
	}
}
