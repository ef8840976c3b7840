package chart

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
)

// A round step is 1, 2 or 5 times a power of ten.
func isRound(step float64) bool {
	e := math.Floor(math.Log10(step))
	m := step / math.Pow(10, e)
	for _, r := range []float64{1, 2, 5, 10} {
		if math.Abs(m-r) < 1e-9 {
			return true
		}
	}
	return false
}

func TestTicksAreRoundAndCoverTheRange(t *testing.T) {
	for _, c := range []struct{ lo, hi float64 }{
		{0, 0.238}, {0, 0.0476}, {0, 1}, {0, 9.76}, {0, 158}, {0, 3}, {0, 1e-5}, {0.3, 0.31}, {0, 0}, {-2.5, 7},
	} {
		ticks, step := Ticks(c.lo, c.hi, 5)
		if !isRound(step) {
			t.Errorf("[%v, %v]: step %v is not round", c.lo, c.hi, step)
		}
		if ticks[0] > c.lo || ticks[len(ticks)-1] < c.hi {
			t.Errorf("[%v, %v]: ticks %v do not cover it", c.lo, c.hi, ticks)
		}
		if len(ticks) < 3 || len(ticks) > 12 {
			t.Errorf("[%v, %v]: %d ticks", c.lo, c.hi, len(ticks))
		}
		for i, v := range ticks {
			if k := v / step; math.Abs(k-math.Round(k)) > 1e-6 {
				t.Errorf("[%v, %v]: tick %v is not a multiple of %v", c.lo, c.hi, v, step)
			}
			// The label reads the tick with the step's decimals: 0.05 steps
			// print two, never 0.0595 or 0.30000000000000004.
			s := FormatTick(v, step)
			got, err := strconv.ParseFloat(s, 64)
			dec := 0
			if i := strings.IndexByte(s, '.'); i >= 0 {
				dec = len(s) - i - 1
			}
			if err != nil || math.Abs(got-v) > step*1e-6 || dec > max(0, int(math.Ceil(-math.Log10(step)-1e-9))) {
				t.Errorf("tick %d (%v) of [%v, %v] prints as %q", i, v, c.lo, c.hi, s)
			}
		}
	}
	for _, c := range []struct {
		v, step float64
		want    string
	}{{0.75, 0.25, "0.75"}, {0.5, 0.25, "0.50"}, {40, 20, "40"}, {0.3, 0.1, "0.3"}, {1e-5, 2e-6, "0.000010"}, {-0, 0.5, "0.0"}} {
		if got := FormatTick(c.v, c.step); got != c.want {
			t.Errorf("FormatTick(%v, %v) = %q, want %q", c.v, c.step, got, c.want)
		}
	}
	ticks, step := Ticks(0, 0.238, 5)
	var labels []string
	for _, v := range ticks {
		labels = append(labels, FormatTick(v, step))
	}
	if got := fmt.Sprint(labels); got != "[0.00 0.05 0.10 0.15 0.20 0.25]" {
		t.Errorf("ticks of [0, 0.238]: %s", got)
	}
}

func TestPlaceLabelsKeepsThemApartAndInside(t *testing.T) {
	bounds := Rect{X: 66, Y: 28, W: 600 - 4 - 66, H: 344 - 2 - 28}
	for name, pts := range map[string][][2]float64{
		"one spot":    {{100, 340}, {100, 340}, {100, 340}, {100, 340}},
		"bottom edge": {{70, 344}, {72, 344}, {590, 344}, {588, 340}},
		"top corners": {{66, 44}, {596, 44}, {594, 46}, {68, 46}},
		"a column":    {{300, 100}, {300, 110}, {300, 120}, {300, 130}, {300, 140}},
	} {
		var labels []Label
		var markers []Rect
		for i, p := range pts {
			labels = append(labels, Label{Text: fmt.Sprintf("rag+fine-tuned %d (F1 0.00)", i), X: p[0], Y: p[1]})
			markers = append(markers, Rect{p[0] - 6, p[1] - 6, 12, 12})
		}
		placed := PlaceLabels(labels, 12, bounds, markers)
		if len(placed) != len(labels) {
			t.Fatalf("%s: %d of %d labels placed", name, len(placed), len(labels))
		}
		for i, p := range placed {
			if !p.Box.Inside(bounds) {
				t.Errorf("%s: label %q at %+v leaves %+v", name, p.Text, p.Box, bounds)
			}
			if w := TextWidth(p.Text, 12); p.Box.W < w {
				t.Errorf("%s: box %v narrower than its text (%v)", name, p.Box.W, w)
			}
			if p.TextY <= p.Box.Y || p.TextY >= p.Box.Y+p.Box.H {
				t.Errorf("%s: baseline %v outside its box %+v", name, p.TextY, p.Box)
			}
			for j, q := range placed[:i] {
				if p.Box.Intersects(q.Box) {
					t.Errorf("%s: labels %d %+v and %d %+v overlap", name, i, p.Box, j, q.Box)
				}
			}
			for j, m := range markers {
				if p.Box.Intersects(m) {
					t.Errorf("%s: label %d covers marker %d", name, i, j)
				}
			}
		}
	}
}
