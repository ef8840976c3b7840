package eval

import (
	"math"
	"testing"
)

func TestNormalize(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"The Eiffel Tower.", "eiffel tower"},
		{"  An  apple, a pear & THE plum!  ", "apple pear plum"},
		{"theory", "theory"}, // "the" only as a whole word
		{"Paris—France", "paris france"},
		{"", ""},
	} {
		if got := Normalize(c.in); got != c.want {
			t.Errorf("Normalize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestScoreHandWorked(t *testing.T) {
	for _, c := range []struct {
		pred  string
		golds []string
		want  Scores
	}{
		// Case, punctuation and articles do not matter.
		{"The Blue Whale.", []string{"blue whale"}, Scores{1, 1, 1}},
		// Aliases: the best match counts.
		{"NYC", []string{"New York City", "NYC"}, Scores{1, 1, 1}},
		// Contained on word boundaries, not exact: pred "it is blue whale" (4 words),
		// gold "blue whale" (2): common 2, P 2/4, R 2/2, F1 = 2*0.5*1/1.5 = 2/3.
		{"It is the blue whale", []string{"Blue whale"}, Scores{0, 2.0 / 3, 1}},
		// Partial overlap: pred "red apple" vs gold "green apple": common 1, P 1/2, R 1/2, F1 1/2.
		{"red apple", []string{"green apple"}, Scores{0, 0.5, 0}},
		// "cat" inside "catalog" is not a contained answer.
		{"catalog", []string{"cat"}, Scores{0, 0, 0}},
		// Repeated words count once per occurrence in both: pred "the the cat cat" -> "cat cat",
		// gold "cat": common 1, P 1/2, R 1, F1 2/3.
		{"the the cat cat", []string{"cat"}, Scores{0, 2.0 / 3, 1}},
		{"anything", nil, Scores{}},
	} {
		got := Score(c.pred, c.golds)
		if got.ExactMatch != c.want.ExactMatch || got.Contains != c.want.Contains || math.Abs(got.F1-c.want.F1) > 1e-9 {
			t.Errorf("Score(%q, %q) = %+v, want %+v", c.pred, c.golds, got, c.want)
		}
	}
}
