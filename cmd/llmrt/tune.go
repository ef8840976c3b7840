package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/lora/dataset"
	"github.com/llmrt/llmrt/models/names"
	"github.com/llmrt/llmrt/models/versions"
	"github.com/llmrt/llmrt/runtime/finetune"
	"github.com/llmrt/llmrt/runtime/sched"
)

type tuneFlags struct {
	modelFlags
	data, evalData, out, format, targets, schedule string
	method, feedback                               string
	collection                                     string
	rank, epochs, warmup, batch, accum, ckptEvery  int
	stride                                         int
	alpha, lr, evalSplit, beta, sftWeight          float64
	seed                                           uint64
	resume, strict, keepCkpt                       bool
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

--method dpo trains on preference pairs with Direct Preference
Optimisation: JSONL lines {"prompt", "chosen", "rejected"}, {"messages": [...],
"chosen", "rejected"} or OpenAI's {"input": {"messages"}, "preferred_output",
"non_preferred_output"}. The reference model is the base without the adapter
(no second copy of the weights). --beta is DPO's temperature; --sft-weight adds
the chosen answers' own loss (RPO), which keeps them likely while the rejected
ones are pushed down. The metrics add reward margin and accuracy per step.

--feedback trains on the feedback llmrt serve collected (instead of --data):
"local" reads $LLMRT_HOME/feedback, or give a feedback folder, a JSONL export,
or a server URL. Only feedback about completions served by BASE is used:
corrections become supervised examples; with --method dpo, preferences (from
people or the judge) and corrections (the corrected answer over the served
one) become pairs. The lines used are kept beside the adapter.

