// Package eval measures whether retrieval, fine-tuning or both pay off: it
// runs the same questions through up to four arms (base, RAG, fine-tuned,
// RAG + fine-tuned), scores the answers, and reports accuracy beside cost.
//
// The scorers follow the SQuAD conventions: answers are compared after
// lower-casing, removing punctuation and the articles a/an/the, and folding
// whitespace; a question may accept several gold answers (its aliases), and
// each score takes the best over them.
package eval

import (
	"strings"
	"unicode"
)

// Normalize lower-cases s, drops punctuation and the articles "a", "an" and
// "the", and folds runs of whitespace into single spaces.
func Normalize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case unicode.IsPunct(r) || unicode.IsSymbol(r):
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	words := strings.Fields(b.String())
	out := words[:0]
	for _, w := range words {
		if w != "a" && w != "an" && w != "the" {
			out = append(out, w)
		}
	}
	return strings.Join(out, " ")
}

// Scores are one answer's scores against its gold answers, each in [0, 1].
type Scores struct {
	ExactMatch float64 `json:"exact_match"`
	F1         float64 `json:"f1"`
	Contains   float64 `json:"contains"`
}

// Score compares a prediction with every gold answer and keeps the best
// of each score.
func Score(prediction string, golds []string) Scores {
	var s Scores
	p := Normalize(prediction)
	for _, g := range golds {
		n := Normalize(g)
		if n == "" {
			continue
		}
		if p == n {
			s.ExactMatch = 1
		}
		if containsWords(p, n) {
			s.Contains = 1
		}
		s.F1 = max(s.F1, tokenF1(p, n))
	}
	return s
}

// containsWords reports whether gold appears in pred on word boundaries.
func containsWords(pred, gold string) bool {
	return strings.Contains(" "+pred+" ", " "+gold+" ")
}

// tokenF1 is the harmonic mean of word precision and recall, counting
// repeated words as often as they occur in both.
func tokenF1(pred, gold string) float64 {
	pw, gw := strings.Fields(pred), strings.Fields(gold)
	if len(pw) == 0 || len(gw) == 0 {
		if len(pw) == len(gw) {
			return 1
		}
		return 0
	}
	counts := map[string]int{}
	for _, w := range gw {
		counts[w]++
	}
	common := 0
	for _, w := range pw {
		if counts[w] > 0 {
			counts[w]--
			common++
		}
	}
	if common == 0 {
		return 0
	}
	precision := float64(common) / float64(len(pw))
	recall := float64(common) / float64(len(gw))
	return 2 * precision * recall / (precision + recall)
}
