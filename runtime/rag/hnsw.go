package rag

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/llmrt/llmrt/internal/atomicfile"
	"github.com/llmrt/llmrt/runtime/index"
)

// hnswIndex is a collection's vector index: runtime/index's HNSW in
// memory, saved as a snapshot (graph.hnsw) when the collection closes
// cleanly. The collection's chunk log and vectors.bin stay the commit
// point: after a crash the dirty marker makes the collection rebuild the
// index from vectors.bin, and a snapshot that fails its checksum or
// disagrees with the log is rebuilt the same way.
type hnswIndex struct {
	path string
	h    *index.HNSW
}

const graphFile = "graph.hnsw"

func openHNSWIndex(_ context.Context, dir string, m Manifest) (vectorIndex, error) {
	metric, err := index.ParseMetric(m.Metric)
	if err != nil {
		return nil, err
	}
	opt := index.Options{Dim: m.Dim, Metric: metric, M: m.Index.M, EfConstruction: m.Index.EfConstruction, EfSearch: m.Index.EfSearch}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p := filepath.Join(dir, graphFile)
	if f, err := os.Open(p); err == nil {
		h, rerr := index.Read(bufio.NewReaderSize(f, 1<<20))
		f.Close()
		if rerr == nil && h.Options().Dim == m.Dim && h.Options().Metric == metric {
			return &hnswIndex{path: p, h: h}, nil
		}
		if rerr == nil {
			h.Close()
		}
		// A snapshot that does not load is derived data: start empty,
		// and the collection rebuilds it from vectors.bin (its length
		// disagrees with the log).
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	h, err := index.New(opt)
	if err != nil {
		return nil, err
	}
	return &hnswIndex{path: p, h: h}, nil
}

func (x *hnswIndex) Add(ctx context.Context, ids []uint64, vecs [][]float32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return x.h.AddBatch(ids, vecs, nil, runtime.NumCPU())
}

func (x *hnswIndex) Delete(_ context.Context, ids []uint64) error {
	for _, id := range ids {
		x.h.Delete(id)
	}
	return nil
}

func (x *hnswIndex) Search(ctx context.Context, q []float32, k int) ([]scored, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// A few extra candidates, then a stable order (score, then id), so
	// that ties resolve the same way whatever order the graph was built in.
	rs, err := x.h.Search(q, k+8, index.SearchOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]scored, len(rs))
	for i, r := range rs {
		out[i] = scored{r.ID, r.Score}
	}
	sortScored(out)
	if len(out) > k {
		out = out[:k]
	}
	return out, nil
}

func (x *hnswIndex) Len() int           { return x.h.Len() }
func (x *hnswIndex) MemoryBytes() int64 { return x.h.MemoryBytes() }

// Close saves the snapshot atomically (temp file, fsync, rename) and
// frees the index.
func (x *hnswIndex) Close() error {
	defer x.h.Close()
	err := atomicfile.Write(x.path, func(f *os.File) error {
		w := bufio.NewWriterSize(f, 1<<20)
		if _, err := x.h.WriteTo(w); err != nil {
			return err
		}
		return w.Flush()
	})
	if err != nil {
		return fmt.Errorf("save index snapshot: %w", err)
	}
	return nil
}
