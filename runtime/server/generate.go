package server

import (
	"context"
	"errors"
	"io"
	"iter"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/httpapi"
)

// Defaults for sampling fields a request leaves out, as llama.cpp's server
// uses them (OpenAI's temperature 1 with no top-k/min-p is poor for small
// local models). Send the fields to override.
const (
	defaultTemperature = 0.8
	defaultTopK        = 40
	defaultTopP        = 0.95
	defaultMinP        = 0.05
	maxChoices         = 16
	maxStops           = 16
)

// samplerParams validates the shared sampling fields.
func (f *samplingFields) samplerParams(vocab int) (kernels.SamplerParams, *httpapi.APIError) {
	p := kernels.SamplerParams{
		Temperature: defaultTemperature, TopK: defaultTopK, TopP: defaultTopP, MinP: defaultMinP,
		RepeatPenalty: 1, Seed: kernels.SeedRandom, Grammar: f.Grammar,
	}
	if f.Temperature != nil {
		if *f.Temperature < 0 || *f.Temperature > 2 || math.IsNaN(float64(*f.Temperature)) {
			return p, httpapi.BadRequest("temperature", "temperature must be between 0 and 2, got %v", *f.Temperature)
		}
		p.Temperature = *f.Temperature
	}
	if f.TopP != nil {
		if *f.TopP <= 0 || *f.TopP > 1 {
			return p, httpapi.BadRequest("top_p", "top_p must be in (0, 1], got %v", *f.TopP)
		}
		p.TopP = *f.TopP
	}
	if f.TopK != nil {
		if *f.TopK < 0 {
			return p, httpapi.BadRequest("top_k", "top_k must be >= 0, got %d", *f.TopK)
		}
		p.TopK = *f.TopK
	}
	if f.MinP != nil {
		if *f.MinP < 0 || *f.MinP > 1 {
			return p, httpapi.BadRequest("min_p", "min_p must be in [0, 1], got %v", *f.MinP)
		}
		p.MinP = *f.MinP
	}
	for name, v := range map[string]*float32{"presence_penalty": f.PresencePenalty, "frequency_penalty": f.FrequencyPenalty} {
		if v != nil && (*v < -2 || *v > 2) {
			return p, httpapi.BadRequest(name, "%s must be between -2 and 2, got %v", name, *v)
		}
	}
	if f.PresencePenalty != nil {
		p.PresencePenalty = *f.PresencePenalty
	}
	if f.FrequencyPenalty != nil {
		p.FrequencyPenalty = *f.FrequencyPenalty
	}
	if f.RepeatPenalty != nil {
		if *f.RepeatPenalty <= 0 {
			return p, httpapi.BadRequest("repeat_penalty", "repeat_penalty must be > 0, got %v", *f.RepeatPenalty)
		}
		p.RepeatPenalty = *f.RepeatPenalty
	}
	if f.RepeatLastN != nil {
		p.RepeatLastN = *f.RepeatLastN
	}
	if f.Seed != nil {
		p.Seed = uint32(*f.Seed)
	}
	if len(f.LogitBias) > 0 {
		p.LogitBias = map[int32]float32{}
		for k, v := range f.LogitBias {
			id, err := strconv.Atoi(k)
			if err != nil || id < 0 || id >= vocab {
				return p, httpapi.BadRequest("logit_bias", "logit_bias key %q is not a token id of this model (0..%d)", k, vocab-1)
			}
			if v < -100 || v > 100 {
				return p, httpapi.BadRequest("logit_bias", "logit_bias values must be between -100 and 100, got %v", v)
			}
			p.LogitBias[int32(id)] = v
		}
	}
	return p, nil
}

func (f *samplingFields) choices() (int, *httpapi.APIError) {
	if f.N == nil {
		return 1, nil
	}
	if *f.N < 1 || *f.N > maxChoices {
		return 0, httpapi.BadRequest("n", "n must be between 1 and %d, got %d", maxChoices, *f.N)
	}
	return *f.N, nil
}

func (f *samplingFields) stops() ([]string, *httpapi.APIError) {
	if len(f.Stop) > maxStops {
		return nil, httpapi.BadRequest("stop", "at most %d stop sequences, got %d", maxStops, len(f.Stop))
	}
	return f.Stop, nil
}

func maxTokensOf(values ...*int) (int, *httpapi.APIError) {
	for _, v := range values {
		if v != nil {
			if *v < 1 {
				return 0, httpapi.BadRequest("max_tokens", "max_tokens must be at least 1, got %d", *v)
			}
			return *v, nil
		}
	}
	return 0, nil
}

// choiceEvent is one chunk (or the end) of one choice.
type choiceEvent struct {
	index int
	chunk engine.Chunk
	done  bool
	res   engine.Result
	err   error
}

