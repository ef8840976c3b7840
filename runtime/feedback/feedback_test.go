package feedback_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/feedback"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/server"
)

// realGen runs the judge's prompts through the registry with the score
// grammar applied by the engine's sampler, as llmrt serve wires it.
type realGen struct{ reg *registry.Registry }

func (g realGen) Generate(ctx context.Context, model string, msgs []feedback.Message, grammar string, maxTokens int) (string, error) {
	lease, err := g.reg.Acquire(ctx, model)
	if err != nil {
		return "", err
	}
	defer lease.Release()
	cm := make([]engine.ChatMessage, len(msgs))
	for i, m := range msgs {
		cm[i] = engine.ChatMessage{Role: m.Role, Content: m.Content}
	}
	toks, err := lease.Engine.ChatTokens(cm, nil, true)
	if err != nil {
		return "", err
	}
	r, err := lease.Engine.Generate(ctx, engine.Request{Prompt: toks, MaxTokens: maxTokens, Sampling: kernels.SamplerParams{Grammar: grammar, RepeatPenalty: 1}})
	if err != nil {
		return "", err
	}
	return r.Text, nil
}

func timeAgo() time.Time { return time.Now().Add(-time.Hour) }

// serve runs a real server over home with a feedback store and returns
// its URL and a stop function that closes everything.
func serve(t *testing.T, home string, opt feedback.Options, judgeAll ...bool) (string, *feedback.Store, func()) {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	res := registry.DirResolver{Dir: filepath.Join(home, "models")}
	reg := registry.NewRegistry(registry.RegistryConfig{Resolver: res, KeepAlive: -1, Logger: quiet,
		AdapterDir: filepath.Join(home, "adapters"), Engine: engine.Options{NParallel: 2, CtxPerSeq: 512, Threads: 1}})
	opt.Dir, opt.Logger = filepath.Join(home, "feedback"), quiet
	st, err := feedback.Open(opt)
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{DefaultModel: "stories260K", Logger: quiet, Recorder: st}, reg)
	judge := &feedback.Judge{Model: "stories260K", Gen: realGen{reg}}
	if len(judgeAll) > 0 && judgeAll[0] {
		st.StartJudge(judge, 8)
	}
	(&feedback.API{Store: st, Judge: judge}).Register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	return "http://" + ln.Addr().String(), st, func() {
		cancel()
		<-done
		st.Close()
		reg.Close()
	}
}

func call(t *testing.T, method, url, body string, want int, out any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s (want %d)", method, url, resp.StatusCode, b, want)
	}
	if out != nil {
		if s, ok := out.(*string); ok {
			*s = string(b)
			return
		}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, b)
		}
	}
}

type list struct {
	Data []feedback.Feedback
}

