// Package lora fine-tunes a model with LoRA: it runs the training loop
// (learning-rate schedule, gradient accumulation, evaluation, checkpoints
// and resume) over packed rows from lora/dataset, on a Backend that
// computes losses and gradients — NetBackend, over kernels.Net, our ggml
// training graph on the weights llama.cpp loaded.
//
// The loop reads top to bottom like nanoGPT's: for each optimizer step,
// accumulate the gradients of Batch×GradAccum rows, take one AdamW step at
// the scheduled learning rate, log a metrics line, and now and then
// evaluate and checkpoint. Files are written to a temporary name, synced
// and renamed, so an interrupted run never leaves a broken adapter or
// checkpoint in place of a good one.
package lora

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/llmrt/llmrt/internal/atomicfile"
	"github.com/llmrt/llmrt/lora/dataset"
)

// Backend computes what the loop needs: losses, accumulated gradients, the
// optimizer step, and access to the trained tensors.
type Backend interface {
	// Accumulate adds the gradients of one row's mean loss over its
	// labelled tokens; it returns that loss and the labelled count.
	Accumulate(tokens, pos, seg, labels []int32) (loss float32, n int, err error)
	// Eval is Accumulate without gradients.
	Eval(tokens, pos, seg, labels []int32) (loss float32, n int, err error)
	// Step applies AdamW with the accumulated gradients and clears them.
	Step(lr float32) error
	// OptStep is the number of optimizer steps taken (AdamW's t);
	// SetOptStep restores it on resume.
	OptStep() int
	SetOptStep(t int)
	// Tensors names every trained and optimizer tensor (LoRA A/B and the
	// AdamW moments).
	Tensors() []TensorInfo
	Get(name string) ([]float32, error)
	Set(name string, data []float32) error
	// SaveAdapter writes the llama.cpp LoRA adapter with extra metadata,
	// atomically.
	SaveAdapter(path string, meta map[string]string) error
}

// TensorInfo names a backend tensor and its shape (ggml order).
type TensorInfo struct {
	Name  string
	Shape []int64
}

// Config controls a run.
type Config struct {
	Epochs    int
	LR        float64
	Schedule  Schedule
	Warmup    int // steps
	Batch     int // rows per micro-batch group
	GradAccum int // groups per optimizer step
	Seed      uint64
	// CheckpointEvery saves a checkpoint every that many steps (0: at the
	// end of each epoch only).
	CheckpointEvery int
	// EvalEvery evaluates every that many steps (0: at the end of each
	// epoch only).
	EvalEvery int
	// Out is the adapter path; the checkpoint, metrics and loss curve are
	// written beside it.
	Out    string
	Resume bool
	// Meta goes into the adapter's metadata (base model, chat template...).
	Meta map[string]string
	// Vocab is the model's vocabulary size: the loss curve draws ln(Vocab),
	// the loss of a uniform guess (0: not drawn).
	Vocab int
}

// Data is what the loop trains on.
type Data struct {
	Train []dataset.Row
	Eval  []dataset.Row
	Stats dataset.Stats
}

// Progress is reported after every optimizer step.
type Progress struct {
	Step, TotalSteps int
	Epoch, Epochs    int
	Loss, EvalLoss   float64
	LR               float64
	TokensPerSec     float64
	Elapsed, ETA     time.Duration
	Note             string // e.g. "checkpoint saved", "resumed at step 12"
	// Preference is the step's DPO statistics (nil for supervised runs).
	Preference *PreferenceStats
}

// Summary describes a finished run.
type Summary struct {
	Steps         int           `json:"steps"`
	Examples      int           `json:"examples"`
	Rows          int           `json:"rows"`
	Tokens        int           `json:"tokens"`
	TrainTokens   int           `json:"train_tokens"`
	MaskedShare   float64       `json:"masked_share"`
	Truncated     int           `json:"truncated_examples"`
	FinalLoss     float64       `json:"final_loss"`
	FinalEvalLoss float64       `json:"final_eval_loss,omitempty"`
	Duration      time.Duration `json:"duration"`
	TokensPerSec  float64       `json:"tokens_per_s"`
	Adapter       string        `json:"adapter"`
	Metrics       string        `json:"metrics"`
	LossCurve     string        `json:"loss_curve"`
	ResumedAt     int           `json:"resumed_at_step,omitempty"`
	// Preference training (DPO): the last step's statistics and the last
	// evaluation's.
	FinalPreference *PreferenceStats `json:"final_preference,omitempty"`
	FinalEvalMargin *float64         `json:"final_eval_reward_margin,omitempty"`
	FinalEvalAcc    *float64         `json:"final_eval_reward_accuracy,omitempty"`
	// Warnings about the run, such as overfitting (see OverfitWarning).
	Warnings []string `json:"warnings,omitempty"`

	// Windows are examples cut from longer texts; UsedTokens of the data's
	// AvailableTokens made it into training rows.
	Windows         int `json:"windows,omitempty"`
	AvailableTokens int `json:"available_tokens"`
	UsedTokens      int `json:"used_tokens"`
}

