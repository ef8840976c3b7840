package rag

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// Each hit names the kind of its score; a hybrid hit also carries the
// vector and BM25 scores it was fused from, the same as those modes give.
func TestHitsLabelTheirScores(t *testing.T) {
	c := topicCollection(t, newBOW(), nil)
	ctx := context.Background()
	q := "the lighthouse keeper lights the lamp"
	by := map[Mode]map[uint64]Hit{}
	for _, m := range []Mode{Vector, Keyword, Hybrid} {
		hits, err := c.Search(ctx, q, SearchOptions{K: 6, Mode: m})
		if err != nil || len(hits) == 0 {
			t.Fatalf("%v: %v", m, err)
		}
		by[m] = map[uint64]Hit{}
		for _, h := range hits {
			by[m][h.Chunk.ID] = h
		}
		want := map[Mode]string{Vector: "cosine", Keyword: "bm25", Hybrid: "rrf"}[m]
		for _, h := range hits {
			if h.ScoreKind != want {
				t.Errorf("%v: score kind %q, want %q", m, h.ScoreKind, want)
			}
		}
	}
	for id, h := range by[Hybrid] {
		if h.Score > 2.0/61+1e-6 {
			t.Errorf("rrf score %v above 2/61", h.Score)
		}
		if v, ok := by[Vector][id]; ok && (h.VectorScore == nil || *h.VectorScore != v.Score) {
			t.Errorf("hybrid hit's vector score %v, vector mode's %v", h.VectorScore, v.Score)
		}
		if k, ok := by[Keyword][id]; ok && (h.BM25Score == nil || *h.BM25Score != k.Score) {
			t.Errorf("hybrid hit's bm25 score %v, keyword mode's %v", h.BM25Score, k.Score)
		}
		if (h.VectorScore != nil) != (h.VectorRank > 0) || (h.BM25Score != nil) != (h.BM25Rank > 0) {
			t.Errorf("scores without ranks or ranks without scores: %+v", h)
		}
	}
	// In JSON: score_kind always, vector_score and bm25_score where known.
	for _, h := range by[Hybrid] {
		b, _ := json.Marshal(h)
		if !strings.Contains(string(b), `"score_kind":"rrf"`) || (h.VectorRank > 0) != strings.Contains(string(b), `"vector_score":`) {
			t.Errorf("json %s", b)
		}
	}
}
