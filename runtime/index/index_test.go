package index

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	bigN    = 50000
	dim     = 384
	nq      = 200
	topK    = 10
	efCheck = 96
)

// The 50k-vector datasets and the cosine index are shared by the tests
// that only read them; tests that mutate an index work on a copy.
var (
	rawOnce, unitOnce sync.Once
	rawData, unitData *dataset

	cosOnce  sync.Once
	cosIndex *HNSW
)

// raw: cluster points as drawn; unit: the same, normalised to length 1.
func rawSet() *dataset {
	rawOnce.Do(func() { rawData = makeDataset(11, testSize(bigN), nq, dim, 100, false) })
	return rawData
}

func unitSet() *dataset {
	unitOnce.Do(func() { unitData = makeDataset(11, testSize(bigN), nq, dim, 100, true) })
	return unitData
}

// metaFor is the metadata every test index stores: parity and a 1-in-10
// bucket, so filters of 50% and 10% selectivity can be expressed.
func metaFor(i int) Meta {
	p := "even"
	if i%2 == 1 {
		p = "odd"
	}
	return Meta{"parity": p, "bucket": strconv.Itoa(i % 10)}
}

func metasFor(n int) []Meta {
	m := make([]Meta, n)
	for i := range m {
		m[i] = metaFor(i)
	}
	return m
}

// sharedCosine is a cosine index over the raw (unnormalised) vectors: the
// index must normalise them itself.
func sharedCosine(t *testing.T) *HNSW {
	cosOnce.Do(func() {
		d := rawSet()
		t0 := time.Now()
		cosIndex = build(t, Options{Dim: dim, Metric: Cosine, Seed: 1}, d.vecs, metasFor(len(d.vecs)))
		t.Logf("built shared cosine index of %d in %v", len(d.vecs), time.Since(t0))
	})
	if cosIndex == nil {
		t.Fatal("shared index failed to build")
	}
	return cosIndex
}

