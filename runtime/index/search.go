package index

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// Search returns the k items most similar to q, best first (fewer if fewer
// are live or admitted by the filter). It fails on a query of the wrong
// width, with NaN or Inf, or all zeros under Cosine.
func (h *HNSW) Search(q []float32, k int, opt SearchOptions) ([]Result, error) {
	if k < 0 {
		return nil, fmt.Errorf("index: search: negative k %d", k)
	}
	n2, err := h.checkVec(q)
	if err != nil {
		return nil, fmt.Errorf("index: search: query: %w", err)
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed.Load() {
		return nil, ErrClosed
	}
	live := h.live.Load()
	if k == 0 || live == 0 {
		return []Result{}, nil
	}
	s := h.getSearcher()
	defer h.putSearcher(s)
	h.prepare(s.q, q, n2)
	if h.opt.ExactBelow > 0 && live < int64(h.opt.ExactBelow) {
		return h.exact(s, k, opt.Filter), nil
	}
	ef := opt.Ef
	if ef <= 0 {
		ef = h.opt.EfSearch
	}
	ef = max(ef, k)

	s.quant = h.opt.Quantize
	if s.quant {
		s.qn = dot(s.q, s.q)
	}
	ep, maxL := h.entry()
	if ep == noNode {
		// The first insert has allocated its node but not yet linked it.
		return h.exact(s, k, opt.Filter), nil
	}
	cur, curD := ep, h.dist(s, ep)
	for l := maxL; l > 0; l-- {
		cur, curD = h.greedy(s, cur, curD, l)
	}
	s.checked, s.filter = true, opt.Filter
	budget := 0
	if opt.Filter != nil {
		budget = max(int(h.count.Load())/2, 2*ef)
	}
	if !h.searchLayer(s, cur, curD, ef, 0, budget) {
		return h.exact(s, k, opt.Filter), nil
	}
	res := s.res.sortedAsc(s.sorted)
	s.sorted = res
	if s.quant {
		// Re-rank the ef best by code distance with the float32 vectors.
		ids := s.ids[:0]
		for _, c := range res {
			ids = append(ids, c.id)
		}
		s.ids = ids
		s.dbuf = h.distBatchF(s.q, ids, s.dbuf)
		for i := range res {
			res[i].d = s.dbuf[i]
		}
		sortCandsLarge(res)
	}
	k = min(k, len(res))
	out := make([]Result, k)
	for i, c := range res[:k] {
		out[i] = Result{ID: h.ext[c.id], Score: h.score(c.d)}
	}
	return out, nil
}

// exact scans every live node with float32 distances.
func (h *HNSW) exact(s *searcher, k int, filter func(uint64, Meta) bool) []Result {
	n := int(h.count.Load())
	res := s.res[:0]
	for i := 0; i < n; i++ {
		id := uint32(i)
		if h.isDead(id) {
			continue
		}
		d := h.distF(s.q, id)
		if res.len() >= k && d >= res.top().d {
			continue
		}
		if filter != nil && !filter(h.ext[id], h.metas[id]) {
			continue
		}
		res.push(cand{d, id})
		if res.len() > k {
			res.pop()
		}
	}
	sorted := res.sortedAsc(s.sorted)
	s.res, s.sorted = res, sorted
	out := make([]Result, len(sorted))
	for i, c := range sorted {
		out[i] = Result{ID: h.ext[c.id], Score: h.score(c.d)}
	}
	return out
}

// AddBatch inserts many items with up to workers goroutines (0 means
// GOMAXPROCS). metas may be nil or as long as ids. Every vector is
// validated first, and ids are checked for duplicates within the batch and
// against the index, so a bad input fails the batch before anything is
// inserted; an id added concurrently by someone else can still fail its
// own insert later, and then the rest of the batch is still inserted and
// the errors are returned joined.
func (h *HNSW) AddBatch(ids []uint64, vecs [][]float32, metas []Meta, workers int) error {
	if len(vecs) != len(ids) || (metas != nil && len(metas) != len(ids)) {
		return fmt.Errorf("index: add batch: %d ids, %d vectors, %d metas", len(ids), len(vecs), len(metas))
	}
	norms := make([]float64, len(ids))
	seen := make(map[uint64]int, len(ids))
	for i, v := range vecs {
		n2, err := h.checkVec(v)
		if err != nil {
			return fmt.Errorf("index: add batch: item %d (id %d): %w", i, ids[i], err)
		}
		norms[i] = n2
		if j, dup := seen[ids[i]]; dup {
			return fmt.Errorf("index: add batch: items %d and %d: id %d: %w", j, i, ids[i], ErrDuplicate)
		}
		seen[ids[i]] = i
	}
	h.allocMu.Lock()
	for i, id := range ids {
		if _, dup := h.idmap[id]; dup {
			h.allocMu.Unlock()
			return fmt.Errorf("index: add batch: item %d: id %d: %w", i, id, ErrDuplicate)
		}
	}
	h.allocMu.Unlock()
	if h.closed.Load() {
		return ErrClosed
	}
	h.ensureCapacity(int(h.count.Load()) + len(ids))

	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, len(ids))
	var (
		next atomic.Int64
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) {
					return
				}
				var m Meta
				if metas != nil {
					m = metas[i]
				}
				if err := h.add(ids[i], vecs[i], norms[i], m); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("index: add batch: item %d: %w", i, err))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
