package index

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Meta is the string metadata stored with an item and shown to filters.
type Meta map[string]string

// Result is one search hit. Score is a similarity, higher is better: the
// cosine similarity, the dot product, or the negated squared L2 distance.
type Result struct {
	ID    uint64
	Score float32
}

// SearchOptions tune one search.
type SearchOptions struct {
	// Ef is the beam width on the bottom layer: 0 means Options.EfSearch;
	// the effective value is max(Ef, k). Larger is slower and more exact.
	Ef int
	// Filter, if set, admits an item to the results. It runs during the
	// graph walk: rejected items still route the search but never enter the
	// result set, and the walk goes on until it holds Ef admitted items (or
	// the graph is exhausted), so a selective filter widens the search by
	// itself. When the walk has touched half the index without finishing,
	// the search switches to an exact scan of the admitted items. Filter is
	// called from the searching goroutine, at most once per item per search,
	// and must not modify the Meta it is given.
	Filter func(id uint64, m Meta) bool
}

const (
	nLocks    = 4096 // striped locks guarding neighbour lists
	lockMask  = nLocks - 1
	noNode    = math.MaxUint32
	maxNodes  = min(math.MaxUint32-1, math.MaxInt)
	minGrowth = 1024
	// A live node whose neighbour list at some layer is more than this
	// fraction tombstones is reconnected when one of them is deleted.
	repairFraction = 0.5
)

// HNSW is a hierarchical navigable small-world graph index. All methods are
// safe for concurrent use: searches run in parallel with each other and
// with Add, AddBatch and Delete; WriteTo waits for writers, not searchers.
//
// Internally items are dense uint32 node numbers in insertion order; all
// per-node data lives in flat slices indexed by node number, grown (by
// doubling, under the exclusive lock) when full. Neighbour lists are
// written under striped mutexes with atomic stores and read lock-free with
// atomic loads, so a reader sees either the old or the new id in each slot,
// both valid nodes.
type HNSW struct {
	opt    Options
	dim    int
	metric Metric
	m, m0  int     // list capacity on upper layers, on layer 0
	mL     float64 // level multiplier 1/ln(M)
	stride int     // m0 + 1: layer-0 list length including its count

	// mutMu is held shared by Add/AddBatch/Delete and exclusively by WriteTo
	// and Close, so a snapshot never sees a half-done insert.
	mutMu sync.RWMutex
	// mu guards the slice headers below: shared by everyone, exclusive only
	// to grow them (or to Close).
	mu       sync.RWMutex
	capacity int // nodes the slices hold

	allocMu   sync.Mutex        // guards idmap and node allocation
	idmap     map[uint64]uint32 // live external id -> node
	count     atomic.Uint32     // allocated nodes (live and deleted)
	live      atomic.Int64
	metaBytes atomic.Int64

	vecs   []float32  // capacity*dim; normalised under Cosine
	codes  []int8     // capacity*dim when Quantize
	scales []float32  // per-node code scale when Quantize
	qnorms []float32  // per-node squared norm of the decoded vector
	ext    []uint64   // external ids
	levels []uint8    // top layer of each node
	dead   []uint32   // tombstone bitset, atomic
	links0 []uint32   // capacity*stride: [count, ids...] per node on layer 0
	indeg  []int32    // per node: layer-0 lists holding it, atomic
	upper  [][]uint32 // per node: level*(m+1) for layers 1..level
	metas  []Meta

	epMu     sync.RWMutex
	ep       uint32 // entry point, noNode when empty
	maxLevel int    // its level, -1 when empty

	randMu sync.Mutex
	rng    *rand.Rand

	locks  [nLocks]sync.Mutex
	pool   sync.Pool
	closed atomic.Bool
}

// New returns an empty index. It validates opt (Dim in 1..MaxDim, a known
// metric, M in 2..256, non-negative ef values) and fills in the defaults.
func New(opt Options) (*HNSW, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &HNSW{
		opt:      opt,
		dim:      opt.Dim,
		metric:   opt.Metric,
		m:        opt.M,
		m0:       2 * opt.M,
		mL:       1 / math.Log(float64(opt.M)),
		idmap:    make(map[uint64]uint32),
		ep:       noNode,
		maxLevel: -1,
		rng:      rand.New(rand.NewPCG(uint64(opt.Seed), 0x9e3779b97f4a7c15)),
	}
	h.stride = h.m0 + 1
	h.pool.New = func() any { return &searcher{} }
	return h, nil
}

