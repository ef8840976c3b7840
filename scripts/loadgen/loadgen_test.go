package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The fake server's first token comes after 50ms and then one every 10ms
// (100 tok/s per stream); the measured figures must match within generous
// bounds (2 loaded cores), and 4 streams must decode about 4x as fast as one.
func TestAggregatesMatchKnownTiming(t *testing.T) {
	f := &fakeServer{ttft: 50 * time.Millisecond, interval: 10 * time.Millisecond, tokens: 30}
	srv := f.start(t)
	cfg, c := testConfig(t, srv.URL)
	ctx := context.Background()

	cfg.requests = 3
	one := runLevel(ctx, c, cfg, 1, 100, nil).Summary
	t.Logf("1 stream: %+v", one)
	if one.OK != 3 || one.Errors != 0 || one.GenTokens != 90 {
		t.Fatalf("1 stream: ok=%d errors=%d tokens=%d, want 3 0 90", one.OK, one.Errors, one.GenTokens)
	}
	if p50 := float64(one.TTFTP50Ms); p50 < 45 || p50 > 200 {
		t.Errorf("TTFT p50 = %.1fms, want about 50ms", p50)
	}
	if tps := float64(one.StreamTPS); tps < 60 || tps > 110 {
		t.Errorf("stream decode rate = %.1f tok/s, want about 100", tps)
	}
	single := float64(one.DecodeAggTPS)
	if math.Abs(single-float64(one.StreamTPS)) > 0.15*float64(one.StreamTPS) {
		t.Errorf("decode-phase aggregate of 1 stream = %.1f, want its stream rate %.1f", single, float64(one.StreamTPS))
	}
	if wall := float64(one.WallAggTPS); wall >= single || wall <= 0 {
		t.Errorf("wall aggregate %.1f should be below the decode-phase rate %.1f (it includes TTFT)", wall, single)
	}
	if one.PromptTokens != 42 {
		t.Errorf("prompt tokens = %v, want the server's 42", one.PromptTokens)
	}

	cfg.requests = 0 // 2×4
	four := runLevel(ctx, c, cfg, 4, 200, nil).Summary
	t.Logf("4 streams: %+v", four)
	if four.Requests != 8 || four.OK != 8 || four.Clients != 4 {
		t.Fatalf("4 streams: requests=%d ok=%d clients=%d, want 8 8 4", four.Requests, four.OK, four.Clients)
	}
	ratio := float64(four.DecodeAggTPS) / single
	if ratio < 2.8 || ratio > 4.6 {
		t.Errorf("decode-phase aggregate: 4 streams %.1f vs 1 stream %.1f = %.2fx, want about 4x",
			float64(four.DecodeAggTPS), single, ratio)
	}
	if tps := float64(four.StreamTPS); tps < 60 || tps > 110 {
		t.Errorf("4 streams: per-stream rate = %.1f tok/s, want about 100", tps)
	}
	if four.Retries != 0 {
		t.Errorf("retries = %d on a server that keeps connections", four.Retries)
	}
}

// A server that closes every connection without answering its 2nd request:
// the request is retried once on a new connection, succeeds, and the retry is
// counted.
func TestKeepAliveRetry(t *testing.T) {
	f := &fakeServer{ttft: time.Millisecond, interval: time.Millisecond, tokens: 3, closeSecond: true}
	srv := f.start(t)
	cfg, c := testConfig(t, srv.URL)
	ctx := context.Background()

	first := c.generate(ctx, "/chat/completions", cfg.genBody(1))
	if first.Err != nil || first.Retries != 0 {
		t.Fatalf("first request: err=%v retries=%d", first.Err, first.Retries)
	}
	second := c.generate(ctx, "/chat/completions", cfg.genBody(2))
	if second.Err != nil {
		t.Fatalf("second request failed despite the retry: %v", second.Err)
	}
	if second.Retries != 1 || f.hijacked.Load() != 1 {
		t.Fatalf("second request: retries=%d hijacked=%d, want 1 1", second.Retries, f.hijacked.Load())
	}
	if second.Tokens != 3 {
		t.Errorf("second request: %d tokens, want 3", second.Tokens)
	}

	// Through a level: one client, 4 requests on connections that die on
	// their 2nd request; every request succeeds and the retries are reported.
	cfg.requests = 4
	s := runLevel(ctx, c, cfg, 1, 10, nil).Summary
	if s.OK != 4 || s.Errors != 0 || s.Retries < 1 {
		t.Fatalf("level: ok=%d errors=%d retries=%d, want 4 0 >=1", s.OK, s.Errors, s.Retries)
	}
}