// submitAll submits one request per choice; if one is refused, the
// streams already submitted are closed.
func submitAll(ctx context.Context, e *engine.Engine, reqs []engine.Request) ([]*engine.Stream, error) {
	streams := make([]*engine.Stream, len(reqs))
	for i, rq := range reqs {
		s, err := e.Submit(ctx, rq)
		if err != nil {
			for _, prev := range streams[:i] {
				prev.Close()
			}
			return nil, err
		}
		streams[i] = s
	}
	return streams, nil
}

// runChoices submits one request per choice and returns their events in
// arrival order. A single choice is read straight from its stream; several
// are merged through a goroutine each (one more wake-up per token, which
// on a machine with as many cores as decode threads costs decode speed).
// Every stream is closed when ctx ends or the caller stops early. The
// streams wake their reader at most once per wake (the server's stream
// interval: it flushes no more often than that anyway).
func runChoices(ctx context.Context, e *engine.Engine, reqs []engine.Request, wake time.Duration) (iter.Seq[choiceEvent], error) {
	for i := range reqs {
		reqs[i].WakeInterval = wake
	}
	streams, err := submitAll(ctx, e, reqs)
	if err != nil {
		return nil, err
	}
	if len(streams) == 1 {
		s := streams[0]
		return func(yield func(choiceEvent) bool) {
			defer s.Close()
			for {
				ev := nextEvent(ctx, s, 0)
				if !yield(ev) || ev.done {
					return
				}
			}
		}, nil
	}
	out := make(chan choiceEvent, 16)
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Close()
			for {
				ev := nextEvent(ctx, s, i)
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
				if ev.done {
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(out) }()
	return func(yield func(choiceEvent) bool) {
		for ev := range out {
			if !yield(ev) {
				return
			}
		}
	}, nil
}

// nextEvent waits for choice i's next chunk, or its end.
func nextEvent(ctx context.Context, s *engine.Stream, i int) choiceEvent {
	c, err := s.Next(ctx)
	switch {
	case errors.Is(err, io.EOF):
		return choiceEvent{index: i, done: true, res: s.Result()}
	case err != nil:
		return choiceEvent{index: i, done: true, err: err}
	}
	return choiceEvent{index: i, chunk: c}
}

// collectChoices runs the requests to completion. It does not read their
// chunks: each stream wakes its collector once, when it ends.
func collectChoices(ctx context.Context, e *engine.Engine, reqs []engine.Request) ([]engine.Result, error) {
	streams, err := submitAll(ctx, e, reqs)
	if err != nil {
		return nil, err
	}
	res := make([]engine.Result, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = s.Collect(ctx)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return res, nil
}

// observe records a finished generation in the metrics.
func (s *Server) observe(model string, r engine.Result) {
	s.metrics.promptTokens.WithLabelValues(model).Add(float64(r.PromptTokens))
	s.metrics.cachedTokens.WithLabelValues(model).Add(float64(r.CachedTokens))
	s.metrics.outTokens.WithLabelValues(model).Add(float64(r.CompletionTokens))
	if r.TimeToFirstToken > 0 {
		s.metrics.ttft.WithLabelValues(model).Observe(r.TimeToFirstToken.Seconds())
	}
	if gen := r.Duration - r.TimeToFirstToken; r.CompletionTokens > 1 && gen > 0 {
		s.metrics.decodeRate.WithLabelValues(model).Observe(float64(r.CompletionTokens-1) / gen.Seconds())
	}
}

func usageOf(results []engine.Result, promptShared bool) *Usage {
	u := &Usage{}
	cached := 0
	for i, r := range results {
		if !promptShared || i == 0 {
			u.PromptTokens += r.PromptTokens
			cached += r.CachedTokens
		}
		u.CompletionTokens += r.CompletionTokens
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	u.PromptTokensDetails = &PromptTokensDetails{CachedTokens: cached}
	return u
}

func bytesOf(s string) []int {
	b := make([]int, len(s))
	for i := 0; i < len(s); i++ {
		b[i] = int(s[i])
	}
	return b
}

func chatLogprobs(toks []engine.Token) *ChatLogprobs {
	lp := &ChatLogprobs{Content: make([]ChatTokenLogprob, 0, len(toks))}
	for _, t := range toks {
		e := ChatTokenLogprob{Token: t.Text, Logprob: t.Logprob, Bytes: bytesOf(t.Text), TopLogprobs: []ChatTopLogprob{}}
		for _, a := range t.Top {
			e.TopLogprobs = append(e.TopLogprobs, ChatTopLogprob{Token: a.Text, Logprob: a.Logprob, Bytes: bytesOf(a.Text)})
		}
		lp.Content = append(lp.Content, e)
	}
	return lp
}