// Options returns the options in force, defaults filled in.
func (h *HNSW) Options() Options { return h.opt }

// Len returns the number of live (added and not deleted) items.
func (h *HNSW) Len() int { return int(h.live.Load()) }

// Close releases the index's memory. Later calls return ErrClosed (Delete
// returns false, Len 0 items remain). Close is idempotent.
func (h *HNSW) Close() error {
	h.mutMu.Lock()
	defer h.mutMu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed.Swap(true) {
		return nil
	}
	h.vecs, h.codes, h.scales, h.qnorms = nil, nil, nil, nil
	h.ext, h.levels, h.dead, h.links0, h.upper, h.metas = nil, nil, nil, nil, nil, nil
	h.indeg = nil
	h.capacity = 0
	h.allocMu.Lock()
	h.idmap = map[uint64]uint32{}
	h.count.Store(0)
	h.live.Store(0)
	h.allocMu.Unlock()
	return nil
}

// MemoryBytes estimates the heap the index holds: vectors, codes, graph
// links, ids, tombstones, the id map and metadata.
func (h *HNSW) MemoryBytes() int64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	b := int64(cap(h.vecs))*4 + int64(cap(h.codes)) + int64(cap(h.scales)+cap(h.qnorms))*4
	b += int64(cap(h.ext))*8 + int64(cap(h.levels)) + int64(cap(h.dead))*4
	b += int64(cap(h.links0))*4 + int64(cap(h.indeg))*4
	b += int64(cap(h.upper)) * 24
	n := int(h.count.Load())
	for i := 0; i < n && i < len(h.upper); i++ {
		b += int64(cap(h.upper[i])) * 4
	}
	b += int64(cap(h.metas))*8 + h.metaBytes.Load()
	b += h.live.Load() * 24 // id map entries and buckets
	b += nLocks * 8
	return b
}

// ---- node storage ----------------------------------------------------

// grow makes room for at least n nodes. The caller holds mu exclusively.
func (h *HNSW) grow(n int) {
	if n <= h.capacity {
		return
	}
	// Start with about 4 MiB worth of nodes (at least 16, at most 1024).
	first := max(16, min(minGrowth, (4<<20)/h.nodeBytes()))
	h.growTo(min(max(n, 2*h.capacity, first), maxNodes))
}

// nodeBytes is the fixed storage one node takes.
func (h *HNSW) nodeBytes() int {
	b := 4*h.dim + 4*h.stride + 4 + 8 + 1 + 8 + 24 + 8
	if h.opt.Quantize {
		b += h.dim + 8
	}
	return b
}

// growTo resizes the storage to exactly c nodes (c >= capacity).
func (h *HNSW) growTo(c int) {
	h.vecs = resize(h.vecs, c*h.dim)
	if h.opt.Quantize {
		h.codes = resize(h.codes, c*h.dim)
		h.scales = resize(h.scales, c)
		h.qnorms = resize(h.qnorms, c)
	}
	h.ext = resize(h.ext, c)
	h.levels = resize(h.levels, c)
	h.dead = resize(h.dead, (c+31)/32)
	h.links0 = resize(h.links0, c*h.stride)
	h.indeg = resize(h.indeg, c)
	h.upper = resize(h.upper, c)
	h.metas = resize(h.metas, c)
	h.capacity = c
}

func resize[T any](s []T, n int) []T {
	t := make([]T, n)
	copy(t, s)
	return t
}

// ensureCapacity grows the storage so n nodes fit. It takes mu itself.
func (h *HNSW) ensureCapacity(n int) {
	h.mu.RLock()
	ok := n <= h.capacity
	h.mu.RUnlock()
	if ok {
		return
	}
	h.mu.Lock()
	if !h.closed.Load() {
		h.grow(n)
	}
	h.mu.Unlock()
}

func (h *HNSW) vec(id uint32) []float32 {
	o := int(id) * h.dim
	return h.vecs[o : o+h.dim : o+h.dim]
}

func (h *HNSW) isDead(id uint32) bool {
	return atomic.LoadUint32(&h.dead[id>>5])&(1<<(id&31)) != 0
}