// Errors after the response started are errors, not retried.
func TestFailureAfterResponseIsAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	}))
	defer srv.Close()
	cfg, c := testConfig(t, srv.URL)
	r := c.generate(context.Background(), "/chat/completions", cfg.genBody(1))
	if r.Err == nil || r.Retries != 0 {
		t.Fatalf("err=%v retries=%d, want an error and no retry", r.Err, r.Retries)
	}
}

func TestCheckLoopback(t *testing.T) {
	ctx := context.Background()
	for _, ok := range []string{"http://127.0.0.1:8080/v1", "http://[::1]:8080", "http://localhost:8080", "http://127.0.0.2"} {
		if err := checkLoopback(ctx, mustURL(t, ok), net.DefaultResolver); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"http://8.8.8.8:8080", "http://10.1.2.3", "http://[2001:db8::1]:80", "http://0.0.0.0:8080"} {
		err := checkLoopback(ctx, mustURL(t, bad), net.DefaultResolver)
		if err == nil || !strings.Contains(err.Error(), "-allow-remote") {
			t.Errorf("%s: err = %v, want a refusal naming -allow-remote", bad, err)
		}
	}
}

func TestRunRefusesRemoteURL(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-url", "http://10.1.2.3:8080", "-model", "m"}, &stdout, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "not a loopback address; pass -allow-remote") {
		t.Fatalf("exit %d, stderr %q: want 2 and the refusal", code, stderr.String())
	}
	// With -allow-remote the check is skipped: 0.0.0.0 is not loopback but
	// connecting to it reaches this machine, where nothing listens on port 1.
	stderr.Reset()
	code = run(context.Background(), []string{"-url", "http://0.0.0.0:1", "-model", "m", "-allow-remote"}, &stdout, &stderr)
	if code != 1 || strings.Contains(stderr.String(), "allow-remote") || !strings.Contains(stderr.String(), "warm-up request failed") {
		t.Fatalf("exit %d, stderr %q: want 1 and a connection failure", code, stderr.String())
	}
}

func TestAPIBase(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8080":      "http://127.0.0.1:8080/v1",
		"http://127.0.0.1:8080/":     "http://127.0.0.1:8080/v1",
		"http://127.0.0.1:8080/v1/":  "http://127.0.0.1:8080/v1",
		"127.0.0.1:8000":             "http://127.0.0.1:8000/v1",
		"https://localhost/proxy/v1": "https://localhost/proxy/v1",
	} {
		u, err := apiBase(in)
		if err != nil || u.String() != want {
			t.Errorf("apiBase(%q) = %v, %v; want %s", in, u, err, want)
		}
	}
	if _, err := apiBase("ftp://x"); err == nil {
		t.Error("ftp URL accepted")
	}
}

