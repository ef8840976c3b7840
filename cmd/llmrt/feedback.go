package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/llmrt/llmrt/internal/atomicfile"
	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/feedback"
	"github.com/llmrt/llmrt/runtime/finetune"
	"github.com/llmrt/llmrt/runtime/registry"
)

// feedbackFlags configure serve's feedback capture.
type feedbackFlags struct {
	keep       int
	days       int
	judgeModel string
	judgeAll   bool
}

func (f *feedbackFlags) register(fl *pflag.FlagSet) {
	fl.IntVar(&f.keep, "feedback-keep", 10000, "served completions kept for feedback (oldest dropped first; feedback itself is kept)")
	fl.IntVar(&f.days, "feedback-days", 30, "days a served completion is kept for feedback")
	fl.StringVar(&f.judgeModel, "judge-model", "", "model that scores served answers for POST /v1/feedback/judge (AI feedback)")
	fl.BoolVar(&f.judgeAll, "judge-all", false, "score every served completion in the background with --judge-model")
}

// registryGenerator runs the judge's prompts through served models.
type registryGenerator struct{ reg *registry.Registry }

func (g registryGenerator) Generate(ctx context.Context, model string, msgs []feedback.Message, grammar string, maxTokens int) (string, error) {
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
		return "", fmt.Errorf("judge prompt: %w", err)
	}
	res, err := lease.Engine.Generate(ctx, engine.Request{Prompt: toks, MaxTokens: maxTokens, Adapters: lease.Adapters,
		Sampling: kernels.SamplerParams{Grammar: grammar, RepeatPenalty: 1}})
	if err != nil {
		return "", err
	}
	return res.Text, nil
}

// openFeedback opens the feedback store and its judge for serve.
func (a *app) openFeedback(f *feedbackFlags, reg *registry.Registry) (*feedback.Store, *feedback.Judge, error) {
	st, err := feedback.Open(feedback.Options{Dir: a.feedbackDir(), MaxCompletions: f.keep, MaxAge: time.Duration(f.days) * 24 * time.Hour, Logger: a.log})
	if err != nil {
		return nil, nil, err
	}
	j := &feedback.Judge{Model: f.judgeModel, Gen: registryGenerator{reg}}
	if f.judgeAll {
		if f.judgeModel == "" {
			st.Close()
			return nil, nil, usageError{fmt.Errorf("--judge-all needs --judge-model")}
		}
		st.StartJudge(j, 64)
	}
	return st, j, nil
}

func (a *app) feedbackDir() string { return filepath.Join(a.home, "feedback") }

// feedbackData turns the feedback in src ("local" for $LLMRT_HOME/feedback,
// a feedback folder or JSONL file, or the URL of a running llmrt server)
// about completions served by base into training data for method: the
// corrections as supervised examples, or the preferences and corrections
// as DPO pairs. The lines are written to out and counted.
func (a *app) feedbackData(ctx context.Context, src, base, method, out string) (int, error) {
	var fbs []feedback.Feedback
	var err error
	switch {
	case src == "local":
		fbs, err = feedback.ReadFile(a.feedbackDir())
	case strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://"):
		fbs, err = fetchFeedback(ctx, src)
	default:
		fbs, err = feedback.ReadFile(src)
	}
	if err != nil {
		return 0, fmt.Errorf("feedback from %s: %w", src, err)
	}
	fbs = feedback.Select(fbs, feedback.Filter{Base: base})
	var n int
	err = atomicfile.Write(out, func(f *os.File) error {
		if method == finetune.MethodDPO {
			lines := feedback.Pairs(fbs)
			n = len(lines)
			return feedback.WriteJSONL(f, lines)
		}
		lines := feedback.SFT(fbs)
		n = len(lines)
		return feedback.WriteJSONL(f, lines)
	})
	if err != nil {
		return 0, err
	}
	if n == 0 {
		what := "corrections"
		if method == finetune.MethodDPO {
			what = "preferences or corrections"
		}
		return 0, fmt.Errorf("feedback from %s has no %s about completions served by %s (%d entries in all)", src, what, base, len(fbs))
	}
	return n, nil
}

// fetchFeedback downloads a server's feedback (LLMRT_API_KEY is sent as
// the Bearer key when set).
func fetchFeedback(ctx context.Context, base string) ([]feedback.Feedback, error) {
	u := strings.TrimSuffix(strings.TrimSuffix(base, "/"), "/v1") + "/v1/feedback/export?format=raw"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if k := os.Getenv("LLMRT_API_KEY"); k != "" {
		req.Header.Set("Authorization", "Bearer "+k)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, b)
	}
	return feedback.Read(resp.Body)
}
