package kernels_test

import (
	"context"
	"errors"
	"testing"

	"github.com/llmrt/llmrt/kernels"
)

// TestTokensOutsideTheVocabulary feeds every entry point that takes a token
// id the ids that used to abort the process inside llama.cpp (an uncaught
// std::out_of_range). Each must answer with an error or a neutral value.
func TestTokensOutsideTheVocabulary(t *testing.T) {
	m := load(t, "stories260K.gguf")
	n := int32(m.Info().Vocab)
	for _, bad := range []int32{n, n + 88, 999999999, -1, -5} {
		_, err := m.Detokenize([]int32{1, bad}, false, false)
		var te *kernels.TokenError
		if !errors.As(err, &te) || te.Token != bad || te.Index != 1 || te.Vocab != int(n) {
			t.Fatalf("Detokenize(%d): %v", bad, err)
		}
		if err := m.CheckTokens([]int32{5, 6, bad}); !errors.As(err, &te) || te.Index != 2 {
			t.Fatalf("CheckTokens(%d): %v", bad, err)
		}
		if p := m.TokenPiece(bad, true); p != nil {
			t.Fatalf("TokenPiece(%d) = %q", bad, p)
		}
		if m.IsEOG(bad) || m.IsControl(bad) {
			t.Fatalf("token %d reported as EOG or control", bad)
		}
		if m.TokenText(bad) != "" {
			t.Fatalf("TokenText(%d) not empty", bad)
		}
		s, err := m.NewSampler(kernels.SamplerParams{Temperature: 0.5, RepeatPenalty: 1.1})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Accept(bad); !errors.As(err, &te) {
			t.Fatalf("Accept(%d): %v", bad, err)
		}
		s.Close()
		if _, err := m.NewSampler(kernels.SamplerParams{LogitBias: map[int32]float32{bad: 1}}); !errors.As(err, &te) {
			t.Fatalf("logit bias on %d: %v", bad, err)
		}
	}
	// Valid ids still work through the same paths.
	if s, err := m.Detokenize([]int32{1, 403, 407}, true, false); err != nil || s == "" {
		t.Fatalf("Detokenize of valid ids: %q %v", s, err)
	}
	if !m.IsEOG(m.Info().EOS) || !m.IsControl(m.Info().BOS) {
		t.Fatal("EOS is not EOG or BOS not control")
	}
}

// TestGrammarDeadEnd samples under grammars that leave no candidate: one
// that names a token outside the vocabulary and one that requires the
// end-of-generation token before the grammar is complete. llama.cpp's dist
// sampler asserts (aborting the process) on such a step; Sample must
// return ErrGrammarDeadEnd, and the sampler must be usable after Reset.
func TestGrammarDeadEnd(t *testing.T) {
	m := load(t, "stories260K.gguf")
	c, err := m.NewContext(kernels.ContextParams{NCtx: 128, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := kernels.NewBatch(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	prompt, err := m.Tokenize("Once upon a time", true, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{`root ::= <[999999]>`, `root ::= <[2]> "a"`} {
		for _, temp := range []float32{0, 0.8} {
			s, err := m.NewSampler(kernels.SamplerParams{Grammar: g, Temperature: temp, Seed: 1})
			if err != nil {
				t.Fatalf("%s: %v", g, err)
			}
			c.ClearMemory(true)
			b.Clear()
			last, _ := b.AddTokens(prompt, 0, 0, true)
			if err := c.Decode(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Sample(c, last); !errors.Is(err, kernels.ErrGrammarDeadEnd) {
				t.Fatalf("grammar %q at temperature %g: %v, want ErrGrammarDeadEnd", g, temp, err)
			}
			s.Close()
		}
	}
	// A grammar with a way forward samples as before.
	s, err := m.NewSampler(kernels.SamplerParams{Grammar: `root ::= "yes" | "no"`})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c.ClearMemory(true)
	b.Clear()
	last, _ := b.AddTokens(prompt, 0, 0, true)
	if err := c.Decode(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	tok, err := s.Sample(c, last)
	if err != nil {
		t.Fatal(err)
	}
	if p := string(m.TokenPiece(tok, false)); p == "" || (p[0] != 'y' && p[0] != 'n') {
		t.Fatalf("constrained sample %d = %q", tok, p)
	}
}

// Calls on a closed model answer instead of reading freed memory.
func TestClosedModel(t *testing.T) {
	m := load(t, "stories260K.gguf")
	m.Close()
	if _, err := m.Tokenize("Once", true, false); err == nil {
		t.Fatal("Tokenize on a closed model")
	}
	if _, err := m.Detokenize([]int32{1, 403}, false, false); err == nil {
		t.Fatal("Detokenize on a closed model")
	}
	if m.TokenPiece(403, false) != nil || m.IsEOG(2) || m.TokenText(403) != "" || m.MetaValue("general.architecture") != "" {
		t.Fatal("token queries on a closed model")
	}
}