func (h *HNSW) setDead(id uint32) { atomic.OrUint32(&h.dead[id>>5], 1<<(id&31)) }

// linkList returns node id's neighbour list on layer l: element 0 is the
// count, then up to m0 (layer 0) or m ids. nil if the node is below l.
func (h *HNSW) linkList(id uint32, l int) []uint32 {
	if l == 0 {
		o := int(id) * h.stride
		return h.links0[o : o+h.stride : o+h.stride]
	}
	if l > int(h.levels[id]) {
		return nil
	}
	o := (l - 1) * (h.m + 1)
	return h.upper[id][o : o+h.m+1 : o+h.m+1]
}

func (h *HNSW) randomLevel() int {
	h.randMu.Lock()
	u := 1 - h.rng.Float64() // (0, 1]
	h.randMu.Unlock()
	return min(int(-math.Log(u)*h.mL), maxLevels-1)
}

func (h *HNSW) entry() (uint32, int) {
	h.epMu.RLock()
	ep, l := h.ep, h.maxLevel
	h.epMu.RUnlock()
	return ep, l
}

// ---- distances -------------------------------------------------------

// distF is the float32 distance (lower is closer) from a prepared query to
// a stored node.
func (h *HNSW) distF(q []float32, id uint32) float32 {
	v := h.vec(id)
	switch h.metric {
	case L2:
		return l2sq(q, v)
	case Cosine:
		return 1 - dot(q, v)
	}
	return -dot(q, v)
}

// dist is the searcher's distance: on int8 codes when it walks quantised.
func (h *HNSW) dist(s *searcher, id uint32) float32 {
	if !s.quant {
		return h.distF(s.q, id)
	}
	o := int(id) * h.dim
	d := dotI8(s.q, h.codes[o:o+h.dim:o+h.dim]) * h.scales[id]
	switch h.metric {
	case L2:
		return s.qn - 2*d + h.qnorms[id]
	case Cosine:
		return 1 - d
	}
	return -d
}

// distBatchF sets out[i] to the float32 distance from q to ids[i].
func (h *HNSW) distBatchF(q []float32, ids []uint32, out []float32) []float32 {
	if cap(out) < len(ids) {
		out = make([]float32, len(ids), max(len(ids), 2*h.m0))
	}
	out = out[:len(ids)]
	switch h.metric {
	case L2:
		l2sqBatch(q, h.vecs, ids, out)
	case Cosine:
		dotBatch(q, h.vecs, ids, out)
		for i, d := range out {
			out[i] = 1 - d
		}
	default:
		dotBatch(q, h.vecs, ids, out)
		for i, d := range out {
			out[i] = -d
		}
	}
	return out
}

// distBatch is the searcher's distance to each of ids, left in s.dbuf.
func (h *HNSW) distBatch(s *searcher, ids []uint32) []float32 {
	if !s.quant {
		s.dbuf = h.distBatchF(s.q, ids, s.dbuf)
		return s.dbuf
	}
	if cap(s.dbuf) < len(ids) {
		s.dbuf = make([]float32, len(ids), max(len(ids), 2*h.m0))
	}
	out := s.dbuf[:len(ids)]
	dotI8Batch(s.q, h.codes, ids, out)
	switch h.metric {
	case L2:
		for i, id := range ids {
			out[i] = s.qn - 2*out[i]*h.scales[id] + h.qnorms[id]
		}
	case Cosine:
		for i, id := range ids {
			out[i] = 1 - out[i]*h.scales[id]
		}
	default:
		for i, id := range ids {
			out[i] = -out[i] * h.scales[id]
		}
	}
	s.dbuf = out
	return out
}

// score turns a distance into the similarity callers see.
func (h *HNSW) score(d float32) float32 {
	if h.metric == Cosine {
		return 1 - d
	}
	return -d
}

// checkVec validates a vector's width and values; under Cosine it returns
// the squared norm for normalisation.
func (h *HNSW) checkVec(v []float32) (float64, error) {
	if len(v) != h.dim {
		return 0, fmt.Errorf("%w: got %d values, index has dim %d", ErrDim, len(v), h.dim)
	}
	var n2 float64
	for i, x := range v {
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("%w: element %d is %v", ErrNotFinite, i, x)
		}
		n2 += f * f
	}
	if h.metric == Cosine && n2 == 0 {
		return 0, ErrZero
	}
	return n2, nil
}

