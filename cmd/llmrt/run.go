package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

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
	f.registerModel(cmd, "model: a store name, a .gguf path, or BASE+ADAPTER (env LLMRT_MODEL; default "+defaultModel+")")
}

// registerModel registers the model flags with usage for -m.
func (f *modelFlags) registerModel(cmd *cobra.Command, usage string) {
	fl := cmd.Flags()
	fl.StringVarP(&f.model, "model", "m", "", usage)
	fl.IntVar(&f.ctx, "ctx", 0, "context length in tokens (default: the model's, at most 4096)")
	fl.IntVarP(&f.threads, "threads", "t", 0, "CPU threads (default: all cores)")
	fl.IntVar(&f.gpuLayers, "gpu-layers", -1, "layers to offload to the GPU (-1: all that fit)")
	fl.BoolVar(&f.noMmap, "no-mmap", false, "read the model into memory instead of mapping it")
	fl.StringArrayVar(&f.adapters, "adapter", nil, "LoRA adapter: a name in $LLMRT_HOME/adapters or a .gguf path, optionally with a scale: NAME[:SCALE] (repeatable)")
}

// loadedModel is a model loaded for one command.
type loadedModel struct {
	e        *engine.Engine
	refs     []engine.AdapterRef
	target   target
	loadTime time.Duration
}

// openEngine resolves the model, loads it with a progress bar and attaches
// the requested adapters.
func (a *app) openEngine(ctx context.Context, f *modelFlags, parallel int) (*engine.Engine, []engine.AdapterRef, error) {
	m, err := a.loadModel(ctx, f, parallel)
	if err != nil {
		return nil, nil, err
	}
	return m.e, m.refs, nil
}

// loadModel is openEngine that also says what it loaded and how long the
// load took.
func (a *app) loadModel(ctx context.Context, f *modelFlags, parallel int) (*loadedModel, error) {
	t, err := a.resolveTarget(ctx, f.model, true)
	if err != nil {
		return nil, err
	}
	// The adapters are checked before the model loads.
	type adapterFile struct {
		path  string
		scale float32
	}
	var ads []adapterFile
	for _, ad := range t.Adapters {
		ads = append(ads, adapterFile{ad.Path, 1})
	}
	for _, spec := range f.adapters {
		ad, scale, err := a.resolveAdapterSpec(spec)
		if err != nil {
			return nil, usageError{err}
		}
		ads = append(ads, adapterFile{ad.Path, scale})
	}
	path := t.Path
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", path, err)
	}
	start := time.Now()
	bar := newProgress(a.stderr, a.log, "load "+t.Base, "bytes", st.Size())
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
		return nil, err
	}
	bar.Finish()
	var refs []engine.AdapterRef
	for i, ad := range ads {
		name := fmt.Sprintf("adapter%d", i)
		if err := e.LoadAdapter(name, ad.path); err != nil {
			e.Close()
			return nil, err
		}
		refs = append(refs, engine.AdapterRef{Name: name, Scale: ad.scale})
	}
	return &loadedModel{e: e, refs: refs, target: t, loadTime: time.Since(start)}, nil
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
template and keeps the conversation (/help lists the commands; /bye or Ctrl-D
ends it; Ctrl-C stops an answer, or ends the chat at the prompt).
With a prompt, it streams one answer: through the chat template when the model
has one (--raw to skip it), as a plain continuation otherwise. A prompt of "-"
is read from standard input. With --verbose, each answer is followed by the
load time and the prompt and generation speeds.`,
		Example: `  llmrt run "Once upon a time"
  llmrt run -m stories260K --temp 0 -n 32 "Once upon a time"
  llmrt run -m stories260K+my-adapter "Once upon a time"
  llmrt run -m ./my-model.gguf --adapter my-adapter:0.8
  echo "Summarise: ..." | llmrt run -m qwen2.5-0.5b-instruct -`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sp, err := sf.params()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			m, err := a.loadModel(ctx, &mf, 1)
			if err != nil {
				return err
			}
			e := m.e
			defer e.Close()
			base := engine.Request{Sampling: sp, Stop: sf.stop, MaxTokens: sf.maxTokens, Adapters: m.refs}
			if len(args) == 0 {
				return a.chatLoop(ctx, m, base, system)
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
			r, err := a.streamTo(ctx, e, req, a.stdout)
			fmt.Fprintln(a.stdout)
			if err == nil {
				a.printStats(m, r)
			}
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

// streamTo prints a generation as it arrives and returns its result.
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
	a.log.Debug("generation", "prompt_tokens", r.PromptTokens, "cached_tokens", r.CachedTokens,
		"completion_tokens", r.CompletionTokens, "finish_reason", r.FinishReason,
		"ttft_ms", r.TimeToFirstToken.Milliseconds(), "decode_tok_per_s", round2(decodeRate(r)), "total", r.Duration.Round(time.Millisecond))
	return r, nil
}

// decodeRate is the generation speed after the first token.
func decodeRate(r engine.Result) float64 {
	gen := r.Duration - r.TimeToFirstToken
	if gen <= 0 || r.CompletionTokens <= 1 {
		return 0
	}
	return float64(r.CompletionTokens-1) / gen.Seconds()
}

// printStats writes, with --verbose, the load time and the prompt and
// generation speeds of one answer to stderr (as ollama run --verbose).
func (a *app) printStats(m *loadedModel, r engine.Result) {
	if !a.verbose {
		return
	}
	evaluated := r.PromptTokens - r.CachedTokens
	promptRate := 0.0
	if r.TimeToFirstToken > 0 && evaluated > 0 {
		promptRate = float64(evaluated) / r.TimeToFirstToken.Seconds()
	}
	tw := tabwriter.NewWriter(a.stderr, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "load time:\t%s\n", m.loadTime.Round(time.Millisecond))
	fmt.Fprintf(tw, "prompt:\t%d tokens (%d cached), %.1f tokens/s\n", r.PromptTokens, r.CachedTokens, promptRate)
	fmt.Fprintf(tw, "generated:\t%d tokens, %.1f tokens/s (%s)\n", r.CompletionTokens, decodeRate(r), r.FinishReason)
	fmt.Fprintf(tw, "total:\t%s\n", r.Duration.Round(time.Millisecond))
	tw.Flush()
}

// chatHelp lists the interactive chat's commands.
const chatHelp = `Commands:
  /help, /?   show this help
  /clear      forget the conversation
  /bye        end the chat (also /exit, /quit, Ctrl-D)
