package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is the parsed command line.
type config struct {
	url          string
	model        string
	mode         string // chat, completions or embeddings
	streams      []int
	requests     int // 0: 2×streams, at least 2
	promptTokens int
	maxTokens    int
	ignoreEOS    bool
	sharedPrefix bool
	warmup       int
	seed         uint64
	timeout      time.Duration
	embTokens    int
	embBatch     []int
	duration     time.Duration
	allowRemote  bool
	apiKey       string
	jsonPath     string
	verbose      bool
}

// errUsage marks a bad command line (exit status 2); errReported one that
// the flag package has already explained on stderr.
var (
	errUsage    = errors.New("usage")
	errReported = errors.New("bad flags")
)

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `loadgen: a load generator for any OpenAI-compatible server (llmrt, llama-server, vLLM)

usage: go run ./scripts/loadgen -url http://127.0.0.1:8080 -model NAME [flags]

`)
		fs.PrintDefaults()
	}
	var streams, batches string
	fs.StringVar(&cfg.url, "url", "http://127.0.0.1:8080", "server base URL, with or without /v1")
	fs.StringVar(&cfg.model, "model", "", "model name to request (default: the first one on /v1/models)")
	fs.StringVar(&cfg.mode, "mode", "chat", "chat (/v1/chat/completions), completions (/v1/completions) or embeddings (/v1/embeddings)")
	fs.StringVar(&streams, "streams", "1,4,8", "concurrency levels: comma-separated numbers of concurrent clients")
	fs.IntVar(&cfg.requests, "requests", 0, "measured requests per level (0: 2×streams, at least 2)")
	fs.IntVar(&cfg.promptTokens, "prompt-tokens", 256, "prompt length in tokens (approximate: one common word each)")
	fs.IntVar(&cfg.maxTokens, "max-tokens", 128, "tokens to generate per request (max_tokens)")
	fs.BoolVar(&cfg.ignoreEOS, "ignore-eos", true, `send "ignore_eos": true so that every request generates -max-tokens tokens`)
	fs.BoolVar(&cfg.sharedPrefix, "shared-prefix", false, "all prompts share one prefix and differ in their last 8 words (default: all different)")
	fs.IntVar(&cfg.warmup, "warmup", 1, "unmeasured warm-up requests before the first level")
	fs.Uint64Var(&cfg.seed, "seed", 1, "seed of the prompts' word choice")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Minute, "timeout of one request")
	fs.IntVar(&cfg.embTokens, "emb-tokens", 64, "embeddings mode: tokens (words) per input string")
	fs.StringVar(&batches, "emb-batch", "1,16", "embeddings mode: comma-separated numbers of input strings per request")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "embeddings mode: how long each (clients, batch) combination runs")
	fs.BoolVar(&cfg.allowRemote, "allow-remote", false, "allow a URL whose host is not a loopback address")
	fs.StringVar(&cfg.apiKey, "api-key", os.Getenv("OPENAI_API_KEY"), "bearer token (default: $OPENAI_API_KEY)")
	fs.StringVar(&cfg.jsonPath, "json", "", "also write all results, per request included, as JSON to this file")
	fs.BoolVar(&cfg.verbose, "v", false, "print every request on stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errReported
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	var err error
	if cfg.streams, err = intList("-streams", streams); err != nil {
		return nil, err
	}
	if cfg.embBatch, err = intList("-emb-batch", batches); err != nil {
		return nil, err
	}
	switch {
	case cfg.mode != "chat" && cfg.mode != "completions" && cfg.mode != "embeddings":
		return nil, fmt.Errorf("%w: -mode %q: want chat, completions or embeddings", errUsage, cfg.mode)
	case cfg.requests < 0, cfg.warmup < 0:
		return nil, fmt.Errorf("%w: -requests and -warmup must not be negative", errUsage)
	case cfg.promptTokens < 1, cfg.maxTokens < 1, cfg.embTokens < 1:
		return nil, fmt.Errorf("%w: -prompt-tokens, -max-tokens and -emb-tokens must be at least 1", errUsage)
	case cfg.timeout <= 0, cfg.duration <= 0:
		return nil, fmt.Errorf("%w: -timeout and -duration must be positive", errUsage)
	}
	return cfg, nil
}

// intList parses "1,4,8" into positive numbers.
func intList(name, s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%w: %s %q: want comma-separated positive numbers", errUsage, name, s)
		}
		out = append(out, n)
	}
	return out, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole command; it returns the exit status: 0 done, 1 failed,
