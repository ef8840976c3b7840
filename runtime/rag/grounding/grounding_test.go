package grounding

import (
	"errors"
	"slices"
	"testing"

	"github.com/llmrt/llmrt/runtime/engine"
)

func TestContextAndCited(t *testing.T) {
	ps := []Passage{
		{Source: "/d/guide.md", Title: "Install > Linux", Text: "Run setup.sh. "},
		{Source: "/d/notes.txt", Title: "notes.txt", Text: "Budget approved."},
		{Source: "/d/faq.html", Title: "FAQ", Text: "Reset via email."},
		{Source: "/d/x.txt", Title: "x.txt", Text: "unused"},
	}
	block := Context(ps)
	want := "[1] (guide.md: Install > Linux) Run setup.sh.\n\n[2] (notes.txt) Budget approved.\n\n[3] (faq.html: FAQ) Reset via email.\n\n[4] (x.txt) unused\n\n"
	if block != want {
		t.Fatalf("context block\n%q\nwant\n%q", block, want)
	}
	if sp := System(ps); sp != Instruction+"\n\n"+want {
		t.Errorf("system prompt %q", sp)
	}
	for _, tc := range []struct {
		answer string
		want   []int
	}{
		{"Run the script [1].", []int{1}},
		{"Reset by email [3], budget ok [2][3].", []int{3, 2}},
		{"See [1, 3] and [2-3].", []int{1, 3, 2}},
		{"Both [3 and 1]; [ 2 ]", []int{3, 1, 2}},
		{"Out of range [0] [5] [12], arrays a[i] and [x].", nil},
		{"No citations at all.", nil},
		{"Range [1–2]", []int{1, 2}},
	} {
		if got := Cited(tc.answer, len(ps)); !slices.Equal(got, tc.want) {
			t.Errorf("Cited(%q) = %v, want %v", tc.answer, got, tc.want)
		}
	}
}

// Ground puts the passages right before the last user turn and keeps
// every other message where it was.
func TestGround(t *testing.T) {
	ps := []Passage{{Source: "a.md", Text: "Alpha."}}
	msgs := []engine.ChatMessage{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "first"},
		{Role: "assistant", Content: "ok"},
		{Role: "user", Content: "second"},
	}
	out, err := Ground(msgs, ps)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 5 || out[3].Role != "system" || out[3].Content != System(ps) || out[4].Content != "second" || out[0].Content != "Be brief." {
		t.Fatalf("grounded %+v", out)
	}
	if msgs[3].Content != "second" || len(msgs) != 4 {
		t.Fatal("Ground changed its input")
	}
	if _, err := Ground([]engine.ChatMessage{{Role: "system", Content: "x"}}, ps); !errors.Is(err, ErrNoUserTurn) {
		t.Fatalf("no user turn: %v", err)
	}
}