// Paths beside the adapter.
func sidePath(out, suffix string) string { return strings.TrimSuffix(out, ".gguf") + suffix }

// CheckpointPath is where a run's checkpoint lives.
func CheckpointPath(out string) string { return sidePath(out, ".ckpt.gguf") }

// MetricsPath is the run's per-step JSON lines.
func MetricsPath(out string) string { return sidePath(out, ".metrics.jsonl") }

// LossCurvePath is the run's loss-curve SVG.
func LossCurvePath(out string) string { return sidePath(out, ".loss.svg") }

func (c *Config) validate(rows int) error {
	switch {
	case c.Out == "":
		return errors.New("no output path")
	case c.Epochs < 1:
		return fmt.Errorf("epochs must be at least 1, got %d", c.Epochs)
	case c.LR <= 0 || math.IsNaN(c.LR):
		return fmt.Errorf("learning rate must be positive, got %v", c.LR)
	case c.Batch < 1 || c.GradAccum < 1:
		return fmt.Errorf("batch (%d) and grad-accum (%d) must be at least 1", c.Batch, c.GradAccum)
	case rows == 0:
		return errors.New("no training rows")
	}
	return nil
}

// Run trains until the configured epochs are done or ctx is cancelled (a
// cancelled run saves a checkpoint first, so --resume continues it).
func Run(ctx context.Context, b Backend, data Data, cfg Config, progress func(Progress)) (Summary, error) {
	if progress == nil {
		progress = func(Progress) {}
	}
	if err := cfg.validate(len(data.Train)); err != nil {
		return Summary{}, fmt.Errorf("train: %w", err)
	}
	perStep := cfg.Batch * cfg.GradAccum
	stepsPerEpoch := (len(data.Train) + perStep - 1) / perStep
	total := stepsPerEpoch * cfg.Epochs
	st := runState{}
	var metrics []MetricLine
	if cfg.Resume {
		var err error
		st, err = loadCheckpoint(CheckpointPath(cfg.Out), b, len(data.Train), cfg)
		if err != nil {
			return Summary{}, err
		}
		metrics, err = readMetrics(MetricsPath(cfg.Out), st.Step)
		if err != nil {
			return Summary{}, err
		}
		progress(Progress{Step: st.Step, TotalSteps: total, Epoch: st.Epoch + 1, Epochs: cfg.Epochs, Note: fmt.Sprintf("resumed at step %d", st.Step)})
	}
	mf, err := openMetrics(MetricsPath(cfg.Out), metrics)
	if err != nil {
		return Summary{}, err
	}
	defer mf.Close()
	sum := Summary{
		Examples: data.Stats.Examples, Rows: len(data.Train), Tokens: data.Stats.Tokens, TrainTokens: data.Stats.TrainTokens,
		MaskedShare: data.Stats.MaskedShare(), Truncated: data.Stats.Truncated,
		Windows: data.Stats.Windows, AvailableTokens: data.Stats.AvailableTokens, UsedTokens: data.Stats.UsedTokens,
		Adapter: cfg.Out, Metrics: MetricsPath(cfg.Out), LossCurve: LossCurvePath(cfg.Out), ResumedAt: st.Step,
	}
	pb, _ := b.(PreferenceBackend)
	start := time.Now()
	startStep := st.Step
	var tokensSeen int
	lastEval := 0.0
	if len(metrics) > 0 {
		lastEval = metrics[len(metrics)-1].EvalLoss
	}
	for st.Step < total {
		order := dataset.Order(len(data.Train), cfg.Seed, st.Epoch)
		for st.Row < len(order) && st.Step < total {
			if err := ctx.Err(); err != nil {
				if cerr := saveCheckpoint(CheckpointPath(cfg.Out), b, st, len(data.Train), cfg); cerr != nil {
					return sum, fmt.Errorf("train interrupted at step %d, and its checkpoint failed: %w", st.Step, cerr)
				}
				return sum, fmt.Errorf("train interrupted at step %d (checkpoint saved; --resume continues): %w", st.Step, err)
			}
			t0 := time.Now()
			var lossSum float64
			var labelled int
			for k := 0; k < perStep && st.Row < len(order); k++ {
				row := data.Train[order[st.Row]]
				st.Row++
				loss, n, err := b.Accumulate(row.Tokens, row.Pos, row.Seg, row.Labels)
				if err != nil {
					return sum, fmt.Errorf("train step %d: %w", st.Step+1, err)
				}
				lossSum += float64(loss) * float64(n)
				labelled += n
				tokensSeen += len(row.Tokens)
			}
			lr := cfg.Schedule.LR(cfg.LR, st.Step, total, cfg.Warmup)
			if err := b.Step(float32(lr)); err != nil {
				return sum, fmt.Errorf("train step %d: optimizer: %w", st.Step+1, err)
			}
			st.Step++
			st.DeviceSeconds += time.Since(t0).Seconds()
			epochDone := st.Row >= len(order)
			line := MetricLine{Step: st.Step, Epoch: st.Epoch + 1, LR: lr, Tokens: labelled,
				ElapsedS: time.Since(start).Seconds(), DeviceSeconds: st.DeviceSeconds}
			if labelled > 0 {
				line.Loss = lossSum / float64(labelled)
			}
			if el := time.Since(start).Seconds(); el > 0 {
				line.TokensPerSec = float64(tokensSeen) / el
			}
			if pb != nil {
				ps := pb.TakePreferenceStats(false)
				line.setPreference(ps)
				sum.FinalPreference = &ps
			}
			if len(data.Eval) > 0 && ((cfg.EvalEvery > 0 && st.Step%cfg.EvalEvery == 0) || epochDone || st.Step == total) {
				ev, err := evalLoss(b, data.Eval)
				if err != nil {
					return sum, err
				}
				line.EvalLoss, lastEval = ev, ev
				if pb != nil {
					es := pb.TakePreferenceStats(true)
					line.EvalRewardMargin, line.EvalRewardAccuracy = ptr(es.Margin), ptr(es.Accuracy)
					sum.FinalEvalMargin, sum.FinalEvalAcc = line.EvalRewardMargin, line.EvalRewardAccuracy
				}
			}
			if err := mf.add(line); err != nil {
				return sum, err
			}
			sum.FinalLoss, sum.FinalEvalLoss = line.Loss, lastEval
			p := Progress{Step: st.Step, TotalSteps: total, Epoch: st.Epoch + 1, Epochs: cfg.Epochs, Loss: line.Loss,
				EvalLoss: lastEval, LR: lr, TokensPerSec: line.TokensPerSec, Elapsed: time.Since(start), Preference: sum.FinalPreference}
			if done := st.Step - startStep; done > 0 {
				p.ETA = time.Duration(float64(time.Since(start)) / float64(done) * float64(total-st.Step))
			}
			if epochDone {
				st.Epoch++
				st.Row = 0
			}
			if (cfg.CheckpointEvery > 0 && st.Step%cfg.CheckpointEvery == 0) || epochDone {
				if err := saveCheckpoint(CheckpointPath(cfg.Out), b, st, len(data.Train), cfg); err != nil {
					return sum, fmt.Errorf("checkpoint at step %d failed (the previous checkpoint is intact): %w", st.Step, err)
				}
				p.Note = "checkpoint saved"
			}
			progress(p)
			if epochDone {
				break // the next epoch has its own row order
			}
		}
	}
	meta := map[string]string{}
	for k, v := range cfg.Meta {
		meta[k] = v
	}
	meta["llmrt.train.steps"] = fmt.Sprint(st.Step)
	meta["llmrt.train.epochs"] = fmt.Sprint(cfg.Epochs)
	meta["llmrt.train.final_loss"] = fmt.Sprintf("%.6g", sum.FinalLoss)
	if err := b.SaveAdapter(cfg.Out, meta); err != nil {
		return sum, fmt.Errorf("save adapter %s: %w", cfg.Out, err)
	}
	if w := OverfitWarning(mf.lines); w != "" {
		sum.Warnings = append(sum.Warnings, w)
	}
	lc := LossChart{Title: "loss: " + filepath.Base(cfg.Out), Vocab: cfg.Vocab, Warning: strings.Join(sum.Warnings, "; ")}
	if err := atomicfile.Write(LossCurvePath(cfg.Out), func(f *os.File) error { return WriteLossSVG(f, mf.lines, lc) }); err != nil {
		return sum, err
	}
	sum.Steps = st.Step
	sum.Duration = time.Since(start)
	if s := sum.Duration.Seconds(); s > 0 {
		sum.TokensPerSec = float64(tokensSeen) / s
	}
	return sum, nil
}

