package eval

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/internal/chart"
)

// answers builds n questions answered by base and arm: base scores F1 0
// everywhere, arm scores F1 1 on the first `right` questions; every
// answer took latency seconds.
func answers(arm Arm, n, right int, latency float64) []Answer {
	var out []Answer
	for i := 0; i < n; i++ {
		out = append(out, Answer{Arm: ArmBase, Line: i + 1, LatencyS: latency})
		a := Answer{Arm: arm, Line: i + 1, LatencyS: latency}
		if i < right {
			a.Scores.F1 = 1
		}
		out = append(out, a)
	}
	return out
}

// One right answer in 20 moves F1 by 0.05 and gives a positive ROI, but
// its interval reaches 0: the report says it is no shown gain. 18 of 20
// is a gain whose interval stays above 0.
func TestROIHasABootstrapInterval(t *testing.T) {
	for _, c := range []struct {
		right       int
		significant bool
	}{{1, false}, {18, true}, {0, false}} {
		all := answers(ArmFT, 20, c.right, 0.5)
		s := summarize(ArmFT, all, 20*0.5, 20)
		s.TrainingSecondsPQ = 0.1
		s.CostPerQuestionS = s.DeviceSecondsPerQ + s.TrainingSecondsPQ
		gainOverBase(&s, all, 1, 2)
		want := float64(c.right) / 20
		if math.Abs(s.DeltaF1-want) > 1e-9 || math.Abs(s.ROI-want/0.6) > 1e-9 {
			t.Fatalf("%d right: ΔF1 %v ROI %v, want %v and %v", c.right, s.DeltaF1, s.ROI, want, want/0.6)
		}
		if !(s.DeltaF1Low <= s.DeltaF1 && s.DeltaF1 <= s.DeltaF1High && s.ROILow <= s.ROI && s.ROI <= s.ROIHigh) {
			t.Fatalf("%d right: intervals do not hold the estimates: %+v", c.right, s)
		}
		if c.right > 0 && c.right < 20 && !(s.DeltaF1High > s.DeltaF1Low) {
			t.Fatalf("%d right: an interval of no width %+v", c.right, s)
		}
		if s.Significant() != c.significant {
			t.Fatalf("%d right: significant %v, interval [%v, %v]", c.right, s.Significant(), s.DeltaF1Low, s.DeltaF1High)
		}
		cell := s.ROICell()
		if strings.Contains(cell, "n.s.") == c.significant || !strings.Contains(cell, "[") {
			t.Fatalf("%d right: ROI cell %q", c.right, cell)
		}
		// The same questions give the same interval (seeded).
		again := s
		gainOverBase(&again, all, 1, 2)
		if again != s {
			t.Fatalf("two runs differ: %+v vs %+v", again, s)
		}
	}
}

func sampleReport(arms ...ArmSummary) *Report {
	return &Report{Model: "stories260K", Arms: arms, Answers: answers(ArmFT, 20, 1, 0.06)}
}

// The tester's report: every arm near F1 0, costs 0.05 to 0.24 s.
func testerReport() *Report {
	return sampleReport(
		ArmSummary{Arm: ArmBase, Questions: 20, F1: 0.0, CostPerQuestionS: 0.0476},
		ArmSummary{Arm: ArmRAG, Questions: 20, F1: 0.004, CostPerQuestionS: 0.238, DeltaF1: 0.004, DeltaF1High: 0.012},
		ArmSummary{Arm: ArmFT, Questions: 20, F1: 0.01, CostPerQuestionS: 0.0595, DeltaF1: 0.01, DeltaF1High: 0.03, ROI: 0.168, ROIHigh: 0.5},
		ArmSummary{Arm: ArmRAGFT, Questions: 20, F1: 0.002, CostPerQuestionS: 0.2381, DeltaF1: 0.002, DeltaF1High: 0.006},
	)
}

