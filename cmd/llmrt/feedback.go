package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/feedback"
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
