package lora

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/internal/atomicfile"
	"github.com/llmrt/llmrt/lora/dataset"
)

// quadBackend is a deterministic stand-in for the ggml trainer: one
// parameter vector w with loss = mean over labelled tokens of
// (w[tok%len] - target)², trained by AdamW. It lets the loop's logic
// (order, accumulation, schedule, checkpoints) be checked exactly.
type quadBackend struct {
	w, m, v, g []float32
	t          int
	nAcc       int
	saved      map[string]string
	failSave   error
}

func newQuad(n int) *quadBackend {
	return &quadBackend{w: make([]float32, n), m: make([]float32, n), v: make([]float32, n), g: make([]float32, n)}
}

func (q *quadBackend) loss(tokens, labels []int32, grad bool) (float32, int) {
	var sum float64
	n := 0
	for i, l := range labels {
		if l < 0 {
			continue
		}
		j := int(tokens[i]) % len(q.w)
		d := float64(q.w[j]) - float64(l%7)
		sum += d * d
		if grad {
			q.g[j] += float32(2 * d)
		}
		n++
	}
	if n == 0 {
		return 0, 0
	}
	return float32(sum / float64(n)), n
}

func (q *quadBackend) Accumulate(t, p, s, l []int32) (float32, int, error) {
	loss, n := q.loss(t, l, true)
	q.nAcc += n
	return loss, n, nil
}
func (q *quadBackend) Eval(t, p, s, l []int32) (float32, int, error) {
	loss, n := q.loss(t, l, false)
	return loss, n, nil
}
func (q *quadBackend) Step(lr float32) error {
	q.t++
	b1, b2 := 0.9, 0.999
	for i := range q.w {
		g := float64(q.g[i]) / float64(max(q.nAcc, 1))
		q.m[i] = float32(b1*float64(q.m[i]) + (1-b1)*g)
		q.v[i] = float32(b2*float64(q.v[i]) + (1-b2)*g*g)
		mh := float64(q.m[i]) / (1 - math.Pow(b1, float64(q.t)))
		vh := float64(q.v[i]) / (1 - math.Pow(b2, float64(q.t)))
		q.w[i] -= float32(float64(lr) * mh / (math.Sqrt(vh) + 1e-8))
		q.g[i] = 0
	}
	q.nAcc = 0
	return nil
}
func (q *quadBackend) OptStep() int     { return q.t }
func (q *quadBackend) SetOptStep(t int) { q.t = t }
func (q *quadBackend) Tensors() []TensorInfo {
	n := int64(len(q.w))
	return []TensorInfo{{"w.lora_a", []int64{n}}, {"w.m", []int64{n}}, {"w.v", []int64{n}}}
}
func (q *quadBackend) buf(name string) []float32 {
	switch name {
	case "w.lora_a":
		return q.w
	case "w.m":
		return q.m
	case "w.v":
		return q.v
	}
	return nil
}
func (q *quadBackend) Get(name string) ([]float32, error) {
	return append([]float32(nil), q.buf(name)...), nil
}
func (q *quadBackend) Set(name string, d []float32) error { copy(q.buf(name), d); return nil }
func (q *quadBackend) SaveAdapter(path string, meta map[string]string) error {
	if q.failSave != nil {
		return q.failSave
	}
	q.saved = meta
	b, _ := json.Marshal(q.w)
	return atomicfile.Write(path, func(f *os.File) error { _, err := f.Write(b); return err })
}

func rows(n int) []dataset.Row {
	var out []dataset.Row
	for i := 0; i < n; i++ {
		r := dataset.Row{}
		for j := 0; j < 8; j++ {
			tok := int32(i*8 + j)
			r.Tokens = append(r.Tokens, tok)
			r.Pos = append(r.Pos, int32(j))
			r.Seg = append(r.Seg, 0)
			lab := int32(-1)
			if j >= 3 {
				lab = tok + 1
			}
			r.Labels = append(r.Labels, lab)
		}
		out = append(out, r)
	}
	return out
}

func cfgFor(dir string) Config {
	return Config{Epochs: 3, LR: 0.05, Schedule: Cosine, Warmup: 2, Batch: 2, GradAccum: 2, Seed: 7, Out: filepath.Join(dir, "a.gguf"), CheckpointEvery: 3}
}