// TestFeedbackCaptureSurvivesRestart serves completions from a real
// server, attaches a rating, a correction, a preference and the judge's
// scores to them by id, restarts the server and finds them all again;
// exports turn the correction into a supervised example and the
// preference and correction into DPO pairs.
func TestFeedbackCaptureSurvivesRestart(t *testing.T) {
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, "models"), 0o755)
	if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(home, "models", "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	url, _, stop := serve(t, home, feedback.Options{})
	var chat struct {
		ID      string
		Choices []struct{ Message struct{ Content string } }
	}
	call(t, "POST", url+"/v1/chat/completions", `{"model": "stories260K", "n": 2, "seed": 3, "max_tokens": 12,
		"messages": [{"role": "user", "content": "Tell me about a cat"}]}`, 200, &chat)
	var text struct{ ID string }
	call(t, "POST", url+"/v1/completions", `{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}`, 200, &text)

	var c feedback.Completion
	call(t, "GET", url+"/v1/feedback/completions/"+chat.ID, "", 200, &c)
	if c.Kind != "chat" || c.Base != "stories260K" || len(c.Choices) != 2 || c.Choices[1] != chat.Choices[1].Message.Content ||
		len(c.Messages) != 1 || !strings.Contains(string(c.Request), `"n":2`) {
		t.Fatalf("recorded completion %+v", c)
	}

	var f feedback.Feedback
	call(t, "POST", url+"/v1/feedback", `{"type": "rating", "completion_id": "`+chat.ID+`", "rating": "bad", "score": 2, "comment": "off topic"}`, 200, &f)
	if f.ID == "" || f.Completion == nil || f.Completion.Choices[0] != chat.Choices[0].Message.Content || f.Source != "human" {
		t.Fatalf("rating %+v", f)
	}
	call(t, "POST", url+"/v1/feedback", `{"type": "correction", "completion_id": "`+text.ID+`", "correction": ", a cat named Tom found a hat."}`, 200, nil)
	call(t, "POST", url+"/v1/feedback", `{"type": "preference", "chosen": {"completion_id": "`+chat.ID+`", "choice": 1}, "rejected": {"completion_id": "`+chat.ID+`", "choice": 0}}`, 200, nil)

	// Bad feedback is refused with the field and a reason, and stores nothing.
	var e struct {
		Error struct{ Message, Param string }
	}
	for _, bad := range []struct {
		body  string
		code  int
		param string
	}{
		{`{"type": "rating", "completion_id": "chatcmpl-nope", "rating": "good"}`, 404, "completion_id"},
		{`{"type": "rating", "completion_id": "` + chat.ID + `", "rating": "meh"}`, 400, "rating"},
		{`{"type": "rating", "completion_id": "` + chat.ID + `", "choice": 5, "rating": "good"}`, 400, "choice"},
		{`{"type": "opinion", "completion_id": "` + chat.ID + `"}`, 400, "type"},
		{`{"type": "correction", "completion_id": "` + chat.ID + `"}`, 400, "correction"},
		{`{"type": "preference", "chosen": {"completion_id": "` + chat.ID + `"}, "rejected": {"completion_id": "` + text.ID + `"}}`, 400, "rejected"},
	} {
		call(t, "POST", url+"/v1/feedback", bad.body, bad.code, &e)
		if e.Error.Param != bad.param {
			t.Errorf("%s: param %q (%s), want %q", bad.body, e.Error.Param, e.Error.Message, bad.param)
		}
	}

	// AI feedback on demand: the judge scores both answers, with its prompt
	// recorded, and prefers the better one when they differ.
	var judged list
	call(t, "POST", url+"/v1/feedback/judge", `{"completion_id": "`+chat.ID+`"}`, 200, &judged)
	if len(judged.Data) < 2 {
		t.Fatalf("judge gave %d entries", len(judged.Data))
	}
	for _, j := range judged.Data[:2] {
		if j.Source != "ai" || j.Score == nil || *j.Score < 1 || *j.Score > 10 || j.Judge == nil || j.Judge.Model != "stories260K" ||
			!strings.Contains(j.Judge.Prompt[1].Content, c.Choices[j.Choice]) {
			t.Fatalf("judge rating %+v (judge %+v)", j, j.Judge)
		}
	}
	stop()

	// After a restart everything is there.
	url, _, stop = serve(t, home, feedback.Options{})
	defer stop()
	var all list
	call(t, "GET", url+"/v1/feedback?limit=100", "", 200, &all)
	if len(all.Data) != 3+len(judged.Data) {
		t.Fatalf("%d feedback entries after a restart, want %d", len(all.Data), 3+len(judged.Data))
	}
	var corr list
	call(t, "GET", url+"/v1/feedback?type=correction", "", 200, &corr)
	if len(corr.Data) != 1 || corr.Data[0].Correction != ", a cat named Tom found a hat." || corr.Data[0].Completion.Prompt != "Once upon a time" {
		t.Fatalf("correction after a restart: %+v", corr.Data)
	}
	var sft, dpo string
	call(t, "GET", url+"/v1/feedback/export?format=sft", "", 200, &sft)
	if strings.Count(sft, "\n") != 1 || !strings.Contains(sft, `"prompt":"Once upon a time","completion":", a cat named Tom found a hat."`) {
		t.Fatalf("sft export %q", sft)
	}
	call(t, "GET", url+"/v1/feedback/export?format=dpo&source=human", "", 200, &dpo)
	lines := strings.Split(strings.TrimSpace(dpo), "\n")
	if len(lines) != 2 || !strings.Contains(dpo, `"chosen":", a cat named Tom found a hat."`) || !strings.Contains(dpo, `"messages":[{"role":"user","content":"Tell me about a cat"}]`) {
		t.Fatalf("dpo export %q", dpo)
	}
	var pl feedback.PairLine
	json.Unmarshal([]byte(lines[1]), &pl)
	if pl.Chosen != chat.Choices[1].Message.Content || pl.Rejected != chat.Choices[0].Message.Content {
		t.Fatalf("preference pair %+v", pl)
	}
}

