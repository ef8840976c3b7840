package rag

import (
	"math"
	"sort"
	"strings"
	"unicode"
)

// bm25 is an in-memory BM25 (Okapi, k1 = 1.2, b = 0.75) index over chunk
// texts, kept up to date as chunks come and go.
type bm25 struct {
	post  map[string]map[uint64]int32 // term → chunk → term frequency
	lens  map[uint64]int32
	total int64
}

func newBM25() *bm25 {
	return &bm25{post: map[string]map[uint64]int32{}, lens: map[uint64]int32{}}
}

// terms splits text into lower-case words of letters and digits.
func terms(text string) []string {
	return strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
}

func (x *bm25) add(id uint64, text string) {
	ts := terms(text)
	for _, t := range ts {
		p := x.post[t]
		if p == nil {
			p = map[uint64]int32{}
			x.post[t] = p
		}
		p[id]++
	}
	x.lens[id] = int32(len(ts))
	x.total += int64(len(ts))
}

func (x *bm25) remove(id uint64, text string) {
	n, ok := x.lens[id]
	if !ok {
		return
	}
	for _, t := range terms(text) {
		if p := x.post[t]; p != nil {
			delete(p, id)
			if len(p) == 0 {
				delete(x.post, t)
			}
		}
	}
	delete(x.lens, id)
	x.total -= int64(n)
}

// search returns the k best chunks for query, best first.
func (x *bm25) search(query string, k int) []scored {
	const k1, b = 1.2, 0.75
	n := float64(len(x.lens))
	if n == 0 || k <= 0 {
		return nil
	}
	avg := float64(x.total) / n
	if avg == 0 {
		avg = 1
	}
	seen := map[string]bool{}
	acc := map[uint64]float64{}
	for _, t := range terms(query) {
		if seen[t] {
			continue
		}
		seen[t] = true
		p := x.post[t]
		if len(p) == 0 {
			continue
		}
		df := float64(len(p))
		idf := math.Log(1 + (n-df+0.5)/(df+0.5))
		for id, tf := range p {
			f := float64(tf)
			acc[id] += idf * f * (k1 + 1) / (f + k1*(1-b+b*float64(x.lens[id])/avg))
		}
	}
	out := make([]scored, 0, len(acc))
	for id, s := range acc {
		out = append(out, scored{id, float32(s)})
	}
	sortScored(out)
	if len(out) > k {
		out = out[:k]
	}
	return out
}

// scored is a chunk id with a score (higher is better).
type scored struct {
	id    uint64
	score float32
}

// sortScored orders by score, best first, ties by id for determinism.
func sortScored(s []scored) {
	sort.Slice(s, func(i, j int) bool {
		if s[i].score != s[j].score {
			return s[i].score > s[j].score
		}
		return s[i].id < s[j].id
	})
}
