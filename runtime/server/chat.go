package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/feedback"
	"github.com/llmrt/llmrt/runtime/httpapi"
	"github.com/llmrt/llmrt/runtime/rag/grounding"
	"github.com/llmrt/llmrt/runtime/registry"
)

// acquire resolves a request's "model" (the default when empty) and
// leases the model, loading it if needed; errors are API errors.
func (s *Server) acquire(r *http.Request, id string) (string, *registry.Lease, error) {
	if id == "" {
		id = s.cfg.DefaultModel
	}
	if id == "" {
		return "", nil, httpapi.BadRequest("model", "model is required (the server has no default model)")
	}
	lease, err := s.reg.Acquire(r.Context(), id)
	if err != nil {
		return "", nil, httpapi.MapError(err, "model")
	}
	return id, lease, nil
}

// chatPlan is a validated chat request ready to run.
type chatPlan struct {
	reqs     []engine.Request
	stream   bool
	usage    bool
	tools    bool
	logprobs bool
	rag      bool
	passages []grounding.Passage // retrieved for the "rag" extension
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) error {
	var req ChatRequest
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if len(req.Messages) == 0 {
		return httpapi.BadRequest("messages", "messages must be a non-empty array")
	}
	model, lease, err := s.acquire(r, req.Model)
	if err != nil {
		return err
	}
	defer lease.Release()
	plan, aerr := s.planChat(r, &req, lease)
	if aerr != nil {
		return aerr
	}
	id := httpapi.NewID("chatcmpl-")
	created := time.Now().Unix()
	if plan.stream {
		return s.streamChat(w, r, lease, plan, id, created, model, &req)
	}
	results, err := collectChoices(r.Context(), lease.Engine, plan.reqs)
	if err != nil {
		return httpapi.MapError(err, "messages")
	}
	resp := ChatResponse{ID: id, Object: "chat.completion", Created: created, Model: model, SystemFingerprint: s.fingerprint,
		Usage: usageOf(results, true)}
	if plan.rag {
		texts := make([]string, len(results))
		for i, res := range results {
			texts[i] = res.Text
		}
		resp.Citations = cited(plan.passages, texts)
		resp.Retrieved = citationsOf(plan.passages, allNumbers(len(plan.passages)))
	}
	for i, res := range results {
		s.observe(model, res)
		choice := ChatChoice{Index: i, FinishReason: res.FinishReason, Message: ChatResponseMessage{Role: "assistant"}}
		text := res.Text
		if plan.tools {
			if calls, rest, ok := lease.Engine.ParseToolCalls(text); ok {
				choice.Message.ToolCalls = toAPIToolCalls(calls, false)
				choice.FinishReason = "tool_calls"
				text = rest
			}
		}
		if text != "" || len(choice.Message.ToolCalls) == 0 {
			choice.Message.Content = httpapi.Ptr(text)
		}
		if plan.logprobs {
			choice.Logprobs = chatLogprobs(res.Tokens)
		}
		resp.Choices = append(resp.Choices, choice)
	}
	answers := make([]string, len(results))
	for i, res := range results {
		answers[i] = res.Text
	}
	s.record(feedback.Completion{ID: id, Created: created, Kind: "chat", Model: model, Messages: chatPrompt(&req), Choices: answers}, lease, &req)
	return httpapi.WriteJSON(w, http.StatusOK, resp)
}

func toAPIToolCalls(calls []engine.ChatToolCall, indexed bool) []ToolCall {
	out := make([]ToolCall, len(calls))
	for i, c := range calls {
		tc := ToolCall{ID: c.ID, Type: "function"}
		if tc.ID == "" {
			tc.ID = httpapi.NewID("call_")
		}
		if indexed {
			tc.Index = httpapi.Ptr(i)
		}
		tc.Function.Name = c.Name
		tc.Function.Arguments = c.Arguments
		out[i] = tc
	}
	return out
}

