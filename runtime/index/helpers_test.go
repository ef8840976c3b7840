package index

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"
)

// dataset is a seeded mixture of Gaussian clusters: centres ~ N(0,1)^dim,
// points = centre + N(0,1)^dim, optionally normalised to unit length.
type dataset struct {
	dim     int
	vecs    [][]float32
	queries [][]float32
}

func makeDataset(seed uint64, n, nq, dim, clusters int, normalise bool) *dataset {
	rng := rand.New(rand.NewPCG(seed, 7))
	centres := make([][]float32, clusters)
	for i := range centres {
		c := make([]float32, dim)
		for j := range c {
			c[j] = float32(rng.NormFloat64())
		}
		centres[i] = c
	}
	point := func() []float32 {
		c := centres[rng.IntN(clusters)]
		v := make([]float32, dim)
		var n2 float64
		for j := range v {
			v[j] = c[j] + float32(rng.NormFloat64())
			n2 += float64(v[j]) * float64(v[j])
		}
		if normalise {
			inv := float32(1 / math.Sqrt(n2))
			for j := range v {
				v[j] *= inv
			}
		}
		return v
	}
	d := &dataset{dim: dim}
	// One backing array keeps the data compact.
	for i := 0; i < n; i++ {
		d.vecs = append(d.vecs, point())
	}
	for i := 0; i < nq; i++ {
		d.queries = append(d.queries, point())
	}
	return d
}

// testSize picks the data size for the big tests: n normally, 10k under
// -short, 3k under the race detector.
func testSize(n int) int {
	switch {
	case raceEnabled:
		return min(n, 3000)
	case testing.Short():
		return min(n, 10000)
	}
	return n
}

// truths is brute-force ground truth: for every query the k best ids
// among the items admitted by keep (nil keeps all). It uses the kernels,
// which TestKernelsAgree checks against float64 arithmetic.
func truths(m Metric, vecs, queries [][]float32, k int, keep func(i int) bool) [][]uint64 {
	data := vecs
	if m == Cosine {
		data = make([][]float32, len(vecs))
		for i, v := range vecs {
			data[i] = normalised(v)
		}
	}
	out := make([][]uint64, len(queries))
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for qi := range next {
				q := queries[qi]
				if m == Cosine {
					q = normalised(q)
				}
				var res maxHeap
				for i, v := range data {
					if keep != nil && !keep(i) {
						continue
					}
					var d float32
					switch m {
					case L2:
						d = l2sq(q, v)
					default:
						d = -dot(q, v)
					}
					if res.len() < k {
						res.push(cand{d, uint32(i)})
					} else if d < res.top().d {
						res.pop()
						res.push(cand{d, uint32(i)})
					}
				}
				ids := make([]uint64, 0, k)
				for _, c := range res.sortedAsc(nil) {
					ids = append(ids, uint64(c.id))
				}
				out[qi] = ids
			}
		}()
	}
	for i := range queries {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

func normalised(v []float32) []float32 {
	var n2 float64
	for _, x := range v {
		n2 += float64(x) * float64(x)
	}
	inv := 1 / math.Sqrt(n2)
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(float64(x) * inv)
	}
	return out
}

// recallOf is |got ∩ want| / |want| summed over queries.
func recallOf(got [][]Result, want [][]uint64) float64 {
	hit, total := 0, 0
	for i := range want {
		set := make(map[uint64]bool, len(want[i]))
		for _, id := range want[i] {
			set[id] = true
		}
		for _, r := range got[i] {
			if set[r.ID] {
				hit++
			}
		}
		total += len(want[i])
	}
	if total == 0 {
		return 1
	}
	return float64(hit) / float64(total)
}

// build inserts vecs[i] under id i with 2 workers.
func build(t testing.TB, opt Options, vecs [][]float32, metas []Meta) *HNSW {
	t.Helper()
	h, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]uint64, len(vecs))
	for i := range ids {
		ids[i] = uint64(i)
	}
	if err := h.AddBatch(ids, vecs, metas, 2); err != nil {
		t.Fatal(err)
	}
	return h
}

// searchAll runs every query and fails the test on an error.
func searchAll(t testing.TB, h *HNSW, queries [][]float32, k int, opt SearchOptions) [][]Result {
	t.Helper()
	out := make([][]Result, len(queries))
	for i, q := range queries {
		r, err := h.Search(q, k, opt)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = r
	}
	return out
}
