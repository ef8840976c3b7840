package rag

import (
	"context"
	"errors"
	"fmt"

	"github.com/llmrt/llmrt/runtime/index"
)

// Mode selects the rankings a search uses.
type Mode int

const (
	// Vector ranks by embedding similarity (the default).
	Vector Mode = iota
	// Hybrid fuses the vector and BM25 rankings by reciprocal rank.
	Hybrid
	// Keyword ranks by BM25 alone; it needs no embedder.
	Keyword
)

func (m Mode) String() string {
	switch m {
	case Vector:
		return "vector"
	case Hybrid:
		return "hybrid"
	case Keyword:
		return "keyword"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses "vector", "hybrid" or "keyword" ("" is vector).
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "vector":
		return Vector, nil
	case "hybrid":
		return Hybrid, nil
	case "keyword", "bm25":
		return Keyword, nil
	}
	return 0, fmt.Errorf("unknown search mode %q (want vector, hybrid or keyword)", s)
}

// rrfK is the constant of reciprocal-rank fusion: score = Σ 1/(rrfK + rank).
const rrfK = 60

// SearchOptions control a search.
type SearchOptions struct {
	// K is how many hits to return (default 4).
	K int
	// Mode picks vector, hybrid or keyword ranking.
	Mode Mode
	// MMR, in (0, 1], reorders candidates by maximal marginal relevance:
	// MMR·relevance − (1−MMR)·(similarity to the hits already chosen).
	// 0 turns it off; 1 is plain relevance.
	MMR float64
	// Candidates is how many hits each ranking contributes before fusion
	// and MMR (default max(4·K, 20)).
	Candidates int
}

// Hit is a retrieved chunk.
type Hit struct {
	Chunk Chunk `json:"chunk"`
	// Score is the cosine (or dot, or negated squared L2) similarity in
	// vector mode, the BM25 score in keyword mode, the RRF score in
	// hybrid mode; ScoreKind names it ("cosine", "dot", "l2", "bm25",
	// "rrf"). RRF scores are small (at most 2/61 ≈ 0.033) and only rank.
	Score     float32 `json:"score"`
	ScoreKind string  `json:"score_kind"`
	// VectorScore (similarity, by the collection's metric) and BM25Score
	// are the chunk's scores in each list, when it is among that list's
	// candidates.
	VectorScore *float32 `json:"vector_score,omitempty"`
	BM25Score   *float32 `json:"bm25_score,omitempty"`
	// VectorRank and BM25Rank are the chunk's 1-based ranks in each list
	// (0: not among the candidates of that list, or not searched).
	VectorRank int `json:"vector_rank,omitempty"`
	BM25Rank   int `json:"bm25_rank,omitempty"`
}

// Search finds the chunks that best answer query.
func (c *Collection) Search(ctx context.Context, query string, opt SearchOptions) ([]Hit, error) {
	if opt.K <= 0 {
		opt.K = 4
	}
	if opt.MMR < 0 || opt.MMR > 1 {
		return nil, fmt.Errorf("mmr lambda %v outside [0, 1]", opt.MMR)
	}
	cand := opt.Candidates
	if cand <= 0 {
		cand = max(4*opt.K, 20)
	}
	cand = max(cand, opt.K)
	var q []float32
	if opt.Mode != Keyword || (opt.MMR > 0 && c.emb != nil) {
		if c.emb == nil {
			return nil, ErrNoEmbedder
		}
		vs, err := c.emb.Embed(ctx, []string{query})
		if err != nil {
			return nil, fmt.Errorf("embed query: %w", err)
		}
		if len(vs) != 1 || len(vs[0]) != c.man.Dim {
			return nil, errors.New("embedder returned no query vector of the collection's dimension")
		}
		q = vs[0]
	}

	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return nil, ErrClosed
	}
	byID := map[uint64]*Hit{}
	var order []uint64
	get := func(id uint64) *Hit {
		h := byID[id]
		if h == nil {
			h = &Hit{Chunk: *c.chunks[id]}
			byID[id] = h
			order = append(order, id)
		}
		return h
	}
	if opt.Mode != Keyword {
		res, err := c.searchVectors(ctx, q, cand)
		if err != nil {
			return nil, fmt.Errorf("search %s: %w", c.name, err)
		}
		for i, r := range res {
			h := get(r.id)
			h.VectorRank = i + 1
			h.VectorScore = &r.score
			if opt.Mode == Vector {
				h.Score = r.score
			} else {
				h.Score += 1 / float32(rrfK+i+1)
			}
		}
	}
	if opt.Mode != Vector {
		for i, r := range c.bm.search(query, cand) {
			h := get(r.id)
			h.BM25Rank = i + 1
			h.BM25Score = &r.score
			if opt.Mode == Keyword {
				h.Score = r.score
			} else {
				h.Score += 1 / float32(rrfK+i+1)
			}
		}
	}
	kind := "rrf"
	switch opt.Mode {
	case Vector:
		kind = c.man.Metric
	case Keyword:
		kind = "bm25"
	}
	hits := make([]Hit, 0, len(order))
	for _, id := range order {
		h := byID[id]
		h.ScoreKind = kind
		hits = append(hits, *h)
	}
	sortHits(hits)
	if opt.MMR > 0 && len(hits) > 1 {
		var err error
		if hits, err = c.mmr(q, hits, opt.K, opt.MMR); err != nil {
			return nil, err
		}
	}
	if len(hits) > opt.K {
		hits = hits[:opt.K]
	}
	return hits, nil
}

