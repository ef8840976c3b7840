package engine

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/llmrt/llmrt/kernels"
)

// embedSeqs is how many inputs one embedding decode packs together.
const embedSeqs = 16

// InputTooLongError reports an embedding input longer than one batch.
type InputTooLongError struct{ Index, Tokens, Limit int }

func (e *InputTooLongError) Error() string {
	return fmt.Sprintf("input %d is %d tokens, longer than the embedding batch of %d tokens", e.Index, e.Tokens, e.Limit)
}

// EmbedLimit is the longest input Embed accepts, in tokens.
func (e *Engine) EmbedLimit() int { return min(e.opt.CtxPerSeq, 8192) }

// Embed returns one unit-length embedding per input (pooled over its
// tokens with the model's pooling, mean when the GGUF names none). Many
// inputs are packed into each decode.
func (e *Engine) Embed(ctx context.Context, inputs [][]int32) ([][]float32, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	limit := e.EmbedLimit()
	for i, in := range inputs {
		if len(in) == 0 {
			return nil, fmt.Errorf("input %d is empty", i)
		}
		if len(in) > limit {
			return nil, &InputTooLongError{Index: i, Tokens: len(in), Limit: limit}
		}
		if err := e.model.CheckTokens(in); err != nil {
			return nil, fmt.Errorf("input %d: %w", i, err)
		}
	}
	e.embedMu.Lock()
	defer e.embedMu.Unlock()
	if e.closed.Load() {
		return nil, ErrClosed
	}
	pool := kernels.PoolingMean
	switch e.model.MetaValue(e.info.Arch + ".pooling_type") {
	case "2":
		pool = kernels.PoolingCLS
	case "3":
		pool = kernels.PoolingLast
	}
	// Mean pooling on a llama-family model runs on our own graph, which
	// stops at the last hidden state: llama.cpp's embedding mode still
	// multiplies every token by the vocabulary-wide output head.
	if pool == kernels.PoolingMean && !e.embedNetFailed {
		if e.embedNet == nil {
			n, err := kernels.NewNet(e.model, kernels.NetParams{Threads: e.opt.Threads})
			if err != nil {
				e.embedNetFailed = true
				e.log.Debug("embeddings use llama.cpp's context", "reason", err)
			} else {
				e.embedNet = n
			}
		}
		if e.embedNet != nil {
			out, err := e.embedNet.Embed(ctx, inputs, max(limit, 2048))
			if err != nil {
				return nil, err
			}
			for i, v := range out {
				if err := normalize(v); err != nil {
					return nil, fmt.Errorf("input %d: %w", i, err)
				}
			}
			return out, nil
		}
	}
	if e.embedCtx == nil {
		c, err := e.model.NewContext(kernels.ContextParams{
			NCtx: limit, NBatch: limit, NUBatch: limit, NSeqMax: embedSeqs,
			Threads: e.opt.Threads, Embeddings: true, Pooling: pool,
		})
		if err != nil {
			return nil, fmt.Errorf("embedding context: %w", err)
		}
		b, err := kernels.NewBatch(limit, 1)
		if err != nil {
			c.Close()
			return nil, err
		}
		e.embedCtx, e.embedB = c, b
	}
	out := make([][]float32, len(inputs))
	for start := 0; start < len(inputs); {
		e.embedB.Clear()
		e.embedCtx.ClearMemory(true)
		end := start
		used := 0
		for end < len(inputs) && end-start < embedSeqs && used+len(inputs[end]) <= limit {
			for p, t := range inputs[end] {
				if _, err := e.embedB.Add(t, p, end-start, true); err != nil {
					return nil, err
				}
			}
			used += len(inputs[end])
			end++
		}
		if err := e.embedCtx.Decode(ctx, e.embedB); err != nil {
			return nil, fmt.Errorf("embed inputs %d..%d: %w", start, end-1, err)
		}
		for i := start; i < end; i++ {
			v, err := e.embedCtx.SeqEmbedding(i - start)
			if err != nil {
				return nil, err
			}
			if err := normalize(v); err != nil {
				return nil, fmt.Errorf("input %d: %w", i, err)
			}
			out[i] = v
		}
		start = end
	}
	return out, nil
}

func normalize(v []float32) error {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	if ss == 0 || math.IsNaN(ss) || math.IsInf(ss, 0) {
		return errors.New("embedding has no direction (zero or not finite)")
	}
	inv := float32(1 / math.Sqrt(ss))
	for i := range v {
		v[i] *= inv
	}
	return nil
}
