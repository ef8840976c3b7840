package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/httpapi"
	"github.com/llmrt/llmrt/runtime/registry"
)

const lily = ", there was a little girl named Lily. She loved to play outside"

type testServer struct {
	url    string
	srv    *Server
	reg    *registry.Registry
	cancel context.CancelFunc
	done   chan error
}

// startServer runs a real server on 127.0.0.1 over a folder holding the
// stories260K model.
func startServer(t testing.TB, cfg Config, eng engine.Options, opts ...func(*registry.RegistryConfig)) *testServer {
	t.Helper()
	dir := t.TempDir()
	if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(dir, "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	if eng.NParallel == 0 {
		eng.NParallel = 4
	}
	if eng.CtxPerSeq == 0 {
		eng.CtxPerSeq = 512
	}
	eng.Threads = 2
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	rc := registry.RegistryConfig{Resolver: registry.DirResolver{Dir: dir}, Engine: eng, KeepAlive: -1, AdapterDir: filepath.Join(dir, "adapters"), Logger: quiet}
	for _, o := range opts {
		o(&rc)
	}
	reg := registry.NewRegistry(rc)
	cfg.Logger = quiet
	if cfg.DefaultModel == "" {
		cfg.DefaultModel = "stories260K"
	}
	srv := New(cfg, reg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{url: "http://" + ln.Addr().String(), srv: srv, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-ts.done
		reg.Close()
	})
	return ts
}

func (ts *testServer) post(t testing.TB, path string, body any, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case string:
		rd = strings.NewReader(b)
	default:
		js, _ := json.Marshal(b)
		rd = bytes.NewReader(js)
	}
	req, _ := http.NewRequest("POST", ts.url+path, rd)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

func apiErr(t testing.TB, data []byte) httpapi.APIError {
	t.Helper()
	var e struct{ Error httpapi.APIError }
	if err := json.Unmarshal(data, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("not an OpenAI error object: %s", data)
	}
	return e.Error
}

func TestCompletionGreedy(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{})
	resp, data := ts.post(t, "/v1/completions", map[string]any{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0})
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, data)
	}
	var cr CompletionResponse
	json.Unmarshal(data, &cr)
	if len(cr.Choices) != 1 || !strings.HasPrefix(cr.Choices[0].Text, lily) || *cr.Choices[0].FinishReason != "length" {
		t.Fatalf("completion %s", data)
	}
	if cr.Usage.PromptTokens != 5 || cr.Usage.CompletionTokens != 24 || cr.Usage.TotalTokens != 29 || cr.Object != "text_completion" {
		t.Fatalf("usage/object %s", data)
	}
	// Token-id prompts work too (frameworks send them).
	resp, data = ts.post(t, "/v1/completions", map[string]any{"prompt": []int{1, 403, 407, 261, 378}, "max_tokens": 24, "temperature": 0})
	json.Unmarshal(data, &cr)
	if resp.StatusCode != 200 || cr.Choices[0].Text != "" && !strings.HasPrefix(cr.Choices[0].Text, ",") {
		t.Fatalf("token prompt: %d %s", resp.StatusCode, data)
	}
}

func TestChatStreamFraming(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{})
	body := map[string]any{"model": "stories260K", "messages": []map[string]any{{"role": "user", "content": "Hi"}},
		"max_tokens": 8, "temperature": 0, "stream": true, "stream_options": map[string]any{"include_usage": true}}
	js, _ := json.Marshal(body)
	resp, err := http.Post(ts.url+"/v1/chat/completions", "application/json", bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			events = append(events, d)
		}
	}
	if n := len(events); n < 4 || events[n-1] != "[DONE]" {
		t.Fatalf("stream must end with [DONE]: %v", events)
	}
	var first, usage ChatChunk
	json.Unmarshal([]byte(events[0]), &first)
	json.Unmarshal([]byte(events[len(events)-2]), &usage)
	if first.Choices[0].Delta.Role != "assistant" || first.Object != "chat.completion.chunk" {
		t.Fatalf("first chunk %s", events[0])
	}
	if len(usage.Choices) != 0 || usage.Usage == nil || usage.Usage.CompletionTokens != 8 {
		t.Fatalf("usage chunk %s", events[len(events)-2])
	}
	var fin ChatChunk
	json.Unmarshal([]byte(events[len(events)-3]), &fin)
	if fin.Choices[0].FinishReason == nil || *fin.Choices[0].FinishReason != "length" {
		t.Fatalf("finish chunk %s", events[len(events)-3])
	}
}

