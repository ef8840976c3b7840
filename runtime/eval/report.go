package eval

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
	fmt.Fprintln(w, "| arm | exact match | F1 | contains | judged | retrieval hit@k | p50 s | p95 s | prompt tok/q | completion tok/q | device s/q | training s/q | cost s/q | ROI (ΔF1 per s) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, a := range r.Arms {
		judged, hit, roi := "–", "–", "–"
		if r.Judge != "" {
			judged = fmt.Sprintf("%.3f", a.Judged)
		}
		if a.Arm == ArmRAG || a.Arm == ArmRAGFT {
			hit = fmt.Sprintf("%.3f", a.RetrievalHitAtK)
		}
		if a.Arm != ArmBase {
			roi = fmt.Sprintf("%.3g", a.ROI)
		}
		fmt.Fprintf(w, "| %s | %.3f | %.3f | %.3f | %s | %s | %.3f | %.3f | %.1f | %.1f | %.4f | %.4f | %.4f | %s |\n",
			a.Arm, a.ExactMatch, a.F1, a.Contains, judged, hit, a.LatencyP50S, a.LatencyP95S, a.PromptTokens, a.CompletionTokens,
			a.DeviceSecondsPerQ, a.TrainingSecondsPQ, a.CostPerQuestionS, roi)
	}
	fmt.Fprintln(w, "\nROI is the F1 gained over the base arm per device-second of cost per question (serving time plus amortised training).")
	r.AblationMarkdown(w)
	if r.Judge != "" {
		fmt.Fprintf(w, "\nJudge model `%s`, prompt:\n\n```\n%s\n```\n", r.Judge, r.JudgePrompt)
	}
	fmt.Fprintln(w, "\n## Answers\n\n| arm | line | question | answer | gold | F1 |\n|---|---:|---|---|---|---:|")
	for _, a := range r.Answers {
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %.2f |\n", a.Arm, a.Line, cell(a.Question), cell(a.Answer), cell(strings.Join(a.Gold, " / ")), a.Scores.F1)
	}
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

// Chart draws accuracy (F1) against cost per question for each arm.
func (r *Report) Chart(w io.Writer) {
	const W, H, pad = 560.0, 380.0, 60.0
	maxCost, maxF1 := 0.0, 1.0
	for _, a := range r.Arms {
		maxCost = max(maxCost, a.CostPerQuestionS)
	}
	if maxCost == 0 {
		maxCost = 1
	}
	maxCost *= 1.15
	x := func(c float64) float64 { return pad + (W-2*pad)*c/maxCost }
	y := func(f float64) float64 { return H - pad - (H-2*pad)*f/maxF1 }
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/><text x="%g" y="24" font-size="15">Accuracy vs cost: %s</text>`+"\n", pad, escape(r.Model))
	fmt.Fprintf(w, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/><line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n",
		pad, H-pad, W-pad, H-pad, pad, pad, pad, H-pad)
	fmt.Fprintf(w, `<text x="%g" y="%g" text-anchor="middle">cost per question (device-seconds)</text>`+"\n", W/2, H-18)
	fmt.Fprintf(w, `<text x="16" y="%g" transform="rotate(-90 16 %g)" text-anchor="middle">F1</text>`+"\n", H/2, H/2)
	for i := 0; i <= 4; i++ {
		f := float64(i) / 4
		fmt.Fprintf(w, `<text x="%g" y="%g" text-anchor="end">%.2f</text>`+"\n", pad-6, y(f)+4, f)
		c := maxCost * float64(i) / 4
		fmt.Fprintf(w, `<text x="%g" y="%g" text-anchor="middle">%.3g</text>`+"\n", x(c), H-pad+16, c)
	}
	colors := map[Arm]string{ArmBase: "#7f7f7f", ArmRAG: "#1f77b4", ArmFT: "#ff7f0e", ArmRAGFT: "#2ca02c"}
	for _, a := range r.Arms {
		cx, cy := x(a.CostPerQuestionS), y(a.F1)
		fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="6" fill="%s"><title>%s: F1 %.3f, %.4f s/q</title></circle>`+"\n", cx, cy, colors[a.Arm], a.Arm, a.F1, a.CostPerQuestionS)
		fmt.Fprintf(w, `<text x="%.1f" y="%.1f">%s (%.2f)</text>`+"\n", cx+9, cy+4, a.Arm, a.F1)
	}
	fmt.Fprintln(w, "</svg>")
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
