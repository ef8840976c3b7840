package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/server"
)

// serveOverhead compares single-stream decode through the HTTP server
// (streamed completions, as a client sees them) with the same engine
// called directly, request by request in turn (alternating which goes
// first), so that the machine's drift (on a shared 2-core VM, ±15% between
// runs) falls on both alike.
// The server runs in this process with the serve command's defaults.
func serveOverhead(ctx context.Context, path string, threads, nPrompt, nGen, reps int) {
	dir, err := os.MkdirTemp("", "llmrt-bench-serve-")
	check(err)
	defer os.RemoveAll(dir)
	check(os.Symlink(path, filepath.Join(dir, "q.gguf")))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := registry.NewRegistry(registry.RegistryConfig{Resolver: registry.DirResolver{Dir: dir}, KeepAlive: -1, Logger: quiet,
		Engine: engine.Options{NParallel: 8, CtxPerSeq: nPrompt + nGen + 16, Threads: threads}})
	defer reg.Close()
	srv := server.New(server.Config{DefaultModel: "q", Logger: quiet, StreamInterval: 40 * time.Millisecond}, reg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	defer func() { stop(); <-done }()
	lease, err := reg.Acquire(ctx, "q")
	check(err)
	defer lease.Release()
	url := "http://" + ln.Addr().String() + "/v1/completions"

	fmt.Printf("\n== serving overhead: one stream, HTTP vs the engine in turn (%d-token prompts, %d tokens, %d rounds) ==\n", nPrompt, nGen, reps)
	rng := rand.New(rand.NewPCG(11, 11))
	var direct, viaHTTP []float64
	for i := 0; i < reps; i++ {
		// Odd rounds run HTTP first, so neither path always follows the other.
		for k := 0; k < 2; k++ {
			prompt := make([]int32, nPrompt)
			for j := range prompt {
				prompt[j] = int32(rng.IntN(50000))
			}
			if (k == 0) == (i%2 == 0) {
				res, err := lease.Engine.Generate(ctx, engine.Request{Prompt: prompt, MaxTokens: nGen, IgnoreEOS: true})
				check(err)
				direct = append(direct, float64(res.CompletionTokens-1)/(res.Duration-res.TimeToFirstToken).Seconds())
			} else {
				r, err := streamRate(ctx, url, prompt, nGen)
				check(err)
				viaHTTP = append(viaHTTP, r)
			}
		}
	}
	fmt.Printf("%-22s %s\n%-22s %s\n", "engine tok/s", rounds(direct), "HTTP stream tok/s", rounds(viaHTTP))
	fmt.Printf("medians: engine %.1f, HTTP %.1f; per round, the HTTP stream decodes %.1f%% below the engine (median of the rounds' own differences; target: within 5%%)\n",
		median(direct), median(viaHTTP), pairedOverhead(viaHTTP, direct))
}

func rounds(v []float64) string {
	var b strings.Builder
	for _, x := range v {
		fmt.Fprintf(&b, "%7.1f", x)
	}
	return b.String()
}

// streamRate sends one streamed completion and returns its decode rate as
// the client sees it: the tokens after the first (by the usage event's
// count; an event may carry several) over the time from the first event to
// the last. The first event carries one token: the stream wakes the server
// for it at once, long before the next is decoded.
func streamRate(ctx context.Context, url string, prompt []int32, nGen int) (float64, error) {
	body, _ := json.Marshal(map[string]any{"model": "q", "prompt": prompt, "max_tokens": nGen, "stream": true,
		"ignore_eos": true, "temperature": 0, "stream_options": map[string]any{"include_usage": true}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("completion: %s: %s", resp.Status, b)
	}
	var first, last time.Time
	tokens := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || line == "[DONE]" {
			continue
		}
		var ev struct {
			Choices []struct{} `json:"choices"`
			Usage   *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			return 0, fmt.Errorf("completion stream: %w", err)
		}
		if ev.Usage != nil {
			tokens = ev.Usage.CompletionTokens
		}
		if len(ev.Choices) == 0 {
			continue // the usage event
		}
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		last = now
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if tokens < 2 || !last.After(first) {
		return 0, fmt.Errorf("completion stream: %d tokens", tokens)
	}
	return float64(tokens-1) / last.Sub(first).Seconds(), nil
}