func TestRunLearnsAndWritesFiles(t *testing.T) {
	dir := t.TempDir()
	q := newQuad(16)
	data := Data{Train: rows(10), Eval: rows(2)}
	var steps []Progress
	sum, err := Run(context.Background(), q, data, cfgFor(dir), func(p Progress) { steps = append(steps, p) })
	if err != nil {
		t.Fatal(err)
	}
	// 10 rows, 4 per step: 3 steps per epoch, 3 epochs.
	if sum.Steps != 9 || len(steps) != 9 || steps[8].Step != 9 || steps[0].TotalSteps != 9 {
		t.Fatalf("steps %d, progress %d", sum.Steps, len(steps))
	}
	b, err := os.ReadFile(MetricsPath(filepath.Join(dir, "a.gguf")))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 9 {
		t.Fatalf("%d metrics lines", len(lines))
	}
	var first, last MetricLine
	json.Unmarshal([]byte(lines[0]), &first)
	json.Unmarshal([]byte(lines[8]), &last)
	if !(last.Loss < first.Loss) || last.EvalLoss == 0 || first.LR != 0.025 || math.Abs(last.LR-0.005) > 1e-9 {
		t.Fatalf("first %+v last %+v", first, last)
	}
	if svg, err := os.ReadFile(LossCurvePath(filepath.Join(dir, "a.gguf"))); err != nil || !strings.Contains(string(svg), "<polyline") {
		t.Fatalf("loss curve: %v", err)
	}
	if q.saved["llmrt.train.steps"] != "9" {
		t.Fatalf("adapter metadata %v", q.saved)
	}
}

// N steps in one run and N/2 + resume + N/2 give the same weights.
func TestResumeMatchesUninterrupted(t *testing.T) {
	data := Data{Train: rows(10)}
	full := newQuad(16)
	if _, err := Run(context.Background(), full, data, cfgFor(t.TempDir()), nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := cfgFor(dir)
	ctx, cancel := context.WithCancel(context.Background())
	first := newQuad(16)
	_, err := Run(ctx, first, data, cfg, func(p Progress) {
		if p.Step == 4 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "checkpoint saved") {
		t.Fatalf("interrupted run: %v", err)
	}
	cfg.Resume = true
	second := newQuad(16) // a fresh process: nothing carried over but files
	sum, err := Run(context.Background(), second, data, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.ResumedAt != 4 || sum.Steps != 9 {
		t.Fatalf("resumed at %d, steps %d", sum.ResumedAt, sum.Steps)
	}
	for i := range full.w {
		if math.Abs(float64(full.w[i]-second.w[i])) > 1e-6 {
			t.Fatalf("w[%d]: uninterrupted %v, resumed %v", i, full.w[i], second.w[i])
		}
	}
	b, _ := os.ReadFile(MetricsPath(cfg.Out))
	if n := len(strings.Split(strings.TrimSpace(string(b)), "\n")); n != 9 {
		t.Fatalf("metrics after resume: %d lines", n)
	}
}

func TestResumeRefusesMismatchAndCorruption(t *testing.T) {
	dir := t.TempDir()
	cfg := cfgFor(dir)
	cfg.Epochs = 1
	if _, err := Run(context.Background(), newQuad(16), Data{Train: rows(10)}, cfg, nil); err != nil {
		t.Fatal(err)
	}
	cfg.Resume = true
	if _, err := Run(context.Background(), newQuad(16), Data{Train: rows(9)}, cfg, nil); err == nil || !strings.Contains(err.Error(), "10 rows") {
		t.Fatalf("different data: %v", err)
	}
	if _, err := Run(context.Background(), newQuad(8), Data{Train: rows(10)}, cfg, nil); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("different shape: %v", err)
	}
	ck := CheckpointPath(cfg.Out)
	b, _ := os.ReadFile(ck)
	b[len(b)/2] ^= 0xff
	os.WriteFile(ck, b, 0o644)
	if _, err := Run(context.Background(), newQuad(16), Data{Train: rows(10)}, cfg, nil); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt checkpoint: %v", err)
	}
}

// A failing adapter write leaves the previous adapter file untouched.
func TestFailedSaveKeepsPreviousAdapter(t *testing.T) {
	dir := t.TempDir()
	cfg := cfgFor(dir)
	cfg.Epochs = 1
	os.WriteFile(cfg.Out, []byte("good adapter"), 0o644)
	q := newQuad(16)
	q.failSave = errors.New("no space left on device")
	if _, err := Run(context.Background(), q, Data{Train: rows(4)}, cfg, nil); err == nil || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("save failure not reported: %v", err)
	}
	if b, _ := os.ReadFile(cfg.Out); string(b) != "good adapter" {
		t.Fatalf("previous adapter replaced: %q", b)
	}
}

func TestSchedules(t *testing.T) {
	for _, c := range []struct {
		s          Schedule
		step, want float64
	}{
		{Constant, 5, 1}, {Linear, 2, 1}, {Linear, 11, 0}, {Cosine, 2, 1}, {Cosine, 11, 0.1},
	} {
		if got := c.s.LR(1, int(c.step), 12, 2); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s at %v = %v, want %v", c.s, c.step, got, c.want)
		}
	}
	if got := Cosine.LR(1, 0, 12, 2); got != 0.5 {
		t.Errorf("warmup step 0 = %v", got)
	}
}
