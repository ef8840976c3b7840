package rag

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

func benchMarkdown(sections int) string {
	var sb strings.Builder
	for i := 0; i < sections; i++ {
		fmt.Fprintf(&sb, "# Section %d\n\n%s\n\n%s\n\n", i, paragraph(i*10, 5), paragraph(i*10+5, 5))
	}
	return sb.String()
}

func BenchmarkSplit(b *testing.B) {
	doc := ParseMarkdown("bench.md", benchMarkdown(500))
	b.SetBytes(int64(len(doc.Text)))
	for b.Loop() {
		if _, err := Split(doc, wsCount, ChunkOptions{Size: 64, Overlap: 8}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSearch(b *testing.B) {
	ctx := context.Background()
	s, err := OpenStore(b.TempDir(), StoreOptions{Embedder: newBOW()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c, err := s.Create(ctx, "bench", CreateOptions{Chunking: ChunkOptions{Size: 64, Overlap: 8}})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	writeFile(b, filepath.Join(dir, "bench.md"), benchMarkdown(1000))
	rep, err := c.AddPath(ctx, dir, AddOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range []Mode{Vector, Hybrid, Keyword} {
		b.Run(fmt.Sprintf("%v/chunks=%d", m, rep.Chunks), func(b *testing.B) {
			for b.Loop() {
				if _, err := c.Search(ctx, "Sentence 4242 says word4242a", SearchOptions{K: 8, Mode: m}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
