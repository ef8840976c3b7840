package main

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	xs := []float64{40, 15, 50, 35, 20} // sorted: 15 20 35 40 50, ranks 0..4
	for _, tc := range []struct{ p, want float64 }{
		{0, 15},
		{25, 20},  // rank 1
		{40, 29},  // rank 1.6: 20 + 0.6*(35-20)
		{50, 35},  // rank 2
		{95, 48},  // rank 3.8: 40 + 0.8*(50-40)
		{100, 50}, // rank 4
	} {
		if got := percentile(xs, tc.p); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("percentile(%v, %v) = %v, want %v", xs, tc.p, got, tc.want)
		}
	}
	if !slices.Equal(xs, []float64{40, 15, 50, 35, 20}) {
		t.Errorf("percentile sorted its input: %v", xs)
	}
	if got := percentile([]float64{1, 2, 3, 4}, 50); got != 2.5 { // rank 1.5
		t.Errorf("median of 1..4 = %v, want 2.5", got)
	}
	if got := percentile([]float64{1, 2, 3, 4}, 95); math.Abs(got-3.85) > 1e-9 { // rank 2.85
		t.Errorf("p95 of 1..4 = %v, want 3.85", got)
	}
	if got := percentile([]float64{7}, 95); got != 7 {
		t.Errorf("p95 of one value = %v, want 7", got)
	}
	if got := percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("percentile of nothing = %v, want NaN", got)
	}
	if got := mean([]float64{1, 2, 6}); got != 3 {
		t.Errorf("mean = %v, want 3", got)
	}
}

// ticks returns n token times from first, every step.
func ticks(first, step time.Duration, n int) tokenTrace {
	tr := tokenTrace{weight: 1}
	for i := range n {
		tr.times = append(tr.times, first+time.Duration(i)*step)
	}
	return tr
}

func TestDecodePhaseRate(t *testing.T) {
	ms := time.Millisecond
	a := ticks(0, 10*ms, 11)     // decodes (0, 100ms]
	b := ticks(50*ms, 10*ms, 11) // decodes (50, 150ms]
	c := ticks(200*ms, 10*ms, 3) // alone, after both

	// Both decode in (50, 100]: A has 60..100 (5 tokens), B has 60..100 (5).
	tokens, window, ok := decodePhaseRate([]tokenTrace{a, b, c}, 2)
	if !ok || tokens != 10 || window != 50*ms {
		t.Fatalf("2 streams: tokens=%v window=%v ok=%v, want 10 50ms true", tokens, window, ok)
	}
	if r := rate(tokens, window); r != 200 {
		t.Errorf("rate = %v, want 200 tok/s", r)
	}

	// One stream at a time: the union (0, 150] and (200, 220]: 10+10+2
	// tokens (A's and C's first tokens open their windows; B's first token
	// at 50ms falls inside A's) in 170ms.
	tokens, window, ok = decodePhaseRate([]tokenTrace{a, b, c}, 1)
	if !ok || tokens != 10+11+2 || window != 170*ms {
		t.Fatalf("need 1: tokens=%v window=%v ok=%v, want 23 170ms true", tokens, window, ok)
	}

	// A single stream alone gives exactly its own decode rate: 10 tokens
	// after the first in 100ms.
	tokens, window, ok = decodePhaseRate([]tokenTrace{a}, 1)
	if !ok || rate(tokens, window) != 100 {
		t.Fatalf("single stream: %v tokens in %v, want 100 tok/s", tokens, window)
	}

	// Streams that never overlap: no window.
	if _, _, ok := decodePhaseRate([]tokenTrace{a, c}, 2); ok {
		t.Error("disjoint streams gave a window")
	}
	// Streams that only touch at one instant: no window.
	if _, _, ok := decodePhaseRate([]tokenTrace{ticks(0, 10*ms, 3), ticks(20*ms, 10*ms, 3)}, 2); ok {
		t.Error("touching streams gave a window")
	}
	// A one-token request has no decode phase.
	if _, _, ok := decodePhaseRate([]tokenTrace{ticks(0, 0, 1)}, 1); ok {
		t.Error("one token gave a window")
	}

	// Weighted chunks: each of B's chunks carries 2 tokens.
	b2 := b
	b2.weight = 2
	tokens, _, _ = decodePhaseRate([]tokenTrace{a, b2}, 2)
	if tokens != 5+10 {
		t.Errorf("weighted tokens = %v, want 15", tokens)
	}
}
