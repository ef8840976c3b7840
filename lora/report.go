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
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
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
	sb.WriteString("</svg>\n")
	_, err := io.WriteString(w, sb.String())
	return err
}

func escapeXML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