// prepare copies v into dst, normalised under Cosine.
func (h *HNSW) prepare(dst, v []float32, n2 float64) {
	copy(dst, v)
	if h.metric == Cosine {
		inv := 1 / math.Sqrt(n2)
		for i := range dst {
			dst[i] = float32(float64(dst[i]) * inv)
		}
	}
}

// ---- searcher scratch ------------------------------------------------

// searcher is per-goroutine scratch space, pooled per index.
type searcher struct {
	visited []uint16 // generation stamps, len >= capacity
	gen     uint16
	nvisit  int
	cands   minHeap
	res     maxHeap
	q       []float32 // prepared query
	qn      float32   // |q|^2, for quantised L2
	quant   bool      // walk on int8 codes
	checked bool      // results exclude tombstones and filter rejects
	filter  func(uint64, Meta) bool
	sorted  []cand
	sel     []cand
	tmp     []cand
	nbuf    []uint32 // an insert's chosen neighbours, layer after layer
	noff    []int    // where each layer starts in nbuf
	ids     []uint32
	dbuf    []float32
}

func (h *HNSW) getSearcher() *searcher {
	s := h.pool.Get().(*searcher)
	if cap(s.q) < h.dim {
		s.q = make([]float32, h.dim)
	}
	s.q = s.q[:h.dim]
	s.quant, s.checked, s.filter = false, false, nil
	return s
}

func (h *HNSW) putSearcher(s *searcher) {
	s.filter = nil
	h.pool.Put(s)
}

// resetVisited starts a new visited generation covering n nodes.
func (s *searcher) resetVisited(n int) {
	if len(s.visited) < n {
		s.visited = make([]uint16, n+n/4)
		s.gen = 0
	}
	s.gen++
	if s.gen == 0 {
		clear(s.visited)
		s.gen = 1
	}
	s.nvisit = 0
}

// ---- graph walk ------------------------------------------------------

// greedy walks layer l from cur to a local minimum.
func (h *HNSW) greedy(s *searcher, cur uint32, curD float32, l int) (uint32, float32) {
	for changed := true; changed; {
		changed = false
		lst := h.linkList(cur, l)
		if lst == nil {
			break
		}
		n := min(int(atomic.LoadUint32(&lst[0])), len(lst)-1)
		ids := s.ids[:0]
		for i := 1; i <= n; i++ {
			ids = append(ids, atomic.LoadUint32(&lst[i]))
		}
		s.ids = ids
		for j, d := range h.distBatch(s, ids) {
			if d < curD {
				cur, curD, changed = ids[j], d, true
			}
		}
	}
	return cur, curD
}

// admit reports whether node id may enter the result set.
func (h *HNSW) admit(s *searcher, id uint32) bool {
	if !s.checked {
		return true
	}
	if h.isDead(id) {
		return false
	}
	return s.filter == nil || s.filter(h.ext[id], h.metas[id])
}

// searchLayer is the beam search of layer l from ep. It leaves the (up to)
// ef closest admitted nodes in s.res. The walk stops only when the closest
// unexpanded candidate is farther than the worst of ef results held, so
// rejected or deleted nodes widen it rather than end it. With budget > 0
// it gives up (returns false) after visiting that many nodes.
func (h *HNSW) searchLayer(s *searcher, ep uint32, epD float32, ef, l, budget int) bool {
	s.resetVisited(h.capacity)
	s.cands = s.cands[:0]
	s.res = s.res[:0]
	s.visited[ep] = s.gen
	s.cands.push(cand{epD, ep})
	if h.admit(s, ep) {
		s.res.push(cand{epD, ep})
	}
	visited := s.visited
	gen := s.gen
	for s.cands.len() > 0 {
		c := s.cands.pop()
		if s.res.len() >= ef && c.d > s.res.top().d {
			break
		}
		if l == 0 && s.cands.len() > 0 {
			// The next expansion's list is probably the next candidate's.
			prefetch(unsafe.Pointer(&h.links0[int(s.cands.top().id)*h.stride]))
		}
		lst := h.linkList(c.id, l)
		if lst == nil {
			continue
		}
		n := min(int(atomic.LoadUint32(&lst[0])), len(lst)-1)
		if cap(s.ids) < n {
			s.ids = make([]uint32, 0, len(lst))
		}
		ids := s.ids[:n]
		cnt := 0
		for i := 1; i <= n; i++ {
			// Branch-free: store always, keep only unvisited.
			nb := atomic.LoadUint32(&lst[i])
			seen := visited[nb] == gen
			visited[nb] = gen
			ids[cnt] = nb
			if !seen {
				cnt++
			}
		}
		ids = ids[:cnt]
		if cnt == 0 {
			continue
		}
		s.nvisit += len(ids)
		for j, d := range h.distBatch(s, ids) {
			if s.res.len() < ef || d < s.res.top().d {
				nb := ids[j]
				s.cands.push(cand{d, nb})
				if h.admit(s, nb) {
					if s.res.len() < ef {
						s.res.push(cand{d, nb})
					} else {
						s.res.replaceTop(cand{d, nb})
					}
				}
			}
		}
		if budget > 0 && s.nvisit > budget {
			return false
		}
	}
	return true
}

