package rag

import (
	"context"
	"fmt"
	"math"
	"sync"
)

// vectorIndex is what a collection needs from a vector index. Scores are
// similarities: higher is better. runtime/index satisfies it through
// hnswIndex; flatIndex is the exact in-memory fallback.
type vectorIndex interface {
	Add(ctx context.Context, ids []uint64, vecs [][]float32) error
	Delete(ctx context.Context, ids []uint64) error
	Search(ctx context.Context, q []float32, k int) ([]scored, error)
	Len() int
	MemoryBytes() int64
	Close() error
}

// Metrics a collection can use.
const (
	Cosine = "cosine"
	Dot    = "dot"
	L2     = "l2"
)

func validMetric(m string) error {
	switch m {
	case Cosine, Dot, L2:
		return nil
	}
	return fmt.Errorf("unknown metric %q (want cosine, dot or l2)", m)
}

// similarity scores a against b under metric: cosine similarity, dot
// product, or the negated squared L2 distance.
func similarity(metric string, a, b []float32) float32 {
	var dot, na, nb, d2 float64
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		dot += x * y
		na += x * x
		nb += y * y
		d2 += (x - y) * (x - y)
	}
	switch metric {
	case Dot:
		return float32(dot)
	case L2:
		return float32(-d2)
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return float32(dot / math.Sqrt(na*nb))
}

// flatIndex searches exhaustively in memory. It keeps nothing on disk: a
// collection using it rebuilds it from vectors.bin on open.
type flatIndex struct {
	metric string
	dim    int
	mu     sync.RWMutex
	vecs   map[uint64][]float32
}

func newFlatIndex(metric string, dim int) *flatIndex {
	return &flatIndex{metric: metric, dim: dim, vecs: map[uint64][]float32{}}
}

func (x *flatIndex) Add(_ context.Context, ids []uint64, vecs [][]float32) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i, id := range ids {
		if len(vecs[i]) != x.dim {
			return fmt.Errorf("vector of chunk %d has dimension %d, want %d", id, len(vecs[i]), x.dim)
		}
		x.vecs[id] = vecs[i]
	}
	return nil
}

func (x *flatIndex) Delete(_ context.Context, ids []uint64) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, id := range ids {
		delete(x.vecs, id)
	}
	return nil
}

func (x *flatIndex) Search(ctx context.Context, q []float32, k int) ([]scored, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if len(q) != x.dim {
		return nil, fmt.Errorf("query has dimension %d, want %d", len(q), x.dim)
	}
	out := make([]scored, 0, len(x.vecs))
	for id, v := range x.vecs {
		out = append(out, scored{id, similarity(x.metric, q, v)})
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sortScored(out)
	if len(out) > k {
		out = out[:k]
	}
	return out, nil
}

func (x *flatIndex) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.vecs)
}

func (x *flatIndex) MemoryBytes() int64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return int64(len(x.vecs)) * int64(4*x.dim+48)
}

func (x *flatIndex) Close() error { return nil }
