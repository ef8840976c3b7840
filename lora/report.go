package lora

import (
	"fmt"
	"io"
	"math"
	"strings"
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

// WriteLossSVG draws the training loss (and eval loss points) per step as a
// small self-contained SVG.
func WriteLossSVG(w io.Writer, lines []MetricLine, title string) error {
	const W, H, pad = 640.0, 360.0, 48.0
	maxStep, maxLoss, minLoss := 1.0, 0.0, math.Inf(1)
	for _, l := range lines {
		maxStep = max(maxStep, float64(l.Step))
		for _, v := range []float64{l.Loss, l.EvalLoss} {
			if v > 0 {
				maxLoss = max(maxLoss, v)
				minLoss = min(minLoss, v)
			}
		}
	}
	if math.IsInf(minLoss, 1) {
		minLoss, maxLoss = 0, 1
	}
	if maxLoss-minLoss < 1e-6 {
		maxLoss = minLoss + 1
	}
	x := func(step int) float64 { return pad + (W-2*pad)*float64(step)/maxStep }
	y := func(v float64) float64 { return H - pad - (H-2*pad)*(v-minLoss)/(maxLoss-minLoss) }
	// Preference runs get a second panel below: reward margin and accuracy.
	pref := false
	for _, l := range lines {
		pref = pref || l.RewardMargin != nil
	}
	total := H
	if pref {
		total += prefPanelH
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n", W, total, W, total)
	fmt.Fprintf(&sb, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&sb, `<text x="%g" y="20" font-size="14">%s</text>`+"\n", pad, escapeXML(title))
	fmt.Fprintf(&sb, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", pad, H-pad, W-pad, H-pad)
	fmt.Fprintf(&sb, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", pad, pad, pad, H-pad)
	fmt.Fprintf(&sb, `<text x="%g" y="%g" text-anchor="middle">step</text>`+"\n", W/2, H-12)
	fmt.Fprintf(&sb, `<text x="12" y="%g" transform="rotate(-90 12 %g)" text-anchor="middle">loss</text>`+"\n", H/2, H/2)
	for i := 0; i <= 4; i++ {
		v := minLoss + (maxLoss-minLoss)*float64(i)/4
		fmt.Fprintf(&sb, `<text x="%g" y="%g" text-anchor="end">%.3g</text>`+"\n", pad-4, y(v)+4, v)
		s := int(maxStep * float64(i) / 4)
		fmt.Fprintf(&sb, `<text x="%g" y="%g" text-anchor="middle">%d</text>`+"\n", x(s), H-pad+16, s)
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
	fmt.Fprintf(&sb, `<text x="%g" y="%g" fill="#1f77b4">train loss</text><text x="%g" y="%g" fill="#d62728">eval loss</text>`+"\n", W-pad-140, pad, W-pad-60, pad)
	if pref {
		writePreferencePanel(&sb, lines, H, maxStep)
	}
	sb.WriteString("</svg>\n")
	_, err := io.WriteString(w, sb.String())
	return err
}

const prefPanelH = 280.0

// writePreferencePanel draws the DPO reward margin (left axis) and the
// reward accuracy (right axis, 0 to 1) per step in a panel starting at top.
func writePreferencePanel(sb *strings.Builder, lines []MetricLine, top, maxStep float64) {
	const W, pad = 640.0, 48.0
	lo, hi := 0.0, 0.0
	for _, l := range lines {
		for _, v := range []*float64{l.RewardMargin, l.EvalRewardMargin} {
			if v != nil {
				lo, hi = min(lo, *v), max(hi, *v)
			}
		}
	}
	if hi-lo < 1e-6 {
		hi = lo + 1
	}
	bottom := top + prefPanelH - pad
	y0 := top + 16
	x := func(step int) float64 { return pad + (W-2*pad)*float64(step)/maxStep }
	ym := func(v float64) float64 { return bottom - (bottom-y0)*(v-lo)/(hi-lo) }
	ya := func(v float64) float64 { return bottom - (bottom-y0)*v }
	fmt.Fprintf(sb, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", pad, bottom, W-pad, bottom)
	fmt.Fprintf(sb, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", pad, y0, pad, bottom)
	fmt.Fprintf(sb, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n", W-pad, y0, W-pad, bottom)
	fmt.Fprintf(sb, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#bbb" stroke-dasharray="4 3"/>`+"\n", pad, ym(0), W-pad, ym(0))
	for i := 0; i <= 4; i++ {
		v := lo + (hi-lo)*float64(i)/4
		fmt.Fprintf(sb, `<text x="%g" y="%.1f" text-anchor="end" fill="#2ca02c">%.3g</text>`+"\n", pad-4, ym(v)+4, v)
		fmt.Fprintf(sb, `<text x="%g" y="%.1f" fill="#9467bd">%.2g</text>`+"\n", W-pad+4, ya(float64(i)/4)+4, float64(i)/4)
		s := int(maxStep * float64(i) / 4)
		fmt.Fprintf(sb, `<text x="%g" y="%g" text-anchor="middle">%d</text>`+"\n", x(s), bottom+16, s)
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
		pad+8, y0+4, W-pad-110, y0+4)
}

func escapeXML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