func TestChartTicksAreRoundAndLabelsApart(t *testing.T) {
	reports := map[string]*Report{
		"tester": testerReport(),
		"same spot": sampleReport(
			ArmSummary{Arm: ArmBase, CostPerQuestionS: 0.1}, ArmSummary{Arm: ArmRAG, CostPerQuestionS: 0.1},
			ArmSummary{Arm: ArmFT, CostPerQuestionS: 0.1}, ArmSummary{Arm: ArmRAGFT, CostPerQuestionS: 0.1}),
		"top right": sampleReport(
			ArmSummary{Arm: ArmBase, F1: 0.98, CostPerQuestionS: 3.1}, ArmSummary{Arm: ArmRAG, F1: 1, CostPerQuestionS: 3.3},
			ArmSummary{Arm: ArmFT, F1: 0.97, CostPerQuestionS: 3.2}, ArmSummary{Arm: ArmRAGFT, F1: 1, CostPerQuestionS: 3.25}),
		"no cost": sampleReport(ArmSummary{Arm: ArmBase}, ArmSummary{Arm: ArmFT, F1: 0.5}),
	}
	for name, r := range reports {
		l := r.layout()
		image := chart.Rect{W: l.W, H: l.H}
		for _, ticks := range []struct {
			v    []float64
			step float64
		}{{l.XTicks, l.XStep}, {l.YTicks, l.YStep}} {
			for _, v := range ticks.v {
				s := chart.FormatTick(v, ticks.step)
				if got, _ := strconv.ParseFloat(s, 64); math.Abs(got-v) > ticks.step*1e-6 {
					t.Errorf("%s: tick %v prints as %s", name, v, s)
				}
				if k := v / ticks.step; math.Abs(k-math.Round(k)) > 1e-6 {
					t.Errorf("%s: tick %v is not a multiple of the step %v", name, v, ticks.step)
				}
			}
		}
		for i, p := range l.Labels {
			if !p.Box.Inside(image) || p.Box.Y < 28 {
				t.Errorf("%s: label %q at %+v leaves the image or covers the title", name, p.Text, p.Box)
			}
			if p.Box.Y+p.Box.H > l.Plot.Y+l.Plot.H || p.Box.X < l.Plot.X {
				t.Errorf("%s: label %q at %+v covers the axes' tick labels", name, p.Text, p.Box)
			}
			for j, q := range l.Labels[:i] {
				if p.Box.Intersects(q.Box) {
					t.Errorf("%s: labels %q and %q overlap", name, p.Text, l.Labels[j].Text)
				}
			}
		}
		var svg strings.Builder
		r.Chart(&svg)
		// Tick labels in the SVG carry at most the step's decimals.
		for _, m := range regexp.MustCompile(`text-anchor="(?:end|middle)">([0-9.]+)<`).FindAllStringSubmatch(svg.String(), -1) {
			if i := strings.IndexByte(m[1], '.'); i >= 0 && len(m[1])-i-1 > 2 {
				t.Errorf("%s: tick label %s", name, m[1])
			}
		}
	}
	l := testerReport().layout()
	var xs []string
	for _, v := range l.XTicks {
		xs = append(xs, chart.FormatTick(v, l.XStep))
	}
	if got := fmt.Sprint(xs); got != "[0.00 0.05 0.10 0.15 0.20 0.25]" {
		t.Errorf("x ticks of the tester's report: %s", got)
	}
}

// The terminal summary is the per-arm table, not the answers.
func TestSummaryIsTheTable(t *testing.T) {
	r := testerReport()
	var sb strings.Builder
	if err := r.Summary(&sb); err != nil {
		t.Fatal(err)
	}
	out := sb.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2+len(r.Arms)+1 {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	for i, a := range r.Arms {
		if !strings.HasPrefix(lines[2+i], string(a.Arm)+" ") {
			t.Errorf("line %d is not arm %s: %q", 2+i, a.Arm, lines[2+i])
		}
	}
	if !strings.Contains(lines[4], "n.s.") || strings.Contains(out, "Answers") {
		t.Errorf("summary:\n%s", out)
	}
	// An ablation adds its table, a row per set of stages.
	r.TopK = 4
	r.Ablation = []AblationRow{{Stages: "none", HitAtK: 0.5}, {Stages: "rerank", HitAtK: 0.75}}
	sb.Reset()
	if err := r.Summary(&sb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"retrieval stages (ablation, base model, top 4):", "\nnone    ", "\nrerank  "} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sb.String())
		}
	}
	var md strings.Builder
	r.Markdown(&md)
	if !strings.Contains(md.String(), "bootstrap") || !strings.Contains(md.String(), "## Answers") {
		t.Errorf("report.md does not explain the intervals or lacks the answers")
	}
}
