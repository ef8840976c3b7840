package kernels

/*
#include <stdlib.h>
#include "bridge.h"
#include "guard.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// SamplerParams configures a sampler chain. The zero value samples greedily.
type SamplerParams struct {
	Temperature      float32 // <= 0: greedy
	TopK             int     // 0: off
	TopP             float32 // 0 or 1: off
	MinP             float32 // 0: off
	RepeatPenalty    float32 // 1 or 0: off
	RepeatLastN      int     // tokens the penalties look back over (default 64; -1: whole context)
	FrequencyPenalty float32
	PresencePenalty  float32
	Seed             uint32 // 0xFFFFFFFF (SeedRandom): random
	// Grammar is a GBNF grammar with root rule "root"; generation is
	// constrained to it.
	Grammar   string
	LogitBias map[int32]float32
	// CloseWithin > 0 (with a Grammar) keeps the output completable within
	// that many tokens: near the end only tokens after which the grammar's
	// shortest completion still fits are allowed, and when none is, that
	// completion is written (Closed then reports true).
	CloseWithin int
}

// GrammarError reports a grammar that llama.cpp's GBNF parser rejects.
type GrammarError struct{ Reason string }

func (e *GrammarError) Error() string { return "grammar does not parse: " + e.Reason }

// SeedRandom asks llama.cpp for a random seed.
const SeedRandom = 0xFFFFFFFF

// Sampler is a llama.cpp sampler chain for one sequence. Not safe for
// concurrent use.
type Sampler struct {
	c     *C.struct_llama_sampler
	vocab int
	ge    guardErr // a caught C++ exception (see guard.h)
	// deadEnd is set by the sampler chained after a grammar when the
	// grammar allowed no candidate (guard.h); nil without a grammar.
	deadEnd *C.int32_t
	// closed is set by the close-within sampler when it wrote the
	// grammar's shortest completion; nil without CloseWithin.
	closed *C.int32_t
}

// Closed reports whether the output was completed by CloseWithin rather
// than by the model (it was cut short by its token budget).
func (s *Sampler) Closed() bool { return s.closed != nil && *s.closed != 0 }

// ErrGrammarDeadEnd is returned by Sample when the grammar allows no token
// of the model's vocabulary at this point of the output.
var ErrGrammarDeadEnd = errors.New("sample: the grammar allows no token of this model's vocabulary here (does it require an end-of-generation token, or text the vocabulary cannot spell?)")

// NewSampler builds the chain: logit bias, penalties, grammar, top-k,
// top-p, min-p, temperature, then a seeded draw (or greedy).
func (m *Model) NewSampler(p SamplerParams) (*Sampler, error) {
	if m == nil || m.c == nil {
		return nil, errors.New("new sampler: model is closed")
	}
	cp := C.llama_sampler_chain_default_params()
	cp.no_perf = true
	chain := C.llama_sampler_chain_init(cp)
	if chain == nil {
		return nil, errors.New("new sampler: out of memory")
	}
	s := &Sampler{c: chain, vocab: m.info.Vocab}
	add := func(smpl *C.struct_llama_sampler, what string) error {
		if smpl == nil {
			return fmt.Errorf("new sampler: %s: llama.cpp refused it: %s", what, takeLastLog())
		}
		C.llama_sampler_chain_add(chain, smpl)
		return nil
	}
	fail := func(err error) (*Sampler, error) { s.Close(); return nil, err }

	if len(p.LogitBias) > 0 {
		biases := make([]C.llama_logit_bias, 0, len(p.LogitBias))
		for tok, b := range p.LogitBias {
			if tok < 0 || int(tok) >= m.info.Vocab {
				return fail(fmt.Errorf("new sampler: logit_bias: %w", &TokenError{Token: tok, Vocab: m.info.Vocab}))
			}
			biases = append(biases, C.llama_logit_bias{token: C.llama_token(tok), bias: C.float(b)})
		}
		if err := add(C.llama_sampler_init_logit_bias(C.int32_t(m.info.Vocab), C.int32_t(len(biases)), &biases[0]), "logit_bias"); err != nil {
			return fail(err)
		}
	}
	penalize := (p.RepeatPenalty != 0 && p.RepeatPenalty != 1) || p.FrequencyPenalty != 0 || p.PresencePenalty != 0
	if penalize {
		lastN := p.RepeatLastN
		if lastN == 0 {
			lastN = 64
		}
		rp := p.RepeatPenalty
		if rp == 0 {
			rp = 1
		}
		if err := add(C.llama_sampler_init_penalties(C.int32_t(lastN), C.float(rp), C.float(p.FrequencyPenalty), C.float(p.PresencePenalty)), "penalties"); err != nil {
			return fail(err)
		}
	}
	if p.Grammar != "" {
		cg := C.CString(p.Grammar)
		root := C.CString("root")
		takeLastLog()
		var ge guardErr
		g := C.llmrt_sampler_init_grammar(m.vocab, cg, root, ge.p())
		defer C.free(unsafe.Pointer(cg))
		C.free(unsafe.Pointer(root))
		if g == nil {
			reason := takeLastLog()
			if ge.caught() {
				reason = ge.message()
			}
			if reason == "" {
				reason = "llama.cpp's GBNF parser rejected it"
			}
			return fail(fmt.Errorf("new sampler: %w", &GrammarError{Reason: reason}))
		}
		C.llama_sampler_chain_add(chain, g)
		if err := add(C.llmrt_sampler_init_dead_end(&s.deadEnd), "grammar guard"); err != nil {
			return fail(err)
		}
		if p.CloseWithin > 0 {
			if err := add(C.llmrt_sampler_init_close_within(m.vocab, cg, C.int32_t(p.CloseWithin), &s.closed), "close within"); err != nil {
				return fail(err)
			}
		}
	}
	if p.Temperature <= 0 {
		if err := add(C.llama_sampler_init_greedy(), "greedy"); err != nil {
			return fail(err)
		}
		return s, nil
	}
	if p.TopK > 0 {
		if err := add(C.llama_sampler_init_top_k(C.int32_t(p.TopK)), "top_k"); err != nil {
			return fail(err)
		}
	}
	if p.TopP > 0 && p.TopP < 1 {
		if err := add(C.llama_sampler_init_top_p(C.float(p.TopP), 1), "top_p"); err != nil {
			return fail(err)
		}
	}
	if p.MinP > 0 {
		if err := add(C.llama_sampler_init_min_p(C.float(p.MinP), 1), "min_p"); err != nil {
			return fail(err)
		}
	}
	if err := add(C.llama_sampler_init_temp(C.float(p.Temperature)), "temperature"); err != nil {
		return fail(err)
	}
	if err := add(C.llama_sampler_init_dist(C.uint32_t(p.Seed)), "dist"); err != nil {
		return fail(err)
	}
	return s, nil
}

// Sample picks the next token from the logits at batch output i of c and
// accepts it into the chain's state (penalties, grammar).
func (s *Sampler) Sample(c *Context, i int) (int32, error) {
	if err := c.checkOutput(i); err != nil {
		return -1, fmt.Errorf("sample: %w", err)
	}
	var tok C.llama_token
	threw := C.llmrt_sampler_sample(s.c, c.c, C.int32_t(i), &tok, s.ge.p()) != 0
	if s.deadEnd != nil && *s.deadEnd != 0 {
		*s.deadEnd = 0
		return -1, ErrGrammarDeadEnd
	}
	if threw {
		return -1, s.ge.err("sample")
	}
	return int32(tok), nil
}

// Accept feeds a token the chain did not choose (e.g. prompt tokens for the
// penalties) into its state.
func (s *Sampler) Accept(tok int32) error {
	if tok < 0 || int(tok) >= s.vocab {
		return fmt.Errorf("sampler accept: %w", &TokenError{Token: tok, Vocab: s.vocab})
	}
	if C.llmrt_sampler_accept(s.c, C.llama_token(tok), s.ge.p()) != 0 {
		return s.ge.err("sampler accept")
	}
	return nil
}

// Reset clears the chain's state (penalty history, grammar position).
func (s *Sampler) Reset() error {
	if C.llmrt_sampler_reset(s.c, s.ge.p()) != 0 {
		return s.ge.err("sampler reset")
	}
	return nil
}

// Close frees the chain.
func (s *Sampler) Close() error {
	if s != nil && s.c != nil {
		C.llama_sampler_free(s.c)
		s.c = nil
	}
	return nil
}

// ValidateGrammar reports whether llama.cpp's GBNF parser accepts grammar
// (a *GrammarError when it does not).
func (m *Model) ValidateGrammar(grammar string) error {
	s, err := m.NewSampler(SamplerParams{Grammar: grammar})
	if err != nil {
		return err
	}
	return s.Close()
}