func evalLoss(b Backend, rows []dataset.Row) (float64, error) {
	var sum float64
	var n int
	for _, r := range rows {
		l, k, err := b.Eval(r.Tokens, r.Pos, r.Seg, r.Labels)
		if err != nil {
			return 0, fmt.Errorf("eval: %w", err)
		}
		sum += float64(l) * float64(k)
		n += k
	}
	if n == 0 {
		return 0, nil
	}
	return sum / float64(n), nil
}

// metricsFile appends JSON lines and keeps them for the loss curve.
type metricsFile struct {
	f     *os.File
	lines []MetricLine
}

func openMetrics(path string, keep []MetricLine) (*metricsFile, error) {
	// Rewrite the kept lines (a resumed run drops lines past its checkpoint).
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	enc := json.NewEncoder(f)
	for _, l := range keep {
		if err := enc.Encode(l); err != nil {
			f.Close()
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		f.Close()
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return &metricsFile{f: f, lines: keep}, nil
}

func (m *metricsFile) add(l MetricLine) error {
	m.lines = append(m.lines, l)
	b, _ := json.Marshal(l)
	if _, err := m.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

func (m *metricsFile) Close() error { return m.f.Close() }

func readMetrics(path string, upto int) ([]MetricLine, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	var out []MetricLine
	for i, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var l MetricLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			return nil, fmt.Errorf("metrics %s:%d: %w", path, i+1, err)
		}
		if l.Step <= upto {
			out = append(out, l)
		}
	}
	return out, nil
}
