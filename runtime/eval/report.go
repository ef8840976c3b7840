package eval

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/llmrt/llmrt/internal/chart"
)

// TrainingDeviceSeconds reads the compute time a fine-tuning run spent from
// the adapter's metrics file (the last line's device_seconds), 0 if absent.
func TrainingDeviceSeconds(adapter string) float64 {
	f, err := os.Open(strings.TrimSuffix(adapter, ".gguf") + ".metrics.jsonl")
	if err != nil {
		return 0
	}
	defer f.Close()
	var last struct {
		DeviceSeconds float64 `json:"device_seconds"`
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		json.Unmarshal(sc.Bytes(), &last)
	}
	return last.DeviceSeconds
}

// peakRSS is the process's peak resident memory (Linux VmHWM), 0 elsewhere.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// Files are the report's outputs.
type Files struct {
	Markdown, JSON, SVG, PNG string
}

// Write writes report.md, results.json, chart.svg (and chart.png when
// rsvg-convert is installed) into dir.
func (r *Report) Write(dir string) (Files, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Files{}, fmt.Errorf("report: %w", err)
	}
	f := Files{Markdown: filepath.Join(dir, "report.md"), JSON: filepath.Join(dir, "results.json"), SVG: filepath.Join(dir, "chart.svg")}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return f, err
	}
	if err := os.WriteFile(f.JSON, append(js, '\n'), 0o644); err != nil {
		return f, fmt.Errorf("report: %w", err)
	}
	var md strings.Builder
	r.Markdown(&md)
	if err := os.WriteFile(f.Markdown, []byte(md.String()), 0o644); err != nil {
		return f, fmt.Errorf("report: %w", err)
	}
	var svg strings.Builder
	r.Chart(&svg)
	if err := os.WriteFile(f.SVG, []byte(svg.String()), 0o644); err != nil {
		return f, fmt.Errorf("report: %w", err)
	}
	if conv, err := exec.LookPath("rsvg-convert"); err == nil {
		png := filepath.Join(dir, "chart.png")
		if exec.Command(conv, "-o", png, f.SVG).Run() == nil {
			f.PNG = png
		}
	}
	return f, nil
}

// Markdown renders the report.
func (r *Report) Markdown(w io.Writer) {
	fmt.Fprintf(w, "# Evaluation: %s\n\n", r.Model)
	fmt.Fprintf(w, "- questions: %d per arm; started %s; took %.1f s\n", r.questions(), r.Started.Format("2006-01-02 15:04:05"), r.DurationS)
	if r.Collection != "" {
		fmt.Fprintf(w, "- collection: `%s` (top %d passages; retrieval stages: %s)\n", r.Collection, r.TopK, r.Stages)
	}
	if r.Adapter != "" {
		fmt.Fprintf(w, "- adapter: `%s` (training: %.1f device-seconds, amortised over %d future queries)\n", r.Adapter, r.TrainingS, r.FutureQueries)
	}
	fmt.Fprintf(w, "- peak memory: %.1f MiB\n\n", float64(r.PeakRSSBytes)/(1<<20))
	fmt.Fprintln(w, "| arm | exact match | F1 | ΔF1 vs base [95% CI] | contains | judged | retrieval hit@k | p50 s | p95 s | prompt tok/q | completion tok/q | device s/q | training s/q | cost s/q | ROI (ΔF1 per s) [95% CI] |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, a := range r.Arms {
		judged, hit := "–", "–"
		if r.Judge != "" {
			judged = fmt.Sprintf("%.3f", a.Judged)
		}
		if a.Arm == ArmRAG || a.Arm == ArmRAGFT {
			hit = fmt.Sprintf("%.3f", a.RetrievalHitAtK)
		}
		fmt.Fprintf(w, "| %s | %.3f | %.3f | %s | %.3f | %s | %s | %.3f | %.3f | %.1f | %.1f | %.4f | %.4f | %.4f | %s |\n",
			a.Arm, a.ExactMatch, a.F1, a.DeltaCell(), a.Contains, judged, hit, a.LatencyP50S, a.LatencyP95S, a.PromptTokens, a.CompletionTokens,
			a.DeviceSecondsPerQ, a.TrainingSecondsPQ, a.CostPerQuestionS, a.ROICell())
	}
	fmt.Fprintf(w, "\nΔF1 is the F1 gained over the base arm; ROI is that gain per device-second of cost per question "+
		"(serving time plus amortised training). The brackets are 95%% intervals from %d bootstrap resamples of the questions, "+
		"paired with the base arm's answers. An arm marked \"n.s.\" has an interval that includes 0: on these %d questions its gain "+
		"cannot be told from none, whatever its ROI reads.\n", Bootstrap, r.questions())
	r.AblationMarkdown(w)
	if r.Judge != "" {
		fmt.Fprintf(w, "\nJudge model `%s`, prompt:\n\n```\n%s\n```\n", r.Judge, r.JudgePrompt)
	}
	fmt.Fprintln(w, "\n## Answers\n\n| arm | line | question | answer | gold | F1 |\n|---|---:|---|---|---|---:|")
	for _, a := range r.Answers {
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %.2f |\n", a.Arm, a.Line, cell(a.Question), cell(a.Answer), cell(strings.Join(a.Gold, " / ")), a.Scores.F1)
	}
}

