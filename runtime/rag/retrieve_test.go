package rag

import (
	"context"
	"errors"
	"os"
	"testing"
)

func TestStoreSearch(t *testing.T) {
	s, _ := openTestStore(t, newBOW())
	ctx := context.Background()
	c, err := s.Create(ctx, "kb", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := corpus(t, dir, false)
	if _, err := c.AddPath(ctx, dir, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	hits, err := s.Search(ctx, "kb", "setup script bash reboot", 2, SearchOptions{Mode: Hybrid})
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 2 || hits[0].Chunk.Source != files["markdown"] || hits[0].Chunk.Title != "Install > Linux" || hits[0].Score <= 0 {
		t.Fatalf("hits %+v", hits)
	}
	b, _ := os.ReadFile(files["markdown"])
	data := string(b)
	if ch := hits[0].Chunk; data[ch.Start:ch.End] != ch.Text {
		t.Errorf("chunk offsets %d..%d do not point at its text", ch.Start, ch.End)
	}
	if _, err := s.Search(ctx, "missing", "q", 2, SearchOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown collection: %v", err)
	}
	if _, err := s.Search(ctx, "../etc", "q", 2, SearchOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("bad collection name: %v", err)
	}
}
