package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// fakeServer is an OpenAI-compatible server that streams real SSE with a
// controlled timing: the first token ttft after the request, then one token
// every interval, scheduled on absolute times so that the rate does not
// drift. Every stream is independent, as on a server with enough capacity,
// so n concurrent streams decode n times as fast as one.
type fakeServer struct {
	ttft     time.Duration
	interval time.Duration
	tokens   int // generated per request unless max_tokens is smaller

	// closeSecond makes the server close the connection without any
	// response on the 2nd request of every connection (llama-server's
	// occasional behaviour with kept-alive connections).
	closeSecond bool

	requests atomic.Int64 // generation requests answered
	hijacked atomic.Int64
}

type connCountKey struct{}

func (f *fakeServer) start(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	srv.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, connCountKey{}, new(atomic.Int64))
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func (f *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	n := r.Context().Value(connCountKey{}).(*atomic.Int64).Add(1)
	if f.closeSecond && n == 2 {
		f.hijacked.Add(1)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	switch r.URL.Path {
	case "/v1/models":
		json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": []any{map[string]any{"id": "fake-model", "object": "model"}}})
	case "/v1/chat/completions", "/v1/completions":
		f.generate(w, r)
	case "/v1/embeddings":
		f.embed(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeServer) generate(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req struct {
		Model     string `json:"model"`
		MaxTokens int    `json:"max_tokens"`
		Stream    bool   `json:"stream"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || !req.Stream || req.Model == "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":{"message":"bad request: stream=%v model=%q err=%v","type":"invalid_request_error"}}`, req.Stream, req.Model, err)
		return
	}
	f.requests.Add(1)
	chat := r.URL.Path == "/v1/chat/completions"
	n := f.tokens
	if req.MaxTokens > 0 && req.MaxTokens < n {
		n = req.MaxTokens
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	fl := w.(http.Flusher)
	send := func(v any) bool {
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		fl.Flush()
		return r.Context().Err() == nil
	}
	piece := func(text string, finish any) map[string]any {
		if chat {
			return map[string]any{"object": "chat.completion.chunk", "choices": []any{
				map[string]any{"index": 0, "delta": map[string]any{"content": text}, "finish_reason": finish}}}
		}
		return map[string]any{"object": "text_completion", "choices": []any{
			map[string]any{"index": 0, "text": text, "finish_reason": finish}}}
	}
	if chat {
		send(map[string]any{"object": "chat.completion.chunk", "choices": []any{
			map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}}}})
	}
	for i := range n {
		time.Sleep(time.Until(start.Add(f.ttft + time.Duration(i)*f.interval)))
		if !send(piece(fmt.Sprintf(" tok%d", i), nil)) {
			return
		}
		if i%5 == 0 {
			fmt.Fprint(w, ": keep-alive\n\n")
		}
	}
	send(piece("", "length"))
	send(map[string]any{"object": "chat.completion.chunk", "choices": []any{},
		"usage": map[string]any{"prompt_tokens": 42, "completion_tokens": n, "total_tokens": 42 + n}})
	fmt.Fprint(w, "data: [DONE]\n\n")
}

func (f *fakeServer) embed(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Input []string `json:"input"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Input) == 0 {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":{"message":"input must be a non-empty array of strings"}}`)
		return
	}
	time.Sleep(f.ttft)
	data := make([]any, len(req.Input))
	for i := range data {
		data[i] = map[string]any{"object": "embedding", "index": i, "embedding": []float64{0.1, 0.2, 0.3}}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data})
}

// testConfig is a config for the fake server's URL with fast defaults.
func testConfig(t *testing.T, srvURL string) (*config, *client) {
	t.Helper()
	base, err := apiBase(srvURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config{url: srvURL, model: "fake-model", mode: "chat", promptTokens: 16, maxTokens: 1000,
		ignoreEOS: true, seed: 1, timeout: time.Minute, embTokens: 8, duration: time.Second}
	c := newClient(base, "", 8)
	t.Cleanup(c.close)
	return cfg, c
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