// Summary writes what a terminal shows after a run: one line per arm with
// accuracy, the gain over base and its interval, latency and cost, then
// the retrieval-stage ablation when there is one.
func (r *Report) Summary(w io.Writer) error {
	fmt.Fprintf(w, "%s: %d questions per arm in %.1f s\n", r.Model, r.questions(), r.DurationS)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ARM\tF1\tΔF1 VS BASE [95% CI]\tEXACT\tCONTAINS\tHIT@K\tP50 S\tCOST S/Q\tROI ΔF1/S [95% CI]")
	for _, a := range r.Arms {
		hit := "–"
		if a.Arm == ArmRAG || a.Arm == ArmRAGFT {
			hit = fmt.Sprintf("%.2f", a.RetrievalHitAtK)
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%s\t%.3f\t%.3f\t%s\t%.3f\t%s\t%s\n", a.Arm, a.F1, a.DeltaCell(), a.ExactMatch, a.Contains, hit,
			a.LatencyP50S, sig(a.CostPerQuestionS, 3, false), a.ROICell())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "n.s.: the 95%% interval includes 0 (no gain shown on %d questions)\n", r.questions()); err != nil {
		return err
	}
	if len(r.Ablation) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\nretrieval stages (ablation, base model, top %d):\n", r.TopK)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGES\tHIT@K\tF1\tEXACT\tCONTAINS\tP50 S\tPROMPT TOK/Q")
	for _, a := range r.Ablation {
		fmt.Fprintf(tw, "%s\t%.2f\t%.3f\t%.3f\t%.3f\t%.3f\t%.0f\n", a.Stages, a.HitAtK, a.F1, a.ExactMatch, a.Contains, a.LatencyP50S, a.PromptTokens)
	}
	return tw.Flush()
}

// Significant reports whether the arm's F1 gain over base is told apart
// from none: its 95% interval excludes 0.
func (a ArmSummary) Significant() bool { return a.DeltaF1Low > 0 || a.DeltaF1High < 0 }

// DeltaCell is the F1 gain with its interval ("–" for the base arm).
func (a ArmSummary) DeltaCell() string {
	if a.Arm == ArmBase {
		return "–"
	}
	return interval(a.DeltaF1, a.DeltaF1Low, a.DeltaF1High, a.Significant())
}

// ROICell is the ROI with its interval, marked n.s. when the gain it
// divides is not told apart from none ("–" for the base arm).
func (a ArmSummary) ROICell() string {
	if a.Arm == ArmBase {
		return "–"
	}
	return interval(a.ROI, a.ROILow, a.ROIHigh, a.Significant())
}

func interval(v, lo, hi float64, significant bool) string {
	s := fmt.Sprintf("%s [%s, %s]", sig(v, 2, true), sig(lo, 2, true), sig(hi, 2, true))
	if !significant {
		s += " n.s."
	}
	return s
}

// sig writes f with n significant digits and no exponent (signed: with
// its sign, "+0.056").
func sig(f float64, n int, signed bool) string {
	dec := 0
	if f != 0 && !math.IsNaN(f) && !math.IsInf(f, 0) {
		dec = max(0, n-1-int(math.Floor(math.Log10(math.Abs(f)))))
	}
	s := strconv.FormatFloat(f, 'f', dec, 64)
	if signed && f >= 0 && !strings.HasPrefix(s, "-") {
		s = "+" + s
	}
	if strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
		if z := strings.Trim(s[1:], "0."); z == "" {
			s = "0" // no "-0.000"
		}
	}
	return s
}

