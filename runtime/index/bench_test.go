package index

import (
	"sync"
	"testing"
)

var (
	benchDataOnce, benchIndexOnce sync.Once
	benchData                     *dataset
	benchIndex                    *HNSW
)

// benchSet is (once) 10k vectors of width 384 in 50 clusters, plus 1000
// queries.
func benchSet() *dataset {
	benchDataOnce.Do(func() { benchData = makeDataset(17, 10000, 1000, 384, 50, true) })
	return benchData
}

// benchSetup builds (once) a cosine index over benchSet.
func benchSetup(b *testing.B) (*HNSW, *dataset) {
	d := benchSet()
	benchIndexOnce.Do(func() {
		benchIndex = build(b, Options{Dim: 384, Metric: Cosine, ExactBelow: -1}, d.vecs, nil)
	})
	return benchIndex, d
}

func BenchmarkSearch(b *testing.B) {
	h, d := benchSetup(b)
	for _, ef := range []int{32, 64, 128} {
		b.Run("ef="+itoa(ef), func(b *testing.B) {
			i := 0
			for b.Loop() {
				if _, err := h.Search(d.queries[i%len(d.queries)], 10, SearchOptions{Ef: ef}); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				h.Search(d.queries[i%len(d.queries)], 10, SearchOptions{Ef: 64})
				i++
			}
		})
	})
}

func BenchmarkAdd(b *testing.B) {
	d := benchSet()
	h, err := New(Options{Dim: 384, Metric: Cosine})
	if err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		// Ids keep growing; vectors cycle through the data set.
		if err := h.Add(uint64(i), d.vecs[i%len(d.vecs)], nil); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