// clone copies an index through a snapshot.
func clone(t *testing.T, h *HNSW) *HNSW {
	t.Helper()
	var buf bytes.Buffer
	if _, err := h.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	c, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRecallAllMetrics(t *testing.T) {
	for _, tc := range []struct {
		metric Metric
		data   func() *dataset
	}{
		{Cosine, rawSet}, // unnormalised input: the index normalises
		{Dot, unitSet},
		{L2, rawSet},
	} {
		t.Run(tc.metric.String(), func(t *testing.T) {
			d := tc.data()
			var h *HNSW
			if tc.metric == Cosine {
				h = sharedCosine(t)
			} else {
				t0 := time.Now()
				h = build(t, Options{Dim: dim, Metric: tc.metric, Seed: 2}, d.vecs, nil)
				t.Logf("build %d vectors: %v", len(d.vecs), time.Since(t0))
				defer h.Close()
			}
			if h.Len() != len(d.vecs) {
				t.Fatalf("Len = %d, want %d", h.Len(), len(d.vecs))
			}
			want := truths(tc.metric, d.vecs, d.queries, topK, nil)
			t0 := time.Now()
			got := searchAll(t, h, d.queries, topK, SearchOptions{Ef: efCheck})
			el := time.Since(t0)
			r := recallOf(got, want)
			t.Logf("%s: recall@%d=%.4f at ef=%d, %.0f queries/s (1 goroutine)", tc.metric, topK, r, efCheck, float64(nq)/el.Seconds())
			if r < 0.95 {
				t.Errorf("recall@%d = %.4f, want >= 0.95", topK, r)
			}
			for qi, res := range got {
				if len(res) != topK {
					t.Fatalf("query %d: %d results, want %d", qi, len(res), topK)
				}
				if !slices.IsSortedFunc(res, func(a, b Result) int { return -cmpF(a.Score, b.Score) }) {
					t.Fatalf("query %d: results not sorted by score: %v", qi, res)
				}
			}
			// Scores are the metric's similarity, computed exactly.
			q, v := d.queries[0], d.vecs[got[0][0].ID]
			var want0 float64
			switch tc.metric {
			case Cosine:
				want0 = refDot(normalised(q), normalised(v))
			case Dot:
				want0 = refDot(q, v)
			case L2:
				want0 = -refL2(q, v)
			}
			if math.Abs(float64(got[0][0].Score)-want0) > 1e-3*math.Max(1, math.Abs(want0)) {
				t.Errorf("score %v, want %v", got[0][0].Score, want0)
			}
		})
	}
}

func cmpF(a, b float32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestRecallRisesWithEf(t *testing.T) {
	h := sharedCosine(t)
	d := rawSet()
	want := truths(Cosine, d.vecs, d.queries, topK, nil)
	var prev float64
	for _, ef := range []int{10, 32, 64, 200} {
		r := recallOf(searchAll(t, h, d.queries, topK, SearchOptions{Ef: ef}), want)
		t.Logf("ef=%d recall=%.4f", ef, r)
		if r < prev {
			t.Errorf("recall fell from %.4f to %.4f when ef rose to %d", prev, r, ef)
		}
		if ef == 200 {
			if r <= recallAt(t, h, d, want, 10) {
				t.Errorf("recall at ef=200 (%.4f) not above ef=10", r)
			}
			if r < 0.95 {
				t.Errorf("recall at ef=200 = %.4f, want >= 0.95", r)
			}
		}
		prev = r
	}
	// Ef below k is raised to k: asking for 50 results at ef=1 still gives 50.
	res, err := h.Search(d.queries[0], 50, SearchOptions{Ef: 1})
	if err != nil || len(res) != 50 {
		t.Fatalf("k=50 ef=1: %d results, %v", len(res), err)
	}
}

func recallAt(t *testing.T, h *HNSW, d *dataset, want [][]uint64, ef int) float64 {
	return recallOf(searchAll(t, h, d.queries, topK, SearchOptions{Ef: ef}), want)
}

func TestFilter(t *testing.T) {
	h := sharedCosine(t)
	d := rawSet()
	n := len(d.vecs)
	for _, tc := range []struct {
		name string
		keep func(i int) bool
		meta func(m Meta) bool
	}{
		{"parity-even", func(i int) bool { return i%2 == 0 }, func(m Meta) bool { return m["parity"] == "even" }},
		{"bucket-10%", func(i int) bool { return i%10 == 3 }, func(m Meta) bool { return m["bucket"] == "3" }},
		// 0.5%: the walk exhausts its budget and falls back to an exact scan.
		{"id-0.5%", func(i int) bool { return i%200 == 7 }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int64
			filter := func(id uint64, m Meta) bool {
				calls.Add(1)
				if tc.meta == nil {
					return tc.keep(int(id))
				}
				return tc.meta(m)
			}
			want := truths(Cosine, d.vecs, d.queries, topK, tc.keep)
			t0 := time.Now()
			got := searchAll(t, h, d.queries, topK, SearchOptions{Ef: 64, Filter: filter})
			el := time.Since(t0)
			for qi, res := range got {
				if len(res) != topK {
					t.Fatalf("query %d: %d results, want %d", qi, len(res), topK)
				}
				for _, r := range res {
					if !tc.keep(int(r.ID)) {
						t.Fatalf("query %d: result %d does not match the filter", qi, r.ID)
					}
				}
			}
			r := recallOf(got, want)
			t.Logf("recall@%d=%.4f, %.0f filter calls/query (n=%d), %.0f queries/s", topK, r, float64(calls.Load())/nq, n, nq/el.Seconds())
			if r < 0.9 {
				t.Errorf("filtered recall = %.4f, want >= 0.9", r)
			}
		})
	}
	// A filter nothing passes gives no results, not an error.
	res, err := h.Search(d.queries[0], topK, SearchOptions{Filter: func(uint64, Meta) bool { return false }})
	if err != nil || len(res) != 0 {
		t.Fatalf("reject-all filter: %v, %v", res, err)
	}
}

func TestDelete(t *testing.T) {
	h := clone(t, sharedCosine(t))
	defer h.Close()
	d := rawSet()
	n := len(d.vecs)
	rng := rand.New(rand.NewPCG(5, 5))
	order := rng.Perm(n)
	deleted := make([]bool, n)

	check := func(frac float64, minRecall float64) {
		t.Helper()
		want := truths(Cosine, d.vecs, d.queries, topK, func(i int) bool { return !deleted[i] })
		got := searchAll(t, h, d.queries, topK, SearchOptions{Ef: efCheck})
		for qi, res := range got {
			if len(res) != topK {
				t.Fatalf("query %d: %d results", qi, len(res))
			}
			for _, r := range res {
				if deleted[r.ID] {
					t.Fatalf("%.0f%% deleted: query %d returned deleted id %d", 100*frac, qi, r.ID)
				}
			}
		}
		r := recallOf(got, want)
		t.Logf("%.0f%% deleted: recall@%d=%.4f, dead links in live layer-0 lists: %.1f%%", 100*frac, topK, r, 100*deadLinkFraction(h))
		if r < minRecall {
			t.Errorf("%.0f%% deleted: recall %.4f, want >= %.2f", 100*frac, r, minRecall)
		}
	}

	del := func(upto float64) {
		for _, i := range order[:int(upto*float64(n))] {
			if !deleted[i] {
				if !h.Delete(uint64(i)) {
					t.Fatalf("Delete(%d) = false for a live id", i)
				}
				deleted[i] = true
			}
		}
	}
	del(0.2)
	if want := n - n/5; h.Len() != want {
		t.Fatalf("Len after deletes = %d, want %d", h.Len(), want)
	}
	if h.Delete(uint64(order[0])) {
		t.Fatal("second Delete of the same id returned true")
	}
	if h.Delete(1 << 60) {
		t.Fatal("Delete of an unknown id returned true")
	}
	check(0.2, 0.9)

	// Delete the entry point: another live node must take over.
	ep, _ := h.entry()
	epID := h.ext[ep]
	if !deleted[epID] {
		h.Delete(epID)
		deleted[epID] = true
	}
	if ep2, _ := h.entry(); h.isDead(ep2) {
		t.Fatalf("entry point %d is deleted", ep2)
	}
	check(0.2, 0.9)

	// Heavy deletion exercises the neighbourhood repair.
	del(0.7)
	check(0.7, 0.9)
	if f := deadLinkFraction(h); f > 0.5 {
		t.Errorf("%.0f%% of live nodes' links are dead after repair, want <= 50%%", 100*f)
	}

	// A deleted id can be added again and is found.
	id := uint64(order[0])
	if err := h.Add(id, d.vecs[id], nil); err != nil {
		t.Fatalf("re-add deleted id: %v", err)
	}
	deleted[id] = false
	res, err := h.Search(d.vecs[id], 1, SearchOptions{})
	if err != nil || len(res) != 1 || res[0].ID != id {
		t.Fatalf("search for re-added id %d: %v, %v", id, res, err)
	}
}

// deadLinkFraction is the share of tombstones in live nodes' layer-0 lists.
func deadLinkFraction(h *HNSW) float64 {
	dead, total := 0, 0
	for id := uint32(0); id < h.count.Load(); id++ {
		if h.isDead(id) {
			continue
		}
		lst := h.linkList(id, 0)
		for _, nb := range lst[1 : 1+lst[0]] {
			total++
			if h.isDead(nb) {
				dead++
			}
		}
	}
	return float64(dead) / float64(max(total, 1))
}

func TestQuantized(t *testing.T) {
	for _, tc := range []struct {
		metric Metric
		data   func() *dataset
	}{
		{Cosine, rawSet},
		{L2, rawSet},
	} {
		t.Run(tc.metric.String(), func(t *testing.T) {
			d := tc.data()
			n := len(d.vecs)
			if tc.metric == L2 {
				n = min(n, testSize(20000)) // the cosine case covers scale
			}
			h := build(t, Options{Dim: dim, Metric: tc.metric, Quantize: true, Seed: 3}, d.vecs[:n], nil)
			defer h.Close()
			want := truths(tc.metric, d.vecs[:n], d.queries, topK, nil)
			t0 := time.Now()
			got := searchAll(t, h, d.queries, topK, SearchOptions{Ef: efCheck})
			el := time.Since(t0)
			r := recallOf(got, want)
			t.Logf("int8 %s n=%d: recall@%d=%.4f at ef=%d, %.0f queries/s", tc.metric, n, topK, r, efCheck, nq/el.Seconds())
			if r < 0.9 {
				t.Errorf("quantised recall = %.4f, want >= 0.9", r)
			}
			// Re-ranked scores are exact float32 similarities.
			q := d.queries[0]
			v := d.vecs[got[0][0].ID]
			var w float64
			if tc.metric == Cosine {
				w = refDot(normalised(q), normalised(v))
			} else {
				w = -refL2(q, v)
			}
			if math.Abs(float64(got[0][0].Score)-w) > 1e-3*math.Max(1, math.Abs(w)) {
				t.Errorf("re-ranked score %v, want %v", got[0][0].Score, w)
			}
			if m := h.MemoryBytes(); m < int64(n*dim*5) {
				t.Errorf("MemoryBytes = %d, less than vectors + codes (%d)", m, n*dim*5)
			}
		})
	}
}

func TestQuantizeCodes(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	v := make([]float32, 100)
	q := make([]float32, 100)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
		q[i] = float32(rng.NormFloat64())
	}
	codes := make([]int8, 100)
	scale, n2 := quantize(codes, v)
	var maxErr, norm float64
	for i := range v {
		maxErr = math.Max(maxErr, math.Abs(float64(v[i])-float64(scale)*float64(codes[i])))
		norm += float64(scale*float32(codes[i])) * float64(scale*float32(codes[i]))
	}
	if maxErr > float64(scale)/2+1e-6 {
		t.Errorf("max decode error %v > scale/2 = %v", maxErr, scale/2)
	}
	if math.Abs(norm-float64(n2)) > 1e-3*norm {
		t.Errorf("decoded norm %v, quantize says %v", norm, n2)
	}
	if got, want := float64(dotI8(q, codes)*scale), refDot(q, v); math.Abs(got-want) > 0.5 {
		t.Errorf("quantised dot %v, exact %v", got, want)
	}
	scale, n2 = quantize(codes, make([]float32, 100))
	if scale != 0 || n2 != 0 || slices.ContainsFunc(codes, func(c int8) bool { return c != 0 }) {
		t.Errorf("zero vector: scale %v norm %v", scale, n2)
	}
}

