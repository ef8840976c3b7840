package rag

import (
	"strings"
	"testing"
)

// Any Markdown or HTML chunks into pieces that keep the chunk invariants
// (exact offsets, one section each, the token budget, full coverage).
func FuzzSplit(f *testing.F) {
	f.Add("# A\n\nx. y! z?\n\n## B\n\n"+paragraph(0, 9), 20, 4)
	f.Add("Title\n===\n\n- a\n- b\n1. c\n\n```\n# no\n```\n", 5, 1)
	f.Add("<h1>T</h1><p>a b c. d e f.</p><pre> x\n\n y</pre><h3>U</h3>v", 3, 0)
	f.Add(strings.Repeat("w ", 300)+strings.Repeat("é", 90), 7, 3)
	f.Add("---\nk: v\n---\n\ttab\n\n\n  \n…。 x.\"", 2, 9)
	f.Fuzz(func(t *testing.T, text string, size, overlap int) {
		size = 1 + abs(size)%300
		overlap = abs(overlap) % 64
		opt := ChunkOptions{Size: size, Overlap: overlap}
		for _, doc := range []Document{ParseMarkdown("f.md", text), mustHTML(t, text)} {
			ps, err := Split(doc, wsCount, opt)
			if err != nil {
				t.Fatal(err)
			}
			checkPieces(t, doc, ps, opt)
		}
	})
}

func mustHTML(t *testing.T, text string) Document {
	doc, err := ParseHTML("f.html", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
