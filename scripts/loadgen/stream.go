package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
)

// genResult is what one streaming request measured.
type genResult struct {
	Start time.Time   // the request was sent (first attempt)
	Times []time.Time // arrival of every chunk that carries tokens (text, even empty)
	End   time.Time   // the stream ended ([DONE] or error)

	Tokens       int  // usage.completion_tokens if reported, else len(Times)
	UsageTokens  bool // Tokens came from usage
	PromptTokens int  // usage.prompt_tokens, 0 if not reported
	Retries      int
	Err          error
	Cancelled    bool // stopped by Ctrl-C / the run's context
}

// ttft is the time to first token; decode the time from first to last token.
func (r *genResult) ttft() time.Duration { return r.Times[0].Sub(r.Start) }
func (r *genResult) decode() time.Duration {
	return r.Times[len(r.Times)-1].Sub(r.Times[0])
}

// ok reports whether the request finished with at least one token.
func (r *genResult) ok() bool { return r.Err == nil && !r.Cancelled && len(r.Times) > 0 }

// streamRate is the per-stream decode rate (tokens-1)/decode time, ok false
// when there is no decode phase (fewer than 2 tokens).
func (r *genResult) streamRate() (float64, bool) {
	if !r.ok() || r.Tokens < 2 || r.decode() <= 0 {
		return 0, false
	}
	return float64(r.Tokens-1) / r.decode().Seconds(), true
}

// chunk is one streamed chat.completion.chunk or text_completion object.
type chunk struct {
	Choices []struct {
		Delta struct {
			Role             string  `json:"role"`
			Content          *string `json:"content"`
			ReasoningContent string  `json:"reasoning_content"`
			Reasoning        string  `json:"reasoning"`
		} `json:"delta"`
		Text         *string `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// generate POSTs a streaming request to path (/chat/completions or
// /completions) and measures its stream.
func (c *client) generate(ctx context.Context, path string, body []byte) (res genResult) {
	res.Start = time.Now()
	defer func() {
		res.End = time.Now()
		if res.Err != nil && errors.Is(ctx.Err(), context.Canceled) {
			res.Err, res.Cancelled = nil, true
		}
	}()
	resp, retries, err := c.do(ctx, http.MethodPost, path, body)
	res.Retries = retries
	if err != nil {
		res.Err = err
		return res
	}
	defer resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		res.Err = fmt.Errorf("POST %s: the server answered %q instead of an event stream: it does not support \"stream\": true, which loadgen needs to time tokens (body: %.200s)",
			path, resp.Header.Get("Content-Type"), strings.TrimSpace(string(b)))
		return res
	}
	if err := readStream(resp.Body, &res); err != nil {
		res.Err = fmt.Errorf("POST %s: %w", path, err)
		return res
	}
	// Drain what follows [DONE] so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if len(res.Times) == 0 {
		res.Err = fmt.Errorf("POST %s: the stream finished without any generated text", path)
	}
	return res
}

// readStream reads OpenAI chunks from an event stream into res until
// "data: [DONE]".
func readStream(body io.Reader, res *genResult) error {
	sr := newSSEReader(body)
	finished := false
	for {
		ev, err := sr.Next()
		if errors.Is(err, io.EOF) {
			if finished || res.UsageTokens {
				return nil // some servers end without [DONE]
			}
			return fmt.Errorf("stream ended after %d chunks without finish_reason or [DONE]", len(res.Times))
		}
		if err != nil {
			return err
		}
		now := time.Now()
		data := strings.TrimSpace(ev.Data)
		if data == "[DONE]" {
			return nil
		}
		if ev.Name == "error" {
			return fmt.Errorf("server error in stream: %s", errorMessage([]byte(data)))
		}
		var ch chunk
		if err := json.Unmarshal([]byte(data), &ch); err != nil {
			return fmt.Errorf("decoding chunk %.100q: %w", data, err)
		}
		if len(ch.Error) > 0 && string(ch.Error) != "null" {
			return fmt.Errorf("server error in stream: %s", errorMessage([]byte(data)))
		}
		text := false
		for _, c := range ch.Choices {
			// A token event: a text field, even empty (a token that is part
			// of a character, or a model's empty token), but neither the
			// chat role-only opening chunk nor an empty closing chunk.
			empty := func(p *string) bool { return p != nil && *p == "" }
			closing := c.FinishReason != nil && *c.FinishReason != ""
			switch {
			case c.Text != nil && !(empty(c.Text) && closing),
				c.Delta.Content != nil && !(empty(c.Delta.Content) && (closing || c.Delta.Role != "")),
				c.Delta.ReasoningContent != "", c.Delta.Reasoning != "":
				text = true
			}
			if c.FinishReason != nil && *c.FinishReason != "" {
				finished = true
			}
		}
		if text {
			res.Times = append(res.Times, now)
			if !res.UsageTokens {
				res.Tokens = len(res.Times)
			}
		}
		if ch.Usage != nil {
			if ch.Usage.CompletionTokens > 0 {
				res.Tokens, res.UsageTokens = ch.Usage.CompletionTokens, true
			}
			if ch.Usage.PromptTokens > 0 {
				res.PromptTokens = ch.Usage.PromptTokens
			}
		}
	}
}
