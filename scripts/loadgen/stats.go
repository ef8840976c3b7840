package main

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0..100) of xs by linear
// interpolation between the closest ranks: the value at rank
// p/100*(n-1) of the sorted sample (NumPy's default method). It returns NaN
// for an empty sample. xs is not modified.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	p = min(max(p, 0), 100)
	rank := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(rank))
	hi := int(math.Ceil(rank))
	return s[lo] + (s[hi]-s[lo])*(rank-float64(lo))
}

// mean returns the arithmetic mean of xs, NaN when empty.
func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// tokenTrace is the decode phase of one finished request: the times (from a
// common origin) at which its tokens arrived, each worth weight tokens
// (1 when a chunk carries one token).
type tokenTrace struct {
	times  []time.Duration // ascending; times[0] is the first token
	weight float64
}

// span is a half-open time interval (start, end].
type span struct{ start, end time.Duration }

// allDecodingSpans returns the intervals during which at least need traces
// are in their decode phase, that is between their first and their last
// token. For need requests started together this is the single window from
// the last first-token to the first last-token; with clients that send a new
// request as soon as one finishes it is the union of all such windows.
func allDecodingSpans(traces []tokenTrace, need int) []span {
	type edge struct {
		t     time.Duration
		delta int
	}
	var edges []edge
	for _, tr := range traces {
		if len(tr.times) < 2 || tr.times[len(tr.times)-1] <= tr.times[0] {
			continue // no decode phase
		}
		edges = append(edges, edge{tr.times[0], +1}, edge{tr.times[len(tr.times)-1], -1})
	}
	// At equal times, ends before starts: two streams that merely touch are
	// not decoding together.
	slices.SortFunc(edges, func(a, b edge) int {
		if c := cmp.Compare(a.t, b.t); c != 0 {
			return c
		}
		return cmp.Compare(a.delta, b.delta)
	})
	var (
		spans  []span
		active int
		open   time.Duration
	)
	for _, e := range edges {
		before := active
		active += e.delta
		switch {
		case before < need && active >= need:
			open = e.t
		case before >= need && active < need:
			if e.t > open {
				spans = append(spans, span{open, e.t})
			}
		}
	}
	return spans
}

// decodePhaseRate is the aggregate decode throughput while all need streams
// decode at once: the tokens whose arrival falls inside allDecodingSpans
// (each span taken as (start, end], so a span of n token intervals holds n
// tokens), divided by the spans' total length. ok is false when no such
// window exists (need <= 0 or the streams never decoded together).
func decodePhaseRate(traces []tokenTrace, need int) (tokens float64, window time.Duration, ok bool) {
	if need <= 0 {
		return 0, 0, false
	}
	spans := allDecodingSpans(traces, need)
	for _, s := range spans {
		window += s.end - s.start
	}
	if window <= 0 {
		return 0, 0, false
	}
	for _, tr := range traces {
		for _, t := range tr.times {
			// spans are sorted and disjoint: find the first span ending at or after t.
			i, _ := slices.BinarySearchFunc(spans, t, func(s span, t time.Duration) int {
				if s.end < t {
					return -1
				}
				return 1
			})
			if i < len(spans) && t > spans[i].start && t <= spans[i].end {
				tokens += tr.weight
			}
		}
	}
	return tokens, window, true
}

// rate returns n per second over d, NaN when d is not positive.
func rate(n float64, d time.Duration) float64 {
	if d <= 0 {
		return math.NaN()
	}
	return n / d.Seconds()
}