// searchVectors returns the k live chunks nearest q, best first, ties by
// id. The caller holds mu. It asks the index for a few more than k: a
// committing or removing writer leaves vectors of no live chunk for a
// moment, and the extra candidates make the order of equal scores not
// depend on how the graph was built.
func (c *Collection) searchVectors(ctx context.Context, q []float32, k int) ([]scored, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rs, err := c.vectors().Search(q, k+16, index.SearchOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]scored, 0, len(rs))
	for _, r := range rs {
		if c.chunks[r.ID] != nil {
			out = append(out, scored{r.ID, r.Score})
		}
	}
	sortScored(out)
	return out[:min(k, len(out))], nil
}

func sortHits(h []Hit) {
	s := make([]scored, len(h))
	at := make(map[uint64]Hit, len(h))
	for i, x := range h {
		s[i] = scored{x.Chunk.ID, x.Score}
		at[x.Chunk.ID] = x
	}
	sortScored(s)
	for i, x := range s {
		h[i] = at[x.id]
	}
}

// mmr picks k of the hits by maximal marginal relevance. Relevance is the
// cosine to the query vector when there is one, else the score relative to
// the best; redundancy is the cosine between chunk vectors (0 for a chunk
// without one, see Recovery.MissingVectors). The caller holds mu.
func (c *Collection) mmr(q []float32, hits []Hit, k int, lambda float64) ([]Hit, error) {
	vecs := make([][]float32, len(hits))
	rel := make([]float64, len(hits))
	cosine := func(a, b []float32) float64 {
		if a == nil || b == nil {
			return 0
		}
		return float64(index.Similarity(index.Cosine, a, b))
	}
	for i, h := range hits {
		vecs[i], _ = c.vectors().Vector(h.Chunk.ID)
		switch {
		case q != nil:
			rel[i] = cosine(q, vecs[i])
		case hits[0].Score > 0:
			rel[i] = float64(h.Score / hits[0].Score)
		}
	}
	chosen := make([]int, 0, k)
	used := make([]bool, len(hits))
	maxSim := make([]float64, len(hits)) // to the chosen ones
	for len(chosen) < min(k, len(hits)) {
		best, bestV := -1, 0.0
		for i := range hits {
			if used[i] {
				continue
			}
			v := lambda*rel[i] - (1-lambda)*maxSim[i]
			if best < 0 || v > bestV {
				best, bestV = i, v
			}
		}
		used[best] = true
		chosen = append(chosen, best)
		for i := range hits {
			if !used[i] {
				maxSim[i] = max(maxSim[i], cosine(vecs[i], vecs[best]))
			}
		}
	}
	out := make([]Hit, len(chosen))
	for i, j := range chosen {
		out[i] = hits[j]
	}
	return out, nil
}