// planChat validates the request and builds one engine request per choice.
func (s *Server) planChat(r *http.Request, req *ChatRequest, lease *registry.Lease) (*chatPlan, *httpapi.APIError) {
	e := lease.Engine
	sp, aerr := req.samplerParams(e.Info().Vocab)
	if aerr != nil {
		return nil, aerr
	}
	n, aerr := req.choices()
	if aerr != nil {
		return nil, aerr
	}
	stops, aerr := req.stops()
	if aerr != nil {
		return nil, aerr
	}
	maxTok, aerr := maxTokensOf(req.MaxCompletionTokens, req.MaxTokens)
	if aerr != nil {
		return nil, aerr
	}
	if maxTok == 0 {
		maxTok = s.cfg.DefaultMaxTokens
	}
	topLP := 0
	if req.TopLogprobs != nil {
		if *req.TopLogprobs < 0 || *req.TopLogprobs > 20 {
			return nil, httpapi.BadRequest("top_logprobs", "top_logprobs must be between 0 and 20, got %d", *req.TopLogprobs)
		}
		if !req.Logprobs {
			return nil, httpapi.BadRequest("top_logprobs", "top_logprobs requires logprobs to be true")
		}
		topLP = *req.TopLogprobs
	}
	msgs := make([]engine.ChatMessage, 0, len(req.Messages))
	for i, m := range req.Messages {
		switch m.Role {
		case "system", "developer", "user", "assistant", "tool":
		default:
			return nil, httpapi.BadRequest(fmt.Sprintf("messages[%d].role", i), "unknown role %q (want system, developer, user, assistant or tool)", m.Role)
		}
		for j, p := range m.Content.Parts {
			if p.Type != "text" {
				return nil, httpapi.BadRequest(fmt.Sprintf("messages[%d].content[%d].type", i, j), "content part type %q is not supported by this model (text only)", p.Type)
			}
		}
		role := m.Role
		if role == "developer" {
			role = "system"
		}
		em := engine.ChatMessage{Role: role, Content: m.Content.String(), Name: m.Name, ToolCallID: m.ToolCallID}
		for _, tc := range m.ToolCalls {
			em.ToolCalls = append(em.ToolCalls, engine.ChatToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
		}
		msgs = append(msgs, em)
	}
	plan := &chatPlan{stream: req.Stream, logprobs: req.Logprobs}
	if req.StreamOptions != nil {
		if !req.Stream {
			return nil, httpapi.BadRequest("stream_options", "stream_options is only allowed when stream is true")
		}
		plan.usage = req.StreamOptions.IncludeUsage
	}
	if req.RAG != nil {
		ps, grounded, aerr := s.retrieve(r, req.RAG, msgs, lease)
		if aerr != nil {
			return nil, aerr
		}
		plan.rag, plan.passages = true, ps
		msgs = grounded
	}
	var tools []engine.ChatTool
	toolChoice := strings.Trim(string(req.ToolChoice), `"`)
	if len(req.Tools) > 0 && toolChoice != "none" {
		for i, t := range req.Tools {
			if t.Type != "function" || t.Function.Name == "" {
				return nil, httpapi.BadRequest(fmt.Sprintf("tools[%d]", i), "tools must be functions with a name")
			}
			tools = append(tools, engine.ChatTool{Name: t.Function.Name, Description: t.Function.Description, Parameters: t.Function.Parameters})
		}
		if !e.SupportsTools() {
			return nil, httpapi.BadRequest("tools", "model %s's chat template does not support tools", lease.ID)
		}
		plan.tools = true
	}
	toks, err := e.ChatTokens(msgs, tools, true)
	if err != nil {
		return nil, httpapi.BadRequest("messages", "chat template: %v", err)
	}
	if aerr := s.applyResponseFormat(req.ResponseFormat, &sp, maxTok); aerr != nil {
		return nil, aerr
	}
	if len(toks) >= e.CtxPerSeq() {
		return nil, httpapi.MapError(&engine.PromptTooLongError{Tokens: len(toks), Limit: e.CtxPerSeq()}, "messages").(*httpapi.APIError)
	}
	for i := 0; i < n; i++ {
		p := sp
		if i > 0 && p.Seed != 0xFFFFFFFF {
			p.Seed += uint32(i)
		}
		plan.reqs = append(plan.reqs, engine.Request{Prompt: toks, MaxTokens: maxTok, Sampling: p, Stop: stops,
			Adapters: lease.Adapters, Logprobs: req.Logprobs, TopLogprobs: topLP, IgnoreEOS: req.IgnoreEOS})
	}
	return plan, nil
}

func (s *Server) streamChat(w http.ResponseWriter, r *http.Request, lease *registry.Lease, plan *chatPlan, id string, created int64, model string,
	req *ChatRequest) error {
	ch, err := runChoices(r.Context(), lease.Engine, plan.reqs, s.cfg.StreamInterval)
	if err != nil {
		return httpapi.MapError(err, "messages")
	}
	sse := newSSE(w, s.cfg.StreamInterval)
	defer sse.close()
	base := ChatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: model, SystemFingerprint: s.fingerprint}
	// The first chunk of every choice carries the role (and the retrieved
	// passages).
	for i := range plan.reqs {
		c := base
		c.Choices = []ChatChunkChoice{{Index: i, Delta: ChatDelta{Role: "assistant", Content: httpapi.Ptr("")}}}
		if i == 0 && plan.rag {
			c.Retrieved = citationsOf(plan.passages, allNumbers(len(plan.passages)))
		}
		if err := sse.send(c); err != nil {
			return nil // client went away; runChoices' context ends the streams
		}
	}
	results := make([]engine.Result, len(plan.reqs))
	held := make([]strings.Builder, len(plan.reqs)) // tool-call output is parsed at the end
	answers := make([]string, len(plan.reqs))
	var streamErr error
	for ev := range ch {
		if ev.err != nil {
			streamErr = ev.err
			continue
		}
		c := base
		if ev.done {
			results[ev.index] = ev.res
			answers[ev.index] = ev.res.Text
			s.observe(model, ev.res)
			reason := ev.res.FinishReason
			delta := ChatDelta{}
			if plan.tools {
				text := held[ev.index].String()
				if calls, rest, ok := lease.Engine.ParseToolCalls(text); ok {
					delta.ToolCalls = toAPIToolCalls(calls, true)
					reason = "tool_calls"
					text = rest
				}
				if text != "" {
					delta.Content = httpapi.Ptr(text)
				}
			}
			c.Choices = []ChatChunkChoice{{Index: ev.index, Delta: delta, FinishReason: &reason}}
			if plan.rag {
				c.Citations = cited(plan.passages, []string{ev.res.Text})
			}
		} else {
			if plan.tools {
				held[ev.index].WriteString(ev.chunk.Text)
				continue
			}
			choice := ChatChunkChoice{Index: ev.index, Delta: ChatDelta{Content: httpapi.Ptr(ev.chunk.Text)}}
			if plan.logprobs {
				choice.Logprobs = chatLogprobs(ev.chunk.Tokens)
			}
			if ev.chunk.Text == "" && choice.Logprobs == nil && len(ev.chunk.Tokens) == 0 {
				continue // nothing generated (a flush with nothing held back)
			}
			c.Choices = []ChatChunkChoice{choice}
		}
		if err := sse.send(c); err != nil {
			return nil
		}
	}
	if streamErr != nil {
		sse.sendError(httpapi.MapError(streamErr, "messages"))
		return nil
	}
	if r.Context().Err() != nil {
		return nil
	}
	s.record(feedback.Completion{ID: id, Created: created, Kind: "chat", Model: model, Messages: chatPrompt(req), Choices: answers}, lease, req)
	if plan.usage {
		c := base
		c.Choices = []ChatChunkChoice{}
		c.Usage = usageOf(results, true)
		sse.send(c)
	}
	sse.done()
	return nil
}