// ---- insertion -------------------------------------------------------

// Add inserts vec under id with optional metadata (copied). It fails,
// saying which id and why, if vec has the wrong width, holds NaN or Inf, is
// all zeros under Cosine, or if id is already live (an id may be reused
// after Delete). Add is safe to call concurrently with everything else.
func (h *HNSW) Add(id uint64, vec []float32, meta Meta) error {
	n2, err := h.checkVec(vec)
	if err != nil {
		return fmt.Errorf("index: add id %d: %w", id, err)
	}
	return h.add(id, vec, n2, meta)
}

func (h *HNSW) add(id uint64, vec []float32, n2 float64, meta Meta) error {
	h.mutMu.RLock()
	defer h.mutMu.RUnlock()
	if h.closed.Load() {
		return ErrClosed
	}
	var mc Meta
	var mb int64
	if meta != nil {
		mc = make(Meta, len(meta))
		for k, v := range meta {
			mc[k] = v
			mb += int64(len(k) + len(v) + 32)
		}
	}
	level := h.randomLevel()

	h.mu.RLock()
	defer h.mu.RUnlock()
	node, err := h.alloc(id, vec, n2, mc, level)
	if err != nil {
		return err
	}
	h.metaBytes.Add(mb)
	s := h.getSearcher()
	h.insert(s, node, level)
	h.putSearcher(s)
	return nil
}

// alloc reserves and fills a node. The caller holds mu shared; alloc may
// drop it briefly to grow the storage, and returns holding it again.
func (h *HNSW) alloc(id uint64, vec []float32, n2 float64, meta Meta, level int) (uint32, error) {
	for {
		h.allocMu.Lock()
		if _, dup := h.idmap[id]; dup {
			h.allocMu.Unlock()
			return 0, fmt.Errorf("index: add id %d: %w", id, ErrDuplicate)
		}
		n := h.count.Load()
		if int(n) < h.capacity {
			h.prepare(h.vec(n), vec, n2)
			if h.opt.Quantize {
				o := int(n) * h.dim
				h.scales[n], h.qnorms[n] = quantize(h.codes[o:o+h.dim], h.vec(n))
			}
			h.ext[n] = id
			h.levels[n] = uint8(level)
			if level > 0 {
				h.upper[n] = make([]uint32, level*(h.m+1))
			}
			h.metas[n] = meta
			h.idmap[id] = n
			h.count.Store(n + 1)
			h.live.Add(1)
			h.allocMu.Unlock()
			return n, nil
		}
		h.allocMu.Unlock()
		if h.capacity >= maxNodes {
			return 0, fmt.Errorf("index: add id %d: index full (%d nodes)", id, maxNodes)
		}
		h.mu.RUnlock()
		h.mu.Lock()
		if !h.closed.Load() {
			h.grow(int(h.count.Load()) + 1)
		}
		h.mu.Unlock()
		h.mu.RLock()
		if h.closed.Load() {
			return 0, ErrClosed
		}
	}
}

