// Package chart holds what llmrt's small SVG charts share: round axis
// ticks, and labels placed so that they neither overlap nor leave the
// image.
package chart

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// Ticks returns round tick values (a multiple of 1, 2 or 5 times a power
// of ten) from at most lo to at least hi, about n intervals apart, and
// the step between them.
func Ticks(lo, hi float64, n int) ([]float64, float64) {
	if n < 1 {
		n = 1
	}
	if math.IsNaN(lo) || math.IsNaN(hi) || math.IsInf(lo, 0) || math.IsInf(hi, 0) {
		lo, hi = 0, 1
	}
	if !(hi > lo) {
		hi = lo + 1
	}
	raw := (hi - lo) / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := 10 * mag
	for _, m := range []float64{1, 2, 5} {
		if m*mag >= raw*(1-1e-9) {
			step = m * mag
			break
		}
	}
	first := math.Floor(lo/step + 1e-9)
	last := math.Ceil(hi/step - 1e-9)
	ticks := make([]float64, 0, int(last-first)+1)
	for k := first; k <= last; k++ {
		// 12 digits drop the float noise of k*step (3*0.1 = 0.30000000000000004).
		v, _ := strconv.ParseFloat(strconv.FormatFloat(k*step, 'g', 12, 64), 64)
		ticks = append(ticks, v)
	}
	return ticks, step
}

// FormatTick writes v with as many decimals as step needs (0.05 -> "0.15",
// 0.25 -> "0.75", 20 -> "40").
func FormatTick(v, step float64) string {
	dec := 0
	for ; dec < 12; dec++ {
		if f := step * math.Pow(10, float64(dec)); math.Abs(f-math.Round(f)) < 1e-6*f {
			break
		}
	}
	if math.Abs(v) < step*1e-6 {
		v = 0
	}
	return strconv.FormatFloat(v, 'f', dec, 64)
}

// Rect is a box in image coordinates (y grows downwards).
type Rect struct{ X, Y, W, H float64 }

// Intersects reports whether r and o overlap (touching edges do not).
func (r Rect) Intersects(o Rect) bool {
	return r.X < o.X+o.W && o.X < r.X+r.W && r.Y < o.Y+o.H && o.Y < r.Y+r.H
}

// Inside reports whether r lies within b.
func (r Rect) Inside(b Rect) bool {
	return r.X >= b.X && r.Y >= b.Y && r.X+r.W <= b.X+b.W && r.Y+r.H <= b.Y+b.H
}

func (r Rect) overlap(o Rect) float64 {
	w := math.Min(r.X+r.W, o.X+o.W) - math.Max(r.X, o.X)
	h := math.Min(r.Y+r.H, o.Y+o.H) - math.Max(r.Y, o.Y)
	if w <= 0 || h <= 0 {
		return 0
	}
	return w * h
}

// TextWidth estimates the width of s in a sans-serif font of size px:
// 0.62 em per character, a little wider than digits and lower-case
// letters are, so that estimated boxes hold the drawn text.
func TextWidth(s string, size float64) float64 {
	return float64(utf8.RuneCountInString(s)) * 0.62 * size
}

// Label is text that names the point (X, Y).
type Label struct {
	Text string
	X, Y float64
}

// Placed is a label with its box and the start of its baseline.
type Placed struct {
	Label
	Box          Rect
	TextX, TextY float64
	// Moved is set when the label sits away from its point (a leader line
	// should join them).
	Moved bool
}

// PlaceLabels puts each label beside its point: right or left of it,
// diagonally above or below, straight above or below, else shifted up or
// down in steps of a line, taking the first
// spot inside bounds that overlaps neither a label placed before nor an
// avoid box (the markers). When no spot is free, the one with the least
// overlap inside bounds is taken.
func PlaceLabels(labels []Label, size float64, bounds Rect, avoid []Rect) []Placed {
	const gap = 8.0 // from the point: a marker's radius and a little air
	h := math.Ceil(size * 1.3)
	var out []Placed
	for _, l := range labels {
		w := math.Ceil(TextWidth(l.Text, size))
		right := Rect{l.X + gap, l.Y - h/2, w, h}
		left := Rect{l.X - gap - w, l.Y - h/2, w, h}
		const d = gap * 0.7 // diagonal: clear of a marker's corner
		cands := []Rect{right, left,
			{l.X + d, l.Y - d - h, w, h}, {l.X - d - w, l.Y - d - h, w, h}, // above right, above left
			{l.X + d, l.Y + d, w, h}, {l.X - d - w, l.Y + d, w, h}, // below right, below left
			{l.X - w/2, l.Y - gap - h, w, h}, {l.X - w/2, l.Y + gap, w, h}}
		near := len(cands)
		for k := 1; k*int(h) <= int(bounds.H); k++ {
			for _, dy := range []float64{-float64(k) * h, float64(k) * h} {
				for _, r := range []Rect{right, left} {
					r.Y += dy
					cands = append(cands, r)
				}
			}
		}
		best, bestIdx, bestCost := Rect{}, -1, math.Inf(1)
		for i, c := range cands {
			if !c.Inside(bounds) {
				continue
			}
			cost := 0.0
			for _, p := range out {
				cost += c.overlap(p.Box)
			}
			for _, a := range avoid {
				cost += c.overlap(a)
			}
			if cost < bestCost {
				best, bestIdx, bestCost = c, i, cost
			}
			if cost == 0 {
				break
			}
		}
		if bestIdx < 0 { // larger than bounds: clamp the first choice
			best = right
			best.X = math.Max(bounds.X, math.Min(best.X, bounds.X+bounds.W-best.W))
			best.Y = math.Max(bounds.Y, math.Min(best.Y, bounds.Y+bounds.H-best.H))
		}
		out = append(out, Placed{Label: l, Box: best, TextX: best.X, TextY: best.Y + h*0.75, Moved: bestIdx >= near || bestIdx < 0})
	}
	return out
}
