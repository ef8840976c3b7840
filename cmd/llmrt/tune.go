package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/lora/dataset"
	"github.com/llmrt/llmrt/runtime/engine"
)

// engineTokenizer gives the dataset loader the model's chat template and
// tokenizer exactly as serving uses them (one render and tokenize path).
type engineTokenizer struct{ e *engine.Engine }

func (t engineTokenizer) RenderChat(msgs []dataset.Message, gen bool) (string, error) {
	cm := make([]engine.ChatMessage, len(msgs))
	for i, m := range msgs {
		cm[i] = engine.ChatMessage{Role: m.Role, Content: m.Content}
	}
	return t.e.RenderChat(cm, gen)
}

func (t engineTokenizer) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	toks, err := t.e.Tokenize(text, addSpecial, parseSpecial)
	if err != nil {
		return nil, err
	}
	// A template that writes BOS itself must not get a second one (as
	// engine.ChatTokens does for serving).
	bos := t.e.Info().BOS
	if len(toks) > 1 && toks[0] == bos && toks[1] == bos {
		toks = toks[1:]
	}
	return toks, nil
}

func (t engineTokenizer) EOS() int32 { return int32(t.e.Info().EOS) }

// loraTargets expands --targets.
func loraTargets(s string) ([]string, error) {
	attn := []string{"attn_q", "attn_k", "attn_v", "attn_output"}
	switch s {
	case "", "attention", "attn":
		return attn, nil
	case "all-linear", "all":
		return append(attn, "ffn_gate", "ffn_up", "ffn_down"), nil
	}
	valid := map[string]bool{}
	for _, t := range kernels.LoRATargets() {
		valid[t] = true
	}
	var out []string
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		if !valid[t] {
			return nil, fmt.Errorf("unknown LoRA target %q (want attention, all-linear, or a list of %s)", t, strings.Join(kernels.LoRATargets(), ", "))
		}
		out = append(out, t)
	}
	return out, nil
}

type tuneFlags struct {
	modelFlags
	data, evalData, out, format, targets, schedule string
	rank, epochs, warmup, batch, accum, ckptEvery  int
	alpha, lr, evalSplit                           float64
	seed                                           uint64
	resume, strict                                 bool
}

func (a *app) tuneCmd() *cobra.Command {
	var f tuneFlags
	cmd := &cobra.Command{
		Use:   "tune -m BASE --data PATH --out ADAPTER [flags]",
		Short: "Fine-tune a LoRA adapter on your data",
		Long: `tune trains a LoRA adapter for BASE on ggml (llmrt's own training graph over
the weights llama.cpp loaded: the GPU where llama.cpp uses one, quantized
Q8_0/Q4_K bases included). Llama-family models (llama, mistral, qwen2, qwen3).

Data: a JSONL file of {"messages": [...]} (rendered with the base model's chat
template, loss on assistant turns), {"prompt", "completion"},
{"instruction", "input", "output"} (alpaca) or {"text"}; or a folder of
.txt/.md files for continued pre-training. Prompts are masked; short examples
are packed into --ctx tokens, longer ones truncated (counted in the summary).
A line that does not parse is reported with its file and line number and
skipped (--strict: fatal).

The adapter is written atomically to --out (a bare NAME goes to
$LLMRT_HOME/adapters/NAME.gguf, served as BASE+NAME by llmrt serve), with
ADAPTER.metrics.jsonl (one line per step), ADAPTER.loss.svg and
ADAPTER.ckpt.gguf (adapter, AdamW moments, step, data position) beside it.
Ctrl-C saves a checkpoint; --resume continues the same run.`,
		Example: `  llmrt tune -m qwen2.5-0.5b --data support.jsonl --out support
  llmrt tune -m stories260K --data facts.jsonl --out facts.gguf --epochs 20 --lr 1e-3 --targets all-linear
  llmrt tune -m stories260K --data facts.jsonl --out facts.gguf --resume`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return a.tune(cmd, &f) },
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.data, "data", "", "training data: a JSONL file or a folder of .txt/.md")
	fl.StringVar(&f.evalData, "eval-data", "", "evaluation data (same formats); default: --eval-split of --data")
	fl.Float64Var(&f.evalSplit, "eval-split", 0.1, "share of --data held out for evaluation when --eval-data is not given (0: none)")
	fl.StringVarP(&f.out, "out", "o", "", "adapter file (.gguf), or a NAME for $LLMRT_HOME/adapters/NAME.gguf")
	fl.StringVar(&f.format, "format", "auto", "data format: auto, chat, prompt-completion, alpaca or text")
	fl.IntVar(&f.rank, "rank", 16, "LoRA rank")
	fl.Float64Var(&f.alpha, "alpha", 32, "LoRA alpha (the adapter's scale is alpha/rank)")
	fl.StringVar(&f.targets, "targets", "attention", "adapted projections: attention (q, k, v, o), all-linear (adds the MLP), or a list like attn_q,attn_v")
	fl.IntVar(&f.epochs, "epochs", 3, "passes over the data")
	fl.Float64Var(&f.lr, "lr", 2e-4, "peak learning rate")
	fl.StringVar(&f.schedule, "schedule", "cosine", "learning-rate schedule: cosine, linear or constant")
	fl.IntVar(&f.warmup, "warmup", 0, "warm-up steps")
	fl.IntVar(&f.batch, "batch", 1, "rows (packed sequences) per micro-batch")
	fl.IntVar(&f.accum, "grad-accum", 1, "micro-batches per optimizer step")
	fl.Uint64Var(&f.seed, "seed", 42, "seed for initialisation and data order")
	fl.IntVar(&f.ckptEvery, "checkpoint-every", 0, "save a checkpoint every N steps (0: each epoch)")
	fl.BoolVar(&f.resume, "resume", false, "continue the run whose checkpoint is beside --out")
	fl.BoolVar(&f.strict, "strict", false, "fail on the first data line that does not parse")
	return cmd
}

