package rag

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/llmrt/llmrt/runtime/engine"
)

// Reranker scores documents against a query; higher is more relevant.
type Reranker interface {
	Rerank(ctx context.Context, query string, docs []string) ([]float32, error)
	// Name says what reranks (a model name, and how).
	Name() string
}

// EngineReranker reranks with a loaded model: through llama.cpp's rank
// pooling (the model's classification head) when the model is a reranker,
// else by asking it as a chat model whether each passage helps answer the
// query (see ChatRerankSystem).
type EngineReranker struct {
	E        *engine.Engine
	Adapters []engine.AdapterRef
	// Model names the model in Name (default: its file name).
	Model string
}

var _ Reranker = EngineReranker{}

// The chat reranker's prompt: the passage's score is the probability of
// "yes" against "no" as the first word of the reply.
const (
	ChatRerankSystem = "You judge whether a passage helps answer a question. Reply with one word: yes or no."
	ChatRerankUser   = "Question: %s\n\nPassage: %s\n\nDoes the passage help answer the question?"
)

// Name is the model and the method: "MODEL (rank pooling)" or
// "MODEL (chat)".
func (r EngineReranker) Name() string {
	name := r.Model
	if name == "" {
		name = modelName(r.E)
	}
	if r.E.CanRank() {
		return name + " (rank pooling)"
	}
	return name + " (chat)"
}

// Rerank scores every document.
func (r EngineReranker) Rerank(ctx context.Context, query string, docs []string) ([]float32, error) {
	if len(docs) == 0 {
		return nil, nil
	}
	if r.E.CanRank() {
		return r.E.Rank(ctx, query, docs)
	}
	// As many at once as the engine decodes together (more would only
	// wait in, and could overflow, its queue).
	scores := make([]float32, len(docs))
	errs := make([]error, len(docs))
	slots := make(chan struct{}, max(1, r.E.Options().NParallel))
	var wg sync.WaitGroup
	for i, d := range docs {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			scores[i], errs[i] = r.chatScore(ctx, query, d)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
	}
	return scores, nil
}

// chatScore is the chat model's YesProbability that the passage helps
// answer the query (the passage is shortened until the prompt fits).
func (r EngineReranker) chatScore(ctx context.Context, query, doc string) (float32, error) {
	var toks []int32
	for {
		msgs := []engine.ChatMessage{{Role: "system", Content: ChatRerankSystem}, {Role: "user", Content: fmt.Sprintf(ChatRerankUser, query, doc)}}
		var err error
		if toks, err = r.E.ChatTokens(msgs, nil, true); err != nil {
			return 0, err
		}
		if len(toks) < r.E.CtxPerSeq()-1 || len(doc) < 16 {
			break
		}
		doc = doc[:len(doc)*3/4] // the passage is cut until the prompt fits
	}
	return YesProbability(ctx, r.E, r.Adapters, toks)
}

// YesProbability is p(yes) / (p(yes) + p(no)) over the distribution of
// the first token a model writes after prompt, where every token spelling
// the word counts. A word outside the 20 most likely tokens counts with
// half the 20th's probability (its probability is below that).
func YesProbability(ctx context.Context, e *engine.Engine, adapters []engine.AdapterRef, prompt []int32) (float32, error) {
	res, err := e.Generate(ctx, engine.Request{Prompt: prompt, MaxTokens: 1, Logprobs: true, TopLogprobs: 20, IgnoreEOS: true, Adapters: adapters})
	if err != nil {
		return 0, err
	}
	if len(res.Tokens) == 0 || len(res.Tokens[0].Top) == 0 {
		return 0, nil
	}
	top := res.Tokens[0].Top
	var yes, no float64
	for _, t := range top {
		switch strings.ToLower(strings.TrimSpace(t.Text)) {
		case "yes", "y", "ye":
			yes += math.Exp(float64(t.Logprob))
		case "no", "n":
			no += math.Exp(float64(t.Logprob))
		}
	}
	floor := math.Exp(float64(top[len(top)-1].Logprob)) / 2
	if yes == 0 {
		yes = floor
	}
	if no == 0 {
		no = floor
	}
	return float32(yes / (yes + no)), nil
}

// RegistryReranker reranks with a model of the server's registry, loaded
// on first use like any served model.
type RegistryReranker struct {
	Reg   Leaser
	Model string
}

var _ Reranker = RegistryReranker{}

// Name is the model's id and how it reranks when it is loaded.
func (r RegistryReranker) Name() string { return r.Model }

// Rerank leases the model and reranks with it.
func (r RegistryReranker) Rerank(ctx context.Context, query string, docs []string) ([]float32, error) {
	l, err := r.Reg.Acquire(ctx, r.Model)
	if err != nil {
		return nil, fmt.Errorf("reranking model %s: %w", r.Model, err)
	}
	defer l.Release()
	return EngineReranker{E: l.Engine, Adapters: l.Adapters, Model: r.Model}.Rerank(ctx, query, docs)
}

func modelName(e *engine.Engine) string {
	p := e.Options().Path
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[i+1:]
	}
	return strings.TrimSuffix(p, ".gguf")
}
