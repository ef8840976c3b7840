package lora

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/llmrt/llmrt/internal/chart"
)

// MetricLine is one line of ADAPTER.metrics.jsonl.
type MetricLine struct {
	Step         int     `json:"step"`
	Epoch        int     `json:"epoch"`
	Loss         float64 `json:"loss"`
	EvalLoss     float64 `json:"eval_loss,omitempty"`
	LR           float64 `json:"lr"`
	Tokens       int     `json:"train_tokens"`
	TokensPerSec float64 `json:"tokens_per_s"`
	ElapsedS     float64 `json:"elapsed_s"`
	// DeviceSeconds is the compute time spent so far (for cost reports).
	DeviceSeconds float64 `json:"device_seconds"`
	// Preference training (DPO): pairs in the step, the mean implicit
	// rewards β(π−ref) of the chosen and rejected answers, their margin,
	// and the share of pairs ranked right; the same on the eval pairs.
	Pairs              int      `json:"pairs,omitempty"`
	RewardMargin       *float64 `json:"reward_margin,omitempty"`
	RewardAccuracy     *float64 `json:"reward_accuracy,omitempty"`
	ChosenReward       *float64 `json:"chosen_reward,omitempty"`
	RejectedReward     *float64 `json:"rejected_reward,omitempty"`
	EvalRewardMargin   *float64 `json:"eval_reward_margin,omitempty"`
	EvalRewardAccuracy *float64 `json:"eval_reward_accuracy,omitempty"`
}

func ptr(v float64) *float64 { return &v }

// setPreference records a step's DPO statistics.
func (l *MetricLine) setPreference(s PreferenceStats) {
	l.Pairs = s.Pairs
	l.RewardMargin, l.RewardAccuracy, l.ChosenReward, l.RejectedReward = ptr(s.Margin), ptr(s.Accuracy), ptr(s.Chosen), ptr(s.Rejected)
}

// overfitRise is how much the eval loss must rise above its best before a
// run is called overfitting (relative), so that noise does not.
const overfitRise = 0.02

// OverfitWarning says, when the eval loss rose from its best while the
// training loss kept falling, that the run is overfitting; "" otherwise.
// The training loss at an evaluation is the mean over the steps since the
// previous one, which smooths the per-step noise.
func OverfitWarning(lines []MetricLine) string {
	type point struct {
		step        int
		eval, train float64
	}
	var pts []point
	var sum float64
	var n int
	for _, l := range lines {
		if l.Loss > 0 {
			sum += l.Loss
			n++
		}
		if l.EvalLoss > 0 && n > 0 {
			pts = append(pts, point{l.Step, l.EvalLoss, sum / float64(n)})
			sum, n = 0, 0
		}
	}
	if len(pts) < 2 {
		return ""
	}
	best := 0
	for i, p := range pts {
		if p.eval < pts[best].eval {
			best = i
		}
	}
	b, last := pts[best], pts[len(pts)-1]
	if last.eval <= b.eval*(1+overfitRise) || last.train >= b.train {
		return ""
	}
	return fmt.Sprintf("eval loss rose from %.3f (step %d) to %.3f (step %d) while train loss fell from %.3f to %.3f: "+
		"the adapter is overfitting its training data (fewer epochs, a lower learning rate or more data help)",
		b.eval, b.step, last.eval, last.step, b.train, last.train)
}

// LossChart is what the loss curve shows besides the metrics.
type LossChart struct {
	Title string
	// Vocab, when known, draws ln(Vocab): the loss of a uniform guess over
	// the vocabulary, the scale a loss is read against.
	Vocab int
	// Warning is written under the title (overfitting).
	Warning string
}