func cell(s string) string {
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\n", " "), "|", "\\|")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

func (r *Report) questions() int {
	if len(r.Arms) == 0 {
		return 0
	}
	return r.Arms[0].Questions
}

// chartLayout is where the accuracy-vs-cost chart puts things.
type chartLayout struct {
	W, H           float64
	Plot           chart.Rect // the axes' area
	XTicks, YTicks []float64
	XStep, YStep   float64
	Points         []chart.Label // the arms' markers (Text is the arm)
	Labels         []chart.Placed
}

const markerR = 6.0

// layout places the axes on round ticks and each arm's label beside its
// marker, apart from the other labels and markers and inside the image.
func (r *Report) layout() chartLayout {
	l := chartLayout{W: 600, H: 400}
	l.Plot = chart.Rect{X: 64, Y: 44, W: l.W - 64 - 24, H: l.H - 44 - 56}
	maxCost := 0.0
	for _, a := range r.Arms {
		maxCost = max(maxCost, a.CostPerQuestionS)
	}
	l.XTicks, l.XStep = chart.Ticks(0, maxCost, 5)
	l.YTicks, l.YStep = chart.Ticks(0, 1, 5)
	xMax, yMax := l.XTicks[len(l.XTicks)-1], l.YTicks[len(l.YTicks)-1]
	var avoid []chart.Rect
	var labels []chart.Label
	for _, a := range r.Arms {
		p := chart.Label{Text: string(a.Arm),
			X: l.Plot.X + l.Plot.W*a.CostPerQuestionS/xMax,
			Y: l.Plot.Y + l.Plot.H*(1-a.F1/yMax)}
		l.Points = append(l.Points, p)
		avoid = append(avoid, chart.Rect{X: p.X - markerR, Y: p.Y - markerR, W: 2 * markerR, H: 2 * markerR})
		labels = append(labels, chart.Label{Text: fmt.Sprintf("%s (F1 %.2f)", a.Arm, a.F1), X: p.X, Y: p.Y})
	}
	// Labels may use the plot and the margins right of it and above it,
	// not the title's line or the axes' tick labels.
	bounds := chart.Rect{X: l.Plot.X + 2, Y: 28, W: l.W - 4 - (l.Plot.X + 2), H: l.Plot.Y + l.Plot.H - 2 - 28}
	l.Labels = chart.PlaceLabels(labels, 12, bounds, avoid)
	return l
}

// Chart draws accuracy (F1) against cost per question for each arm.
func (r *Report) Chart(w io.Writer) {
	l := r.layout()
	p := l.Plot
	xMax, yMax := l.XTicks[len(l.XTicks)-1], l.YTicks[len(l.YTicks)-1]
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n", l.W, l.H, l.W, l.H)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/><text x="%g" y="20" font-size="15">Accuracy vs cost: %s</text>`+"\n", p.X, escape(r.Model))
	for _, t := range l.YTicks {
		y := p.Y + p.H*(1-t/yMax)
		fmt.Fprintf(w, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#e5e5e5"/><text x="%g" y="%.1f" text-anchor="end">%s</text>`+"\n",
			p.X, y, p.X+p.W, y, p.X-6, y+4, chart.FormatTick(t, l.YStep))
	}
	for _, t := range l.XTicks {
		x := p.X + p.W*t/xMax
		fmt.Fprintf(w, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#e5e5e5"/><text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n",
			x, p.Y, x, p.Y+p.H, x, p.Y+p.H+16, chart.FormatTick(t, l.XStep))
	}
	fmt.Fprintf(w, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/><line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n",
		p.X, p.Y+p.H, p.X+p.W, p.Y+p.H, p.X, p.Y, p.X, p.Y+p.H)
	fmt.Fprintf(w, `<text x="%g" y="%g" text-anchor="middle">cost per question (device-seconds)</text>`+"\n", p.X+p.W/2, l.H-14)
	fmt.Fprintf(w, `<text x="16" y="%g" transform="rotate(-90 16 %g)" text-anchor="middle">F1</text>`+"\n", p.Y+p.H/2, p.Y+p.H/2)
	colors := map[Arm]string{ArmBase: "#7f7f7f", ArmRAG: "#1f77b4", ArmFT: "#ff7f0e", ArmRAGFT: "#2ca02c"}
	for i, a := range r.Arms {
		if pt, lb := l.Points[i], l.Labels[i]; lb.Moved { // a leader line to a label that had to move away
			ex := lb.Box.X
			if lb.Box.X+lb.Box.W/2 < pt.X {
				ex = lb.Box.X + lb.Box.W
			}
			fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="0.8"/>`+"\n",
				pt.X, pt.Y, ex, lb.Box.Y+lb.Box.H/2, colors[a.Arm])
		}
	}
	for i, a := range r.Arms {
		pt, lb := l.Points[i], l.Labels[i]
		fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="%g" fill="%s" fill-opacity="0.85"><title>%s: F1 %.3f, %.4f s/q</title></circle>`+"\n",
			pt.X, pt.Y, markerR, colors[a.Arm], a.Arm, a.F1, a.CostPerQuestionS)
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f">%s</text>`+"\n", lb.TextX, lb.TextY, escape(lb.Text))
	}
	fmt.Fprintln(w, "</svg>")
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
