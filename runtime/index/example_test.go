package index_test

import (
	"bytes"
	"fmt"

	"github.com/llmrt/llmrt/runtime/index"
)

func Example() {
	idx, err := index.New(index.Options{Dim: 3, Metric: index.Cosine})
	if err != nil {
		panic(err)
	}
	defer idx.Close()

	docs := map[uint64][]float32{
		1: {1, 0, 0},
		2: {0.9, 0.1, 0},
		3: {0, 1, 0},
		4: {0, 0, 1},
	}
	for id, v := range docs {
		lang := "en"
		if id%2 == 0 {
			lang = "de"
		}
		if err := idx.Add(id, v, index.Meta{"lang": lang}); err != nil {
			panic(err)
		}
	}

	hits, _ := idx.Search([]float32{1, 0.05, 0}, 2, index.SearchOptions{})
	for _, h := range hits {
		fmt.Printf("id %d score %.3f\n", h.ID, h.Score)
	}

	// Only German documents.
	de := func(_ uint64, m index.Meta) bool { return m["lang"] == "de" }
	hits, _ = idx.Search([]float32{1, 0.05, 0}, 1, index.SearchOptions{Filter: de})
	fmt.Println("filtered:", hits[0].ID)

	// Save and load.
	var buf bytes.Buffer
	if _, err := idx.WriteTo(&buf); err != nil {
		panic(err)
	}
	idx.Delete(1)
	loaded, err := index.Read(&buf)
	if err != nil {
		panic(err)
	}
	fmt.Println("live:", idx.Len(), "loaded:", loaded.Len())
	// Output:
	// id 1 score 0.999
	// id 2 score 0.998
	// filtered: 2
	// live: 3 loaded: 4
}