// 2 bad usage, 130 interrupted (what was measured is still printed).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		if !errors.Is(err, errReported) {
			fmt.Fprintln(stderr, "loadgen:", strings.TrimPrefix(err.Error(), "usage: "))
		}
		return 2
	}
	base, err := apiBase(cfg.url)
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 2
	}
	if !cfg.allowRemote {
		if err := checkLoopback(ctx, base, net.DefaultResolver); err != nil {
			fmt.Fprintln(stderr, "loadgen:", err)
			return 2
		}
	}
	conns := 0
	for _, s := range cfg.streams {
		conns = max(conns, s)
	}
	c := newClient(base, cfg.apiKey, conns)
	defer c.close()
	if cfg.model == "" {
		if cfg.model, err = c.firstModel(ctx); err != nil {
			fmt.Fprintln(stderr, "loadgen:", err)
			return 1
		}
	}
	rep := &report{URL: base.Redacted(), Model: cfg.model, Mode: cfg.mode, StartedAt: time.Now().UTC()}
	if cfg.mode == "embeddings" {
		err = runEmbeddings(ctx, c, cfg, rep, stdout, stderr)
		if len(rep.Embeddings) > 0 {
			printEmbTable(stdout, rep.Embeddings)
		}
	} else {
		err = runGenerate(ctx, c, cfg, rep, stdout, stderr)
		if len(rep.Levels) > 0 {
			printGenTable(stdout, rep.Levels)
		}
	}
	rep.Interrupted = ctx.Err() != nil
	code := 0
	if cfg.jsonPath != "" {
		if jerr := rep.writeJSON(cfg.jsonPath); jerr != nil {
			fmt.Fprintln(stderr, "loadgen:", jerr)
			code = 1
		}
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "loadgen: interrupted; the table shows what was measured")
		return 130
	case err != nil:
		fmt.Fprintln(stderr, "loadgen:", err)
		return 1
	}
	return code
}

// runGenerate runs the chat or completions mode: warm-up, then one level
// per -streams value.
func runGenerate(ctx context.Context, c *client, cfg *config, rep *report, stdout, stderr io.Writer) error {
	rep.PromptTokens, rep.MaxTokens = cfg.promptTokens, cfg.maxTokens
	rep.IgnoreEOS, rep.SharedPrefix = cfg.ignoreEOS, cfg.sharedPrefix
	prompts := "unique prompts"
	if cfg.sharedPrefix {
		prompts = "shared-prefix prompts"
	}
	fmt.Fprintf(stdout, "loadgen %s  model=%s  mode=%s (POST %s)  prompt=%d tokens (target, %s)  output=%d tokens  ignore_eos=%t\n",
		rep.URL, cfg.model, cfg.mode, cfg.genPath(), cfg.promptTokens, prompts, cfg.maxTokens, cfg.ignoreEOS)
	seed := cfg.seed + 1
	for i := range cfg.warmup {
		rctx, cancel := context.WithTimeout(ctx, cfg.timeout)
		r := c.generate(rctx, cfg.genPath(), cfg.genBody(seed))
		cancel()
		seed++
		if r.Cancelled {
			return nil
		}
		if r.Err != nil {
			return fmt.Errorf("warm-up request failed: %w", r.Err)
		}
		fmt.Fprintf(stderr, "warm-up %d/%d: ttft %.1f ms, %d tokens in %.1f ms\n",
			i+1, cfg.warmup, ms(r.ttft()), r.Tokens, ms(r.End.Sub(r.Start)))
		if r.PromptTokens > 0 {
			rep.PromptTokensServer = r.PromptTokens
		}
	}
	if rep.PromptTokensServer > 0 {
		fmt.Fprintf(stdout, "prompt tokens as counted by the server (warm-up): %d for a target of %d\n",
			rep.PromptTokensServer, cfg.promptTokens)
	}
	var log io.Writer
	if cfg.verbose {
		log = stderr
	}
	for _, streams := range cfg.streams {
		if ctx.Err() != nil {
			return nil
		}
		n := cfg.requestsFor(streams)
		fmt.Fprintf(stderr, "level: %d streams, %d requests...\n", streams, n)
		lr := runLevel(ctx, c, cfg, streams, seed, log)
		seed += uint64(n)
		rep.Levels = append(rep.Levels, lr)
		s := lr.Summary
		for _, e := range s.ErrorSamples {
			fmt.Fprintf(stderr, "  error at %d streams: %s\n", streams, e)
		}
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "  interrupted at %d streams: %d of %d requests finished, %d cut off\n",
				streams, s.OK+s.Errors, n, s.Cancelled)
		}
		if s.OK == 0 && s.Errors > 0 {
			return fmt.Errorf("all %d requests at %d streams failed; stopping", s.Errors, streams)
		}
	}
	return nil
}

// runEmbeddings runs the embeddings mode: warm-up, then every (clients,
// batch) combination for -duration.
func runEmbeddings(ctx context.Context, c *client, cfg *config, rep *report, stdout, stderr io.Writer) error {
	rep.EmbTokens = cfg.embTokens
	fmt.Fprintf(stdout, "loadgen %s  model=%s  mode=embeddings (POST /embeddings)  input=%d tokens (target) per string  %s per combination\n",
		rep.URL, cfg.model, cfg.embTokens, cfg.duration)
	e := &embedder{c: c, cfg: cfg}
	for range cfg.warmup {
		rctx, cancel := context.WithTimeout(ctx, cfg.timeout)
		_, err := e.embed(rctx, cfg.embBatch[0])
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("warm-up request failed: %w", err)
		}
	}
	for _, clients := range cfg.streams {
		for _, batch := range cfg.embBatch {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintf(stderr, "embeddings: %d clients, batch %d, %s...\n", clients, batch, cfg.duration)
			r := e.runEmbCombo(ctx, clients, batch)
			rep.Embeddings = append(rep.Embeddings, r)
			for _, msg := range r.ErrorSamples {
				fmt.Fprintf(stderr, "  error at %d clients, batch %d: %s\n", clients, batch, msg)
			}
			if r.OK == 0 && r.Errors > 0 {
				return fmt.Errorf("all %d requests at %d clients, batch %d failed; stopping", r.Errors, clients, batch)
			}
		}
	}
	return nil
}