The adapter is written atomically to --out (a bare NAME goes to
$LLMRT_HOME/adapters/NAME.gguf, served as BASE+NAME by llmrt serve), with
ADAPTER.metrics.jsonl (one line per step) and ADAPTER.loss.svg beside it.
At the end tune prints the adapter's answer to one held-out prompt, and
warns when the eval loss rose while the train loss fell (overfitting).
Ctrl-C (or a failure) leaves ADAPTER.ckpt.gguf (adapter, AdamW moments, step,
data position) and --resume continues the same run; a run that succeeds
removes it, and the base's converted copy, unless --keep-checkpoint.`,
		Example: `  llmrt tune -m qwen2.5-0.5b --data support.jsonl --out support
  llmrt tune -m stories260K --data facts.jsonl --out facts.gguf --epochs 20 --lr 1e-3 --targets all-linear
  llmrt tune -m stories260K --data facts.jsonl --out facts.gguf --resume
  llmrt tune -m stories260K --method dpo --data prefs.jsonl --out prefs --beta 0.1
  llmrt tune -m stories260K --feedback local --out support --epochs 10
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
	fl.StringVar(&f.feedback, "feedback", "", "train on collected feedback instead of --data: local ($LLMRT_HOME/feedback), a folder, a JSONL export or a server URL")
	fl.StringVar(&f.method, "method", "supervised", "training method: supervised (sft) or dpo (preference pairs)")
	fl.Float64Var(&f.beta, "beta", 0.1, "DPO: temperature of the implicit reward")
	fl.Float64Var(&f.sftWeight, "sft-weight", 0, "DPO: weight of the chosen answers' own loss added to DPO's (RPO; 0: plain DPO)")
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
	fl.BoolVar(&f.keepCkpt, "keep-checkpoint", false, "keep the checkpoint after a successful run (to --resume it with more epochs)")
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
	if f.out == "" || (f.data == "" && f.feedback == "" && f.collection == "") {
		return usageError{errors.New("--out and one of --data, --collection and --feedback are required")}
	}
	if f.data != "" && f.feedback != "" {
		return usageError{errors.New("--data and --feedback are two sources of training data: give one")}
	}
	method, err := finetune.ParseMethod(f.method)
	if err != nil {
		return usageError{err}
	}
	if method == finetune.MethodDPO && f.collection != "" {
		return usageError{errors.New("--collection trains on documents, which have no preference pairs: it does not go with --method dpo")}
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
	if _, _, split := names.SplitAdapter(name); split && !names.IsPath(name) && !a.inStore(name) {
		return usageError{fmt.Errorf("-m %s names an adapter: tune trains a new adapter on a base model (-m BASE)", name)}
	}
	baseName := name
	if names.IsPath(name) {
		baseName = names.FromPath(name)
	}
	// A bare NAME is versioned: this run writes NAME@N (--resume: the
	// latest version), and NAME stays the promoted one.
	var ver *versions.Version
	if isBareName(f.out) {
		v, err := a.versions().Next(f.out, f.resume)
		if err != nil {
			return usageError{err}
		}
		ver = &v
	}
	spec := finetune.Spec{
		BaseName: baseName,
		Data:     f.data, EvalData: f.evalData, EvalSplit: f.evalSplit, Format: f.format, Strict: f.strict,
		Collection: f.collection, CollectionsDir: filepath.Join(a.home, "collections"), Stride: f.stride,
		Out:    a.adapterPath(f.out),
		Method: f.method, Beta: f.beta, SFTWeight: f.sftWeight,
		Rank: f.rank, Alpha: f.alpha, Targets: targets,
		Epochs: f.epochs, LR: f.lr, Schedule: f.schedule, Warmup: f.warmup, Batch: f.batch, GradAccum: f.accum, Ctx: f.ctx,
		Seed: f.seed, CheckpointEvery: f.ckptEvery, Resume: f.resume, KeepCheckpoint: f.keepCkpt, Sample: true,
		Threads: f.threads, GPULayers: f.gpuLayers,
	}
	if ver != nil {
		spec.Out = ver.Path
	}
	if err := spec.CheckSettings(); err != nil { // before the model is fetched
		return usageError{err}
	}
	if f.feedback != "" {
		spec.Data = strings.TrimSuffix(spec.Out, ".gguf") + ".feedback.jsonl"
		if err := os.MkdirAll(filepath.Dir(spec.Data), 0o755); err != nil {
			return err
		}
		n, err := a.feedbackData(ctx, f.feedback, spec.BaseName, method, spec.Data)
		if err != nil {
			return err
		}
		spec.Meta = map[string]string{"llmrt.train.feedback": f.feedback}
		a.say(fmt.Sprintf("training on %d lines of feedback from %s about %s (%s), kept in %s", n, f.feedback, spec.BaseName, method, spec.Data),
			"training on feedback", "source", f.feedback, "base", spec.BaseName, "method", method, "lines", n, "data", spec.Data)
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
	heldOut := 0
	result, err := finetune.Train(ctx, spec, finetune.Hooks{
		Logger: a.log,
		Status: func(line string) {
			if !a.logs { // with logs on, the record says it
				fmt.Fprintln(a.stderr, line)
			}
		},
		LoadProgress: func(p float32) { loadBar.Set(int64(float64(p)*float64(st.Size())), st.Size()) },
		Warn:         func(w error) { fmt.Fprintf(a.stderr, "warning: %v (skipped)\n", w) },
		Loaded: func(d dataset.Stats, evalExamples int) {
			loadBar.Finish()
			heldOut = evalExamples
			a.say(fmt.Sprintf("data: %d examples (%d windows of longer texts) packed in %d rows, %d of %d tokens used (%.0f%% masked, %d trained), %d truncated; %d held out for evaluation",
				d.Examples, d.Windows, d.Rows, d.UsedTokens, d.AvailableTokens, 100*d.MaskedShare(), d.TrainTokens, d.Truncated, evalExamples),
				"data", "examples", d.Examples, "windows", d.Windows, "rows", d.Rows, "tokens", d.Tokens, "used_tokens", d.UsedTokens, "available_tokens", d.AvailableTokens, "trained_tokens", d.TrainTokens,
				"masked_share", round2(d.MaskedShare()), "truncated", d.Truncated, "eval_examples", evalExamples)
			bar = newProgress(a.stderr, a.log, "tune", "steps", 0)
		},
		Progress: func(p lora.Progress) {
			note := fmt.Sprintf("loss %.3f", p.Loss)
			attrs := []any{"step", p.Step, "epoch", p.Epoch, "loss", round4(p.Loss), "lr", roundSig(p.LR, 3), "tokens_per_s", math.Round(p.TokensPerSec)}
			if p.EvalLoss > 0 {
				note += fmt.Sprintf(", eval %.3f", p.EvalLoss)
				attrs = append(attrs, "eval_loss", round4(p.EvalLoss))
			}
			if pr := p.Preference; pr != nil {
				note += fmt.Sprintf(", margin %.3f, acc %.2f", pr.Margin, pr.Accuracy)
				attrs = append(attrs, "reward_margin", round4(pr.Margin), "reward_accuracy", round4(pr.Accuracy))
			}
			note += fmt.Sprintf(", %.0f tok/s", p.TokensPerSec)
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
	sum := result.Summary
	out := spec.Out
	fmt.Fprintf(a.stdout, "adapter %s\n", out)
	fmt.Fprintf(a.stdout, "  %d examples (%d windows of longer texts) in %d rows, %d of %d tokens used (%.0f%% masked), %d truncated; %d steps in %s (%.0f tokens/s)\n",
		sum.Examples, sum.Windows, sum.Rows, sum.UsedTokens, sum.AvailableTokens, 100*sum.MaskedShare, sum.Truncated, sum.Steps, formatDuration(sum.Duration), sum.TokensPerSec)
	fmt.Fprintf(a.stdout, "  final loss %.4f", sum.FinalLoss)
	if sum.FinalEvalLoss > 0 {
		fmt.Fprintf(a.stdout, ", eval loss %.4f", sum.FinalEvalLoss)
	}
	fmt.Fprintln(a.stdout)
	if pr := sum.FinalPreference; pr != nil {
		fmt.Fprintf(a.stdout, "  DPO: %d pairs, reward margin %.4f, accuracy %.2f (chosen %.4f, rejected %.4f)", sum.Examples, pr.Margin, pr.Accuracy, pr.Chosen, pr.Rejected)
		if sum.FinalEvalMargin != nil {
			fmt.Fprintf(a.stdout, "; eval margin %.4f, accuracy %.2f", *sum.FinalEvalMargin, *sum.FinalEvalAcc)
		}
		fmt.Fprintln(a.stdout)
	}
	fmt.Fprintf(a.stdout, "  metrics %s\n  loss curve %s\n", sum.Metrics, sum.LossCurve)
	if f.keepCkpt {
		fmt.Fprintf(a.stdout, "  checkpoint %s (kept: --resume with more --epochs continues it)\n", lora.CheckpointPath(out))
	}
	if ver != nil {
		if err := a.afterVersion(*ver, name, spec.BaseName); err != nil {
			return err
		}
	} else if strings.HasPrefix(out, filepath.Join(a.home, "adapters")+string(filepath.Separator)) {
		adapter := strings.TrimSuffix(filepath.Base(out), ".gguf")
		if names.IsPath(name) {
			fmt.Fprintf(a.stdout, "  use it with -m %s --adapter %s (llmrt serve -m %s serves it as %s+%s)\n", name, adapter, name, spec.BaseName, adapter)
		} else {
			fmt.Fprintf(a.stdout, "  use it as -m %s+%s (llmrt run, serve, eval)\n", spec.BaseName, adapter)
		}
	}
	// The sample and the warnings come last, after how to use the adapter.
	a.tuneEpilogue(result, heldOut)
	return nil
}

// tuneEpilogue prints the adapter's answer to a held-out prompt and the
// run's warnings (overfitting).
func (a *app) tuneEpilogue(r finetune.Result, heldOut int) {
	if s := r.Sample; s != nil {
		fmt.Fprintf(a.stdout, "\nsample (held out, %s):\n  prompt   %s\n  expected %s\n  answer   %s\n",
			s.Source, oneLine(s.Prompt, 200, true), oneLine(s.Expected, 200, false), oneLine(s.Answer, 200, false))
	} else if heldOut == 0 {
		fmt.Fprintln(a.stdout, "\nno sample answer: no example was held out (--eval-split 0 and no --eval-data)")
	}
	for _, w := range r.Warnings {
		fmt.Fprintln(a.stderr, "warning:", w)
	}
}

// isBareName says whether --out names an adapter in the adapters folder
// (versioned) rather than a file.
func isBareName(out string) bool {
	return !strings.ContainsAny(out, "/\\") && !strings.HasSuffix(out, ".gguf")
}

// afterVersion promotes the first version of a name and says how the new
// version is used: as -m BASE+NAME, or with a base given as a path, as
// -m PATH --adapter NAME.
func (a *app) afterVersion(v versions.Version, model, base string) error {
	use := func(adapter string) string {
		if names.IsPath(model) {
			return fmt.Sprintf("-m %s --adapter %s", model, adapter)
		}
		return fmt.Sprintf("-m %s+%s", base, adapter)
	}
	cur, ok, err := a.versions().Promoted(v.Name)
	if err != nil {
		return err
	}
	switch {
	case !ok:
		if err := a.versions().Promote(v.Name, v.N); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "  version %s, promoted (the first of %s): use it as %s (llmrt run, serve, eval)\n", v.ID(), v.Name, use(v.Name))
	case cur.N == v.N:
		fmt.Fprintf(a.stdout, "  version %s, the promoted one: use it as %s (llmrt run, serve, eval)\n", v.ID(), use(v.Name))
	default:
		fmt.Fprintf(a.stdout, "  version %s (not promoted: %s serves as %s); try it as %s, promote it with\n"+
			"    llmrt eval -m %s --data HELD_OUT.jsonl --adapter %s --promote\n", v.ID(), cur.ID(), use(v.Name), use(v.ID()), model, v.ID())
	}
	return nil
}

// oneLine folds s onto one line of at most n characters, keeping its end
// (tail) or its start.
func oneLine(s string, n int, tail bool) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	switch {
	case len(r) <= n:
	case tail:
		s = "…" + string(r[len(r)-n+1:])
	default:
		s = string(r[:n-1]) + "…"
	}
	if s == "" {
		return "(empty)"
	}
	return s
}

func round4(f float64) float64 { return math.Round(f*1e4) / 1e4 }
