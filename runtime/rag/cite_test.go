package rag

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestContextAndCitations(t *testing.T) {
	hits := []Hit{
		{Chunk: Chunk{Source: "/d/guide.md", Title: "Install > Linux", Text: "Run setup.sh. "}},
		{Chunk: Chunk{Source: "/d/notes.txt", Title: "notes.txt", Text: "Budget approved."}},
		{Chunk: Chunk{Source: "/d/faq.html", Title: "FAQ", Text: "Reset via email."}},
		{Chunk: Chunk{Source: "/d/x.txt", Title: "x.txt", Text: "unused"}},
	}
	block := ContextBlock(hits)
	want := "[1] (guide.md: Install > Linux) Run setup.sh.\n\n[2] (notes.txt) Budget approved.\n\n[3] (faq.html: FAQ) Reset via email.\n\n[4] (x.txt) unused\n\n"
	if block != want {
		t.Fatalf("context block\n%q\nwant\n%q", block, want)
	}
	if sp := SystemPrompt(hits); !strings.HasPrefix(sp, CiteInstruction+"\n\n[1] ") {
		t.Errorf("system prompt %q", sp)
	}
	for _, tc := range []struct {
		answer string
		want   []int
	}{
		{"Run the script [1].", []int{1}},
		{"Reset by email [3], budget ok [2][3].", []int{3, 2}},
		{"See [1, 3] and [2-3].", []int{1, 3, 2}},
		{"Both [3 and 1]; [ 2 ]", []int{3, 1, 2}},
		{"Out of range [0] [5] [12], arrays a[i] and [x].", nil},
		{"No citations at all.", nil},
		{"Range [1–2]", []int{1, 2}},
	} {
		var got []int
		for _, c := range Citations(tc.answer, hits) {
			got = append(got, c.N)
			if c.Hit.Chunk.Source != hits[c.N-1].Chunk.Source {
				t.Errorf("citation %d carries the wrong hit", c.N)
			}
		}
		if len(got) != len(tc.want) || (len(got) > 0 && !equalInts(got, tc.want)) {
			t.Errorf("Citations(%q) = %v, want %v", tc.answer, got, tc.want)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

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
