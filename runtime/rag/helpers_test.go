package rag

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
)

// bowEmbedder is a deterministic hashed bag-of-words embedder: every word
// adds ±1 to a hashed coordinate; vectors are unit length.
type bowEmbedder struct {
	dim   int
	calls atomic.Int64 // Embed calls
	texts atomic.Int64 // texts embedded
}

func newBOW() *bowEmbedder { return &bowEmbedder{dim: 512} }

func (e *bowEmbedder) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	e.calls.Add(1)
	e.texts.Add(int64(len(texts)))
	out := make([][]float32, len(texts))
	for i, t := range texts {
		v := make([]float32, e.dim)
		for _, w := range terms(t) {
			h := fnv.New64a()
			h.Write([]byte(w))
			x := h.Sum64()
			s := float32(1)
			if x&(1<<63) != 0 {
				s = -1
			}
			v[x%uint64(e.dim)] += s
		}
		normalizeTest(v)
		out[i] = v
	}
	return out, nil
}

func normalizeTest(v []float32) {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	if ss == 0 {
		v[0] = 1
		return
	}
	inv := float32(1 / math.Sqrt(ss))
	for i := range v {
		v[i] *= inv
	}
}

func (e *bowEmbedder) Tokenize(text string) ([]int32, error) {
	return make([]int32, len(strings.Fields(text))), nil
}
func (e *bowEmbedder) Shape(context.Context) (Shape, error) {
	return Shape{Dim: e.dim, MaxTokens: 512}, nil
}
func (e *bowEmbedder) Name() string { return "bow-test" }

// tableEmbedder gives each text the vector of the first "id:NAME" marker
// in it (texts without one, such as queries, get vecs["q"]), so tests
// control vector rankings exactly.
type tableEmbedder struct {
	vecs map[string][]float32
}

var marker = regexp.MustCompile(`id:(\w+)`)

func (e *tableEmbedder) Embed(_ context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, t := range texts {
		key := "q"
		if m := marker.FindStringSubmatch(t); m != nil {
			key = m[1]
		}
		v, ok := e.vecs[key]
		if !ok {
			return nil, fmt.Errorf("no vector for %s", key)
		}
		v = append([]float32(nil), v...)
		normalizeTest(v)
		out[i] = v
	}
	return out, nil
}
func (e *tableEmbedder) Tokenize(text string) ([]int32, error) {
	return make([]int32, len(strings.Fields(text))), nil
}
func (e *tableEmbedder) Shape(context.Context) (Shape, error) {
	return Shape{Dim: 4, MaxTokens: 512}, nil
}
func (e *tableEmbedder) Name() string { return "table-test" }

// wsCount counts whitespace-separated words.
func wsCount(s string) (int, error) { return len(strings.Fields(s)), nil }

// writeFile writes a test file, creating its folder.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// pdfFile builds a valid PDF with one page per content stream, text set in
// Helvetica (WinAnsi), with a correct cross-reference table.
func pdfFile(pages ...string) []byte {
	var b bytes.Buffer
	var offs []int
	obj := func(s string) {
		offs = append(offs, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", len(offs), s)
	}
	b.WriteString("%PDF-1.4\n")
	var kids []string
	for i := range pages {
		kids = append(kids, fmt.Sprintf("%d 0 R", 4+2*i))
	}
	obj("<< /Type /Catalog /Pages 2 0 R >>")
	obj(fmt.Sprintf("<< /Type /Pages /Kids [%s] /Count %d >>", strings.Join(kids, " "), len(pages)))
	obj("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
	for i, c := range pages {
		obj(fmt.Sprintf("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>", 5+2*i))
		obj(fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", len(c), c))
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(offs)+1)
	for _, o := range offs {
		fmt.Fprintf(&b, "%010d 00000 n \n", o)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(offs)+1, xref)
	return b.Bytes()
}

// pdfLines is a page content stream showing lines of text, 14pt apart.
func pdfLines(lines ...string) string {
	var sb strings.Builder
	sb.WriteString("BT /F1 12 Tf 72 720 Td 14 TL\n")
	for _, l := range lines {
		l = strings.NewReplacer(`\`, `\\`, "(", `\(`, ")", `\)`).Replace(l)
		fmt.Fprintf(&sb, "(%s) Tj T*\n", l)
	}
	sb.WriteString("ET")
	return sb.String()
}

// openTestStore opens a store in a temporary folder, closed at cleanup.
func openTestStore(t *testing.T, emb Embedder) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := OpenStore(dir, StoreOptions{Embedder: emb})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}
