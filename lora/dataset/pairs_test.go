package dataset

import (
	"errors"
	"strings"
	"testing"
)

func TestPreferencePairsFormatsAndMasks(t *testing.T) {
	tok := phi3(t)
	path := writeFile(t, "prefs.jsonl", strings.Join([]string{
		`{"prompt": "Q: capital of France?\nA:", "chosen": " Paris", "rejected": " Lyon"}`,
		`{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a colour"}], "chosen": {"role": "assistant", "content": "Blue"}, "rejected": "Seven"}`,
		`{"input": {"messages": [{"role": "user", "content": "2+2?"}]}, "preferred_output": [{"role": "assistant", "content": "4"}], "non_preferred_output": [{"role": "assistant", "content": "5"}]}`,
		`{"prompt": "x", "chosen": "same", "rejected": "same"}`,
		`{"prompt": "x", "chosen": "a"}`,
		`{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "chosen": "a", "rejected": "b"}`,
	}, "\n"))
	pairs, warns, err := LoadPairs(path, tok, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != 3 || len(warns) != 3 {
		t.Fatalf("%d pairs and %d warnings, want 3 and 3: %v", len(pairs), len(warns), warns)
	}
	var le *LineError
	if !errors.As(warns[0], &le) || le.Line != 4 || !strings.Contains(warns[1].Error(), "rejected") {
		t.Fatalf("warnings: %v", warns)
	}
	want := [][2]string{{"Paris", "Lyon"}, {"Blue", "Seven"}, {"4", "5"}}
	for i, p := range pairs {
		c, r := trained(t, tok, p.Chosen), trained(t, tok, p.Rejected)
		// Only the final answer (and the end of turn after it) is trained:
		// the prompt and the earlier assistant turn of line 2 are context.
		for j, got := range []string{c, r} {
			if !strings.HasPrefix(strings.TrimSpace(got), want[i][j]) || strings.Contains(got, "Hello") || strings.Contains(got, "?") {
				t.Errorf("pair %d side %d trains on %q, want the answer %q only", i, j, got, want[i][j])
			}
		}
	}
	if _, _, err := LoadPairs(path, tok, Options{Strict: true}); err == nil || !strings.Contains(err.Error(), ":4:") {
		t.Fatalf("strict: %v", err)
	}

	// Packing: both sides of a pair in one row as segments 2k and 2k+1,
	// positions from 0 in each, labels only on the answers.
	var st Stats
	rows := PackPairs(pairs, 512, &st)
	if len(rows) != 1 || rows[0].Pairs() != 3 || st.Examples != 3 {
		t.Fatalf("%d rows holding %d pairs (%+v)", len(rows), rows[0].Pairs(), st)
	}
	r := rows[0]
	segLabels := map[int32]int{}
	for i := range r.Tokens {
		if i > 0 && r.Seg[i] != r.Seg[i-1] && (r.Pos[i] != 0 || r.Seg[i] != r.Seg[i-1]+1) {
			t.Fatalf("position %d starts segment %d at position %d", i, r.Seg[i], r.Pos[i])
		}
		if r.Labels[i] >= 0 {
			segLabels[r.Seg[i]]++
		}
	}
	if len(segLabels) != 6 {
		t.Fatalf("labelled segments %v, want all six", segLabels)
	}
	// A context too short for the prompt drops the pair, counted.
	var st2 Stats
	if rows := PackPairs(pairs[1:2], 8, &st2); len(rows) != 0 || st2.EmptyAnswers != 1 || st2.Truncated != 1 {
		t.Fatalf("pair longer than the context: %d rows, %+v", len(rows), st2)
	}
}