func TestEmbeddingsFloatAndBase64(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{})
	_, data := ts.post(t, "/v1/embeddings", map[string]any{"input": []string{"Once upon a time", "The cat"}})
	var f EmbeddingResponse
	if err := json.Unmarshal(data, &f); err != nil || len(f.Data) != 2 {
		t.Fatalf("%s", data)
	}
	_, data = ts.post(t, "/v1/embeddings", map[string]any{"input": "Once upon a time", "encoding_format": "base64"})
	var b struct {
		Data []struct{ Embedding string }
	}
	json.Unmarshal(data, &b)
	raw, err := base64.StdEncoding.DecodeString(b.Data[0].Embedding)
	if err != nil || len(raw) != 4*64 {
		t.Fatalf("base64 embedding: %v, %d bytes", err, len(raw))
	}
	fl := f.Data[0].Embedding.([]any)
	for i := 0; i < 64; i++ {
		x := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		if math.Abs(float64(x)-fl[i].(float64)) > 1e-6 {
			t.Fatalf("base64 and float differ at %d: %v vs %v", i, x, fl[i])
		}
	}
}

func TestErrors(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{CtxPerSeq: 64})
	long := strings.Repeat("Once upon a time ", 40)
	cases := []struct {
		name, path string
		body       any
		status     int
		param      string
		contains   string
	}{
		{"malformed json", "/v1/chat/completions", `{"model": "stories260K", "messages": [`, 400, "", "malformed JSON"},
		{"empty body", "/v1/chat/completions", ``, 400, "", "empty"},
		{"unknown model", "/v1/chat/completions", map[string]any{"model": "nope", "messages": []map[string]string{{"role": "user", "content": "x"}}}, 404, "", "nope"},
		{"bad temperature", "/v1/completions", map[string]any{"prompt": "x", "temperature": 5}, 400, "temperature", "temperature"},
		{"bad role", "/v1/chat/completions", map[string]any{"messages": []map[string]string{{"role": "wizard", "content": "x"}}}, 400, "messages[0].role", "wizard"},
		{"wrong type", "/v1/completions", map[string]any{"prompt": "x", "max_tokens": "ten"}, 400, "max_tokens", "max_tokens"},
		{"prompt too long", "/v1/completions", map[string]any{"prompt": long}, 400, "prompt", "64 tokens"},
		{"bad n", "/v1/completions", map[string]any{"prompt": "x", "n": 0}, 400, "n", "n must"},
		{"bad grammar", "/v1/completions", map[string]any{"prompt": "x", "grammar": "root ::= ("}, 400, "grammar", "grammar"},
		{"unknown adapter", "/v1/completions", map[string]any{"model": "stories260K+ghost", "prompt": "x"}, 404, "", "ghost"},
		{"embeddings dims", "/v1/embeddings", map[string]any{"input": "x", "dimensions": 3}, 400, "dimensions", "64"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, data := ts.post(t, c.path, c.body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, data)
			}
			e := apiErr(t, data)
			if c.param != "" && (e.Param == nil || *e.Param != c.param) {
				t.Fatalf("param %v, want %s: %s", e.Param, c.param, data)
			}
			if !strings.Contains(e.Message, c.contains) {
				t.Fatalf("message %q lacks %q", e.Message, c.contains)
			}
		})
	}
	// The server still answers after all of that.
	resp, _ := ts.post(t, "/v1/completions", map[string]any{"prompt": "Once", "max_tokens": 2})
	if resp.StatusCode != 200 {
		t.Fatal("server stopped answering")
	}
}

