package index

import "slices"

// Has reports whether id is live (added and not deleted).
func (h *HNSW) Has(id uint64) bool {
	h.allocMu.Lock()
	_, ok := h.idmap[id]
	h.allocMu.Unlock()
	return ok
}

// Get returns copies of a live item's stored vector (unit length under
// Cosine) and metadata.
func (h *HNSW) Get(id uint64) ([]float32, Meta, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.allocMu.Lock()
	node, ok := h.idmap[id]
	h.allocMu.Unlock()
	if !ok || h.closed.Load() {
		return nil, nil, false
	}
	vec := append([]float32(nil), h.vec(node)...)
	var meta Meta
	if m := h.metas[node]; m != nil {
		meta = make(Meta, len(m))
		for k, v := range m {
			meta[k] = v
		}
	}
	return vec, meta, true
}

// IDs returns the live ids, ascending.
func (h *HNSW) IDs() []uint64 {
	h.allocMu.Lock()
	out := make([]uint64, 0, len(h.idmap))
	for id := range h.idmap {
		out = append(out, id)
	}
	h.allocMu.Unlock()
	slices.Sort(out)
	return out
}

// Tombstones is the number of deleted items whose nodes the graph still
// holds (see Delete); Store.Compact drops them.
func (h *HNSW) Tombstones() int { return int(h.count.Load()) - h.Len() }

// compacted returns a new index holding only h's live items, with their
// vectors and metadata, in insertion order.
func (h *HNSW) compacted() (*HNSW, error) {
	h.mutMu.Lock()
	h.mu.RLock()
	if h.closed.Load() {
		h.mu.RUnlock()
		h.mutMu.Unlock()
		return nil, ErrClosed
	}
	n := int(h.count.Load())
	var ids []uint64
	var vecs [][]float32
	var metas []Meta
	for i := 0; i < n; i++ {
		node := uint32(i)
		if h.isDead(node) {
			continue
		}
		ids = append(ids, h.ext[node])
		vecs = append(vecs, append([]float32(nil), h.vec(node)...))
		metas = append(metas, h.metas[node])
	}
	h.mu.RUnlock()
	h.mutMu.Unlock()
	c, err := New(h.opt)
	if err != nil {
		return nil, err
	}
	if err := c.AddBatch(ids, vecs, metas, 0); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
