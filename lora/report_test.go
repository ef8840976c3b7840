package lora

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// series makes metric lines: train losses per step, eval losses at the
// steps given.
func series(train []float64, eval map[int]float64) []MetricLine {
	var out []MetricLine
	for i, l := range train {
		out = append(out, MetricLine{Step: i + 1, Loss: l, EvalLoss: eval[i+1]})
	}
	return out
}

func TestOverfitWarning(t *testing.T) {
	falling := []float64{9.8, 9.1, 8.5, 7.9, 7.0, 6.1, 5.2, 4.0, 3.1, 2.2, 1.5, 0.9}
	for _, c := range []struct {
		name  string
		lines []MetricLine
		warn  bool
	}{
		{"eval rises as train falls", series(falling, map[int]float64{4: 8.0, 8: 7.2, 12: 8.1}), true},
		{"eval keeps falling", series(falling, map[int]float64{4: 8.0, 8: 7.2, 12: 6.9}), false},
		{"eval rises within noise", series(falling, map[int]float64{4: 8.0, 8: 7.2, 12: 7.3}), false},
		{"both rise", series([]float64{5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7}, map[int]float64{4: 5, 8: 6, 12: 7}), false},
		{"one evaluation", series(falling, map[int]float64{12: 9}), false},
		{"no evaluation", series(falling, nil), false},
	} {
		w := OverfitWarning(c.lines)
		if (w != "") != c.warn {
			t.Errorf("%s: warning %q", c.name, w)
		}
		if c.warn && (!strings.Contains(w, "overfitting") || !strings.Contains(w, "7.200 (step 8)") || !strings.Contains(w, "8.100 (step 12)")) {
			t.Errorf("%s: warning %q does not say what rose where", c.name, w)
		}
	}
}

// The loss axis starts at 0 and reaches ln(vocab), drawn as the uniform
// guess; an overfitting warning is written on the chart.
func TestLossChartIsHonest(t *testing.T) {
	lines := series([]float64{9.76, 9.5, 9.2, 8.86}, map[int]float64{4: 9.0})
	var sb strings.Builder
	warn := "eval loss rose from 1 (step 2) to 2 (step 4)"
	if err := WriteLossSVG(&sb, lines, LossChart{Title: "loss: a.gguf", Vocab: 32000, Warning: warn}); err != nil {
		t.Fatal(err)
	}
	svg := sb.String()
	var ticks []float64
	for _, m := range regexp.MustCompile(`text-anchor="end">([0-9.]+)</text>`).FindAllStringSubmatch(svg, -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatalf("tick %q", m[1])
		}
		ticks = append(ticks, v)
	}
	if len(ticks) < 3 || ticks[0] != 0 || ticks[len(ticks)-1] < 10.37 {
		t.Fatalf("loss ticks %v: want 0 up to at least ln(32000) = 10.37", ticks)
	}
	if !strings.Contains(svg, "uniform guess: ln(32000) = 10.37") || !strings.Contains(svg, `stroke-dasharray`) {
		t.Errorf("no uniform-guess line:\n%s", svg)
	}
	if !strings.Contains(svg, "warning: "+warn) {
		t.Errorf("no warning on the chart:\n%s", svg)
	}
}
