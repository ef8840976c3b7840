package rag_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/llmrt/llmrt/runtime/rag"
	"github.com/llmrt/llmrt/runtime/rag/grounding"
)

// wordsEmbedder is a toy embedder (hashed bag of words); use
// rag.EngineEmbedder with a real embedding model.
type wordsEmbedder struct{}

func (wordsEmbedder) Embed(_ context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	for i, t := range texts {
		v := make([]float32, 256)
		for _, w := range strings.Fields(strings.ToLower(t)) {
			h := fnv.New32a()
			h.Write([]byte(strings.Trim(w, ".,?!#")))
			v[h.Sum32()%256]++
		}
		var n float64
		for _, x := range v {
			n += float64(x * x)
		}
		for j := range v {
			v[j] /= float32(math.Sqrt(n))
		}
		out[i] = v
	}
	return out, nil
}
func (wordsEmbedder) Tokenize(s string) ([]int32, error) {
	return make([]int32, len(strings.Fields(s))), nil
}
func (wordsEmbedder) Shape(context.Context) (rag.Shape, error) {
	return rag.Shape{Dim: 256, MaxTokens: 512}, nil
}
func (wordsEmbedder) Name() string { return "words" }

func ExampleCollection_Search() {
	ctx := context.Background()
	home, _ := os.MkdirTemp("", "llmrt")
	defer os.RemoveAll(home)
	docs := filepath.Join(home, "docs")
	os.MkdirAll(docs, 0o755)
	os.WriteFile(filepath.Join(docs, "handbook.md"), []byte(
		"# Handbook\n\n## Holidays\n\nEvery employee has 25 days of paid holiday a year.\n\n"+
			"## Expenses\n\nSubmit receipts within 30 days through the expenses portal.\n"), 0o644)

	store, err := rag.OpenStore(filepath.Join(home, "collections"), rag.StoreOptions{Embedder: wordsEmbedder{}})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	c, err := store.Create(ctx, "handbook", rag.CreateOptions{})
	if err != nil {
		panic(err)
	}
	rep, err := c.AddPath(ctx, docs, rag.AddOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Println("chunks:", rep.Chunks)

	hits, err := c.Search(ctx, "how many days of holiday do I have", rag.SearchOptions{K: 2, Mode: rag.Hybrid})
	if err != nil {
		panic(err)
	}
	passages := rag.Passages(hits)
	fmt.Print(grounding.Context(passages))

	answer := "You have 25 days of paid holiday [1]."
	for _, n := range grounding.Cited(answer, len(passages)) {
		p := passages[n-1]
		fmt.Printf("cited [%d] %s %d..%d\n", n, p.Title, p.Start, p.End)
	}
	// Output:
	// chunks: 2
	// [1] (handbook.md: Handbook > Holidays) Every employee has 25 days of paid holiday a year.
	//
	// [2] (handbook.md: Handbook > Expenses) Submit receipts within 30 days through the expenses portal.
	//
	// cited [1] Handbook > Holidays 25..75
}
