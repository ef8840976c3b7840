package rag

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/rag/grounding"
)

// Generator writes text for the query-rewriting stages: the model that
// answers, so that the rewrites speak its language.
type Generator interface {
	// Generate answers a chat greedily with at most maxTokens tokens.
	Generate(ctx context.Context, msgs []engine.ChatMessage, maxTokens int) (string, error)
}

// EngineGenerator generates with a loaded model (and its adapters).
type EngineGenerator struct {
	E        *engine.Engine
	Adapters []engine.AdapterRef
}

// Generate renders msgs with the model's chat template and decodes
// greedily.
func (g EngineGenerator) Generate(ctx context.Context, msgs []engine.ChatMessage, maxTokens int) (string, error) {
	toks, err := g.E.ChatTokens(msgs, nil, true)
	if err != nil {
		return "", err
	}
	if room := g.E.CtxPerSeq() - len(toks) - 1; room < maxTokens {
		if room < 8 {
			return "", &engine.PromptTooLongError{Tokens: len(toks), Limit: g.E.CtxPerSeq()}
		}
		maxTokens = room
	}
	res, err := g.E.Generate(ctx, engine.Request{Prompt: toks, MaxTokens: maxTokens, Adapters: g.Adapters})
	if err != nil {
		return "", err
	}
	return res.Text, nil
}

// Searcher is what Retrieve searches (a *Collection).
type Searcher interface {
	Search(ctx context.Context, query string, opt SearchOptions) ([]Hit, error)
}

// Request is one retrieval through the stages.
type Request struct {
	Query string
	// K is how many passages to return (default 4).
	K int
	// Search configures each search (its K is set by Retrieve).
	Search SearchOptions
	Stages grounding.Stages
	// Generator writes the rewrites (needed for MultiQuery and HyDE).
	Generator Generator
	// Reranker scores the candidates (needed for Rerank).
	Reranker Reranker
	// RerankCandidates is how many candidates the reranker scores
	// (default max(4·K, 20)).
	RerankCandidates int
}

// The prompts of the query-rewriting stages (the question goes in %s;
// MultiQueryPrompt takes the number of rewrites first).
const (
	MultiQueryPrompt = "Write %d different search queries that would find the passages answering the question below. " +
		"Write one query per line, with no numbering and nothing else.\n\nQuestion: %s"
	HyDEPrompt = "Write a short passage, two or three sentences, that answers the question below as a handbook would.\n\nQuestion: %s"
)

// Retrieve searches for req.Query through the stages req switches on:
// query rewriting (multi-query, HyDE) searches with each rewrite as well
// and fuses the rankings by reciprocal rank; reranking then scores the
// fused candidates and keeps the K best. With every stage off it is one
// search.
func Retrieve(ctx context.Context, s Searcher, req Request) (grounding.Retrieval, error) {
	if req.K <= 0 {
		req.K = 4
	}
	st := req.Stages
	if st.MultiQuery < 0 {
		return grounding.Retrieval{}, fmt.Errorf("multi-query rewrites must not be negative, got %d", st.MultiQuery)
	}
	if (st.MultiQuery > 0 || st.HyDE) && req.Generator == nil {
		return grounding.Retrieval{}, errors.New("query rewriting needs a model to write the rewrites")
	}
	if st.Rerank && req.Reranker == nil {
		return grounding.Retrieval{}, errors.New("reranking needs a reranker")
	}
	var out grounding.Retrieval
	queries := []string{req.Query}
	if st.MultiQuery > 0 {
		rw, err := rewrite(ctx, req.Generator, req.Query, st.MultiQuery)
		if err != nil {
			return out, fmt.Errorf("multi-query rewrite: %w", err)
		}
		out.Queries = rw
		queries = append(queries, rw...)
	}
	if st.HyDE {
		h, err := hypothesis(ctx, req.Generator, req.Query)
		if err != nil {
			return out, fmt.Errorf("hypothetical answer: %w", err)
		}
		if h != "" {
			out.Hypothesis = h
			queries = append(queries, h)
		}
	}
	k := req.K
	if st.Rerank {
		k = req.RerankCandidates
		if k <= 0 {
			k = max(4*req.K, 20)
		}
		k = max(k, req.K)
	}
	lists := make([][]Hit, len(queries))
	for i, q := range queries {
		opt := req.Search
		opt.K = k
		hits, err := s.Search(ctx, q, opt)
		if err != nil {
			return out, err
		}
		lists[i] = hits
	}
	hits := lists[0]
	if len(lists) > 1 {
		hits = fuse(lists, k)
	}
	if st.Rerank && len(hits) > 0 {
		docs := make([]string, len(hits))
		for i, h := range hits {
			docs[i] = EmbedText(h.Chunk.Title, h.Chunk.Text)
		}
		scores, err := req.Reranker.Rerank(ctx, req.Query, docs)
		if err != nil {
			return out, fmt.Errorf("rerank with %s: %w", req.Reranker.Name(), err)
		}
		if len(scores) != len(hits) {
			return out, fmt.Errorf("rerank with %s: %d scores for %d passages", req.Reranker.Name(), len(scores), len(hits))
		}
		for i := range hits {
			hits[i].Score = scores[i]
		}
		sort.SliceStable(hits, func(a, b int) bool { return hits[a].Score > hits[b].Score })
		out.Reranker = req.Reranker.Name()
	}
	if len(hits) > req.K {
		hits = hits[:req.K]
	}
	out.Passages = Passages(hits)
	return out, nil
}

// fuse merges rankings by reciprocal rank (score Σ 1/(rrfK + rank)); ties
// keep the order in which chunks were first seen.
func fuse(lists [][]Hit, k int) []Hit {
	score := map[uint64]float32{}
	var order []Hit
	for _, l := range lists {
		for rank, h := range l {
			if _, ok := score[h.Chunk.ID]; !ok {
				order = append(order, h)
			}
			score[h.Chunk.ID] += 1 / float32(rrfK+rank+1)
		}
	}
	for i := range order {
		order[i].Score = score[order[i].Chunk.ID]
	}
	sort.SliceStable(order, func(a, b int) bool { return order[a].Score > order[b].Score })
	if len(order) > k {
		order = order[:k]
	}
	return order
}

// listMark is a list marker or numbering a model may put before a line.
var listMark = regexp.MustCompile(`^\s*(?:[-*•]+|\d+[.):]|\(\d+\)|[Qq]uery\s*\d*\s*:)\s*`)

// rewrite asks the model for n rewrites of q, one per line: markers and
// quotes are stripped, and empty lines, repeats and copies of q dropped.
func rewrite(ctx context.Context, g Generator, q string, n int) ([]string, error) {
	text, err := g.Generate(ctx, []engine.ChatMessage{{Role: "user", Content: fmt.Sprintf(MultiQueryPrompt, n, q)}}, 48*n)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{strings.ToLower(strings.TrimSpace(q)): true}
	var out []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.Trim(strings.TrimSpace(listMark.ReplaceAllString(line, "")), `"'`)
		if len(line) > 300 {
			line = line[:300]
		}
		key := strings.ToLower(line)
		if line == "" || seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, line)
		if len(out) == n {
			break
		}
	}
	return out, nil
}

// hypothesis asks the model for a short passage that answers q.
func hypothesis(ctx context.Context, g Generator, q string) (string, error) {
	text, err := g.Generate(ctx, []engine.ChatMessage{{Role: "user", Content: fmt.Sprintf(HyDEPrompt, q)}}, 128)
	return strings.TrimSpace(text), err
}
