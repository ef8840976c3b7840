package main

import (
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/coder/hnsw"

	"github.com/llmrt/llmrt/runtime/index"
)

// annIndex is one implementation under test.
type annIndex interface {
	// build inserts base[i] under id i, in order. It may stop early once
	// deadline (if non-zero) has passed and returns how many it inserted.
	build(base [][]float32, deadline time.Time) (int, error)
	// search returns the ids of the k nearest to q at beam width ef,
	// appended to dst.
	search(dst []int, q []float32, k, ef int) ([]int, error)
}

// ours is llmrt's runtime/index.
type ours struct {
	idx     *index.HNSW
	workers int
}

func newOurs(dim int, metric index.Metric, m, efc int, seed int64, workers int) (*ours, error) {
	idx, err := index.New(index.Options{
		Dim: dim, Metric: metric, M: m, EfConstruction: efc, Seed: seed,
		// Always walk the graph, also for small -n: this benchmarks HNSW.
		ExactBelow: -1,
	})
	if err != nil {
		return nil, err
	}
	return &ours{idx: idx, workers: workers}, nil
}

func (o *ours) build(base [][]float32, deadline time.Time) (int, error) {
	if o.workers > 1 {
		ids := make([]uint64, len(base))
		for i := range ids {
			ids[i] = uint64(i)
		}
		return len(base), o.idx.AddBatch(ids, base, nil, o.workers)
	}
	for i, v := range base {
		if err := o.idx.Add(uint64(i), v, nil); err != nil {
			return i, err
		}
		if !deadline.IsZero() && i%1000 == 999 && time.Now().After(deadline) {
			return i + 1, nil
		}
	}
	return len(base), nil
}

func (o *ours) search(dst []int, q []float32, k, ef int) ([]int, error) {
	res, err := o.idx.Search(q, k, index.SearchOptions{Ef: ef})
	if err != nil {
		return dst, err
	}
	for _, r := range res {
		dst = append(dst, int(r.ID))
	}
	return dst, nil
}

// coder is github.com/coder/hnsw. It uses one EfSearch field for both
// insertion and search: efConstruction while building, then each ef.
type coder struct {
	g   *hnsw.Graph[int]
	efc int
}

func newCoder(m, efc int, seed int64) *coder {
	g := hnsw.NewGraph[int]()
	g.M = m
	// coder's Ml is the probability of rising a layer; 1/M gives the layer
	// sizes of hnswlib's mL = 1/ln(M) (P(level >= l) = M^-l).
	g.Ml = 1 / float64(m)
	g.Distance = hnsw.EuclideanDistance
	g.EfSearch = efc
	g.Rng = rand.New(rand.NewSource(seed))
	return &coder{g: g, efc: efc}
}

func (c *coder) build(base [][]float32, deadline time.Time) (int, error) {
	c.g.EfSearch = c.efc
	for i, v := range base {
		c.g.Add(hnsw.MakeNode(i, v))
		if !deadline.IsZero() && i%1000 == 999 && time.Now().After(deadline) {
			return i + 1, nil
		}
	}
	return len(base), nil
}

func (c *coder) search(dst []int, q []float32, k, ef int) ([]int, error) {
	c.g.EfSearch = ef
	for _, n := range c.g.Search(q, k) {
		dst = append(dst, n.Key)
	}
	return dst, nil
}

// exactGT returns, per query, the k nearest of base by exact squared L2,
// computed like gen_data.c: double-precision sums rounded to float32, ties
// broken by the smaller id. It runs on all cores (it is never timed).
func exactGT(base, queries [][]float32, k int) [][]int32 {
	k = min(k, len(base))
	out := make([][]int32, len(queries))
	var wg sync.WaitGroup
	next := make(chan int, len(queries))
	for i := range queries {
		next <- i
	}
	close(next)
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			type cand struct {
				d  float32
				id int32
			}
			less := func(a, b cand) bool { return a.d < b.d || (a.d == b.d && a.id < b.id) }
			top := make([]cand, 0, k+1)
			for qi := range next {
				x := queries[qi]
				top = top[:0]
				for i, y := range base {
					var d float64
					for j := range x {
						t := float64(x[j]) - float64(y[j])
						d += float64(t * t)
					}
					c := cand{float32(d), int32(i)}
					if len(top) == k && !less(c, top[k-1]) {
						continue
					}
					if len(top) < k {
						top = append(top, c)
					} else {
						top[k-1] = c
					}
					for p := len(top) - 1; p > 0 && less(top[p], top[p-1]); p-- {
						top[p], top[p-1] = top[p-1], top[p]
					}
				}
				ids := make([]int32, len(top))
				for i, c := range top {
					ids[i] = c.id
				}
				out[qi] = ids
			}
		}()
	}
	wg.Wait()
	return out
}

