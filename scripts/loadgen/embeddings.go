package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// embResult is what one (clients, batch) combination of the embeddings mode
// measured.
type embResult struct {
	Clients      int      `json:"clients"`
	Batch        int      `json:"batch"`
	Requests     int      `json:"requests"` // finished: ok + errors
	OK           int      `json:"ok"`
	Errors       int      `json:"errors"`
	Retries      int      `json:"retries"`
	Embeddings   int      `json:"embeddings"`
	Seconds      num      `json:"seconds"`
	EmbPerSec    num      `json:"embeddings_per_s"`
	ReqPerSec    num      `json:"requests_per_s"`
	LatP50Ms     num      `json:"latency_p50_ms"`
	LatP95Ms     num      `json:"latency_p95_ms"`
	ErrorSamples []string `json:"error_samples,omitempty"`
}

// embedder sends embeddings requests whose inputs are all different texts.
type embedder struct {
	c     *client
	cfg   *config
	seeds atomic.Uint64
}

// body is a request of batch inputs of about cfg.embTokens tokens each.
func (e *embedder) body(batch int) []byte {
	inputs := make([]string, batch)
	for i := range inputs {
		inputs[i] = promptText(e.cfg.seed+1+e.seeds.Add(1), e.cfg.embTokens)
	}
	b, err := json.Marshal(map[string]any{"model": e.cfg.model, "input": inputs})
	if err != nil {
		panic(err) // strings always marshal
	}
	return b
}

// embed sends one request of batch inputs and checks that batch embeddings
// came back.
func (e *embedder) embed(ctx context.Context, batch int) (retries int, err error) {
	resp, retries, err := e.c.do(ctx, http.MethodPost, "/embeddings", e.body(batch))
	if err != nil {
		return retries, err
	}
	defer resp.Body.Close()
	var out struct {
		Data []struct {
			Embedding json.RawMessage `json:"embedding"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return retries, fmt.Errorf("POST /embeddings: decoding the answer: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if len(out.Data) != batch {
		return retries, fmt.Errorf("POST /embeddings: %d inputs gave %d embeddings", batch, len(out.Data))
	}
	for _, d := range out.Data {
		if len(d.Embedding) <= 2 { // "[]", "" or null
			return retries, fmt.Errorf("POST /embeddings: empty embedding in the answer")
		}
	}
	return retries, nil
}

// runEmbCombo keeps clients concurrent clients sending requests of batch
// inputs for cfg.duration (a request in flight at the end is waited for).
func (e *embedder) runEmbCombo(ctx context.Context, clients, batch int) embResult {
	res := embResult{Clients: clients, Batch: batch}
	var (
		mu   sync.Mutex
		lats []float64
		wg   sync.WaitGroup
		errs = map[string]bool{}
	)
	start := time.Now()
	deadline := start.Add(e.cfg.duration)
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				rctx, cancel := context.WithTimeout(ctx, e.cfg.timeout)
				t0 := time.Now()
				retries, err := e.embed(rctx, batch)
				lat := time.Since(t0)
				cancel()
				mu.Lock()
				res.Retries += retries
				switch {
				case err != nil && errors.Is(ctx.Err(), context.Canceled):
					// stopped by Ctrl-C: not a measurement
				case err != nil:
					res.Requests++
					res.Errors++
					if len(errs) < 3 && !errs[err.Error()] {
						errs[err.Error()] = true
						res.ErrorSamples = append(res.ErrorSamples, err.Error())
					}
				default:
					res.Requests++
					res.OK++
					res.Embeddings += batch
					lats = append(lats, ms(lat))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.Seconds = num(elapsed.Seconds())
	res.EmbPerSec = num(rate(float64(res.Embeddings), elapsed))
	res.ReqPerSec = num(rate(float64(res.OK), elapsed))
	res.LatP50Ms = num(percentile(lats, 50))
	res.LatP95Ms = num(percentile(lats, 95))
	return res
}
