package rag

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// topics are passages on distinct subjects.
var topics = []string{
	"The lighthouse keeper climbs one hundred steps each evening to light the lamp above the harbour.",
	"Sourdough bread needs a lively starter, a long cold proof, and a very hot oven with steam.",
	"Glaciers carve U-shaped valleys as they slowly grind the bedrock beneath tons of ice.",
	"The violin section tuned to the oboe before the conductor raised the baton for the overture.",
	"Honeybees communicate the direction of flowers through a waggle dance inside the hive.",
	"Compilers translate source code into machine instructions after parsing and optimisation passes.",
}

func topicCollection(t *testing.T, emb Embedder, extra map[string]string) *Collection {
	t.Helper()
	s, _ := openTestStore(t, emb)
	ctx := context.Background()
	c, err := s.Create(ctx, "topics", CreateOptions{Chunking: ChunkOptions{Size: 64, Overlap: -1}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i, tp := range topics {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("t%d.txt", i)), tp+"\n")
	}
	for name, text := range extra {
		writeFile(t, filepath.Join(dir, name), text)
	}
	if _, err := c.AddPath(ctx, dir, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSearchExactSentence(t *testing.T) {
	c := topicCollection(t, newBOW(), nil)
	for i, tp := range topics {
		for _, mode := range []Mode{Vector, Hybrid} {
			hits, err := c.Search(context.Background(), tp, SearchOptions{K: 3, Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			if len(hits) != 3 || hits[0].Chunk.Text != tp {
				t.Fatalf("%v query %d: first hit %q", mode, i, hits[0].Chunk.Text)
			}
			if hits[0].VectorRank != 1 {
				t.Errorf("%v: vector rank %d", mode, hits[0].VectorRank)
			}
			if mode == Vector && hits[0].Score < 0.8 {
				t.Errorf("cosine of a passage with itself (plus its title) is %v", hits[0].Score)
			}
			if mode == Vector && hits[0].BM25Rank != 0 {
				t.Errorf("vector search reports a BM25 rank")
			}
		}
	}
}

func TestSearchKeywordFindsRareWord(t *testing.T) {
	// The rare word sits in a passage otherwise about common things, so
	// the bag-of-words vector of a one-word query barely sees it.
	common := strings.Repeat("the report covers the plan and the team and the budget. ", 6)
	c := topicCollection(t, newBOW(), map[string]string{
		"rare.txt":  common + "Serial XQ-7731 failed.",
		"other.txt": common,
	})
	hits, err := c.Search(context.Background(), "xq", SearchOptions{K: 3, Mode: Keyword})
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 1 || filepath.Base(hits[0].Chunk.Source) != "rare.txt" || hits[0].BM25Rank != 1 || hits[0].VectorRank != 0 {
		t.Fatalf("hits %+v", hits)
	}
	// Several terms: the passage with more of them (and rarer ones) wins.
	hits, err = c.Search(context.Background(), "waggle dance of the honeybees", SearchOptions{K: 2, Mode: Keyword})
	if err != nil || hits[0].Chunk.Text != topics[4] {
		t.Fatalf("hits %+v, err %v", hits, err)
	}
}

func TestSearchRRF(t *testing.T) {
	// Vector ranking for q: b, a, f; BM25 for "quasar nebula": c, a.
	emb := &tableEmbedder{vecs: map[string][]float32{
		"q": {1, 0, 0, 0},
		"b": {1, 0, 0, 0},
		"a": {0.9, 0.436, 0, 0},
		"f": {0.5, 0.866, 0, 0},
		"c": {0, 0, 1, 0},
		"g": {0, 0, 0, 1},
	}}
	s, _ := openTestStore(t, emb)
	ctx := context.Background()
	c, err := s.Create(ctx, "rrf", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, text := range map[string]string{
		"a.txt": "id:a quasar seen near the ridge",
		"b.txt": "id:b unrelated words entirely",
		"c.txt": "id:c quasar nebula quasar nebula",
		"f.txt": "id:f filler text",
		"g.txt": "id:g more filler",
	} {
		writeFile(t, filepath.Join(dir, name), text)
	}
	if _, err := c.AddPath(ctx, dir, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	hits, err := c.Search(ctx, "quasar nebula", SearchOptions{K: 3, Mode: Hybrid, Candidates: 3})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range hits {
		got = append(got, fmt.Sprintf("%s v%d b%d", strings.TrimSuffix(filepath.Base(h.Chunk.Source), ".txt"), h.VectorRank, h.BM25Rank))
	}
	// a is second in both lists and beats the winners of one list each;
	// b and c tie (1/61) and are ordered by id.
	want := []string{"a v2 b2", "b v1 b0", "c v0 b1"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("hybrid ranking %q, want %q", got, want)
	}
	if w := float32(2.0 / 62); hits[0].Score < w-1e-6 || hits[0].Score > w+1e-6 {
		t.Errorf("RRF score %v, want 2/62", hits[0].Score)
	}
	// Each list alone ranks its own winner first.
	if v, _ := c.Search(ctx, "quasar nebula", SearchOptions{K: 1}); v[0].Chunk.Text != "id:b unrelated words entirely" {
		t.Errorf("vector winner %q", v[0].Chunk.Text)
	}
	if k, _ := c.Search(ctx, "quasar nebula", SearchOptions{K: 1, Mode: Keyword}); k[0].Chunk.Text != "id:c quasar nebula quasar nebula" {
		t.Errorf("keyword winner %q", k[0].Chunk.Text)
	}
}

func TestSearchMMR(t *testing.T) {
	emb := &tableEmbedder{vecs: map[string][]float32{
		"q":  {1, 0, 0, 0},
		"d1": {0.95, 0.31, 0, 0},
		"d2": {0.94, 0.34, 0, 0}, // near-duplicate of d1
		"d3": {0.8, 0, 0.6, 0},
		"d4": {0, 0, 0, 1},
	}}
	s, _ := openTestStore(t, emb)
	ctx := context.Background()
	c, err := s.Create(ctx, "mmr", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, n := range []string{"d1", "d2", "d3", "d4"} {
		writeFile(t, filepath.Join(dir, n+".txt"), "id:"+n+" passage")
	}
	if _, err := c.AddPath(ctx, dir, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	names := func(hits []Hit) string {
		var s []string
		for _, h := range hits {
			s = append(s, strings.TrimSuffix(filepath.Base(h.Chunk.Source), ".txt"))
		}
		return strings.Join(s, ",")
	}
	plain, err := c.Search(ctx, "query", SearchOptions{K: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(plain); got != "d1,d2" {
		t.Fatalf("plain top 2 = %s, want d1,d2", got)
	}
	div, err := c.Search(ctx, "query", SearchOptions{K: 2, MMR: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(div); got != "d1,d3" {
		t.Fatalf("MMR top 2 = %s, want d1,d3 (the near-duplicate d2 dropped)", got)
	}
	// Lambda 1 is plain relevance.
	if one, _ := c.Search(ctx, "query", SearchOptions{K: 2, MMR: 1}); names(one) != "d1,d2" {
		t.Errorf("MMR 1 = %s", names(one))
	}
	if _, err := c.Search(ctx, "query", SearchOptions{MMR: 1.5}); err == nil {
		t.Error("MMR 1.5 accepted")
	}
}

// Searches run while sources are added and removed (for the race detector).
func TestSearchWhileIngesting(t *testing.T) {
	c := topicCollection(t, newBOW(), nil)
	ctx := context.Background()
	dir := t.TempDir()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				hits, err := c.Search(ctx, topics[g], SearchOptions{K: 2, Mode: Hybrid, MMR: 0.7})
				if err != nil || hits[0].Chunk.Text != topics[g] {
					t.Errorf("search during ingestion: %v %+v", err, hits)
					return
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		p := filepath.Join(dir, fmt.Sprintf("n%d.md", i%4))
		writeFile(t, p, fmt.Sprintf("# Note %d\n\nversion %d of a note about nothing much\n", i, i))
		if _, err := c.AddPath(ctx, p, AddOptions{}); err != nil {
			t.Fatal(err)
		}
		if i%5 == 4 {
			if err := c.RemoveSource(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	if c.vectors().Len() != len(c.chunks) {
		t.Errorf("index %d vs chunks %d", c.vectors().Len(), len(c.chunks))
	}
}