func TestConcurrentAddSearchDelete(t *testing.T) {
	d := unitSet()
	n := min(len(d.vecs), testSize(12000))
	if raceEnabled {
		n = min(n, 2000)
	}
	const writers, searchers = 3, 3
	h, err := New(Options{Dim: dim, Metric: Cosine, Seed: 4, ExactBelow: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// Seed part of the index, then insert the rest while searching.
	first := n / 4
	for i := 0; i < first; i++ {
		if err := h.Add(uint64(i), d.vecs[i], metaFor(i)); err != nil {
			t.Fatal(err)
		}
	}
	var (
		wg       sync.WaitGroup
		done     atomic.Bool
		searches atomic.Int64
		failed   atomic.Value
		next     atomic.Int64
	)
	next.Store(int64(first))
	fail := func(err error) { failed.CompareAndSwap(nil, err) }
	var writersWG sync.WaitGroup
	for w := 0; w < writers; w++ {
		writersWG.Add(1)
		go func() {
			defer writersWG.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := h.Add(uint64(i), d.vecs[i], metaFor(i)); err != nil {
					fail(err)
					return
				}
			}
		}()
	}
	// Deleter: ids divisible by 7 among the seeded part.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < first; i += 7 {
			if !h.Delete(uint64(i)) {
				fail(fmt.Errorf("Delete(%d) = false", i))
				return
			}
		}
	}()
	for s := 0; s < searchers; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for qi := 0; !done.Load(); qi++ {
				q := d.queries[qi%len(d.queries)]
				var filter func(uint64, Meta) bool
				if qi%3 == 0 {
					filter = func(_ uint64, m Meta) bool { return m["parity"] == "odd" }
				}
				res, err := h.Search(q, topK, SearchOptions{Filter: filter})
				if err != nil {
					fail(err)
					return
				}
				searches.Add(1)
				for j, r := range res {
					if r.ID >= uint64(n) || (filter != nil && r.ID%2 == 0) {
						fail(fmt.Errorf("bad result id %d (filter %v)", r.ID, filter != nil))
						return
					}
					if j > 0 && r.Score > res[j-1].Score {
						fail(fmt.Errorf("results out of order: %v", res))
						return
					}
				}
			}
		}()
	}
	writersWG.Wait()
	done.Store(true)
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(err)
	}
	deleted := func(i int) bool { return i < first && i%7 == 0 }
	wantLen := n
	for i := 0; i < first; i++ {
		if deleted(i) {
			wantLen--
		}
	}
	if h.Len() != wantLen {
		t.Fatalf("Len = %d, want %d", h.Len(), wantLen)
	}
	checkInDegrees(t, h)
	want := truths(Cosine, d.vecs[:n], d.queries, topK, func(i int) bool { return !deleted(i) })
	got := searchAll(t, h, d.queries, topK, SearchOptions{Ef: efCheck})
	r := recallOf(got, want)
	t.Logf("%d searches during the build; final recall@%d=%.4f over %d items", searches.Load(), topK, r, h.Len())
	if r < 0.9 {
		t.Errorf("recall after concurrent build = %.4f, want >= 0.9", r)
	}
}

