package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/names"
	"github.com/llmrt/llmrt/models/testmodel"
)

// serveInProcess runs llmrt serve in-process on a free port until the returned
// function is called; that function returns serve's stderr and exit code.
func serveInProcess(t *testing.T, home string, args ...string) (string, func() (string, int)) {
	t.Helper()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		stderr string
		code   int
	}
	done := make(chan result, 1)
	go func() {
		_, errs, code := cliCtx(ctx, t, home, "", append([]string{"serve", "--addr", addr, "--parallel", "1", "--ctx", "256"}, args...)...)
		done <- result{errs, code}
	}()
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case r := <-done:
			t.Fatalf("serve exited %d: %s", r.code, r.stderr)
		case <-time.After(25 * time.Millisecond):
		}
	}
	var once bool
	var last result
	stop := func() (string, int) {
		if !once {
			once = true
			cancel()
			last = <-done
		}
		return last.stderr, last.code
	}
	t.Cleanup(func() { stop() })
	return addr, stop
}

// getJSON GETs url with an optional key and decodes the answer into out.
func getJSON(t *testing.T, url, key string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(out)
	return resp.StatusCode
}

// `serve -m PATH` serves the file under its name (listed in /v1/models,
// the default model, created at the file's time); ps shows it loaded for
// ever (it was preloaded), stop unloads it, a request loads it again for
// the keep-alive; the server logs every request and says when it stopped.
func TestServeModelPathPsAndStop(t *testing.T) {
	home := t.TempDir()
	file := filepath.Join(t.TempDir(), "tiny-story.gguf")
	b, err := os.ReadFile(testmodel.Shared(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(file, b, 0o644)
	made := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(file, made, made)
	t.Setenv("LLMRT_API_KEY", "")
	addr, stop := serveInProcess(t, home, "-m", file, "--keep-alive", "10m", "--api-key", "k3y")

	var ml struct {
		Data []struct {
			ID      string
			Created int64
			Loaded  bool
		}
	}
	if code := getJSON(t, "http://"+addr+"/v1/models", "k3y", &ml); code != 200 {
		t.Fatalf("/v1/models: %d", code)
	}
	found := false
	for _, m := range ml.Data {
		if m.ID == "tiny-story" {
			found = m.Loaded && m.Created == made.Unix()
		}
	}
	if !found {
		t.Fatalf("tiny-story not listed as loaded with its file's time: %+v", ml.Data)
	}
	complete := func() string {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/completions",
			strings.NewReader(`{"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer k3y")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Model   string
			Choices []struct{ Text string }
		}
		json.NewDecoder(resp.Body).Decode(&body)
		if resp.StatusCode != 200 || len(body.Choices) == 0 {
			t.Fatalf("completion: %d %+v", resp.StatusCode, body)
		}
		return body.Model + ":" + body.Choices[0].Text
	}
	if got := complete(); !strings.HasPrefix(got, "tiny-story:") || !strings.Contains(got, "little girl") {
		t.Fatalf("the default model answered %q", got)
	}

	// The client commands need the key.
	if _, errs, code := cli(t, home, "ps", "--addr", addr); code != 1 || !strings.Contains(errs, "LLMRT_API_KEY") {
		t.Fatalf("ps without a key: %d %s", code, errs)
	}
	t.Setenv("LLMRT_API_KEY", "k3y")
	out, errs, code := cli(t, home, "ps", "--addr", addr)
	if code != 0 || !strings.Contains(out, "tiny-story") || !strings.Contains(out, "forever") || !strings.Contains(out, "100% CPU") {
		t.Fatalf("ps: %d %q %s", code, out, errs)
	}
	if out, errs, code = cli(t, home, "stop", "--addr", addr, "tiny-story"); code != 0 || !strings.Contains(out, "unloaded tiny-story") {
		t.Fatalf("stop: %d %q %s", code, out, errs)
	}
	if out, _, _ = cli(t, home, "ps", "--addr", addr); !strings.Contains(out, "no models loaded") {
		t.Fatalf("ps after stop: %q", out)
	}
	if _, errs, code = cli(t, home, "stop", "--addr", addr, "tiny-story"); code != 1 || !strings.Contains(errs, "not loaded") {
		t.Fatalf("stop again: %d %s", code, errs)
	}
	// Loaded again by a request, it is no longer pinned: keep-alive counts.
	complete()
	var ps []struct {
		Name      string
		ExpiresAt *time.Time `json:"expires_at"`
	}
	if out, errs, code = cli(t, home, "ps", "--addr", addr, "--json"); code != 0 || json.Unmarshal([]byte(out), &ps) != nil || len(ps) != 1 || ps[0].ExpiresAt == nil {
		t.Fatalf("ps --json: %d %q %s", code, out, errs)
	}
	if left := time.Until(*ps[0].ExpiresAt); left <= 9*time.Minute || left > 10*time.Minute {
		t.Fatalf("expires in %s, want about the 10m keep-alive", left)
	}
	if out, _, _ = cli(t, home, "ps", "--addr", addr); !strings.Contains(out, "from now") {
		t.Fatalf("ps: %q", out)
	}
	logs, code := stop()
	if code != 0 && code != 130 {
		t.Fatalf("serve exited %d", code)
	}
	for _, want := range []string{"path=/v1/completions status=200", "path=/v1/system/keep_alive status=200", "llmrt stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("serve's log lacks %q", want)
		}
	}
	if strings.Contains(logs, "path=/health") {
		t.Error("health probes are in the access log")
	}
	// No server: a clear error.
	if _, errs, code := cli(t, home, "ps", "--addr", addr); code != 1 || !strings.Contains(errs, "no llmrt server answers") {
		t.Fatalf("ps without a server: %d %s", code, errs)
	}
}

// writeTestAdapter writes a real LoRA adapter for stories260K (random
// weights strong enough to change greedy output) as NAME in home.
func writeTestAdapter(t *testing.T, home, name string) string {
	t.Helper()
	base, err := gguf.Open(testmodel.Shared(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	p := names.AdapterDir(filepath.Join(home, "adapters")).Path(name)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := lora.WriteAdapter(p, "llama", 8, lora.RandomAdapter(base, []string{"attn_q", "attn_v", "attn_output"}, 8, 0.3, 5),
		map[string]string{names.BaseKey: "stories260K"}); err != nil {
		t.Fatal(err)
	}
	return p
}

// An adapter is called the same way everywhere: -m BASE+NAME,
// ft:BASE:NAME, --adapter NAME or its path, in run, show and serve.
func TestAdapterNamesEverywhere(t *testing.T) {
	home := t.TempDir()
	if _, errs, code := cli(t, home, "pull", "stories260K"); code != 0 {
		t.Fatal(errs)
	}
	path := writeTestAdapter(t, home, "pc")
	prompt := "Once upon a time"
	run := func(args ...string) string {
		t.Helper()
		out, errs, code := cli(t, home, append(append([]string{"run", "--temp", "0", "-n", "16"}, args...), prompt)...)
		if code != 0 {
			t.Fatalf("run %v: exit %d: %s", args, code, errs)
		}
		return out
	}
	base := run("-m", "stories260K")
	adapted := run("-m", "stories260K+pc")
	if adapted == base {
		t.Fatalf("-m stories260K+pc did not apply the adapter: %q", adapted)
	}
	for _, args := range [][]string{{"--adapter", "pc"}, {"--adapter", path}, {"--adapter", "pc:1"}, {"-m", "ft:stories260K:pc"}} {
		if got := run(args...); got != adapted {
			t.Errorf("run %v gave %q, want %q", args, got, adapted)
		}
	}
	if got := run("--adapter", "pc:0.3"); got == adapted || got == base {
		t.Errorf("scale 0.3 gave %q, like full strength or none", got)
	}
	// A bare adapter name as a model says how to call it; an unknown
	// adapter lists the ones there are.
	if _, errs, code := cli(t, home, "run", "-m", "pc", "x"); code != 1 || !strings.Contains(errs, "call it stories260K+pc") {
		t.Fatalf("-m pc: %d %s", code, errs)
	}
	if _, errs, code := cli(t, home, "run", "--adapter", "nope", "x"); code != 2 || !strings.Contains(errs, "have: pc") {
		t.Fatalf("--adapter nope: %d %s", code, errs)
	}
	if _, errs, code := cli(t, home, "run", "-m", "stories260K+nope", "x"); code != 1 || !strings.Contains(errs, "have: pc") {
		t.Fatalf("-m stories260K+nope: %d %s", code, errs)
	}
	if out, errs, code := cli(t, home, "show", "stories260K+pc"); code != 0 || !regexp.MustCompile(`trained for +stories260K`).MatchString(out) || !strings.Contains(out, "292.80K") {
		t.Fatalf("show: %d %q %s", code, out, errs)
	}
	if out, _, code := cli(t, home, "adapter", "ls"); code != 0 || !strings.Contains(out, "pc    stories260K") {
		t.Fatalf("adapter ls: %d %q", code, out)
	}
	if _, errs, code := cli(t, home, "tune", "-m", "stories260K+pc", "--data", path, "--out", "x"); code != 2 || !strings.Contains(errs, "names an adapter") {
		t.Fatalf("tune on an adapter: %d %s", code, errs)
	}

	// The server lists the adapter as stories260K+pc and serves it as run does.
	addr, _ := serveInProcess(t, home)
	var ml struct {
		Data []struct{ ID, Parent string }
	}
	getJSON(t, "http://"+addr+"/v1/models", "", &ml)
	listed := false
	for _, m := range ml.Data {
		listed = listed || (m.ID == "stories260K+pc" && m.Parent == "stories260K")
	}
	if !listed {
		t.Fatalf("/v1/models: %+v", ml.Data)
	}
	body, _ := json.Marshal(map[string]any{"model": "stories260K+pc", "prompt": prompt, "max_tokens": 16, "temperature": 0})
	resp, err := http.Post("http://"+addr+"/v1/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var cr struct{ Choices []struct{ Text string } }
	json.NewDecoder(resp.Body).Decode(&cr)
	if len(cr.Choices) == 0 || !strings.HasPrefix(adapted, cr.Choices[0].Text) {
		t.Fatalf("served %+v, run printed %q", cr, adapted)
	}
}

// In the interactive chat, commands stay local: /help and unknown
// commands never reach the model (--verbose prints stats after every
// answer the model gives).
func TestChatCommandsStayLocal(t *testing.T) {
	home := t.TempDir()
	out, errs, code := cliCtx(context.Background(), t, home, "/help\n/nonsense\n/clear\n/bye\n", "--verbose", "run", "-m", "stories260K", "-n", "4")
	if code != 0 || !strings.Contains(out, "/clear") || !strings.Contains(out, "Unknown command /nonsense") {
		t.Fatalf("exit %d, out %q", code, out)
	}
	if strings.Contains(errs, "generated:") {
		t.Fatalf("a command reached the model: %s", errs)
	}
	// A message does, and --verbose reports its speed.
	_, errs, code = cliCtx(context.Background(), t, home, "Hello\n", "--verbose", "run", "-m", "stories260K", "-n", "4")
	if code != 0 || !strings.Contains(errs, "generated:") || !strings.Contains(errs, "load time:") || !strings.Contains(errs, "tokens/s") {
		t.Fatalf("exit %d, stats %q", code, errs)
	}
}

// signalWriter sends an interrupt when the first answer text arrives (the
// chat writes nothing else to a stdout that is not a terminal).
type signalWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	intr chan os.Signal
	sent bool
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	n, err := w.buf.Write(p)
	send := !w.sent
	w.sent = true
	w.mu.Unlock()
	if send {
		w.intr <- os.Interrupt // taken by the chat's watcher: no race with the answer's end
	}
	return n, err
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// Ctrl-C in the chat stops the answer and keeps the chat; at the prompt it
// ends the chat cleanly.
func TestChatInterrupt(t *testing.T) {
	home := t.TempDir()
	intr := make(chan os.Signal)
	inR, inW := io.Pipe()
	out := &signalWriter{intr: intr}
	var errb bytes.Buffer
	a := &app{stdin: inR, stdout: out, stderr: &errb, interrupts: intr}
	root := a.root()
	root.SetArgs([]string{"--home", home, "run", "-m", "stories260K", "--temp", "1", "--seed", "3", "-n", "1500", "--ctx", "2048"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(context.Background()) }()
	fmt.Fprintln(inW, "Tell me a long story")
	// The answer starts, the writer interrupts it: the chat says so and
	// waits for the next line.
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "(stopped)") && time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("chat ended: %v; out %q; err %s", err, out.String(), errb.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !strings.Contains(out.String(), "(stopped)") {
		t.Fatalf("the answer was not stopped: %q", out.String())
	}
	// At the prompt, Ctrl-C ends the chat without an error.
	intr <- os.Interrupt
	if err := <-done; err != nil {
		t.Fatalf("chat ended with %v", err)
	}
	inW.Close()
}
