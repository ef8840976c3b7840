package rag

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/llmrt/llmrt/models/modeltest"
	"github.com/llmrt/llmrt/runtime/engine"
)

// The engine adapter with a real model (stories260K: a tiny llama whose
// mean-pooled hidden states serve as embeddings).
func TestEngineEmbedder(t *testing.T) {
	ctx := context.Background()
	e, err := engine.Open(ctx, engine.Options{Path: modeltest.Path(t, "stories260K.gguf"), CtxPerSeq: 256, NParallel: 1, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	emb := EngineEmbedder{E: e}
	if emb.Dim() != 64 || emb.Name() != "stories260K.gguf" || emb.MaxTokens() != 254 {
		t.Fatalf("dim %d, name %q, max tokens %d", emb.Dim(), emb.Name(), emb.MaxTokens())
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

	s, _ := openTestStore(t, emb, true)
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
