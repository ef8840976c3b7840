package server

import (
	"fmt"
	"net/http"
	"time"

	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/feedback"
	"github.com/llmrt/llmrt/runtime/httpapi"
	"github.com/llmrt/llmrt/runtime/registry"
)

func (s *Server) completions(w http.ResponseWriter, r *http.Request) error {
	var req CompletionRequest
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if req.Prompt.Len() == 0 {
		return httpapi.BadRequest("prompt", "prompt is required")
	}
	if req.Suffix != "" {
		return httpapi.BadRequest("suffix", "suffix (fill-in-the-middle) is not supported")
	}
	if req.BestOf != nil && *req.BestOf < 1 {
		return httpapi.BadRequest("best_of", "best_of must be at least 1, got %d", *req.BestOf)
	}
	if req.BestOf != nil && *req.BestOf > 1 {
		return httpapi.BadRequest("best_of", "best_of is not supported; use n")
	}
	model, lease, err := s.acquire(r, req.Model)
	if err != nil {
		return err
	}
	defer lease.Release()
	e := lease.Engine
	sp, aerr := req.samplerParams(e.Info().Vocab)
	if aerr != nil {
		return aerr
	}
	n, aerr := req.choices()
	if aerr != nil {
		return aerr
	}
	stops, aerr := req.stops()
	if aerr != nil {
		return aerr
	}
	maxTok, aerr := maxTokensOf(req.MaxTokens)
	if aerr != nil {
		return aerr
	}
	if req.MaxTokens == nil {
		maxTok = 16 // OpenAI's default for completions
	}
	lp := -1
	if req.Logprobs != nil {
		if *req.Logprobs < 0 || *req.Logprobs > 5 {
			return httpapi.BadRequest("logprobs", "logprobs must be between 0 and 5, got %d", *req.Logprobs)
		}
		lp = *req.Logprobs
	}
	prompts := req.Prompt.Tokens
	texts := make([]string, 0, req.Prompt.Len())
	for _, t := range req.Prompt.Texts {
		toks, err := e.Tokenize(t, true, false)
		if err != nil {
			return httpapi.Internal(err)
		}
		prompts = append(prompts, toks)
		texts = append(texts, t)
	}
	// Token-id prompts: Detokenize refuses ids outside the vocabulary
	// (a *kernels.TokenError, a 400) before llama.cpp reads them.
	for i := len(texts); i < len(prompts); i++ {
		text, err := e.Model().Detokenize(prompts[i], false, false)
		if err != nil {
			return httpapi.MapError(fmt.Errorf("prompt %d: %w", i, err), "prompt")
		}
		texts = append(texts, text)
	}
	if len(prompts)*n > maxChoices*4 {
		return httpapi.BadRequest("n", "too many completions in one request (%d prompts × n=%d)", len(prompts), n)
	}
	var reqs []engine.Request
	for pi, p := range prompts {
		if len(p) == 0 {
			return httpapi.BadRequest("prompt", "prompt %d is empty", pi)
		}
		if len(p) >= e.CtxPerSeq() {
			return httpapi.MapError(&engine.PromptTooLongError{Tokens: len(p), Limit: e.CtxPerSeq()}, "prompt")
		}
		for i := 0; i < n; i++ {
			q := sp
			if i > 0 && q.Seed != 0xFFFFFFFF {
				q.Seed += uint32(i)
			}
			reqs = append(reqs, engine.Request{Prompt: p, MaxTokens: maxTok, Sampling: q, Stop: stops, Adapters: lease.Adapters,
				Logprobs: lp >= 0, TopLogprobs: max(lp, 0), IgnoreEOS: req.IgnoreEOS})
		}
	}
	id := httpapi.NewID("cmpl-")
	created := time.Now().Unix()
	base := CompletionResponse{ID: id, Object: "text_completion", Created: created, Model: model, SystemFingerprint: s.fingerprint}
	if req.Stream {
		ch, err := runChoices(r.Context(), e, reqs, s.cfg.StreamInterval)
		if err != nil {
			return httpapi.MapError(err, "prompt")
		}
		sse := newSSE(w, s.cfg.StreamInterval)
		defer sse.close()
		if req.Echo {
			for i := range reqs {
				c := base
				c.Choices = []CompletionChoice{{Index: i, Text: texts[i/n]}}
				if sse.send(c) != nil {
					return nil
				}
			}
		}
		results := make([]engine.Result, len(reqs))
		var streamErr error
		for ev := range ch {
			if ev.err != nil {
				streamErr = ev.err
				continue
			}
			c := base
			if ev.done {
				results[ev.index] = ev.res
				s.observe(model, ev.res)
				reason := ev.res.FinishReason
				c.Choices = []CompletionChoice{{Index: ev.index, FinishReason: &reason}}
			} else {
				choice := CompletionChoice{Index: ev.index, Text: ev.chunk.Text}
				if lp >= 0 {
					choice.Logprobs = completionLogprobs(ev.chunk.Tokens, 0)
				}
				c.Choices = []CompletionChoice{choice}
			}
			if sse.send(c) != nil {
				return nil
			}
		}
		if streamErr != nil {
			sse.sendError(httpapi.MapError(streamErr, "prompt"))
			return nil
		}
		if r.Context().Err() != nil {
			return nil
		}
		s.recordText(id, created, model, texts, results, lease, &req)
		if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
			c := base
			c.Choices = []CompletionChoice{}
			c.Usage = usageOf(results, false)
			sse.send(c)
		}
		sse.done()
		return nil
	}
	results, err := collectChoices(r.Context(), e, reqs)
	if err != nil {
		return httpapi.MapError(err, "prompt")
	}
	resp := base
	resp.Usage = usageOf(results, false)
	// With n > 1 the prompt is counted once per prompt, as OpenAI does.
	resp.Usage.PromptTokens, resp.Usage.PromptTokensDetails.CachedTokens = 0, 0
	for i := 0; i < len(results); i += n {
		resp.Usage.PromptTokens += results[i].PromptTokens
		resp.Usage.PromptTokensDetails.CachedTokens += results[i].CachedTokens
	}
	resp.Usage.TotalTokens = resp.Usage.PromptTokens + resp.Usage.CompletionTokens
	for i, res := range results {
		s.observe(model, res)
		text := res.Text
		offset := 0
		if req.Echo {
			text = texts[i/n] + text
			offset = len(texts[i/n])
		}
		reason := res.FinishReason
		choice := CompletionChoice{Index: i, Text: text, FinishReason: &reason}
		if lp >= 0 {
			choice.Logprobs = completionLogprobs(res.Tokens, offset)
		}
		resp.Choices = append(resp.Choices, choice)
	}
	s.recordText(id, created, model, texts, results, lease, &req)
	return httpapi.WriteJSON(w, http.StatusOK, resp)
}

