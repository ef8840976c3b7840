package simgputest_test

import (
	"context"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
)

// childEnv marks a re-executed test binary (see TestTinyDeviceRefusesModel).
const childEnv = "LLMRT_SIMGPU_CHILD"

// logLines keeps the llama.cpp/ggml log lines that mention the simulated
// GPU; warnings and errors also go to stderr, and every line does with
// LLMRT_SIMGPU_TEST_LOG=1.
var logLines struct {
	sync.Mutex
	lines []string
}

type captureHandler struct{}

func (captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h captureHandler) WithAttrs([]slog.Attr) slog.Handler     { return h }
func (h captureHandler) WithGroup(string) slog.Handler          { return h }
func (captureHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "simgpu") || strings.Contains(r.Message, "SIM") {
		logLines.Lock()
		logLines.lines = append(logLines.lines, r.Message)
		logLines.Unlock()
	}
	if r.Level >= slog.LevelWarn || os.Getenv("LLMRT_SIMGPU_TEST_LOG") != "" {
		os.Stderr.WriteString(r.Message + "\n")
	}
	return nil
}

func captureLogger() *slog.Logger { return slog.New(captureHandler{}) }

func loggedLines() []string {
	logLines.Lock()
	defer logLines.Unlock()
	return append([]string(nil), logLines.lines...)
}

// Generated models, written once per test binary.
var genModels struct {
	sync.Mutex
	dir   string
	paths map[string]string
}

// modelPath returns a test model: "stories260K" (the shared tiny llama) or
// "llama"/"qwen2" (random weights from models/testmodel, with real
// tokenizers).
func modelPath(t *testing.T, name string) string {
	t.Helper()
	if name == "stories260K" {
		return testmodel.Shared(t, "stories260K.gguf")
	}
	genModels.Lock()
	defer genModels.Unlock()
	if p, ok := genModels.paths[name]; ok {
		return p
	}
	vocab := testmodel.SharedDir()
	var spec testmodel.Spec
	switch name {
	case "llama":
		spec = testmodel.TinyLlama(vocab)
		spec.NEmbd, spec.NFF, spec.NLayer = 128, 384, 4
		spec.Type = gguf.TypeF16
	case "qwen2":
		spec = testmodel.Spec{Arch: "qwen2", Name: "qwen2-tiny-random", NEmbd: 128, NLayer: 4, NHead: 4, NHeadKV: 2,
			NFF: 384, NCtxTrain: 2048, VocabFile: filepath.Join(vocab, "ggml-vocab-gpt-2.gguf"), TiedEmbeddings: true,
			QKVBias: true, Type: gguf.TypeQ8_0, RopeFreqBase: 1e6, NormEps: 1e-6, Seed: 7}
	default:
		t.Fatalf("unknown test model %q", name)
	}
	if genModels.dir == "" {
		d, err := os.MkdirTemp("", "simgputest")
		if err != nil {
			t.Fatal(err)
		}
		genModels.dir = d
		genModels.paths = map[string]string{}
	}
	p := filepath.Join(genModels.dir, name+".gguf")
	if err := testmodel.Write(context.Background(), p, spec); err != nil {
		t.Fatal(err)
	}
	genModels.paths[name] = p
	return p
}

// load loads a model, closed when the test ends.
func load(t *testing.T, path string, p kernels.ModelParams) *kernels.Model {
	t.Helper()
	m, err := kernels.LoadModel(context.Background(), path, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// run is a greedy generation: its tokens and the logits of every step.
type run struct {
	tokens []int32
	logits [][]float32
}

// greedy decodes prompt on a fresh context of m, then n tokens one at a
// time, each the argmax of the previous logits.
func greedy(t *testing.T, m *kernels.Model, prompt string, n int) run {
	t.Helper()
	c, err := m.NewContext(kernels.ContextParams{NCtx: 128, Threads: testThreads})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := kernels.NewBatch(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	toks, err := m.Tokenize(prompt, true, false)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := b.AddTokens(toks, 0, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	var r run
	pos := len(toks)
	for i := 0; i < n; i++ {
		if err := c.Decode(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		l, err := c.Logits(idx)
		if err != nil {
			t.Fatal(err)
		}
		r.logits = append(r.logits, append([]float32(nil), l...))
		tok := argmax(l)
		r.tokens = append(r.tokens, tok)
		b.Clear()
		if idx, err = b.Add(tok, pos, 0, true); err != nil {
			t.Fatal(err)
		}
		pos++
	}
	return r
}

func argmax(v []float32) int32 {
	best := 0
	for i := range v {
		if v[i] > v[best] {
			best = i
		}
	}
	return int32(best)
}

// maxDiff is the largest absolute difference between a and b.
func maxDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		x := math.Abs(float64(a[i] - b[i]))
		if math.IsNaN(x) {
			return math.Inf(1) // math.Max would carry NaN, which compares false
		}
		d = math.Max(d, x)
	}
	return d
}

// sameRun fails the test unless got has want's tokens and logits within tol.
func sameRun(t *testing.T, what string, want, got run, tol float64) {
	t.Helper()
	for i := range want.tokens {
		if d := maxDiff(want.logits[i], got.logits[i]); d > tol {
			t.Fatalf("%s: step %d: logits differ from the CPU's by %g (tolerance %g)", what, i, d, tol)
		}
		if got.tokens[i] != want.tokens[i] {
			t.Fatalf("%s: step %d: token %d, the CPU chose %d\nCPU %v\ngot %v", what, i, got.tokens[i], want.tokens[i], want.tokens, got.tokens)
		}
	}
}

// simStats reads device i's counters. On CUDA only Allocated is known:
// the device's use above its warmed-up baseline (0 for a device that is
// not there); Graphs stays 0.
func simStats(t *testing.T, i int) kernels.SimGPUStats {
	t.Helper()
	if useCUDA {
		ds := simDevices()
		if i >= len(ds) {
			return kernels.SimGPUStats{}
		}
		return kernels.SimGPUStats{Total: ds[i].Total, Allocated: uint64(max(0, int64(ds[i].Total-ds[i].Free)-cudaBase[i]))}
	}
	st, err := kernels.SimGPUStatsOf(i, false)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// simDevices lists the devices under test as kernels reports them: the
// simulated ones, or the CUDA ones with LLMRT_TEST_DEVICE=cuda.
func simDevices() []kernels.Device {
	if useCUDA {
		return kernels.DevicesOf("CUDA")
	}
	return kernels.DevicesOf(kernels.SimGPUBackend)
}
