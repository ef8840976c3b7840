package versions

import "fmt"

// Decision is the promotion gate's verdict on a candidate version against
// the incumbent (the promoted version, or the base without an adapter),
// from their scores on a held-out set (higher is better).
type Decision struct {
	Metric         string  `json:"metric"`
	Candidate      string  `json:"candidate"`
	Incumbent      string  `json:"incumbent"`
	CandidateScore float64 `json:"candidate_score"`
	IncumbentScore float64 `json:"incumbent_score"`
	Gain           float64 `json:"gain"`
	Margin         float64 `json:"margin"`
	Promote        bool    `json:"promote"`
	Reason         string  `json:"reason"`
}

// Decide promotes the candidate only when it beats the incumbent by at
// least margin.
func Decide(metric, candidate string, cs float64, incumbent string, is, margin float64) Decision {
	d := Decision{Metric: metric, Candidate: candidate, Incumbent: incumbent, CandidateScore: cs, IncumbentScore: is, Gain: cs - is, Margin: margin}
	d.Promote = d.Gain >= margin
	switch {
	case d.Promote:
		d.Reason = fmt.Sprintf("%s scores %.4f %s against %.4f for %s: a gain of %+.4f, at least the margin %.4f", candidate, cs, metric, is, incumbent, d.Gain, margin)
	case d.Gain < 0:
		d.Reason = fmt.Sprintf("%s is worse: %.4f %s against %.4f for %s (gain %+.4f; the margin is %.4f)", candidate, cs, metric, is, incumbent, d.Gain, margin)
	default:
		d.Reason = fmt.Sprintf("%s is not better by the margin: %.4f %s against %.4f for %s (gain %+.4f < margin %.4f)", candidate, cs, metric, is, incumbent, d.Gain, margin)
	}
	return d
}