// insert links an allocated node into the graph (Malkov & Yashunin,
// algorithm 1). The caller holds mu shared.
func (h *HNSW) insert(s *searcher, node uint32, level int) {
	ep, maxL := h.entry()
	if maxL < 0 {
		h.epMu.Lock()
		if h.maxLevel < 0 {
			h.ep, h.maxLevel = node, level
			h.epMu.Unlock()
			return
		}
		ep, maxL = h.ep, h.maxLevel
		h.epMu.Unlock()
	}
	copy(s.q, h.vec(node))
	s.quant, s.checked, s.filter = false, false, nil
	cur, curD := ep, h.dist(s, ep)
	for l := maxL; l > level; l-- {
		cur, curD = h.greedy(s, cur, curD, l)
	}
	// The node's own lists are set on every layer before any neighbour
	// links back to it: until then no other insert can reach it, so none
	// can start a search from a node whose lower lists are still empty
	// (and link only to it), or add itself to a list that is then
	// overwritten. Either left a concurrently inserted node unreachable.
	s.nbuf, s.noff = s.nbuf[:0], s.noff[:0]
	for l := min(level, maxL); l >= 0; l-- {
		h.searchLayer(s, cur, curD, h.opt.EfConstruction, l, 0)
		s.sorted = s.res.sortedAsc(s.sorted)
		w := s.sorted[:0]
		for _, c := range s.sorted {
			if c.id != node { // never link a node to itself
				w = append(w, c)
			}
		}
		s.noff = append(s.noff, len(s.nbuf))
		if len(w) == 0 {
			continue
		}
		s.sel = h.heuristic(w, h.m, s.sel[:0])
		h.setLinks(node, l, s.sel)
		for _, c := range s.sel {
			s.nbuf = append(s.nbuf, c.id)
		}
		cur, curD = s.sel[0].id, s.sel[0].d
	}
	s.noff = append(s.noff, len(s.nbuf))
	for i, l := 0, min(level, maxL); l >= 0; i, l = i+1, l-1 {
		nbs := s.nbuf[s.noff[i]:s.noff[i+1]]
		for _, nb := range nbs {
			h.addLink(s, nb, node, l, false)
		}
		if l == 0 && len(nbs) > 0 && atomic.LoadInt32(&h.indeg[node]) == 0 {
			// Every neighbour pruned its link back: keep the nearest's.
			h.addLink(s, nbs[0], node, 0, true)
		}
	}
	if level > maxL {
		h.epMu.Lock()
		if level > h.maxLevel {
			h.ep, h.maxLevel = node, level
		}
		h.epMu.Unlock()
	}
}

// heuristic keeps up to m of cands (sorted by distance to the base node,
// closest first), skipping any candidate closer to an already kept
// neighbour than to the base: the neighbour-selection heuristic
// (algorithm 4) that keeps links pointing in diverse directions.
func (h *HNSW) heuristic(cands []cand, m int, out []cand) []cand {
	if len(cands) <= m {
		return append(out, cands...)
	}
	for _, c := range cands {
		if len(out) >= m {
			break
		}
		vc := h.vec(c.id)
		good := true
		for _, r := range out {
			if h.distF(vc, r.id) < c.d {
				good = false
				break
			}
		}
		if good {
			out = append(out, c)
		}
	}
	return out
}

// setLinks sets a new node's (empty) list on layer l.
func (h *HNSW) setLinks(node uint32, l int, sel []cand) {
	lk := &h.locks[node&lockMask]
	lk.Lock()
	lst := h.linkList(node, l)
	for i, c := range sel {
		atomic.StoreUint32(&lst[1+i], c.id)
		if l == 0 {
			atomic.AddInt32(&h.indeg[c.id], 1)
		}
	}
	atomic.StoreUint32(&lst[0], uint32(len(sel)))
	lk.Unlock()
}