// WriteLossSVG draws the training loss (and eval loss points) per step as a
// small self-contained SVG. The loss axis starts at 0, so that a drop
// reads at its true size.
func WriteLossSVG(w io.Writer, lines []MetricLine, c LossChart) error {
	const W, H = 640.0, 380.0
	plot := chart.Rect{X: 56, Y: 52, W: W - 56 - 56, H: H - 52 - 48}
	// Preference runs get a second panel below: reward margin and accuracy.
	pref := false
	for _, l := range lines {
		pref = pref || l.RewardMargin != nil
	}
	total := H
	if pref {
		total += prefPanelH
	}
	var warning []string
	if c.Warning != "" {
		warning = wrap("warning: "+c.Warning, int((W-plot.X-8)/chart.TextWidth("x", 11)))
		plot.Y += 14 * float64(len(warning))
		plot.H -= 14 * float64(len(warning))
	}
	maxStep, maxLoss := 1.0, 0.0
	for _, l := range lines {
		maxStep = max(maxStep, float64(l.Step))
		maxLoss = max(maxLoss, l.Loss, l.EvalLoss)
	}
	uniform := 0.0
	if c.Vocab > 1 && !pref { // a preference loss is not a next-token one
		uniform = math.Log(float64(c.Vocab))
		maxLoss = max(maxLoss, uniform)
	}
	if maxLoss <= 0 {
		maxLoss = 1
	}
	yTicks, yStep := chart.Ticks(0, maxLoss, 5)
	xTicks, xStep := chart.Ticks(0, maxStep, 5)
	if xStep < 1 { // steps are whole
		xTicks, xStep = chart.Ticks(0, math.Max(maxStep, 5), 5)
	}
	yMax, xMax := yTicks[len(yTicks)-1], xTicks[len(xTicks)-1]
	x := func(step int) float64 { return plot.X + plot.W*float64(step)/xMax }
	y := func(v float64) float64 { return plot.Y + plot.H*(1-v/yMax) }
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n", W, total, W, total)
	fmt.Fprintf(&sb, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&sb, `<text x="%g" y="20" font-size="14">%s</text>`+"\n", plot.X, escapeXML(c.Title))
	for i, line := range warning {
		fmt.Fprintf(&sb, `<text x="%g" y="%d" font-size="11" fill="#b00000">%s</text>`+"\n", plot.X, 40+14*i, escapeXML(line))
	}
	for _, t := range yTicks {
		fmt.Fprintf(&sb, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#e5e5e5"/><text x="%g" y="%.1f" text-anchor="end">%s</text>`+"\n",
			plot.X, y(t), plot.X+plot.W, y(t), plot.X-4, y(t)+4, chart.FormatTick(t, yStep))
	}
	for _, t := range xTicks {
		fmt.Fprintf(&sb, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", x(int(t)), plot.Y+plot.H+16, chart.FormatTick(t, xStep))
	}
	fmt.Fprintf(&sb, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", plot.X, plot.Y+plot.H, plot.X+plot.W, plot.Y+plot.H)
	fmt.Fprintf(&sb, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", plot.X, plot.Y, plot.X, plot.Y+plot.H)
	fmt.Fprintf(&sb, `<text x="%g" y="%g" text-anchor="middle">step</text>`+"\n", plot.X+plot.W/2, H-12)
	fmt.Fprintf(&sb, `<text x="14" y="%g" transform="rotate(-90 14 %g)" text-anchor="middle">loss</text>`+"\n", plot.Y+plot.H/2, plot.Y+plot.H/2)
	if uniform > 0 {
		fmt.Fprintf(&sb, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#888" stroke-dasharray="5,4"/>`+"\n", plot.X, y(uniform), plot.X+plot.W, y(uniform))
		fmt.Fprintf(&sb, `<text x="%g" y="%.1f" text-anchor="end" fill="#666" font-size="11">uniform guess: ln(%d) = %.2f</text>`+"\n",
			plot.X+plot.W-4, y(uniform)-4, c.Vocab, uniform)
	}
	var pts []string
	for _, l := range lines {
		if l.Loss > 0 {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(l.Step), y(l.Loss)))
		}
	}
	fmt.Fprintf(&sb, `<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="%s"/>`+"\n", strings.Join(pts, " "))
	for _, l := range lines {
		if l.EvalLoss > 0 {
			fmt.Fprintf(&sb, `<circle cx="%.1f" cy="%.1f" r="3" fill="#d62728"/>`+"\n", x(l.Step), y(l.EvalLoss))
		}
	}
	fmt.Fprintf(&sb, `<text x="%g" y="%g" fill="#1f77b4">train loss</text><text x="%g" y="%g" fill="#d62728">eval loss</text>`+"\n",
		plot.X+plot.W-140, plot.Y-6, plot.X+plot.W-60, plot.Y-6)
	if pref {
		writePreferencePanel(&sb, lines, H, plot, x, xTicks, xStep)
	}
	sb.WriteString("</svg>\n")
	_, err := io.WriteString(w, sb.String())
	return err
}

// wrap breaks s into lines of at most width characters at spaces.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len([]rune(line))+1+len([]rune(w)) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

const prefPanelH = 280.0

// writePreferencePanel draws the DPO reward margin (left axis) and the
// reward accuracy (right axis, 0 to 1) per step in a panel starting at top,
// on the loss plot's step axis.
func writePreferencePanel(sb *strings.Builder, lines []MetricLine, top float64, plot chart.Rect, x func(int) float64, xTicks []float64, xStep float64) {
	const pad = 48.0
	left, right := plot.X, plot.X+plot.W
	lo, hi := 0.0, 0.0
	for _, l := range lines {
		for _, v := range []*float64{l.RewardMargin, l.EvalRewardMargin} {
			if v != nil {
				lo, hi = min(lo, *v), max(hi, *v)
			}
		}
	}
	mTicks, mStep := chart.Ticks(lo, hi, 4) // round ticks; the axis spans them
	lo, hi = mTicks[0], mTicks[len(mTicks)-1]
	bottom := top + prefPanelH - pad
	y0 := top + 16
	ym := func(v float64) float64 { return bottom - (bottom-y0)*(v-lo)/(hi-lo) }
	ya := func(v float64) float64 { return bottom - (bottom-y0)*v }
	fmt.Fprintf(sb, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", left, bottom, right, bottom)
	fmt.Fprintf(sb, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", left, y0, left, bottom)
	fmt.Fprintf(sb, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", right, y0, right, bottom)
	fmt.Fprintf(sb, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#bbb" stroke-dasharray="4 3"/>`+"\n", left, ym(0), right, ym(0))
	for _, v := range mTicks {
		fmt.Fprintf(sb, `<text x="%g" y="%.1f" text-anchor="end" fill="#2ca02c">%s</text>`+"\n", left-4, ym(v)+4, chart.FormatTick(v, mStep))
	}
	for i := 0; i <= 4; i++ {
		fmt.Fprintf(sb, `<text x="%g" y="%.1f" fill="#9467bd">%s</text>`+"\n", right+4, ya(float64(i)/4)+4, chart.FormatTick(float64(i)/4, 0.25))
	}
	for _, t := range xTicks {
		fmt.Fprintf(sb, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", x(int(t)), bottom+16, chart.FormatTick(t, xStep))
	}
	var mp, ap []string
	for _, l := range lines {
		if l.RewardMargin != nil {
			mp = append(mp, fmt.Sprintf("%.1f,%.1f", x(l.Step), ym(*l.RewardMargin)))
		}
		if l.RewardAccuracy != nil {
			ap = append(ap, fmt.Sprintf("%.1f,%.1f", x(l.Step), ya(*l.RewardAccuracy)))
		}
	}
	fmt.Fprintf(sb, `<polyline fill="none" stroke="#2ca02c" stroke-width="1.5" points="%s"/>`+"\n", strings.Join(mp, " "))
	fmt.Fprintf(sb, `<polyline fill="none" stroke="#9467bd" stroke-width="1.5" points="%s"/>`+"\n", strings.Join(ap, " "))
	for _, l := range lines {
		if l.EvalRewardMargin != nil {
			fmt.Fprintf(sb, `<circle cx="%.1f" cy="%.1f" r="3" fill="#2ca02c"/>`+"\n", x(l.Step), ym(*l.EvalRewardMargin))
		}
	}
	fmt.Fprintf(sb, `<text x="%g" y="%g" fill="#2ca02c">reward margin (dots: eval)</text><text x="%g" y="%g" fill="#9467bd">reward accuracy</text>`+"\n",
		left+8, y0+4, right-110, y0+4)
}

func escapeXML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
