package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/httpapi"
	"github.com/llmrt/llmrt/runtime/registry"
)

// Bodies that aborted the whole process inside llama.cpp (token ids outside
// the vocabulary reached llama_detokenize; grammars that leave no token
// tripped an assertion in the dist sampler). Each must get a 400 in
// OpenAI's error shape, and the server must go on serving.
func TestHostileBodiesKeepServing(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{})
	for _, c := range []struct{ path, body, param string }{
		{"/v1/completions", `{"model":"stories260K","prompt":[999999999],"max_tokens":2}`, "prompt"},
		{"/v1/completions", `{"model":"stories260K","prompt":[512],"max_tokens":2}`, "prompt"},
		{"/v1/completions", `{"model":"stories260K","prompt":[-5],"max_tokens":2}`, "prompt"},
		{"/v1/completions", `{"model":"stories260K","prompt":[[1,2],[70000]],"max_tokens":2}`, "prompt"},
		{"/v1/completions", `{"prompt":[600],"echo":true}`, "prompt"},
		{"/v1/completions", `{"prompt":[1,600],"logprobs":3,"stream":true}`, "prompt"},
		{"/v1/completions", `{"prompt":"hi","best_of":0}`, "best_of"},
		{"/v1/completions", `{"prompt":"hi","logit_bias":{"70000":5}}`, "logit_bias"},
		{"/v1/embeddings", `{"input":[[1,2],[512]]}`, "input"},
		{"/v1/completions", `{"prompt":"hi","grammar":"root ::= <[999999]>","max_tokens":3}`, "grammar"},
		{"/v1/completions", `{"prompt":"hi","grammar":"root ::= \"a\" <[2]>","max_tokens":3,"temperature":0}`, "grammar"},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"grammar":"root ::= <[2]> \"x\"","max_tokens":3}`, "grammar"},
	} {
		resp, data := ts.post(t, c.path, c.body)
		if resp.StatusCode != 400 {
			t.Fatalf("%s: %d %s", c.body, resp.StatusCode, data)
		}
		if e := apiErr(t, data); e.Param == nil || *e.Param != c.param {
			t.Fatalf("%s: error names param %v, want %q: %s", c.body, e.Param, c.param, data)
		}
	}
	// A grammar that dead-ends mid-stream ends the stream with an error
	// event and [DONE], not a dropped connection.
	resp, data := ts.post(t, "/v1/completions", `{"prompt":"hi","grammar":"root ::= \"a\" <[2]>","max_tokens":3,"stream":true}`)
	if resp.StatusCode != 200 || !strings.Contains(string(data), `"param":"grammar"`) || !strings.HasSuffix(strings.TrimSpace(string(data)), "data: [DONE]") {
		t.Fatalf("stream: %d %s", resp.StatusCode, data)
	}
	resp, data = ts.post(t, "/v1/completions", map[string]any{"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0})
	var cr CompletionResponse
	if json.Unmarshal(data, &cr); resp.StatusCode != 200 || !strings.HasPrefix(lily, cr.Choices[0].Text) {
		t.Fatalf("after the hostile bodies: %d %s", resp.StatusCode, data)
	}
}

// Adapters register only from the adapters folder (or an allowed root), as
// GGUF LoRA adapters for the base, and refusals neither show file contents
// nor say whether a file outside the folders exists.
func TestAdapterRegistrationPaths(t *testing.T) {
	root := t.TempDir()
	ts := startServer(t, Config{}, engine.Options{NParallel: 2}, func(rc *registry.RegistryConfig) { rc.AdapterRoots = []string{root} })
	dir := ts.reg.AdapterDir()
	os.MkdirAll(dir, 0o755)
	base, _ := gguf.Open(testmodel.Shared(t, "stories260K.gguf"))
	ad := lora.RandomAdapter(base, []string{"attn_q", "attn_v"}, 4, 0.3, 7)
	if err := lora.WriteAdapter(filepath.Join(dir, "good.gguf"), "llama", 8, ad, nil); err != nil {
		t.Fatal(err)
	}
	if err := lora.WriteAdapter(filepath.Join(root, "other.gguf"), "llama", 8, ad, nil); err != nil {
		t.Fatal(err)
	}
	secret := "root:x:0:0:TOPSECRET"
	os.WriteFile(filepath.Join(dir, "text.gguf"), []byte(secret+"\n"), 0o644)
	outside := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(outside, []byte(secret), 0o644)
	os.Symlink(outside, filepath.Join(dir, "link.gguf"))
	model, _ := os.ReadFile(testmodel.Shared(t, "stories260K.gguf"))
	os.WriteFile(filepath.Join(dir, "model.gguf"), model, 0o644)

	register := func(name, path string) (int, httpapi.APIError) {
		resp, data := ts.post(t, "/v1/adapters", map[string]any{"name": name, "base": "stories260K", "path": path})
		if resp.StatusCode == 201 {
			return 201, httpapi.APIError{}
		}
		e := apiErr(t, data)
		if strings.Contains(e.Message, "TOPSECRET") || strings.Contains(e.Message, "root:") {
			t.Fatalf("%s: the error shows the file's contents: %s", path, e.Message)
		}
		return resp.StatusCode, e
	}
	notAllowed := ""
	for _, p := range []string{"/etc/passwd", "../../../../etc/shadow", outside, outside + ".missing", "/nonexistent/x.gguf", filepath.Join(dir, "link.gguf"), dir} {
		code, e := register("a", p)
		if code != 400 || e.Code == nil || *e.Code != "path_not_allowed" {
			t.Fatalf("%s: %d %+v", p, code, e)
		}
		if notAllowed == "" {
			notAllowed = e.Message
		} else if e.Message != notAllowed {
			t.Fatalf("%s: message %q differs from %q (it tells what exists)", p, e.Message, notAllowed)
		}
	}
	for p, want := range map[string]string{"text.gguf": "not a readable GGUF", "model.gguf": "not an adapter", "missing.gguf": "no adapter file"} {
		if code, e := register("a", p); code != 400 || !strings.Contains(e.Message, want) {
			t.Fatalf("%s: %d %q, want %q", p, code, e.Message, want)
		}
	}
	if code, e := register("good", "good.gguf"); code != 201 {
		t.Fatalf("adapter in the folder: %d %+v", code, e)
	}
	if code, e := register("other", filepath.Join(root, "other.gguf")); code != 201 {
		t.Fatalf("adapter in an allowed root: %d %+v", code, e)
	}
	for _, a := range ts.reg.AdapterList() {
		if a.Created.IsZero() || a.Created.Before(time.Now().Add(-time.Minute)) {
			t.Fatalf("adapter %s created %v", a.Name, a.Created)
		}
	}
	resp, data := ts.post(t, "/v1/completions", map[string]any{"model": "good", "prompt": "Once upon a time", "max_tokens": 4})
	if resp.StatusCode != 200 {
		t.Fatalf("registered adapter: %d %s", resp.StatusCode, data)
	}
}

// A page on another site can POST to a loopback server without a CORS
// preflight when it sends text/plain; such requests are refused, as are
// cross-origin ones of any type, while same-origin JSON passes.
func TestCrossSiteRequestsRefused(t *testing.T) {
	ts := startServer(t, Config{CORSOrigins: []string{"http://allowed.example"}}, engine.Options{})
	body := `{"name":"x","base":"stories260K","path":"x.gguf"}`
	send := func(method, path, ctype, origin, host, body string) (int, []byte) {
		req, _ := http.NewRequest(method, ts.url+path, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, data
	}
	self := strings.TrimPrefix(ts.url, "http://")
	for _, c := range []struct {
		method, path, ctype, origin, host string
		want                              int
		code                              string
	}{
		{"POST", "/v1/adapters", "text/plain", "http://evil.example", "", 403, "origin_not_allowed"},
		{"POST", "/v1/adapters", "application/json", "http://evil.example", "", 403, "origin_not_allowed"},
		{"DELETE", "/v1/adapters/x", "", "http://evil.example", "", 403, "origin_not_allowed"},
		{"POST", "/v1/adapters", "text/plain", "", "", 415, "unsupported_media_type"},
		{"POST", "/v1/completions", "application/x-www-form-urlencoded", "", "", 415, "unsupported_media_type"},
		{"POST", "/v1/completions", "multipart/form-data; boundary=x", "", "", 415, "unsupported_media_type"},
		{"POST", "/v1/completions", "application/json", "", "rebind.evil.example:8080", 403, "host_not_allowed"},
		{"GET", "/v1/models", "", "", "rebind.evil.example", 403, "host_not_allowed"},
	} {
		code, data := send(c.method, c.path, c.ctype, c.origin, c.host, body)
		if code != c.want || apiErr(t, data).Code == nil || *apiErr(t, data).Code != c.code {
			t.Fatalf("%+v: %d %s", c, code, data)
		}
	}
	if n := len(ts.reg.AdapterList()); n != 0 {
		t.Fatalf("a refused request registered %d adapters", n)
	}
	// Same origin, an allowed origin, loopback host names, and JSON with
	// a charset all reach the handler.
	prompt := `{"prompt":"Once","max_tokens":1}`
	for _, c := range []struct{ ctype, origin, host string }{
		{"application/json", "http://" + self, ""},
		{"application/json; charset=utf-8", "http://allowed.example", ""},
		{"application/json", "", "localhost:1234"},
		{"application/json", "", "[::1]:8080"},
	} {
		if code, data := send("POST", "/v1/completions", c.ctype, c.origin, c.host, prompt); code != 200 {
			t.Fatalf("%+v: %d %s", c, code, data)
		}
	}
	// With --allowed-host the name is served.
	ts.srv.cfg.AllowedHosts = []string{"llm.internal"}
	if code, data := send("POST", "/v1/completions", "application/json", "", "llm.internal:8080", prompt); code != 200 {
		t.Fatalf("allowed host: %d %s", code, data)
	}
}

func TestMetricsNeedTheKey(t *testing.T) {
	for _, public := range []bool{false, true} {
		ts := startServer(t, Config{APIKeys: []string{"secret"}, MetricsPublic: public}, engine.Options{})
		get := func(key string) int {
			req, _ := http.NewRequest("GET", ts.url+"/metrics", nil)
			if key != "" {
				req.Header.Set("Authorization", "Bearer "+key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && !strings.Contains(string(data), "llmrt_") {
				t.Fatalf("metrics body: %.200s", data)
			}
			return resp.StatusCode
		}
		if public {
			if c := get(""); c != 200 {
				t.Fatalf("public metrics without key: %d", c)
			}
			continue
		}
		if c := get(""); c != 401 {
			t.Fatalf("metrics without key: %d", c)
		}
		if c := get("wrong"); c != 401 {
			t.Fatalf("metrics with a wrong key: %d", c)
		}
		if c := get("secret"); c != 200 {
			t.Fatalf("metrics with the key: %d", c)
		}
		if r, err := http.Get(ts.url + "/health"); err != nil || r.StatusCode != 200 {
			t.Fatalf("health needs no key: %v", err)
		}
	}
}

// After SIGTERM the listener stays open for the grace period: health and
// new requests get 503 with Retry-After while an in-flight request ends.
// The in-flight request is held by a route of the test's own, so the drain
// lasts exactly as long as the test needs it to (TestGraceful... covers a
// real stream finishing).
func TestDrainAnswers503(t *testing.T) {
	ts := startServer(t, Config{ShutdownGrace: 20 * time.Second}, engine.Options{})
	entered, release := make(chan struct{}), make(chan struct{})
	ts.srv.Handle("POST /v1/test/hold", "test", func(w http.ResponseWriter, r *http.Request) error {
		close(entered)
		<-release
		return httpapi.WriteJSON(w, 200, map[string]string{"status": "finished"})
	})
	held := make(chan string)
	go func() {
		resp, err := http.Post(ts.url+"/v1/test/hold", "application/json", nil)
		if err != nil {
			held <- err.Error()
			return
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		held <- fmt.Sprint(resp.StatusCode, " ", strings.TrimSpace(string(data)))
	}()
	<-entered
	ts.cancel() // like SIGTERM
	for !ts.srv.flight.isDraining() {
		time.Sleep(time.Millisecond)
	}
	for i := 0; i < 2; i++ { // the drain holds as long as the request does
		hr, err := http.Get(ts.url + "/health")
		if err != nil {
			t.Fatalf("health during the drain: %v", err)
		}
		var h struct{ Status string }
		json.NewDecoder(hr.Body).Decode(&h)
		hr.Body.Close()
		if hr.StatusCode != 503 || h.Status != "draining" || hr.Header.Get("Retry-After") == "" {
			t.Fatalf("health during the drain: %d %q Retry-After %q", hr.StatusCode, h.Status, hr.Header.Get("Retry-After"))
		}
		r2, data := ts.post(t, "/v1/completions", map[string]any{"prompt": "Once", "max_tokens": 2})
		if r2.StatusCode != 503 || r2.Header.Get("Retry-After") == "" || apiErr(t, data).Type != "server_error" {
			t.Fatalf("new request during the drain: %d %s", r2.StatusCode, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(release)
	if got := <-held; got != `200 {"status":"finished"}` {
		t.Fatalf("the in-flight request: %s", got)
	}
	if err := <-ts.done; err != nil {
		t.Fatalf("serve returned %v", err)
	}
	ts.done <- nil
	if _, err := http.Get(ts.url + "/health"); err == nil {
		t.Fatal("still accepting after the drain")
	}
}