func TestAuthAndBodyLimit(t *testing.T) {
	ts := startServer(t, Config{APIKeys: []string{"secret"}, MaxBodyBytes: 1024}, engine.Options{})
	resp, data := ts.post(t, "/v1/completions", map[string]any{"prompt": "x"})
	if resp.StatusCode != 401 || apiErr(t, data).Code == nil {
		t.Fatalf("no key: %d %s", resp.StatusCode, data)
	}
	resp, _ = ts.post(t, "/v1/completions", map[string]any{"prompt": "x", "max_tokens": 1}, "Authorization", "Bearer wrong")
	if resp.StatusCode != 401 {
		t.Fatalf("wrong key: %d", resp.StatusCode)
	}
	resp, data = ts.post(t, "/v1/completions", map[string]any{"prompt": "Once", "max_tokens": 1}, "Authorization", "Bearer secret")
	if resp.StatusCode != 200 {
		t.Fatalf("right key: %d %s", resp.StatusCode, data)
	}
	resp, data = ts.post(t, "/v1/completions", map[string]any{"prompt": strings.Repeat("a", 4096)}, "Authorization", "Bearer secret")
	if resp.StatusCode != 413 {
		t.Fatalf("oversized body: %d %s", resp.StatusCode, data)
	}
	if r, err := http.Get(ts.url + "/health"); err != nil || r.StatusCode != 200 {
		t.Fatalf("health needs no key: %v", err)
	}
}

// 8 concurrent greedy streams return what the same requests return one by one.
func TestConcurrentStreamsMatchSequential(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{NParallel: 8})
	prompts := []string{"Once upon a time", "The cat", "Tom and Sue went", "One day, a little bird", "The sun was", "Lily wanted", "A big dog", "Mom said"}
	run := func(p string) string {
		body, _ := json.Marshal(map[string]any{"prompt": p, "max_tokens": 32, "temperature": 0, "stream": true})
		resp, err := http.Post(ts.url+"/v1/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Error(err)
			return ""
		}
		defer resp.Body.Close()
		var sb strings.Builder
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			d, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok || d == "[DONE]" {
				continue
			}
			var c CompletionResponse
			json.Unmarshal([]byte(d), &c)
			for _, ch := range c.Choices {
				sb.WriteString(ch.Text)
			}
		}
		return sb.String()
	}
	want := make([]string, len(prompts))
	for i, p := range prompts {
		want[i] = run(p)
	}
	got := make([]string, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Add(1)
		go func() { defer wg.Done(); got[i] = run(p) }()
	}
	wg.Wait()
	for i := range prompts {
		if got[i] != want[i] || want[i] == "" {
			t.Errorf("%q: concurrent %q, sequential %q", prompts[i], got[i], want[i])
		}
	}
}

func scrape(t *testing.T, ts *testServer, name string) float64 {
	t.Helper()
	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			var v float64
			fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
			return v
		}
	}
	return -1
}

// A client that goes away mid-stream frees its KV cells, and the other
// stream runs to its end.
func TestDisconnectFreesSequence(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{NParallel: 2, CtxPerSeq: 1024})
	ctx, cancel := context.WithCancel(context.Background())
	body, _ := json.Marshal(map[string]any{"prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": true, "stream": true})
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.url+"/v1/completions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(resp.Body)
	for i := 0; i < 10; i++ {
		if _, err := rd.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	otherDone := make(chan string)
	go func() {
		_, data := ts.post(t, "/v1/completions", map[string]any{"prompt": "The cat", "max_tokens": 300, "ignore_eos": true})
		otherDone <- string(data)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for scrape(t, ts, "llmrt_active_sequences") != 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	resp.Body.Close()
	for scrape(t, ts, "llmrt_active_sequences") != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if v := scrape(t, ts, "llmrt_active_sequences"); v != 1 {
		t.Fatalf("active sequences after disconnect = %v", v)
	}
	out := <-otherDone
	var cr CompletionResponse
	if json.Unmarshal([]byte(out), &cr); cr.Usage == nil || cr.Usage.CompletionTokens != 300 {
		t.Fatalf("other stream: %s", out)
	}
	// Only the finished request's cells remain (prompt + its 300 tokens).
	if kv := scrape(t, ts, "llmrt_kv_cells_used"); kv > float64(cr.Usage.TotalTokens) {
		t.Fatalf("kv cells used %v after disconnect, want <= %d", kv, cr.Usage.TotalTokens)
	}
}

func TestQueueFull429(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{NParallel: 1, QueueLen: 1, CtxPerSeq: 2048})
	var wg sync.WaitGroup
	codes := make(chan int, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := ts.post(t, "/v1/completions", map[string]any{"prompt": "Once", "max_tokens": 200, "ignore_eos": true})
			codes <- resp.StatusCode
			if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		}()
	}
	wg.Wait()
	close(codes)
	n429 := 0
	for c := range codes {
		if c == 429 {
			n429++
		} else if c != 200 {
			t.Fatalf("status %d", c)
		}
	}
	if n429 == 0 {
		t.Fatal("no request was refused with 429 while the queue was full")
	}
}

