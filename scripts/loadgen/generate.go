package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"time"
)

// genPath is the endpoint of the generation mode.
func (cfg *config) genPath() string {
	if cfg.mode == "completions" {
		return "/completions"
	}
	return "/chat/completions"
}

// genBody is the streaming request with the prompt of seed.
func (cfg *config) genBody(seed uint64) []byte {
	text := prompt(cfg.seed, seed, cfg.promptTokens, cfg.sharedPrefix)
	req := map[string]any{
		"model":          cfg.model,
		"max_tokens":     cfg.maxTokens,
		"temperature":    0,
		"stream":         true,
		"stream_options": map[string]any{"include_usage": true},
	}
	if cfg.mode == "completions" {
		req["prompt"] = text
	} else {
		req["messages"] = []map[string]string{{"role": "user", "content": text}}
	}
	if cfg.ignoreEOS {
		req["ignore_eos"] = true
	}
	b, err := json.Marshal(req)
	if err != nil {
		panic(err) // maps of strings and numbers always marshal
	}
	return b
}

// requestsFor is the number of measured requests at a concurrency level.
func (cfg *config) requestsFor(streams int) int {
	if cfg.requests > 0 {
		return cfg.requests
	}
	return max(2*streams, 2)
}

// levelResult is everything measured at one concurrency level.
type levelResult struct {
	Summary  levelSummary    `json:"summary"`
	Requests []requestRecord `json:"requests"`
}

// levelSummary holds the aggregates of a level; the package comment
// defines each figure.
type levelSummary struct {
	Streams        int      `json:"streams"`
	Clients        int      `json:"clients"` // min(streams, requests)
	Requests       int      `json:"requests"`
	OK             int      `json:"ok"`
	Errors         int      `json:"errors"`
	Retries        int      `json:"retries"`
	Cancelled      int      `json:"cancelled"`
	PromptTokens   num      `json:"prompt_tokens_mean"` // as counted by the server
	GenTokens      int      `json:"generated_tokens"`
	TTFTP50Ms      num      `json:"ttft_p50_ms"`
	TTFTP95Ms      num      `json:"ttft_p95_ms"`
	StreamTPS      num      `json:"stream_decode_tok_s_mean"`
	DecodeAggTPS   num      `json:"decode_phase_aggregate_tok_s"`
	DecodeWindowMs num      `json:"decode_phase_window_ms"`
	WallAggTPS     num      `json:"wall_aggregate_tok_s"`
	WallS          num      `json:"wall_s"`
	ErrorSamples   []string `json:"error_samples,omitempty"`
}

// requestRecord is one request of a level, times relative to the level's
// first send.
type requestRecord struct {
	Client       int    `json:"client"`
	StartMs      num    `json:"start_ms"`
	TTFTMs       num    `json:"ttft_ms"`
	DecodeMs     num    `json:"decode_ms"`
	Tokens       int    `json:"tokens"`
	UsageTokens  bool   `json:"tokens_from_usage"`
	PromptTokens int    `json:"prompt_tokens,omitempty"`
	StreamTPS    num    `json:"stream_decode_tok_s"`
	Retries      int    `json:"retries,omitempty"`
	Error        string `json:"error,omitempty"`
	Cancelled    bool   `json:"cancelled,omitempty"`
}

