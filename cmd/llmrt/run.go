package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/runtime/engine"
)

// modelFlags are the flags of every command that loads a model.
type modelFlags struct {
	model     string
	ctx       int
	threads   int
	gpuLayers int
	noMmap    bool
	adapters  []string
}

func (f *modelFlags) register(cmd *cobra.Command) {
	f.registerModel(cmd, "model: a store name, a .gguf path (env LLMRT_MODEL; default "+defaultModel+")")
}

// registerModel registers the model flags with usage for -m.
func (f *modelFlags) registerModel(cmd *cobra.Command, usage string) {
	fl := cmd.Flags()
	fl.StringVarP(&f.model, "model", "m", "", usage)
	fl.IntVar(&f.ctx, "ctx", 0, "context length in tokens (default: the model's, at most 4096)")
	fl.IntVarP(&f.threads, "threads", "t", 0, "CPU threads (default: all cores)")
	fl.IntVar(&f.gpuLayers, "gpu-layers", -1, "layers to offload to the GPU (-1: all that fit)")
	fl.BoolVar(&f.noMmap, "no-mmap", false, "read the model into memory instead of mapping it")
	fl.StringArrayVar(&f.adapters, "adapter", nil, "LoRA adapter file, optionally with a scale: PATH[:SCALE] (repeatable)")
}

// openEngine resolves the model, loads it with a progress bar and attaches
// the requested adapters.
func (a *app) openEngine(ctx context.Context, f *modelFlags, parallel int) (*engine.Engine, []engine.AdapterRef, error) {
	path, err := a.resolveModel(ctx, f.model)
	if err != nil {
		return nil, nil, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("model %s: %w", path, err)
	}
	bar := newProgress(a.stderr, a.log, "load "+displayName(path), "bytes", st.Size())
	e, err := engine.Open(ctx, engine.Options{
		Path:      path,
		CtxPerSeq: f.ctx,
		NParallel: parallel,
		Threads:   f.threads,
		Logger:    a.log,
		Model: kernels.ModelParams{
			GPULayers: f.gpuLayers,
			NoMmap:    f.noMmap,
			Progress:  func(p float32) { bar.Set(int64(float64(p)*float64(st.Size())), st.Size()) },
		},
	})
	if err != nil {
		bar.Abort()
		return nil, nil, err
	}
	bar.Finish()
	var refs []engine.AdapterRef
	for i, spec := range f.adapters {
		p, scale, err := parseAdapterSpec(spec)
		if err != nil {
			e.Close()
			return nil, nil, usageError{err}
		}
		name := fmt.Sprintf("adapter%d", i)
		if err := e.LoadAdapter(name, p); err != nil {
			e.Close()
			return nil, nil, err
		}
		refs = append(refs, engine.AdapterRef{Name: name, Scale: scale})
	}
	return e, refs, nil
}

func parseAdapterSpec(spec string) (string, float32, error) {
	path, scale := spec, float32(1)
	if i := strings.LastIndex(spec, ":"); i > 0 {
		if v, err := strconv.ParseFloat(spec[i+1:], 32); err == nil {
			path, scale = spec[:i], float32(v)
		}
	}
	if _, err := os.Stat(path); err != nil {
		return "", 0, fmt.Errorf("--adapter %s: %w", spec, err)
	}
	return path, scale, nil
}

func displayName(path string) string {
	base := path[strings.LastIndex(path, "/")+1:]
	return strings.TrimSuffix(base, ".gguf")
}

// samplingFlags map to kernels.SamplerParams.
type samplingFlags struct {
	temp, topP, minP, repeatPenalty, presence, frequency float32
	topK, repeatLastN, maxTokens                         int
	seed                                                 int64
	grammar, grammarFile                                 string
	stop                                                 []string
}

func (f *samplingFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.Float32Var(&f.temp, "temp", 0.8, "temperature (0: greedy)")
	fl.IntVar(&f.topK, "top-k", 40, "top-k sampling (0: off)")
	fl.Float32Var(&f.topP, "top-p", 0.95, "top-p (nucleus) sampling (1: off)")
	fl.Float32Var(&f.minP, "min-p", 0.05, "min-p sampling (0: off)")
	fl.Float32Var(&f.repeatPenalty, "repeat-penalty", 1.0, "repetition penalty (1: off)")
	fl.IntVar(&f.repeatLastN, "repeat-last-n", 64, "tokens the penalties look back over (-1: whole context)")
	fl.Float32Var(&f.presence, "presence-penalty", 0, "presence penalty")
	fl.Float32Var(&f.frequency, "frequency-penalty", 0, "frequency penalty")
	fl.Int64Var(&f.seed, "seed", -1, "random seed (-1: random)")
	fl.StringVar(&f.grammar, "grammar", "", "GBNF grammar constraining the output")
	fl.StringVar(&f.grammarFile, "grammar-file", "", "file holding a GBNF grammar")
	fl.IntVarP(&f.maxTokens, "max-tokens", "n", 0, "most tokens to generate (0: until the model stops or the context is full)")
	fl.StringArrayVar(&f.stop, "stop", nil, "stop string (repeatable)")
}

func (f *samplingFlags) params() (kernels.SamplerParams, error) {
	p := kernels.SamplerParams{
		Temperature: f.temp, TopK: f.topK, TopP: f.topP, MinP: f.minP,
		RepeatPenalty: f.repeatPenalty, RepeatLastN: f.repeatLastN,
		PresencePenalty: f.presence, FrequencyPenalty: f.frequency,
		Seed: kernels.SeedRandom, Grammar: f.grammar,
	}
	if f.seed >= 0 {
		p.Seed = uint32(f.seed)
	}
	if f.grammarFile != "" {
		b, err := os.ReadFile(f.grammarFile)
		if err != nil {
			return p, usageError{fmt.Errorf("--grammar-file: %w", err)}
		}
		p.Grammar = string(b)
	}
	return p, nil
}