// TestStoreRetentionAndTornLines bounds the completions kept, keeps the
// feedback about an expired completion usable, and drops a last line a
// crash cut short without losing the lines before it.
func TestStoreRetentionAndTornLines(t *testing.T) {
	dir := t.TempDir()
	st, err := feedback.Open(feedback.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"cmpl-a", "cmpl-b"} {
		if err := st.Record(feedback.Completion{ID: id, Kind: "text", Base: "m", Prompt: "p", Choices: []string{"x " + id}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Record(feedback.Completion{ID: "../escape", Choices: []string{"x"}}); err == nil {
		t.Fatal("a completion id with a path accepted")
	}
	if _, err := st.Add(feedback.Feedback{Type: "correction", Ref: feedback.Ref{CompletionID: "cmpl-a"}, Correction: "y"}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	// A crash mid-append leaves half a line.
	f, _ := os.OpenFile(filepath.Join(dir, "feedback.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"id": "fb-half", "type": "rat`)
	f.Close()
	// Reopened with room for one completion: the oldest goes.
	os.Chtimes(filepath.Join(dir, "completions", "cmpl-a.json"), timeAgo(), timeAgo())
	st, err = feedback.Open(feedback.Options{Dir: dir, MaxCompletions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Completion("cmpl-a"); err == nil {
		t.Fatal("the oldest completion is still kept past the bound")
	}
	if _, err := st.Completion("cmpl-b"); err != nil {
		t.Fatal(err)
	}
	fb := st.List(feedback.Filter{})
	if len(fb) != 1 || fb[0].Completion == nil || fb[0].Completion.Choices[0] != "x cmpl-a" {
		t.Fatalf("feedback after the crash and the prune: %+v", fb)
	}
	if _, err := st.Add(feedback.Feedback{Type: "rating", Ref: feedback.Ref{CompletionID: "cmpl-b"}, Rating: "good"}); err != nil {
		t.Fatal(err)
	}
	got, err := feedback.ReadFile(dir)
	if err != nil || len(got) != 2 {
		t.Fatalf("%d entries on disk (%v)", len(got), err)
	}
	if sft := feedback.SFT(got); len(sft) != 1 || *sft[0].Completion != "y" {
		t.Fatalf("sft %+v", sft)
	}
	var buf bytes.Buffer
	feedback.WriteJSONL(&buf, feedback.Pairs(got))
	if !strings.Contains(buf.String(), `"chosen":"y","rejected":"x cmpl-a"`) {
		t.Fatalf("pairs %s", buf.String())
	}
}

// TestBackgroundJudgeScoresServedAnswers serves a completion with the
// background judge on and finds the judge's rating of it, with the judge's
// prompt, among the feedback.
func TestBackgroundJudgeScoresServedAnswers(t *testing.T) {
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, "models"), 0o755)
	if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(home, "models", "stories260K.gguf")); err != nil {
		t.Fatal(err)
	}
	url, st, stop := serve(t, home, feedback.Options{}, true)
	defer stop()
	var chat struct{ ID string }
	call(t, "POST", url+"/v1/chat/completions", `{"max_tokens": 8, "temperature": 0, "messages": [{"role": "user", "content": "Hi"}]}`, 200, &chat)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got := st.List(feedback.Filter{CompletionID: chat.ID, Source: feedback.SourceAI})
		if len(got) == 1 {
			f := got[0]
			if f.Type != "rating" || f.Score == nil || f.Judge == nil || !strings.Contains(f.Judge.Prompt[1].Content, "[user] Hi") {
				t.Fatalf("background judge feedback %+v", f)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no judge rating of %s after 2 minutes: %+v", chat.ID, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