func TestExactBelow(t *testing.T) {
	d := makeDataset(3, 500, 20, 32, 5, false)
	for _, m := range []Metric{Cosine, Dot, L2} {
		h, err := New(Options{Dim: 32, Metric: m})
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range d.vecs {
			if err := h.Add(uint64(i), v, nil); err != nil {
				t.Fatal(err)
			}
		}
		want := truths(m, d.vecs, d.queries, 5, nil)
		got := searchAll(t, h, d.queries, 5, SearchOptions{Ef: 1})
		for i := range want {
			for j := range want[i] {
				if got[i][j].ID != want[i][j] {
					t.Fatalf("%s query %d: exact scan %v, brute force %v", m, i, got[i], want[i])
				}
			}
		}
	}
}

func TestSmallAndEdgeCases(t *testing.T) {
	h, err := New(Options{Dim: 3, Metric: L2, ExactBelow: -1})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := h.Search([]float32{1, 2, 3}, 5, SearchOptions{}); err != nil || len(res) != 0 {
		t.Fatalf("empty index: %v, %v", res, err)
	}
	vecs := [][]float32{{0, 0, 0}, {1, 0, 0}, {0, 2, 0}, {0, 0, 3}}
	for i, v := range vecs {
		if err := h.Add(uint64(100+i), v, Meta{"i": strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := h.Search([]float32{0.9, 0, 0}, 10, SearchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 4 || res[0].ID != 101 || res[1].ID != 100 {
		t.Fatalf("graph search over 4 items: %v", res)
	}
	if math.Abs(float64(res[0].Score)+0.01) > 1e-6 {
		t.Errorf("L2 score = %v, want -0.01", res[0].Score)
	}
	// Meta is copied: changing the caller's map does not reach the index.
	m := Meta{"k": "v"}
	if err := h.Add(7, []float32{5, 5, 5}, m); err != nil {
		t.Fatal(err)
	}
	m["k"] = "changed"
	res, _ = h.Search([]float32{5, 5, 5}, 1, SearchOptions{Filter: func(_ uint64, m Meta) bool { return m["k"] == "v" }})
	if len(res) != 1 || res[0].ID != 7 {
		t.Fatalf("meta filter after caller mutation: %v", res)
	}
	// Delete everything: searches return nothing, and adding works again.
	for _, id := range []uint64{100, 101, 102, 103, 7} {
		if !h.Delete(id) {
			t.Fatalf("Delete(%d) = false", id)
		}
	}
	if res, _ := h.Search([]float32{1, 0, 0}, 3, SearchOptions{}); len(res) != 0 || h.Len() != 0 {
		t.Fatalf("all deleted: %v, Len %d", res, h.Len())
	}
	if err := h.Add(100, []float32{1, 1, 1}, nil); err != nil {
		t.Fatal(err)
	}
	if res, _ := h.Search([]float32{1, 0, 0}, 3, SearchOptions{}); len(res) != 1 || res[0].ID != 100 {
		t.Fatalf("after re-add: %v", res)
	}
	if res, _ := h.Search([]float32{1, 0, 0}, 0, SearchOptions{}); len(res) != 0 {
		t.Fatalf("k=0: %v", res)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Search([]float32{1, 0, 0}, 1, SearchOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("search after Close: %v", err)
	}
	if err := h.Add(1, []float32{1, 0, 0}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("add after Close: %v", err)
	}
	if h.Delete(100) {
		t.Fatal("Delete after Close = true")
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestValidation(t *testing.T) {
	for _, opt := range []Options{
		{Dim: 0},
		{Dim: -1},
		{Dim: MaxDim + 1},
		{Dim: 4, Metric: 7},
		{Dim: 4, M: 1},
		{Dim: 4, M: 1000},
		{Dim: 4, EfConstruction: -1},
		{Dim: 4, EfSearch: -5},
	} {
		if _, err := New(opt); err == nil {
			t.Errorf("New(%+v) succeeded", opt)
		}
	}
	h, err := New(Options{Dim: 4})
	if err != nil {
		t.Fatal(err)
	}
	got := h.Options()
	if got.M != 16 || got.EfConstruction != 200 || got.EfSearch != 64 || got.ExactBelow != 1000 || got.Metric != Cosine {
		t.Errorf("defaults: %+v", got)
	}
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	for _, tc := range []struct {
		vec  []float32
		want error
	}{
		{[]float32{1, 2, 3}, ErrDim},
		{[]float32{1, 2, 3, 4, 5}, ErrDim},
		{[]float32{1, nan, 3, 4}, ErrNotFinite},
		{[]float32{1, 2, inf, 4}, ErrNotFinite},
		{[]float32{0, 0, 0, 0}, ErrZero},
	} {
		err := h.Add(9, tc.vec, nil)
		if !errors.Is(err, tc.want) {
			t.Errorf("Add(%v) = %v, want %v", tc.vec, err, tc.want)
		}
		if err != nil && !bytes.Contains([]byte(err.Error()), []byte("id 9")) {
			t.Errorf("error %q does not name the id", err)
		}
		if _, err := h.Search(tc.vec, 1, SearchOptions{}); !errors.Is(err, tc.want) {
			t.Errorf("Search(%v) = %v, want %v", tc.vec, err, tc.want)
		}
	}
	if err := h.Add(1, []float32{1, 0, 0, 0}, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Add(1, []float32{0, 1, 0, 0}, nil); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate Add: %v", err)
	}
	if _, err := h.Search([]float32{1, 0, 0, 0}, -1, SearchOptions{}); err == nil {
		t.Error("negative k accepted")
	}
	// Zero vectors are fine under Dot and L2.
	for _, m := range []Metric{Dot, L2} {
		h, _ := New(Options{Dim: 2, Metric: m})
		if err := h.Add(1, []float32{0, 0}, nil); err != nil {
			t.Errorf("%s: zero vector rejected: %v", m, err)
		}
	}
	// AddBatch validates the whole batch before inserting anything.
	h2, _ := New(Options{Dim: 2})
	err = h2.AddBatch([]uint64{1, 2, 3}, [][]float32{{1, 0}, {0, 1}, {nan, 1}}, nil, 2)
	if !errors.Is(err, ErrNotFinite) || h2.Len() != 0 {
		t.Errorf("AddBatch with a NaN: err %v, Len %d", err, h2.Len())
	}
	err = h2.AddBatch([]uint64{1, 2, 1}, [][]float32{{1, 0}, {0, 1}, {1, 1}}, nil, 2)
	if !errors.Is(err, ErrDuplicate) || h2.Len() != 0 {
		t.Errorf("AddBatch with a repeated id: err %v, Len %d", err, h2.Len())
	}
	if err := h2.AddBatch([]uint64{1}, [][]float32{{1, 0}, {0, 1}}, nil, 2); err == nil {
		t.Error("AddBatch with mismatched lengths accepted")
	}
}

func TestParseMetric(t *testing.T) {
	for _, m := range []Metric{Cosine, Dot, L2} {
		got, err := ParseMetric(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMetric(%q) = %v, %v", m.String(), got, err)
		}
	}
	if m, err := ParseMetric(" L2 "); err != nil || m != L2 {
		t.Errorf("ParseMetric(\" L2 \") = %v, %v", m, err)
	}
	if _, err := ParseMetric("manhattan"); err == nil {
		t.Error("ParseMetric(manhattan) succeeded")
	}
	if s := Metric(9).String(); s != "Metric(9)" {
		t.Errorf("String of unknown metric = %q", s)
	}
}

// TestPortableKernelsIndex runs a small index end to end on the pure-Go
// kernels, as on a CPU without AVX2.
func TestPortableKernelsIndex(t *testing.T) {
	saved := useAsm
	useAsm = false
	defer func() { useAsm = saved }()
	d := makeDataset(21, 3000, 50, 64, 20, false)
	h := build(t, Options{Dim: 64, Metric: L2, ExactBelow: -1}, d.vecs, nil)
	r := recallOf(searchAll(t, h, d.queries, topK, SearchOptions{Ef: 64}), truths(L2, d.vecs, d.queries, topK, nil))
	if r < 0.95 {
		t.Errorf("recall on portable kernels = %.4f", r)
	}
}

func TestMemoryBytes(t *testing.T) {
	h, _ := New(Options{Dim: 64})
	empty := h.MemoryBytes()
	d := makeDataset(2, 2000, 1, 64, 4, false)
	for i, v := range d.vecs {
		if err := h.Add(uint64(i), v, Meta{"source": "doc"}); err != nil {
			t.Fatal(err)
		}
	}
	m := h.MemoryBytes()
	if m <= empty || m < 2000*64*4+2000*33*4 {
		t.Fatalf("MemoryBytes = %d (empty %d), below vectors + layer-0 links", m, empty)
	}
	if m > 4*(2000*64*4+2000*33*4)+(1<<20) {
		t.Fatalf("MemoryBytes = %d, implausibly large", m)
	}
}

// Concurrent inserts into a small graph could leave a node with no link
// pointing at it: an insert that reached a node before that node had its
// lists on the lower layers linked only to it, or added itself to a list
// the node then overwrote; and when two close items went in at once
// neither saw the other, and a shared neighbour's pruning dropped one of
// them as "covered" by the other. Every node must be reachable on the
// bottom layer from the entry point, and (nearly) every item must find
// itself.
func TestConcurrentInsertKeepsEveryNodeReachable(t *testing.T) {
	const n = 300
	for round := range 20 {
		h, vecs := buildRandom(t, n, 0, round, 7, 8)
		checkInDegrees(t, h)
		seen := make([]bool, n)
		seen[h.ep] = true
		for stack := []uint32{h.ep}; len(stack) > 0; {
			x := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			lst := h.linkList(x, 0)
			for _, y := range lst[1 : 1+lst[0]] {
				if !seen[y] {
					seen[y] = true
					stack = append(stack, y)
				}
			}
		}
		for node, ok := range seen {
			if !ok {
				t.Fatalf("round %d: node %d (id %d) is unreachable on the bottom layer", round, node, h.ext[node])
			}
		}
		found := 0
		for i, v := range vecs {
			if res, err := h.Search(v, 1, SearchOptions{}); err == nil && len(res) == 1 && res[0].ID == uint64(i) {
				found++
			}
		}
		if found < n-1 {
			t.Fatalf("round %d: %d of %d items find themselves", round, found, n)
		}
		h.Close()
	}
}

// With few links per node (M=4) pruning is heavy, and a node whose
// neighbours all drop their link back to it can never be found. Each node
// but the entry point must keep an in-link on the bottom layer, whether
// items go in one at a time or eight at once.
func TestPruningNeverOrphansANode(t *testing.T) {
	const n = 300
	for _, workers := range []int{1, 8} {
		for round := range 20 {
			h, _ := buildRandom(t, n, 4, round, 11, workers)
			checkInDegrees(t, h)
			for x := range n {
				if uint32(x) != h.ep && h.indeg[x] == 0 {
					t.Fatalf("%d workers, round %d: node %d (id %d) has no in-link on the bottom layer", workers, round, x, h.ext[x])
				}
			}
			h.Close()
		}
	}
}

// buildRandom indexes n normal vectors of width 16 (ids 0..n-1, random
// stream (round, stream)) under L2 with M (0: the default), the layer
// seed round+1, on workers goroutines, always as a graph.
func buildRandom(t *testing.T, n, m, round int, stream uint64, workers int) (*HNSW, [][]float32) {
	t.Helper()
	const d = 16
	h, err := New(Options{Dim: d, Metric: L2, M: m, ExactBelow: -1, Seed: int64(round + 1)})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]uint64, n)
	vecs := make([][]float32, n)
	r := rand.New(rand.NewPCG(uint64(round), stream))
	for i := range vecs {
		ids[i] = uint64(i)
		vecs[i] = make([]float32, d)
		for j := range vecs[i] {
			vecs[i][j] = float32(r.NormFloat64())
		}
	}
	if err := h.AddBatch(ids, vecs, nil, workers); err != nil {
		t.Fatal(err)
	}
	return h, vecs
}

// checkInDegrees fails unless each node's in-degree count equals the
// number of bottom-layer lists that hold it.
func checkInDegrees(t *testing.T, h *HNSW) {
	t.Helper()
	n := int(h.count.Load())
	indeg := make([]int32, n)
	for x := range n {
		lst := h.linkList(uint32(x), 0)
		for _, y := range lst[1 : 1+lst[0]] {
			indeg[y]++
		}
	}
	for x := range n {
		if indeg[x] != h.indeg[x] {
			t.Fatalf("node %d: in-degree count %d, %d lists hold it", x, h.indeg[x], indeg[x])
		}
	}
}