func (a *app) runCmd() *cobra.Command {
	var mf modelFlags
	var sf samplingFlags
	var raw, chatMode bool
	var system string
	cmd := &cobra.Command{
		Use:   "run [flags] [PROMPT]",
		Short: "Generate text from a prompt, or chat interactively",
		Long: `Without a prompt, run starts an interactive chat that applies the model's chat
template and keeps the conversation (/bye or Ctrl-D ends it, /clear forgets it).
With a prompt, it streams one answer: through the chat template when the model
has one (--raw to skip it), as a plain continuation otherwise. A prompt of "-"
is read from standard input.`,
		Example: `  llmrt run "Once upon a time"
  llmrt run -m stories260K --temp 0 -n 32 "Once upon a time"
  llmrt run -m ./my-model.gguf --adapter my-adapter.gguf:0.8
  echo "Summarise: ..." | llmrt run -m qwen2.5-0.5b-instruct -`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sp, err := sf.params()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			e, refs, err := a.openEngine(ctx, &mf, 1)
			if err != nil {
				return err
			}
			defer e.Close()
			base := engine.Request{Sampling: sp, Stop: sf.stop, MaxTokens: sf.maxTokens, Adapters: refs}
			if len(args) == 0 {
				return a.chatLoop(ctx, e, base, system)
			}
			prompt := args[0]
			if prompt == "-" {
				b, err := io.ReadAll(a.stdin)
				if err != nil {
					return fmt.Errorf("read prompt from stdin: %w", err)
				}
				prompt = string(b)
			}
			useTemplate := !raw && (chatMode || e.Info().ChatTemplate != "")
			var toks []int32
			if useTemplate {
				msgs := []engine.ChatMessage{}
				if system != "" {
					msgs = append(msgs, engine.ChatMessage{Role: "system", Content: system})
				}
				msgs = append(msgs, engine.ChatMessage{Role: "user", Content: prompt})
				toks, err = e.ChatTokens(msgs, nil, true)
				if err != nil {
					return err
				}
			} else {
				toks, err = e.Tokenize(prompt, true, false)
				if err != nil {
					return err
				}
			}
			req := base
			req.Prompt = toks
			_, err = a.streamTo(ctx, e, req, a.stdout)
			fmt.Fprintln(a.stdout)
			return err
		},
	}
	mf.register(cmd)
	sf.register(cmd)
	cmd.Flags().BoolVar(&raw, "raw", false, "send the prompt as is, without the chat template")
	cmd.Flags().BoolVar(&chatMode, "chat", false, "apply a chat template even when the model has none (llama.cpp's chatml)")
	cmd.Flags().StringVar(&system, "system", "", "system message for chat")
	return cmd
}

// streamTo prints a generation as it arrives and returns its result. With
// --verbose it reports speed on stderr.
func (a *app) streamTo(ctx context.Context, e *engine.Engine, req engine.Request, w io.Writer) (engine.Result, error) {
	s, err := e.Submit(ctx, req)
	if err != nil {
		return engine.Result{}, err
	}
	defer s.Close()
	for {
		c, err := s.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return engine.Result{}, err
		}
		io.WriteString(w, c.Text)
	}
	r := s.Result()
	gen := r.Duration - r.TimeToFirstToken
	rate := 0.0
	if gen > 0 && r.CompletionTokens > 1 {
		rate = float64(r.CompletionTokens-1) / gen.Seconds()
	}
	a.log.Debug("generation", "prompt_tokens", r.PromptTokens, "cached_tokens", r.CachedTokens,
		"completion_tokens", r.CompletionTokens, "finish_reason", r.FinishReason,
		"ttft_ms", r.TimeToFirstToken.Milliseconds(), "decode_tok_per_s", round2(rate), "total", r.Duration.Round(time.Millisecond))
	return r, nil
}

// chatLoop is the interactive chat.
func (a *app) chatLoop(ctx context.Context, e *engine.Engine, base engine.Request, system string) error {
	var msgs []engine.ChatMessage
	if system != "" {
		msgs = append(msgs, engine.ChatMessage{Role: "system", Content: system})
	}
	tty := isTerminal(a.stdout)
	in := bufio.NewScanner(a.stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	if tty {
		fmt.Fprintf(a.stdout, "Chatting with %s (/bye to quit, /clear to forget).\n", e.Info().Name)
	}
	for {
		if tty {
			fmt.Fprint(a.stdout, ">>> ")
		}
		if !in.Scan() {
			if err := in.Err(); err != nil {
				return fmt.Errorf("read input: %w", err)
			}
			return nil
		}
		line := strings.TrimSpace(in.Text())
		switch line {
		case "":
			continue
		case "/bye", "/exit", "/quit":
			return nil
		case "/clear":
			msgs = msgs[:0]
			if system != "" {
				msgs = append(msgs, engine.ChatMessage{Role: "system", Content: system})
			}
			continue
		}
		msgs = append(msgs, engine.ChatMessage{Role: "user", Content: line})
		toks, err := e.ChatTokens(msgs, nil, true)
		if err != nil {
			return err
		}
		req := base
		req.Prompt = toks
		var pe *engine.PromptTooLongError
		r, err := a.streamTo(ctx, e, req, a.stdout)
		if errors.As(err, &pe) {
			fmt.Fprintf(a.stderr, "\nThe conversation no longer fits the context (%d of %d tokens); /clear to start over.\n", pe.Tokens, pe.Limit)
			msgs = msgs[:len(msgs)-1]
			continue
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(a.stdout)
		msgs = append(msgs, engine.ChatMessage{Role: "assistant", Content: r.Text})
	}
}
