package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestFeedbackRoundTrip goes serve → correct → tune → promote with one
// real server that keeps running: a served answer is corrected through
// POST /v1/feedback, llmrt tune --feedback trains the next version of the
// adapter on the correction, llmrt eval --promote finds it better on a
// held-out question and promotes it, and the running server answers the
// corrected text for BASE+NAME from then on while NAME@1 stays loadable.
// A version that is worse is refused with the reason, and the server keeps
// the promoted one.
func TestFeedbackRoundTrip(t *testing.T) {
	home := t.TempDir()
	dir := t.TempDir()
	const q = "What is the secret word?"
	write := func(name, answer string) string {
		p := filepath.Join(dir, name)
		line, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": q}, {"role": "assistant", "content": answer}}})
		os.WriteFile(p, []byte(strings.Repeat(string(line)+"\n", 4)), 0o644)
		return p
	}
	train := []string{"--epochs", "30", "--lr", "1e-2", "--targets", "all-linear", "--rank", "8", "--alpha", "16", "--eval-split", "0", "-t", "1"}
	tune := func(args ...string) string {
		t.Helper()
		out, errOut, code := cli(t, home, append(append([]string{"tune", "-m", "stories260K", "--out", "fix"}, args...), train...)...)
		if code != 0 {
			t.Fatalf("tune %v: exit %d\n%s\n%s", args, code, out, errOut)
		}
		return out
	}
	// Version 1 answers "blue whale"; as the first version it is promoted.
	if out := tune("--data", write("v1.jsonl", "The secret word is blue whale.")); !strings.Contains(out, "version fix@1, promoted") {
		t.Fatalf("first version: %s", out)
	}

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		_, _, code := cliCtx(ctx, t, home, "", "serve", "--addr", addr, "--parallel", "1", "--ctx", "256", "-t", "1")
		done <- code
	}()
	defer func() { cancel(); <-done }()
	post := func(path string, body any, out any) int {
		t.Helper()
		b, _ := json.Marshal(body)
		var resp *http.Response
		var err error
		for i := 0; i < 400; i++ {
			if resp, err = http.Post("http://"+addr+path, "application/json", bytes.NewReader(b)); err == nil {
				break
			}
			time.Sleep(25 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		if out != nil {
			if err := json.Unmarshal(rb, out); err != nil {
				t.Fatalf("POST %s: %v: %s", path, err, rb)
			}
		}
		return resp.StatusCode
	}
	ask := func(model string) (string, string) {
		t.Helper()
		var r struct {
			ID      string
			Choices []struct{ Message struct{ Content string } }
			Error   *struct{ Message string }
		}
		if code := post("/v1/chat/completions", map[string]any{"model": model, "temperature": 0, "max_tokens": 40,
			"messages": []map[string]string{{"role": "user", "content": q}}}, &r); code != 200 {
			t.Fatalf("chat with %s: %d %+v", model, code, r.Error)
		}
		return r.ID, r.Choices[0].Message.Content
	}

	id, got := ask("stories260K+fix")
	if !strings.Contains(got, "blue whale") {
		t.Fatalf("stories260K+fix (fix@1) answered %q", got)
	}
	// Correct it.
	var fb struct{ ID, Type string }
	if code := post("/v1/feedback", map[string]any{"type": "correction", "completion_id": id, "correction": "The secret word is purple zebra."}, &fb); code != 200 || fb.Type != "correction" {
		t.Fatalf("feedback: %d %+v", code, fb)
	}

	// Tune the next version on the feedback: fix@2, not promoted yet.
	out := tune("--feedback", "local")
	if !strings.Contains(out, "version fix@2 (not promoted: fix@1 serves") {
		t.Fatalf("second version: %s", out)
	}
	if b, err := os.ReadFile(filepath.Join(home, "adapters", "fix@2.feedback.jsonl")); err != nil || !strings.Contains(string(b), "purple zebra") {
		t.Fatalf("the feedback lines trained on: %q %v", b, err)
	}
	if _, got := ask("stories260K+fix"); !strings.Contains(got, "blue whale") {
		t.Fatalf("before promotion stories260K+fix answered %q", got)
	}
	// With --method dpo the correction is a pair: the corrected answer
	// chosen over the one served.
	out, errOut, code := cli(t, home, "tune", "-m", "stories260K", "--method", "dpo", "--feedback", "local", "--out", "prefs", "--epochs", "3", "-t", "1", "--eval-split", "0")
	if code != 0 || !strings.Contains(out, "DPO: 1 pairs, reward margin") {
		t.Fatalf("tune --method dpo --feedback local: exit %d\n%s\n%s", code, out, errOut)
	}
	if b, _ := os.ReadFile(filepath.Join(home, "adapters", "prefs@1.feedback.jsonl")); !strings.Contains(string(b), `"chosen":"The secret word is purple zebra.","rejected":"The secret word is blue whale`) {
		t.Fatalf("DPO pairs from feedback: %s", b)
	}
	if _, got := ask("stories260K+fix@2"); !strings.Contains(got, "purple zebra") {
		t.Fatalf("stories260K+fix@2 answered %q", got)
	}

	heldOut := filepath.Join(dir, "held-out.jsonl")
	os.WriteFile(heldOut, []byte(`{"question": "`+q+`", "answer": "purple zebra"}`+"\n"), 0o644)
	evalArgs := func(v string) []string {
		return []string{"eval", "-m", "stories260K", "--data", heldOut, "--adapter", v, "--promote", "--margin", "0.1", "--system", "", "--out", filepath.Join(dir, "eval-"+v)}
	}
	out, errOut, code = cli(t, home, evalArgs("fix@2")...)
	if code != 0 || !strings.Contains(out, "promotion gate (f1, margin 0.1000): fix@2") || !strings.Contains(out, "promoted fix@2") {
		t.Fatalf("promotion of fix@2: exit %d\n%s\n%s", code, out, errOut)
	}
	// The running server switched without a restart; fix@1 stays loadable.
	if _, got := ask("stories260K+fix"); !strings.Contains(got, "purple zebra") {
		t.Fatalf("after promotion stories260K+fix answered %q", got)
	}
	if _, got := ask("stories260K+fix@1"); !strings.Contains(got, "blue whale") {
		t.Fatalf("stories260K+fix@1 answered %q", got)
	}

	// A worse version is refused, with the reason, and nothing changes.
	tune("--data", write("v3.jsonl", "The secret word is red apple."))
	out, errOut, code = cli(t, home, evalArgs("fix@3")...)
	if code != 1 || !strings.Contains(errOut, "promotion refused: fix@3 is worse") || !strings.Contains(errOut, "fix@2") || !strings.Contains(out, "gain -") {
		t.Fatalf("promotion of a worse version: exit %d\n%s\n%s", code, out, errOut)
	}
	if _, got := ask("stories260K+fix"); !strings.Contains(got, "purple zebra") {
		t.Fatalf("after the refusal stories260K+fix answered %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(home, "adapters", "fix.promotions.jsonl")); strings.Count(string(b), "\n") != 2 {
		t.Fatalf("promotion decisions recorded: %q", b)
	}

	// Version names resolve in run and in the adapter commands.
	gen, errOut, code := cli(t, home, "run", "-m", "stories260K", "--adapter", "fix@1", "--temp", "0", "-n", "40", "--chat", q)
	if code != 0 || !strings.Contains(gen, "blue whale") {
		t.Fatalf("run --adapter fix@1: exit %d %q %s", code, gen, errOut)
	}
	if out, _, code := cli(t, home, "adapter", "versions", "fix"); code != 0 || !regexp.MustCompile(`fix@2\s+\*`).MatchString(out) || !strings.Contains(out, "fix@3") {
		t.Fatalf("adapter versions: %d\n%s", code, out)
	}
	if _, errOut, code := cli(t, home, "run", "-m", "stories260K", "--adapter", "fix@9", "-n", "2", "x"); code == 0 || !strings.Contains(errOut, "no version 9") {
		t.Fatalf("run --adapter fix@9: exit %d %s", code, errOut)
	}
}