// sse writes server-sent events in OpenAI's framing. Events are written
// as they come but flushed to the client at most once per interval (the
// first at once): every flush wakes the client, and on a machine with few
// cores each wake-up during a decode step stalls ggml's spinning worker
// threads (measured: streaming a token per flush cost 12% of decode speed
// on 2 cores). A pending flush happens on a timer, so no event waits
// longer than the interval.
type sseWriter struct {
	mu        sync.Mutex
	w         http.ResponseWriter
	f         http.Flusher
	interval  time.Duration
	started   bool
	closed    bool
	lastFlush time.Time
	timer     *time.Timer
}

func newSSE(w http.ResponseWriter, interval time.Duration) *sseWriter {
	f, _ := w.(http.Flusher)
	return &sseWriter{w: w, f: f, interval: interval}
}

func (s *sseWriter) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
}

// flushLocked flushes now; the caller holds mu.
func (s *sseWriter) flushLocked() {
	if s.f != nil && !s.closed {
		s.f.Flush()
	}
	s.lastFlush = time.Now()
}

func (s *sseWriter) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start()
	if _, err := fmt.Fprintf(s.w, "data: %s\n\n", b); err != nil {
		return err
	}
	wait := s.interval - time.Since(s.lastFlush)
	if s.interval <= 0 || wait <= 0 {
		if s.timer != nil {
			s.timer.Stop()
			s.timer = nil
		}
		s.flushLocked()
		return nil
	}
	if s.timer == nil {
		s.timer = time.AfterFunc(wait, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.timer = nil
			s.flushLocked()
		})
	}
	return nil
}

func (s *sseWriter) sendError(err error) {
	ae, ok := err.(*httpapi.APIError)
	if !ok {
		ae = httpapi.Internal(err)
	}
	s.send(map[string]*httpapi.APIError{"error": ae})
	s.done()
}

// done ends the stream, flushes it and stops the timer: the handler may
// return after it.
func (s *sseWriter) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start()
	fmt.Fprint(s.w, "data: [DONE]\n\n")
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.flushLocked()
	s.closed = true
}

// close stops a pending flush when the handler returns without done
// (the client went away).
func (s *sseWriter) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.closed = true
}