// The whole command against the fake server: header, table, JSON.
func TestRunTableAndJSON(t *testing.T) {
	f := &fakeServer{ttft: 5 * time.Millisecond, interval: 2 * time.Millisecond, tokens: 100}
	srv := f.start(t)
	jsonPath := filepath.Join(t.TempDir(), "out.json")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-url", srv.URL, "-streams", "1,2", "-max-tokens", "8",
		"-prompt-tokens", "32", "-mode", "completions", "-json", jsonPath}, &stdout, &stderr)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	out := stdout.String()
	for _, want := range []string{"model=fake-model", "mode=completions", "prompt=32 tokens", "output=8 tokens",
		"counted by the server (warm-up): 42", "ttft_p50_ms", "decode_agg_tok/s", "wall_agg_tok/s"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 || len(lines[len(lines)-1]) != len(lines[len(lines)-2]) {
		t.Errorf("table rows are not aligned:\n%s", out)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var levels struct {
		Model  string `json:"model"`
		Levels []struct {
			Summary  map[string]any   `json:"summary"`
			Requests []map[string]any `json:"requests"`
		} `json:"levels"`
	}
	if err := json.Unmarshal(b, &levels); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	if levels.Model != "fake-model" || len(levels.Levels) != 2 || levels.Levels[1].Summary["streams"] != 2.0 || len(levels.Levels[1].Requests) != 4 {
		t.Fatalf("JSON levels: %s", b)
	}
	if levels.Levels[0].Summary["generated_tokens"] != 16.0 || levels.Levels[0].Requests[0]["ttft_ms"] == nil {
		t.Errorf("JSON level 1: %v", levels.Levels[0])
	}
	if f.requests.Load() != 1+2+4 {
		t.Errorf("server saw %d requests, want warm-up 1 + 2 + 4", f.requests.Load())
	}
}

func TestRunPrintsServerErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"error":{"message":"model \"nope\" not found","type":"invalid_request_error","code":"model_not_found"}}`)
	}))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-url", srv.URL, "-model", "nope"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), `HTTP 404 Not Found: model "nope" not found`) {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

func TestRunNonStreamingServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hi"}}]}`)
	}))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-url", srv.URL, "-model", "m", "-warmup", "0", "-streams", "1"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), `does not support "stream": true`) {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "streams") {
		t.Errorf("no table for the failed level:\n%s", stdout.String())
	}
}

// Ctrl-C in the middle of a level stops the requests in flight and still
// prints and writes what was measured.
func TestRunInterrupted(t *testing.T) {
	f := &fakeServer{ttft: 5 * time.Millisecond, interval: 20 * time.Millisecond, tokens: 1000}
	srv := f.start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Level 1 is 2 requests of 10 tokens (about 0.4s); level 2's requests
	// of 10 tokens each are cut off by the Ctrl-C or not sent at all.
	go func() {
		for f.requests.Load() < 3 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	jsonPath := filepath.Join(t.TempDir(), "out.json")
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"-url", srv.URL, "-model", "m", "-streams", "1,2,4", "-max-tokens", "10", "-warmup", "0",
		"-requests", "2", "-json", jsonPath}, &stdout, &stderr)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if code != 130 || !strings.Contains(stderr.String(), "interrupted") {
		t.Fatalf("exit %d, want 130 and a note", code)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Interrupted bool `json:"interrupted"`
		Levels      []struct {
			Summary levelSummary `json:"summary"`
		} `json:"levels"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Interrupted || len(rep.Levels) != 2 {
		t.Fatalf("JSON: interrupted=%v levels=%d, want true 2", rep.Interrupted, len(rep.Levels))
	}
	if s := rep.Levels[0].Summary; s.OK != 2 || s.GenTokens != 20 {
		t.Errorf("level 1: %+v, want 2 requests of 10 tokens", s)
	}
	if s := rep.Levels[1].Summary; s.Errors != 0 || s.Cancelled == 0 {
		t.Errorf("level 2: %+v, want cancelled requests and no errors", s)
	}
	if !strings.Contains(stdout.String(), "decode_agg_tok/s") {
		t.Errorf("no table on stdout")
	}
}

func TestEmbeddings(t *testing.T) {
	f := &fakeServer{ttft: 2 * time.Millisecond}
	srv := f.start(t)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-url", srv.URL, "-model", "m", "-mode", "embeddings",
		"-streams", "1,2", "-emb-batch", "1,4", "-duration", "200ms"}, &stdout, &stderr)
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	cfg, c := testConfig(t, srv.URL)
	cfg.duration = 200 * time.Millisecond
	e := &embedder{c: c, cfg: cfg}
	r := e.runEmbCombo(context.Background(), 2, 4)
	if r.OK == 0 || r.Errors != 0 || r.Embeddings != 4*r.OK {
		t.Fatalf("%+v", r)
	}
	if eps, rps := float64(r.EmbPerSec), float64(r.ReqPerSec); math.Abs(eps-4*rps) > 1e-6*eps {
		t.Errorf("emb/s %v != 4 × req/s %v", eps, rps)
	}
	if p50 := float64(r.LatP50Ms); p50 < 2 || p50 > 200 {
		t.Errorf("latency p50 = %vms, want a few ms", p50)
	}
	if !strings.Contains(stdout.String(), "emb/s") || strings.Count(stdout.String(), "\n") != 1+1+4 {
		t.Errorf("table:\n%s", stdout.String())
	}
}
