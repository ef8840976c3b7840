package rag

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/runtime/server"
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

func TestRetriever(t *testing.T) {
	s, _ := openTestStore(t, newBOW(), false)
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
	var r server.Retriever = Retriever{Store: s, Options: SearchOptions{Mode: Hybrid}}
	ps, err := r.Retrieve(ctx, "kb", "setup script bash reboot", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Source != files["markdown"] || ps[0].Title != "Install > Linux" || ps[0].Score <= 0 {
		t.Fatalf("passages %+v", ps)
	}
	b, _ := os.ReadFile(files["markdown"])
	data := string(b)
	if data[ps[0].Start:ps[0].End] != ps[0].Text {
		t.Errorf("passage offsets %d..%d do not point at its text", ps[0].Start, ps[0].End)
	}
	if _, err := r.Retrieve(ctx, "missing", "q", 2); !errors.Is(err, server.ErrNoCollection) {
		t.Errorf("unknown collection: %v", err)
	}
	if _, err := r.Retrieve(ctx, "../etc", "q", 2); !errors.Is(err, server.ErrNoCollection) {
		t.Errorf("bad collection name: %v", err)
	}
}