func TestModelsList(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{})
	resp, err := http.Get(ts.url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var ml ModelList
	json.NewDecoder(resp.Body).Decode(&ml)
	resp.Body.Close()
	if ml.Object != "list" || len(ml.Data) != 1 || ml.Data[0].ID != "stories260K" {
		t.Fatalf("%+v", ml)
	}
	resp, _ = http.Get(ts.url + "/v1/models/nope")
	if resp.StatusCode != 404 {
		t.Fatalf("unknown model: %d", resp.StatusCode)
	}
}

func TestGracefulShutdownFinishesStreams(t *testing.T) {
	ts := startServer(t, Config{ShutdownGrace: 20 * time.Second}, engine.Options{})
	done := make(chan []byte)
	go func() {
		_, data := ts.post(t, "/v1/completions", map[string]any{"prompt": "Once upon a time", "max_tokens": 200, "ignore_eos": true})
		done <- data
	}()
	deadline := time.Now().Add(10 * time.Second)
	for scrape(t, ts, "llmrt_active_sequences") != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	ts.cancel() // like SIGTERM
	data := <-done
	var cr CompletionResponse
	if json.Unmarshal(data, &cr); cr.Usage == nil || cr.Usage.CompletionTokens != 200 {
		t.Fatalf("in-flight request not finished on shutdown: %s", data)
	}
	if err := <-ts.done; err != nil {
		t.Fatalf("serve returned %v", err)
	}
	ts.done <- nil // for cleanup
	if _, err := http.Get(ts.url + "/health"); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

func TestAdapterIDsAndBase(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{NParallel: 2})
	dir := ts.reg.AdapterDir()
	os.MkdirAll(dir, 0o755)
	base, _ := gguf.Open(testmodel.Shared(t, "stories260K.gguf"))
	if err := lora.WriteAdapter(filepath.Join(dir, "rand.gguf"), "llama", 8, lora.RandomAdapter(base, []string{"attn_q", "attn_v", "attn_output"}, 8, 0.3, 5), nil); err != nil {
		t.Fatal(err)
	}
	complete := func(model string) string {
		resp, data := ts.post(t, "/v1/completions", map[string]any{"model": model, "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0})
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", model, resp.StatusCode, data)
		}
		var cr CompletionResponse
		json.Unmarshal(data, &cr)
		return cr.Choices[0].Text
	}
	before := complete("stories260K")
	adapted := complete("stories260K+rand")
	after := complete("stories260K")
	if adapted == before {
		t.Fatalf("the adapter changed nothing: %q", adapted)
	}
	if after != before {
		t.Fatalf("base output after the adapter %q differs from before %q", after, before)
	}
	// Register an alias at run time; it serves the same adapter.
	resp, data := ts.post(t, "/v1/adapters", map[string]any{"name": "my-adapter", "base": "stories260K", "path": filepath.Join(dir, "rand.gguf")})
	if resp.StatusCode != 201 {
		t.Fatalf("register: %d %s", resp.StatusCode, data)
	}
	if got := complete("my-adapter"); got != adapted {
		t.Fatalf("alias gave %q, want %q", got, adapted)
	}
	r, _ := http.Get(ts.url + "/v1/models")
	var ml ModelList
	json.NewDecoder(r.Body).Decode(&ml)
	r.Body.Close()
	found := false
	for _, m := range ml.Data {
		found = found || (m.ID == "my-adapter" && m.Parent == "stories260K")
	}
	if !found {
		t.Fatalf("adapter not listed with its parent: %+v", ml.Data)
	}
	// Both names were read into the decoder's resident slots (the base
	// requests ran on llama.cpp's context, no adapter set to switch).
	if v := scrape(t, ts, "llmrt_adapter_loads_total"); v < 2 {
		t.Fatalf("adapter loads %v", v)
	}
	if v := scrape(t, ts, "llmrt_resident_adapters"); v != 2 {
		t.Fatalf("resident adapters %v", v)
	}
	req, _ := http.NewRequest("DELETE", ts.url+"/v1/adapters/my-adapter", nil)
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != 200 {
		t.Fatalf("delete: %v", err)
	}
	resp, _ = ts.post(t, "/v1/completions", map[string]any{"model": "my-adapter", "prompt": "x"})
	if resp.StatusCode != 404 {
		t.Fatalf("deleted adapter still served: %d", resp.StatusCode)
	}
}

// With a stream interval, events are flushed in bursts (fewer reads than
// tokens) and the stream still carries every token and ends properly.
func TestStreamIntervalCoalescesFlushes(t *testing.T) {
	ts := startServer(t, Config{StreamInterval: 40 * time.Millisecond}, engine.Options{NParallel: 1})
	body := map[string]any{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 60, "temperature": 0, "ignore_eos": true}
	_, plain := ts.post(t, "/v1/completions", body)
	var whole struct{ Choices []struct{ Text string } }
	json.Unmarshal(plain, &whole)

	body["stream"] = true
	js, _ := json.Marshal(body)
	start := time.Now()
	resp, err := http.Post(ts.url+"/v1/completions", "application/json", bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var text strings.Builder
	events, reads := 0, 0
	done := false
	buf := make([]byte, 1<<16)
	var pending string
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			reads++
			pending += string(buf[:n])
			for {
				i := strings.Index(pending, "\n\n")
				if i < 0 {
					break
				}
				ev := strings.TrimPrefix(pending[:i], "data: ")
				pending = pending[i+2:]
				if ev == "[DONE]" {
					done = true
					continue
				}
				events++
				var c struct{ Choices []struct{ Text string } }
				json.Unmarshal([]byte(ev), &c)
				for _, ch := range c.Choices {
					text.WriteString(ch.Text)
				}
			}
		}
		if err != nil {
			break
		}
	}
	if !done || text.String() != whole.Choices[0].Text {
		t.Fatalf("streamed %q (done %v), want %q", text.String(), done, whole.Choices[0].Text)
	}
	// The stream hands the handler chunks at most once per 40 ms (the first
	// at once, the rest at the end), and the handler flushes at most as
	// often: whatever the model's speed, events (chunks and the finish) and
	// flushes are bounded by the elapsed time. An event per token would
	// break the bound: this model makes 60 in a few milliseconds.
	elapsed := time.Since(start)
	intervals := int(elapsed / (40 * time.Millisecond))
	if events < 2 || events > intervals+3 || reads > intervals+2 {
		t.Fatalf("%d events arrived in %d reads over %v (at most %d events and %d flushes): the stream was not coalesced", events, reads, elapsed, intervals+3, intervals+2)
	}
}

// flushCounter is a ResponseWriter that counts flushes.
type flushCounter struct {
	http.ResponseWriter
	mu      sync.Mutex
	flushes int
}

func (f *flushCounter) Flush() { f.mu.Lock(); f.flushes++; f.mu.Unlock() }

func (f *flushCounter) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.flushes }

// The SSE writer flushes the first event at once, then at most once per
// interval, on a timer when events stop coming; done flushes at once.
func TestSSEWriterCoalescesFlushes(t *testing.T) {
	fc := &flushCounter{ResponseWriter: httptest.NewRecorder()}
	sse := newSSE(fc, 200*time.Millisecond)
	defer sse.close()
	for i := 0; i < 10; i++ {
		if err := sse.send(map[string]int{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	if n := fc.count(); n != 1 {
		t.Fatalf("%d flushes right after 10 quick events, want 1 (the first)", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for fc.count() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := fc.count(); n != 2 {
		t.Fatalf("%d flushes after the interval, want 2 (the timer's)", n)
	}
	sse.send(map[string]int{"i": 10})
	sse.done()
	if n := fc.count(); n != 3 {
		t.Fatalf("%d flushes after done, want 3", n)
	}
}