// relist replaces a full list lst on layer l, whose members are old, by
// sel. On layer 0 it keeps the in-degree counts, and a member that would
// lose its last in-link stays in the list, as does must (unless noNode):
// such a node takes a free slot, or the slot of a member that other lists
// hold too. Without this a build orphans nodes. Even one at a time, a new
// node's only neighbour may prune the back link to it; and in a
// concurrent build two close items inserted at once do not see each
// other, and a shared neighbour drops one of them as "covered" by the
// other, which never linked to it. The caller holds lst's lock.
func (h *HNSW) relist(lst, old []uint32, sel []cand, l int, must uint32) []cand {
	if l == 0 {
		capacity := len(lst) - 1
		in := func(x uint32) bool { return slices.ContainsFunc(sel, func(c cand) bool { return c.id == x }) }
		// place puts x in the list, evicting a member held elsewhere if full.
		place := func(x uint32) bool {
			if len(sel) < capacity {
				sel = append(sel, cand{id: x})
				return true
			}
			for i := len(sel) - 1; i >= 0; i-- {
				y := sel[i].id
				if y == must {
					continue
				}
				if atomic.AddInt32(&h.indeg[y], -1) > 0 {
					sel[i] = cand{id: x}
					return true
				}
				atomic.AddInt32(&h.indeg[y], 1)
			}
			return false
		}
		for _, c := range sel {
			if !slices.Contains(old, c.id) {
				atomic.AddInt32(&h.indeg[c.id], 1)
			}
		}
		var buf [64]uint32
		dropped := buf[:0]
		for _, x := range old {
			if !in(x) {
				dropped = append(dropped, x)
			}
		}
		if must != noNode && !in(must) && place(must) {
			atomic.AddInt32(&h.indeg[must], 1)
		}
		for _, x := range dropped {
			if atomic.AddInt32(&h.indeg[x], -1) > 0 || h.isDead(x) {
				continue
			}
			if place(x) {
				atomic.AddInt32(&h.indeg[x], 1)
			}
		}
	}
	for i, c := range sel {
		atomic.StoreUint32(&lst[1+i], c.id)
	}
	atomic.StoreUint32(&lst[0], uint32(len(sel)))
	return sel
}

// addLink adds the back link nb -> node on layer l, re-selecting nb's
// neighbours with the heuristic when its list is full; with force the
// link stays even if the heuristic would drop it.
func (h *HNSW) addLink(s *searcher, nb, node uint32, l int, force bool) {
	lk := &h.locks[nb&lockMask]
	lk.Lock()
	defer lk.Unlock()
	lst := h.linkList(nb, l)
	if lst == nil {
		return
	}
	n := int(atomic.LoadUint32(&lst[0]))
	for i := 1; i <= n; i++ {
		if atomic.LoadUint32(&lst[i]) == node {
			return
		}
	}
	if n < len(lst)-1 {
		atomic.StoreUint32(&lst[1+n], node)
		atomic.StoreUint32(&lst[0], uint32(n+1))
		if l == 0 {
			atomic.AddInt32(&h.indeg[node], 1)
		}
		return
	}
	ids := append(s.ids[:0], node)
	for i := 1; i <= n; i++ {
		ids = append(ids, atomic.LoadUint32(&lst[i]))
	}
	s.ids = ids
	s.dbuf = h.distBatchF(h.vec(nb), ids, s.dbuf)
	t := s.tmp[:0]
	for i, id := range ids {
		t = append(t, cand{s.dbuf[i], id})
	}
	sortCands(t)
	must := uint32(noNode)
	if force {
		must = node
	}
	sel := h.relist(lst, ids[1:], h.heuristic(t, len(lst)-1, s.sel[:0]), l, must)
	s.tmp, s.sel = t, sel
}

// sortCands sorts by ascending distance (insertion sort: lists are short).
func sortCands(c []cand) {
	for i := 1; i < len(c); i++ {
		x := c[i]
		j := i
		for j > 0 && c[j-1].d > x.d {
			c[j] = c[j-1]
			j--
		}
		c[j] = x
	}
}

// ---- deletion --------------------------------------------------------