// runLevel sends cfg.requestsFor(streams) requests from min(streams,
// requests) concurrent clients, each sending its next request as soon as its
// previous one ended; request i uses the prompt of seed firstSeed+i. log, if
// not nil, gets one line per request.
func runLevel(ctx context.Context, c *client, cfg *config, streams int, firstSeed uint64, log io.Writer) levelResult {
	n := cfg.requestsFor(streams)
	clients := min(streams, n)
	results := make([]genResult, n)
	clientOf := make([]int, n)
	jobs := make(chan int, n)
	for i := range n {
		jobs <- i
	}
	close(jobs)
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for cl := range clients {
		wg.Go(func() {
			for i := range jobs {
				if ctx.Err() != nil {
					return
				}
				rctx, cancel := context.WithTimeout(ctx, cfg.timeout)
				r := c.generate(rctx, cfg.genPath(), cfg.genBody(firstSeed+uint64(i)))
				cancel()
				results[i], clientOf[i] = r, cl
				if log != nil {
					mu.Lock()
					logRequest(log, streams, i, &r)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return summarize(streams, clients, results, clientOf)
}

func logRequest(w io.Writer, streams, i int, r *genResult) {
	switch {
	case r.Cancelled:
		fmt.Fprintf(w, "streams=%d req=%d cancelled\n", streams, i)
	case r.Err != nil:
		fmt.Fprintf(w, "streams=%d req=%d retries=%d error: %v\n", streams, i, r.Retries, r.Err)
	default:
		tps, _ := r.streamRate()
		fmt.Fprintf(w, "streams=%d req=%d ttft=%.1fms decode=%.1fms tokens=%d prompt=%d %.1f tok/s retries=%d\n",
			streams, i, ms(r.ttft()), ms(r.decode()), r.Tokens, r.PromptTokens, tps, r.Retries)
	}
}

// summarize computes a level's aggregates from its requests; requests that
// never started (Ctrl-C) are left out.
func summarize(streams, clients int, results []genResult, clientOf []int) levelResult {
	s := levelSummary{Streams: streams, Clients: clients}
	var origin, last time.Time
	for _, r := range results {
		if r.Start.IsZero() {
			continue
		}
		if origin.IsZero() || r.Start.Before(origin) {
			origin = r.Start
		}
		if r.End.After(last) {
			last = r.End
		}
	}
	var (
		ttfts, rates, prompts []float64
		traces                []tokenTrace
		records               []requestRecord
	)
	errs := map[string]bool{}
	for i, r := range results {
		if r.Start.IsZero() {
			continue
		}
		s.Requests++
		s.Retries += r.Retries
		rec := requestRecord{
			Client: clientOf[i], StartMs: num(ms(r.Start.Sub(origin))), Tokens: r.Tokens,
			UsageTokens: r.UsageTokens, PromptTokens: r.PromptTokens, Retries: r.Retries,
			TTFTMs: num(math.NaN()), DecodeMs: num(math.NaN()), StreamTPS: num(math.NaN()),
			Cancelled: r.Cancelled,
		}
		switch {
		case r.Cancelled:
			s.Cancelled++
		case r.Err != nil:
			s.Errors++
			rec.Error = r.Err.Error()
			if len(errs) < 3 && !errs[rec.Error] {
				errs[rec.Error] = true
				s.ErrorSamples = append(s.ErrorSamples, rec.Error)
			}
		case r.ok():
			s.OK++
			s.GenTokens += r.Tokens
			ttfts = append(ttfts, ms(r.ttft()))
			rec.TTFTMs, rec.DecodeMs = num(ms(r.ttft())), num(ms(r.decode()))
			if tps, ok := r.streamRate(); ok {
				rates = append(rates, tps)
				rec.StreamTPS = num(tps)
			}
			if r.PromptTokens > 0 {
				prompts = append(prompts, float64(r.PromptTokens))
			}
			traces = append(traces, traceOf(&r, origin))
		}
		records = append(records, rec)
	}
	s.PromptTokens = num(mean(prompts))
	s.TTFTP50Ms = num(percentile(ttfts, 50))
	s.TTFTP95Ms = num(percentile(ttfts, 95))
	s.StreamTPS = num(mean(rates))
	s.DecodeAggTPS, s.DecodeWindowMs = num(math.NaN()), num(math.NaN())
	if tokens, window, ok := decodePhaseRate(traces, clients); ok {
		s.DecodeAggTPS = num(rate(tokens, window))
		s.DecodeWindowMs = num(ms(window))
	}
	s.WallS = num(math.NaN())
	s.WallAggTPS = num(math.NaN())
	if !origin.IsZero() {
		s.WallS = num(last.Sub(origin).Seconds())
	}
	if s.OK > 0 {
		s.WallAggTPS = num(rate(float64(s.GenTokens), last.Sub(origin)))
	}
	slices.SortStableFunc(records, func(a, b requestRecord) int {
		switch {
		case a.StartMs < b.StartMs:
			return -1
		case a.StartMs > b.StartMs:
			return 1
		}
		return 0
	})
	return levelResult{Summary: s, Requests: records}
}

// traceOf is the token trace of a finished request relative to origin. When
// the server's usage count differs from the number of text chunks (a chunk
// carrying several tokens), every chunk is worth tokens/chunks tokens.
func traceOf(r *genResult, origin time.Time) tokenTrace {
	tr := tokenTrace{times: make([]time.Duration, len(r.Times)), weight: 1}
	for i, t := range r.Times {
		tr.times[i] = t.Sub(origin)
	}
	if r.UsageTokens && len(r.Times) > 0 {
		tr.weight = float64(r.Tokens) / float64(len(r.Times))
	}
	return tr
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
