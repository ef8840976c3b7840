package engine

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/llmrt/llmrt/kernels"
)

// CanRank reports whether the model is a reranker: its GGUF asks for rank
// pooling (a classification head over the pooled state, as llama.cpp's
// converter writes for BGE, Jina and Qwen3 rerankers).
func (e *Engine) CanRank() bool {
	return e.model.MetaValue(e.info.Arch+".pooling_type") == strconv.Itoa(int(kernels.PoolingRank))
}

// RankInput is the token sequence a reranker scores for a query and a
// document, as llama.cpp's server builds it: the GGUF's rerank template
// (tokenizer.chat_template.rerank, with {query} and {document}) when it
// has one, else [BOS] query [EOS] [SEP] document [EOS].
func (e *Engine) RankInput(query, doc string) ([]int32, error) {
	if tmpl := e.model.MetaValue("tokenizer.chat_template.rerank"); tmpl != "" {
		text := strings.NewReplacer("{query}", query, "{document}", doc).Replace(tmpl)
		return e.model.Tokenize(text, true, true)
	}
	q, err := e.model.Tokenize(query, false, false)
	if err != nil {
		return nil, err
	}
	d, err := e.model.Tokenize(doc, false, false)
	if err != nil {
		return nil, err
	}
	out := make([]int32, 0, len(q)+len(d)+4)
	if e.info.BOS >= 0 {
		out = append(out, e.info.BOS)
	}
	out = append(out, q...)
	if e.info.EOS >= 0 {
		out = append(out, e.info.EOS)
	}
	if sep, err := strconv.Atoi(e.model.MetaValue("tokenizer.ggml.seperator_token_id")); err == nil && sep >= 0 && sep < e.info.Vocab {
		out = append(out, int32(sep))
	}
	out = append(out, d...)
	if e.info.EOS >= 0 {
		out = append(out, e.info.EOS)
	}
	return out, nil
}

// Rank scores each document against the query with the model's
// classification head (rank pooling): the first class output, as
// llama.cpp's server reports it. Inputs longer than EmbedLimit are cut
// at their end. Many pairs share each decode.
func (e *Engine) Rank(ctx context.Context, query string, docs []string) ([]float32, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	if !e.CanRank() {
		return nil, fmt.Errorf("model %s is not a reranker (its GGUF does not ask for rank pooling)", e.opt.Path)
	}
	limit := e.EmbedLimit()
	inputs := make([][]int32, len(docs))
	for i, d := range docs {
		toks, err := e.RankInput(query, d)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(toks) > limit {
			toks = toks[:limit]
		}
		inputs[i] = toks
	}
	e.embedMu.Lock()
	defer e.embedMu.Unlock()
	if e.closed.Load() {
		return nil, ErrClosed
	}
	if e.rankCtx == nil {
		c, err := e.model.NewContext(kernels.ContextParams{
			NCtx: limit, NBatch: limit, NUBatch: limit, NSeqMax: embedSeqs,
			Threads: e.opt.Threads, Embeddings: true, Pooling: kernels.PoolingRank,
		})
		if err != nil {
			return nil, fmt.Errorf("rank context: %w", err)
		}
		b, err := kernels.NewBatch(limit, 1)
		if err != nil {
			c.Close()
			return nil, err
		}
		e.rankCtx, e.rankB = c, b
	}
	out := make([]float32, len(inputs))
	for start := 0; start < len(inputs); {
		e.rankB.Clear()
		e.rankCtx.ClearMemory(true)
		end, used := start, 0
		for end < len(inputs) && end-start < embedSeqs && used+len(inputs[end]) <= limit {
			for p, t := range inputs[end] {
				if _, err := e.rankB.Add(t, p, end-start, true); err != nil {
					return nil, err
				}
			}
			used += len(inputs[end])
			end++
		}
		if err := e.rankCtx.Decode(ctx, e.rankB); err != nil {
			return nil, fmt.Errorf("rank documents %d..%d: %w", start, end-1, err)
		}
		for i := start; i < end; i++ {
			s, err := e.rankCtx.SeqScores(i - start)
			if err != nil {
				return nil, err
			}
			if len(s) == 0 {
				return nil, fmt.Errorf("document %d: the model's classification head has no outputs", i)
			}
			out[i] = s[0]
		}
		start = end
	}
	return out, nil
}