// recordText records a text completion of one prompt (a request with
// several prompts is not recorded: feedback is about one prompt).
func (s *Server) recordText(id string, created int64, model string, prompts []string, results []engine.Result, lease *registry.Lease, req *CompletionRequest) {
	if len(prompts) != 1 {
		return
	}
	answers := make([]string, len(results))
	for i, res := range results {
		answers[i] = res.Text
	}
	s.record(feedback.Completion{ID: id, Created: created, Kind: "text", Model: model, Prompt: prompts[0], Choices: answers}, lease, req)
}

func completionLogprobs(toks []engine.Token, offset int) *CompletionLogprobs {
	lp := &CompletionLogprobs{Tokens: []string{}, TokenLogprobs: []float32{}, TopLogprobs: []map[string]float32{}, TextOffset: []int{}}
	for _, t := range toks {
		lp.Tokens = append(lp.Tokens, t.Text)
		lp.TokenLogprobs = append(lp.TokenLogprobs, t.Logprob)
		top := map[string]float32{}
		for _, a := range t.Top {
			top[a.Text] = a.Logprob
		}
		lp.TopLogprobs = append(lp.TopLogprobs, top)
		lp.TextOffset = append(lp.TextOffset, offset)
		offset += len(t.Text)
	}
	return lp
}