Ctrl-C stops an answer; at the prompt it ends the chat.
`

// chatLoop is the interactive chat. Lines that start with '/' are commands
// and never reach the model.
func (a *app) chatLoop(ctx context.Context, m *loadedModel, base engine.Request, system string) error {
	e := m.e
	var msgs []engine.ChatMessage
	reset := func() {
		msgs = msgs[:0]
		if system != "" {
			msgs = append(msgs, engine.ChatMessage{Role: "system", Content: system})
		}
	}
	reset()
	tty := isTerminal(a.stdout)
	interrupts := a.interrupts
	if interrupts == nil && isTerminalReader(a.stdin) {
		// Ctrl-C belongs to the chat while it runs: it stops an answer, or
		// ends the chat at the prompt, instead of killing the process.
		ch := make(chan os.Signal, 1)
		signal.Reset(os.Interrupt)
		signal.Notify(ch, os.Interrupt)
		defer signal.Stop(ch)
		interrupts = ch
	}
	// Lines are read in the background so that Ctrl-C is seen while the
	// prompt waits for input.
	type line struct {
		text string
		err  error
	}
	lines := make(chan line)
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(lines)
		in := bufio.NewScanner(a.stdin)
		in.Buffer(make([]byte, 1<<20), 1<<24)
		for in.Scan() {
			select {
			case lines <- line{text: in.Text()}:
			case <-done:
				return
			}
		}
		if err := in.Err(); err != nil {
			select {
			case lines <- line{err: err}:
			case <-done:
			}
		}
	}()
	if tty {
		fmt.Fprintf(a.stdout, "Chatting with %s (/help for commands, /bye to quit).\n", m.target.ID)
	}
	for {
		if tty {
			fmt.Fprint(a.stdout, ">>> ")
		}
		var l line
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-interrupts:
			fmt.Fprintln(a.stdout)
			return nil
		case l, ok = <-lines:
		}
		if !ok {
			return nil // end of input
		}
		if l.err != nil {
			return fmt.Errorf("read input: %w", l.err)
		}
		text := strings.TrimSpace(l.text)
		if text == "" {
			continue
		}
		if strings.HasPrefix(text, "/") {
			switch strings.Fields(text)[0] {
			case "/bye", "/exit", "/quit":
				return nil
			case "/clear":
				reset()
				fmt.Fprintln(a.stdout, "Conversation cleared.")
			case "/help", "/?":
				fmt.Fprint(a.stdout, chatHelp)
			default:
				fmt.Fprintf(a.stdout, "Unknown command %s (/help lists the commands).\n", strings.Fields(text)[0])
			}
			continue
		}
		msgs = append(msgs, engine.ChatMessage{Role: "user", Content: text})
		toks, err := e.ChatTokens(msgs, nil, true)
		if err != nil {
			return err
		}
		req := base
		req.Prompt = toks
		r, stopped, err := a.interruptible(ctx, interrupts, func(ctx context.Context) (engine.Result, error) {
			return a.streamTo(ctx, e, req, a.stdout)
		})
		var pe *engine.PromptTooLongError
		switch {
		case stopped:
			fmt.Fprintln(a.stdout, "\n(stopped)")
			msgs = msgs[:len(msgs)-1]
			continue
		case errors.As(err, &pe):
			fmt.Fprintf(a.stderr, "\nThe conversation no longer fits the context (%d of %d tokens); /clear to start over.\n", pe.Tokens, pe.Limit)
			msgs = msgs[:len(msgs)-1]
			continue
		case err != nil:
			return err
		}
		fmt.Fprintln(a.stdout)
		a.printStats(m, r)
		msgs = append(msgs, engine.ChatMessage{Role: "assistant", Content: r.Text})
	}
}

// interruptible runs gen under a context that an interrupt cancels; it
// reports whether an interrupt stopped it.
func (a *app) interruptible(ctx context.Context, interrupts <-chan os.Signal, gen func(context.Context) (engine.Result, error)) (engine.Result, bool, error) {
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stopped atomic.Bool
	finished := make(chan struct{})
	go func() {
		select {
		case <-interrupts:
			stopped.Store(true)
			cancel()
		case <-finished:
		}
	}()
	r, err := gen(gctx)
	close(finished)
	if stopped.Load() && ctx.Err() == nil && err != nil {
		return r, true, nil
	}
	return r, false, err
}

// isTerminalReader reports whether r is an interactive terminal.
func isTerminalReader(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