// register adds the model flags; --ctx is the training context.
func (f *tuneFlags) register(cmd *cobra.Command) {
	f.modelFlags.register(cmd)
	cmd.Flags().Lookup("ctx").Usage = "training context: tokens per packed row (default 512)"
}

func (a *app) adapterPath(out string) string {
	if !strings.ContainsRune(out, filepath.Separator) && !strings.HasSuffix(out, ".gguf") {
		return filepath.Join(a.home, "adapters", out+".gguf")
	}
	return out
}

func (a *app) tune(cmd *cobra.Command, f *tuneFlags) error {
	ctx := cmd.Context()
	switch {
	case f.data == "":
		return usageError{errors.New("--data is required")}
	case f.out == "":
		return usageError{errors.New("--out is required")}
	case f.rank < 1 || f.rank > 1024:
		return usageError{fmt.Errorf("--rank must be between 1 and 1024, got %d", f.rank)}
	case f.alpha <= 0:
		return usageError{fmt.Errorf("--alpha must be positive, got %v", f.alpha)}
	case f.evalSplit < 0 || f.evalSplit >= 1:
		return usageError{fmt.Errorf("--eval-split must be in [0, 1), got %v", f.evalSplit)}
	}
	format, err := dataset.ParseFormat(f.format)
	if err != nil {
		return usageError{err}
	}
	sched, err := lora.ParseSchedule(f.schedule)
	if err != nil {
		return usageError{err}
	}
	targets, err := loraTargets(f.targets)
	if err != nil {
		return usageError{err}
	}
	for _, p := range []string{f.data, f.evalData} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return usageError{fmt.Errorf("data: %w", err)}
		}
	}
	ctxLen := f.ctx
	if ctxLen <= 0 {
		ctxLen = 512
	}
	out := a.adapterPath(f.out)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}

	// The engine gives the chat template and tokenizer as serving uses
	// them; training runs on our graph over the same loaded weights
	// (kept out of the CPU's repacked buffers, which have no backward).
	f.modelFlags.ctx = min(ctxLen, 256)
	e, base, err := a.openTuneEngine(cmd, &f.modelFlags)
	if err != nil {
		return err
	}
	defer e.Close()
	tok := engineTokenizer{e}
	load := func(path string) ([]dataset.Example, error) {
		ex, warns, err := dataset.Load(path, tok, dataset.Options{Format: format, Strict: f.strict})
		for _, w := range warns {
			fmt.Fprintf(a.stderr, "warning: %v (skipped)\n", w)
		}
		if err != nil {
			return nil, err
		}
		if len(ex) == 0 {
			return nil, fmt.Errorf("%s: no usable examples", path)
		}
		return ex, nil
	}
	train, err := load(f.data)
	if err != nil {
		return err
	}
	var evalEx []dataset.Example
	if f.evalData != "" {
		if evalEx, err = load(f.evalData); err != nil {
			return err
		}
	} else {
		train, evalEx = dataset.Split(train, f.evalSplit)
	}
	var st, evSt dataset.Stats
	data := lora.Data{Train: dataset.Pack(train, ctxLen, &st)}
	if len(evalEx) > 0 {
		data.Eval = dataset.Pack(evalEx, ctxLen, &evSt)
	}
	data.Stats = st
	a.log.Info("data", "examples", st.Examples, "rows", len(data.Train), "tokens", st.Tokens, "trained_tokens", st.TrainTokens,
		"masked_share", round2(st.MaskedShare()), "truncated", st.Truncated, "eval_examples", evSt.Examples)

	net, err := kernels.NewNet(e.Model(), kernels.NetParams{Threads: f.threads, Rank: f.rank, Alpha: float32(f.alpha), Targets: targets, Seed: f.seed})
	if err != nil {
		return err
	}
	defer net.Close()
	b, err := lora.NewNetBackend(net, e.Info().Arch, float32(f.alpha), kernels.DefaultAdam)
	if err != nil {
		return err
	}
	meta := map[string]string{
		"general.name":        strings.TrimSuffix(filepath.Base(out), ".gguf"),
		"llmrt.base":          base,
		"llmrt.chat_template": e.Info().ChatTemplate,
		"llmrt.eos_token_id":  fmt.Sprint(e.Info().EOS),
		"llmrt.lora.rank":     fmt.Sprint(f.rank),
		"llmrt.lora.targets":  strings.Join(targets, ","),
		"llmrt.train.data":    f.data,
		"llmrt.train.epochs":  fmt.Sprint(f.epochs),
		"llmrt.train.lr":      fmt.Sprint(f.lr),
		"llmrt.train.base":    e.Info().Description,
	}
	cfg := lora.Config{Epochs: f.epochs, LR: f.lr, Schedule: sched, Warmup: f.warmup, Batch: f.batch, GradAccum: f.accum,
		Seed: f.seed, CheckpointEvery: f.ckptEvery, Out: out, Resume: f.resume, Meta: meta}
	bar := newProgress(a.stderr, a.log, "tune", "steps", 0)
	sum, err := lora.Run(ctx, b, data, cfg, func(p lora.Progress) {
		note := fmt.Sprintf("loss %.4f", p.Loss)
		attrs := []any{"step", p.Step, "epoch", p.Epoch, "loss", round4(p.Loss), "lr", p.LR, "tokens_per_s", round2(p.TokensPerSec)}
		if p.EvalLoss > 0 {
			note += fmt.Sprintf(" eval %.4f", p.EvalLoss)
			attrs = append(attrs, "eval_loss", round4(p.EvalLoss))
		}
		note += fmt.Sprintf(" %.0f tok/s", p.TokensPerSec)
		if p.Note != "" {
			a.log.Debug(p.Note)
		}
		bar.Note(note, attrs...)
		bar.Set(int64(p.Step), int64(p.TotalSteps))
	})
	if err != nil {
		bar.Abort()
		return err
	}
	bar.Finish()
	fmt.Fprintf(a.stdout, "adapter %s\n", out)
	fmt.Fprintf(a.stdout, "  %d examples in %d rows, %d tokens (%.0f%% masked), %d truncated; %d steps in %s (%.0f tokens/s)\n",
		sum.Examples, sum.Rows, sum.Tokens, 100*sum.MaskedShare, sum.Truncated, sum.Steps, sum.Duration.Round(time.Second), sum.TokensPerSec)
	fmt.Fprintf(a.stdout, "  final loss %.4f", sum.FinalLoss)
	if sum.FinalEvalLoss > 0 {
		fmt.Fprintf(a.stdout, ", eval loss %.4f", sum.FinalEvalLoss)
	}
	fmt.Fprintf(a.stdout, "\n  metrics %s\n  loss curve %s\n", sum.Metrics, sum.LossCurve)
	if strings.HasPrefix(out, filepath.Join(a.home, "adapters")+string(filepath.Separator)) {
		fmt.Fprintf(a.stdout, "  serve it as %s+%s\n", base, strings.TrimSuffix(filepath.Base(out), ".gguf"))
	}
	if js, err := json.Marshal(sum); err == nil {
		a.log.Debug("summary", "json", string(js))
	}
	return nil
}

func round4(f float64) float64 { return math.Round(f*1e4) / 1e4 }

// openTuneEngine loads the base for training and returns it with the name
// it was given (the store name recorded in the adapter).
func (a *app) openTuneEngine(cmd *cobra.Command, f *modelFlags) (*engine.Engine, string, error) {
	name := f.model
	if name == "" {
		name = os.Getenv("LLMRT_MODEL")
	}
	if name == "" {
		name = defaultModel
	}
	f.model = name
	f.noRepack = true
	e, _, err := a.openEngine(cmd.Context(), f, 1)
	if err != nil {
		return nil, "", err
	}
	return e, strings.TrimSuffix(filepath.Base(name), ".gguf"), nil
}