// Delete tombstones id and reports whether it was live. The node keeps
// routing searches but is never returned; its id may be added again. When
// more than half of a neighbour's links point at tombstones, that
// neighbour is reconnected to the live nodes around them. If the entry
// point is deleted the live node on the highest layer replaces it.
func (h *HNSW) Delete(id uint64) bool {
	h.mutMu.RLock()
	defer h.mutMu.RUnlock()
	if h.closed.Load() {
		return false
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.allocMu.Lock()
	node, ok := h.idmap[id]
	if !ok {
		h.allocMu.Unlock()
		return false
	}
	delete(h.idmap, id)
	h.setDead(node)
	h.live.Add(-1)
	h.allocMu.Unlock()

	h.epMu.Lock()
	if h.ep == node {
		h.chooseEntry()
	}
	h.epMu.Unlock()

	s := h.getSearcher()
	h.repairAround(s, node)
	h.putSearcher(s)
	return true
}

// chooseEntry makes the live node on the highest layer the entry point.
// The caller holds epMu exclusively. With no live node the old entry stays
// (tombstones still route inserts).
func (h *HNSW) chooseEntry() {
	n := int(h.count.Load())
	best, bestL := uint32(noNode), -1
	for i := 0; i < n; i++ {
		id := uint32(i)
		if l := int(h.levels[id]); l > bestL && !h.isDead(id) {
			best, bestL = id, l
			if l == h.maxLevel {
				break
			}
		}
	}
	if best != noNode {
		h.ep, h.maxLevel = best, bestL
	}
}

// repairAround reconnects the live neighbours of the deleted node x whose
// lists have become mostly tombstones.
func (h *HNSW) repairAround(s *searcher, x uint32) {
	for l := 0; l <= int(h.levels[x]); l++ {
		lst := h.linkList(x, l)
		n := min(int(atomic.LoadUint32(&lst[0])), len(lst)-1)
		nbs := make([]uint32, 0, n)
		for i := 1; i <= n; i++ {
			nbs = append(nbs, atomic.LoadUint32(&lst[i]))
		}
		for _, y := range nbs {
			if !h.isDead(y) && h.deadFraction(y, l) > repairFraction {
				h.repair(s, y, l)
			}
		}
	}
}

func (h *HNSW) deadFraction(y uint32, l int) float64 {
	lst := h.linkList(y, l)
	if lst == nil {
		return 0
	}
	n := min(int(atomic.LoadUint32(&lst[0])), len(lst)-1)
	if n == 0 {
		return 0
	}
	d := 0
	for i := 1; i <= n; i++ {
		if h.isDead(atomic.LoadUint32(&lst[i])) {
			d++
		}
	}
	return float64(d) / float64(n)
}

// repair rebuilds y's list on layer l from its live neighbours and the
// live neighbours of its deleted ones, with the selection heuristic.
func (h *HNSW) repair(s *searcher, y uint32, l int) {
	lk := &h.locks[y&lockMask]
	lk.Lock()
	defer lk.Unlock()
	lst := h.linkList(y, l)
	if lst == nil {
		return
	}
	s.resetVisited(h.capacity)
	s.visited[y] = s.gen
	vy := h.vec(y)
	t := s.tmp[:0]
	consider := func(z uint32) {
		if s.visited[z] != s.gen {
			s.visited[z] = s.gen
			if !h.isDead(z) {
				t = append(t, cand{h.distF(vy, z), z})
			}
		}
	}
	n := min(int(atomic.LoadUint32(&lst[0])), len(lst)-1)
	for i := 1; i <= n; i++ {
		z := atomic.LoadUint32(&lst[i])
		if !h.isDead(z) {
			consider(z)
			continue
		}
		zl := h.linkList(z, l)
		if zl == nil {
			continue
		}
		zn := min(int(atomic.LoadUint32(&zl[0])), len(zl)-1)
		for j := 1; j <= zn; j++ {
			consider(atomic.LoadUint32(&zl[j]))
		}
	}
	if len(t) == 0 {
		s.tmp = t
		return
	}
	if len(t) > 64 {
		s.sorted = append(s.sorted[:0], t...)
		sortCandsLarge(s.sorted)
		t = append(t[:0], s.sorted[:min(len(s.sorted), h.opt.EfConstruction)]...)
	} else {
		sortCands(t)
	}
	old := make([]uint32, n)
	for i := range old {
		old[i] = atomic.LoadUint32(&lst[1+i])
	}
	sel := h.relist(lst, old, h.heuristic(t, len(lst)-1, s.sel[:0]), l, noNode)
	s.tmp, s.sel = t, sel
}

func sortCandsLarge(c []cand) {
	slices.SortFunc(c, func(a, b cand) int { return cmp.Compare(a.d, b.d) })
}

// Vector returns a copy of a live item's stored vector (unit length under
// Cosine) and whether the id is live.
func (h *HNSW) Vector(id uint64) ([]float32, bool) {
	h.allocMu.Lock()
	node, ok := h.idmap[id]
	h.allocMu.Unlock()
	if !ok {
		return nil, false
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.isDead(node) {
		return nil, false
	}
	return append([]float32(nil), h.vec(node)...), true
}
