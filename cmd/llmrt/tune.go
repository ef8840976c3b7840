package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/lora/dataset"
	"github.com/llmrt/llmrt/runtime/finetune"
	"github.com/llmrt/llmrt/runtime/sched"
)

type tuneFlags struct {
	modelFlags
	data, evalData, out, format, targets, schedule string
	collection                                     string
	rank, epochs, warmup, batch, accum, ckptEvery  int
	stride                                         int
	alpha, lr, evalSplit                           float64
	seed                                           uint64
	resume, strict                                 bool
}

func (a *app) tuneCmd() *cobra.Command {
	var f tuneFlags
	cmd := &cobra.Command{
		Use:   "tune -m BASE (--data PATH | --collection NAME) --out ADAPTER [flags]",
		Short: "Fine-tune a LoRA adapter on your data",
		Long: `tune trains a LoRA adapter for BASE on ggml (llmrt's own training graph over
the weights llama.cpp loaded: the GPU where llama.cpp uses one, quantized
Q8_0/Q4_K bases included). Llama-family models (llama, mistral, qwen2, qwen3).

Data: a JSONL file of {"messages": [...]} (rendered with the base model's chat
template, loss on assistant turns), {"prompt", "completion"},
{"instruction", "input", "output"} (alpaca) or {"text"}; or documents for
continued pre-training: a .txt, .md, .html or .pdf file or a folder of them
(read as llmrt index reads them), or --collection, the documents of a
collection (with --data, both). Documents and texts are cut into windows of
--ctx tokens (--stride tokens of shared context), never truncated; prompts
are masked; short examples are packed into --ctx tokens, longer chat and
prompt examples truncated (counted in the summary).
A line that does not parse is reported with its file and line number and
skipped (--strict: fatal).

The adapter is written atomically to --out (a bare NAME goes to
$LLMRT_HOME/adapters/NAME.gguf, served as BASE+NAME by llmrt serve), with
ADAPTER.metrics.jsonl (one line per step), ADAPTER.loss.svg and
ADAPTER.ckpt.gguf (adapter, AdamW moments, step, data position) beside it.
Ctrl-C saves a checkpoint; --resume continues the same run.`,
		Example: `  llmrt tune -m qwen2.5-0.5b --data support.jsonl --out support
  llmrt tune -m stories260K --data facts.jsonl --out facts.gguf --epochs 20 --lr 1e-3 --targets all-linear
  llmrt tune -m stories260K --data facts.jsonl --out facts.gguf --resume
  llmrt tune -m stories260K --collection handbook --data handbook-qa/train.jsonl --out handbook`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return a.tune(cmd, &f) },
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.data, "data", "", "training data: a JSONL file, a document (.txt .md .html .pdf) or a folder of documents")
	fl.StringVarP(&f.collection, "collection", "c", "", "also train on the documents of this collection (continued pre-training)")
	fl.IntVar(&f.stride, "stride", 0, "tokens of context consecutive windows of a long document share")
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
	if (f.data == "" && f.collection == "") || f.out == "" {
		return usageError{errors.New("--data or --collection, and --out, are required")}
	}
	targets, err := finetune.ParseTargets(f.targets)
	if err != nil {
		return usageError{err}
	}
	name := f.model
	if name == "" {
		name = os.Getenv("LLMRT_MODEL")
	}
	if name == "" {
		name = defaultModel
	}
	spec := finetune.Spec{
		BaseName: strings.TrimSuffix(filepath.Base(name), ".gguf"),
		Data:     f.data, EvalData: f.evalData, EvalSplit: f.evalSplit, Format: f.format, Strict: f.strict,
		Collection: f.collection, CollectionsDir: filepath.Join(a.home, "collections"), Stride: f.stride,
		Out:  a.adapterPath(f.out),
		Rank: f.rank, Alpha: f.alpha, Targets: targets,
		Epochs: f.epochs, LR: f.lr, Schedule: f.schedule, Warmup: f.warmup, Batch: f.batch, GradAccum: f.accum, Ctx: f.ctx,
		Seed: f.seed, CheckpointEvery: f.ckptEvery, Resume: f.resume, Threads: f.threads, GPULayers: f.gpuLayers,
	}
	if err := spec.CheckSettings(); err != nil { // before the model is fetched
		return usageError{err}
	}
	if spec.BasePath, err = a.resolveModel(ctx, name); err != nil {
		return err
	}
	st, err := os.Stat(spec.BasePath)
	if err != nil {
		return err
	}
	// Book the run's memory with the scheduler first: a job that can never
	// fit this machine fails now, saying what it needs and what there is.
	sc, err := a.newScheduler()
	if err != nil {
		return err
	}
	defer sc.Close()
	res, err := finetune.Reserve(ctx, sc, sched.Owner{Kind: "job", ID: "tune"}, spec)
	if err != nil {
		return fmt.Errorf("tune %s: %w", spec.BaseName, err)
	}
	defer res.Release()
	loadBar := newProgress(a.stderr, a.log, "load "+displayName(spec.BasePath), "bytes", st.Size())
	var bar *progress
	sum, err := finetune.Train(ctx, spec, finetune.Hooks{
		Logger:       a.log,
		LoadProgress: func(p float32) { loadBar.Set(int64(float64(p)*float64(st.Size())), st.Size()) },
		Warn:         func(w error) { fmt.Fprintf(a.stderr, "warning: %v (skipped)\n", w) },
		Loaded: func(d dataset.Stats, evalExamples int) {
			loadBar.Finish()
			a.log.Info("data", "examples", d.Examples, "windows", d.Windows, "rows", d.Rows, "tokens", d.Tokens, "used_tokens", d.UsedTokens, "available_tokens", d.AvailableTokens, "trained_tokens", d.TrainTokens,
				"masked_share", round2(d.MaskedShare()), "truncated", d.Truncated, "eval_examples", evalExamples)
			bar = newProgress(a.stderr, a.log, "tune", "steps", 0)
		},
		Progress: func(p lora.Progress) {
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
			if bar != nil {
				bar.Note(note, attrs...)
				bar.Set(int64(p.Step), int64(p.TotalSteps))
			}
		},
	})
	loadBar.Abort()
	if err != nil {
		if bar != nil {
			bar.Abort()
		}
		return err
	}
	bar.Finish()
	out := spec.Out
	fmt.Fprintf(a.stdout, "adapter %s\n", out)
	fmt.Fprintf(a.stdout, "  %d examples (%d windows of longer texts) in %d rows, %d of %d tokens used (%.0f%% masked), %d truncated; %d steps in %s (%.0f tokens/s)\n",
		sum.Examples, sum.Windows, sum.Rows, sum.UsedTokens, sum.AvailableTokens, 100*sum.MaskedShare, sum.Truncated, sum.Steps, sum.Duration.Round(time.Second), sum.TokensPerSec)
	fmt.Fprintf(a.stdout, "  final loss %.4f", sum.FinalLoss)
	if sum.FinalEvalLoss > 0 {
		fmt.Fprintf(a.stdout, ", eval loss %.4f", sum.FinalEvalLoss)
	}
	fmt.Fprintf(a.stdout, "\n  metrics %s\n  loss curve %s\n", sum.Metrics, sum.LossCurve)
	if strings.HasPrefix(out, filepath.Join(a.home, "adapters")+string(filepath.Separator)) {
		fmt.Fprintf(a.stdout, "  serve it as %s+%s\n", spec.BaseName, strings.TrimSuffix(filepath.Base(out), ".gguf"))
	}
	return nil
}

func round4(f float64) float64 { return math.Round(f*1e4) / 1e4 }