// recallAt returns the mean over queries of |found[q] ∩ gt[q][:k]| / k.
// Duplicate ids in found count once; ids beyond the first k found are
// ignored.
func recallAt(found [][]int, gt [][]int32, k int) float64 {
	if len(found) == 0 {
		return 0
	}
	var sum float64
	for q, f := range found {
		truth := gt[q][:min(k, len(gt[q]))]
		want := make(map[int]bool, len(truth))
		for _, id := range truth {
			want[int(id)] = true
		}
		hits := 0
		for _, id := range f[:min(k, len(f))] {
			if want[id] {
				hits++
				delete(want, id)
			}
		}
		sum += float64(hits) / float64(k)
	}
	return sum / float64(len(found))
}

// point is one ef of a sweep.
type point struct {
	Ef     int     `json:"ef"`
	Recall float64 `json:"recall_at_10"`
	QPS    float64 `json:"qps"`
}

// qpsAtRecall interpolates a sweep (in ascending ef) linearly for the QPS
// at recall r: between the last point below r and the first at or above
// it. If even the smallest ef reaches r, its QPS is returned with
// clamped=true (the true figure is at least that). If no ef reaches r,
// ok=false.
func qpsAtRecall(pts []point, r float64) (qps float64, clamped, ok bool) {
	s := append([]point(nil), pts...)
	sort.SliceStable(s, func(i, j int) bool { return s[i].Ef < s[j].Ef })
	for i, p := range s {
		if p.Recall < r {
			continue
		}
		if i == 0 {
			return p.QPS, true, true
		}
		a := s[i-1]
		if p.Recall == a.Recall {
			return p.QPS, false, true
		}
		f := (r - a.Recall) / (p.Recall - a.Recall)
		return a.QPS + f*(p.QPS-a.QPS), false, true
	}
	return math.NaN(), false, false
}

// sweepResult is one search measurement.
type sweepResult struct {
	point
	Reps     []float64 `json:"qps_reps"`
	LatUsAvg float64   `json:"mean_latency_us"`
}

// measure runs every query through idx at ef on this goroutine: one
// untimed warm-up pass, then reps timed passes; it reports the recall of
// the last pass and the best QPS.
func measure(idx annIndex, queries [][]float32, gt [][]int32, k, ef, reps int) (sweepResult, error) {
	found := make([][]int, len(queries))
	bufs := make([]int, len(queries)*k)
	pass := func() (time.Duration, error) {
		runtime.GC()
		t0 := time.Now()
		for i, q := range queries {
			r, err := idx.search(bufs[i*k:i*k:(i+1)*k], q, k, ef)
			if err != nil {
				return 0, err
			}
			found[i] = r
		}
		return time.Since(t0), nil
	}
	if _, err := pass(); err != nil {
		return sweepResult{}, err
	}
	res := sweepResult{point: point{Ef: ef}}
	best := time.Duration(math.MaxInt64)
	for i := 0; i < max(reps, 1); i++ {
		d, err := pass()
		if err != nil {
			return res, err
		}
		res.Reps = append(res.Reps, float64(len(queries))/d.Seconds())
		best = min(best, d)
	}
	res.QPS = float64(len(queries)) / best.Seconds()
	res.LatUsAvg = best.Seconds() * 1e6 / float64(len(queries))
	res.Recall = recallAt(found, gt, k)
	return res, nil
}

func fmtInt(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	s := fmt.Sprintf("%.0f", v)
	// thousands separators
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	var b []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	if neg {
		return "-" + string(b)
	}
	return string(b)
}
