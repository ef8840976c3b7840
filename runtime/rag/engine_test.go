package rag

import (
	"context"
	"errors"
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

// A store with Embedders opens each collection with the model it was
// built with: a collection made by llama-2-tiny-random (8 dimensions)
// reopens and answers queries in a store whose default model is
// stories260K (64 dimensions); a store with only the default model
// refuses it.
func TestCollectionsKeepTheirModel(t *testing.T) {
	ctx := context.Background()
	open := func(name string) EngineEmbedder {
		e, err := engine.Open(ctx, engine.Options{Path: testmodel.Shared(t, name+".gguf"), CtxPerSeq: 512, NParallel: 1, Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return EngineEmbedder{E: e, Model: name}
	}
	models := map[string]Embedder{"stories260K": open("stories260K"), "llama-2-tiny-random": open("llama-2-tiny-random")}
	dir := t.TempDir()
	opt := StoreOptions{Embedder: models["stories260K"], Embedders: func(m string) Embedder { return models[m] }}
	s, err := OpenStore(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	docs := t.TempDir()
	writeFile(t, filepath.Join(docs, "tom.txt"), "Tom went fishing in a small blue boat with his grandfather.")
	writeFile(t, filepath.Join(docs, "lily.txt"), "Lily had a red ball and a dog named Max.")
	for _, m := range []string{"", "llama-2-tiny-random"} {
		name := "c-" + m
		if m == "" {
			name = "default"
		}
		c, err := s.Create(ctx, name, CreateOptions{Model: m})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.AddPath(ctx, docs, AddOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	s, err = OpenStore(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for name, want := range map[string]struct {
		model string
		dim   int
	}{"default": {"stories260K", 64}, "c-llama-2-tiny-random": {"llama-2-tiny-random", 8}} {
		st, err := s.Stats(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if st.Model != want.model || st.Dim != want.dim {
			t.Fatalf("%s: model %s dim %d, want %+v", name, st.Model, st.Dim, want)
		}
		hits, err := s.Search(ctx, name, "fishing boat grandfather", 1, SearchOptions{Mode: Vector})
		if err != nil || len(hits) != 1 {
			t.Fatalf("%s: search %v %v", name, hits, err)
		}
	}
	one, err := OpenStore(dir+"-copy", StoreOptions{Embedder: models["stories260K"]})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if _, err := one.Create(ctx, "x", CreateOptions{Model: "llama-2-tiny-random"}); err == nil {
		t.Fatal("a store without Embedders created a collection with another model")
	}
	s.Close()
	single, err := OpenStore(dir, StoreOptions{Embedder: models["stories260K"]})
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	if _, err := single.Get(ctx, "c-llama-2-tiny-random"); !errors.Is(err, ErrModelMismatch) {
		t.Fatalf("single-model store opened another model's collection: %v", err)
	}
}
