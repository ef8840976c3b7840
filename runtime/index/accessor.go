package index

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
