// Package finetune runs LoRA fine-tuning jobs: Train turns a dataset file
// into an adapter (used by llmrt tune), and Service runs OpenAI-style
// fine-tuning jobs in the background of llmrt serve (/v1/files,
// /v1/fine_tuning/jobs), persisting files, jobs and their events so they
// survive a restart.
package finetune

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/lora/dataset"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/rag"
)

// Spec is one training run.
type Spec struct {
	BasePath string // the base model's GGUF
	BaseName string // its name, recorded in the adapter (what serve calls it)

	Data     string // JSONL file, document, or folder of documents
	EvalData string // optional evaluation data
	// Collection trains on the documents of a collection (continued
	// pre-training) in CollectionsDir, with Data or alone.
	Collection     string
	CollectionsDir string
	// Stride is the context shared by consecutive windows of a long text.
	Stride    int
	EvalSplit float64 // share of Data held out when EvalData is empty
	Format    string  // auto, chat, prompt-completion, alpaca, text
	Strict    bool    // a bad line is fatal

	Out string // adapter path

	Rank    int
	Alpha   float64
	Targets []string // GGUF projection names (kernels.LoRATargets)

	Epochs          int
	LR              float64
	Schedule        string // cosine, linear, constant
	Warmup          int
	Batch           int
	GradAccum       int
	Ctx             int // tokens per packed row
	Seed            uint64
	CheckpointEvery int
	Resume          bool
	Threads         int
	GPULayers       int

	Meta map[string]string // extra adapter metadata
}

// Hooks report a run's progress; any may be nil.
type Hooks struct {
	Logger       *slog.Logger
	LoadProgress func(fraction float32)
	Warn         func(error) // a skipped data line (*dataset.LineError)
	Loaded       func(train dataset.Stats, evalExamples int)
	Progress     func(lora.Progress)
}

// AttentionTargets and AllLinearTargets are the --targets presets.
var (
	AttentionTargets = []string{"attn_q", "attn_k", "attn_v", "attn_output"}
	AllLinearTargets = []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}
)

// ParseTargets expands "attention", "all-linear" or a comma list.
func ParseTargets(s string) ([]string, error) {
	switch s {
	case "", "attention", "attn":
		return AttentionTargets, nil
	case "all-linear", "all":
		return AllLinearTargets, nil
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

func (s *Spec) defaults() {
	if s.Rank == 0 {
		s.Rank = 16
	}
	if s.Alpha == 0 {
		s.Alpha = 2 * float64(s.Rank)
	}
	if len(s.Targets) == 0 {
		s.Targets = AttentionTargets
	}
	if s.Epochs == 0 {
		s.Epochs = 3
	}
	if s.LR == 0 {
		s.LR = 2e-4
	}
	if s.Schedule == "" {
		s.Schedule = "cosine"
	}
	if s.Batch == 0 {
		s.Batch = 1
	}
	if s.GradAccum == 0 {
		s.GradAccum = 1
	}
	if s.Ctx == 0 {
		s.Ctx = 512
	}
	if s.Format == "" {
		s.Format = "auto"
	}
	if s.BaseName == "" {
		s.BaseName = strings.TrimSuffix(filepath.Base(s.BasePath), ".gguf")
	}
}

// CheckSettings checks the spec's training settings (rank, alpha, split,
// context, data format, schedule) with the defaults applied, and changes
// nothing: a caller can check them before it has a base model or data.
func (s Spec) CheckSettings() error {
	s.defaults()
	switch {
	case s.Rank < 1 || s.Rank > 1024:
		return fmt.Errorf("rank must be between 1 and 1024, got %d", s.Rank)
	case s.Alpha <= 0:
		return fmt.Errorf("alpha must be positive, got %v", s.Alpha)
	case s.EvalSplit < 0 || s.EvalSplit >= 1:
		return fmt.Errorf("eval split must be in [0, 1), got %v", s.EvalSplit)
	case s.Ctx < 8:
		return fmt.Errorf("context %d is too short to train on", s.Ctx)
	case s.Stride < 0 || s.Stride >= s.Ctx/2:
		return fmt.Errorf("stride must be in [0, %d) for a context of %d, got %d", s.Ctx/2, s.Ctx, s.Stride)
	}
	if _, err := dataset.ParseFormat(s.Format); err != nil {
		return err
	}
	if _, err := lora.ParseSchedule(s.Schedule); err != nil {
		return err
	}
	return nil
}

// Validate fills the defaults, then checks the settings, that the base,
// data and output are named, and that the data files exist.
func (s *Spec) Validate() error {
	s.defaults()
	switch {
	case s.BasePath == "":
		return errors.New("no base model")
	case s.Data == "" && s.Collection == "":
		return errors.New("no training data")
	case s.Collection != "" && s.CollectionsDir == "":
		return errors.New("no collections directory")
	case s.Out == "":
		return errors.New("no output path")
	}
	if err := s.CheckSettings(); err != nil {
		return err
	}
	for _, p := range []string{s.Data, s.EvalData} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("data: %w", err)
		}
	}
	return nil
}

// engineTokenizer gives the dataset loader the model's chat template and
// tokenizer exactly as serving uses them.
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

func (t engineTokenizer) EOS() int32 { return t.e.Info().EOS }

// Train runs spec to the end (or until ctx is cancelled, which saves a
// checkpoint that Resume continues).
func Train(ctx context.Context, spec Spec, h Hooks) (lora.Summary, error) {
	if err := spec.Validate(); err != nil {
		return lora.Summary{}, err
	}
	if h.Logger == nil {
		h.Logger = slog.Default()
	}
	format, _ := dataset.ParseFormat(spec.Format)
	sched, _ := lora.ParseSchedule(spec.Schedule)
	if err := os.MkdirAll(filepath.Dir(spec.Out), 0o755); err != nil {
		return lora.Summary{}, err
	}
	// ggml has no matmul backward for F16/BF16 weights on the CPU: such a
	// base trains on a Q8_0 copy (F32 when its rows do not split into
	// Q8_0 blocks), kept beside the adapter, and the adapter then serves
	// on the original base.
	trainPath, conv, err := trainableBase(ctx, spec, h.Logger)
	if err != nil {
		return lora.Summary{}, err
	}
	// The engine gives the chat template and tokenizer as serving uses
	// them; training runs on our graph over the same loaded weights, kept
	// out of the CPU's repacked buffers (which have no backward pass).
	e, err := engine.Open(ctx, engine.Options{Path: trainPath, NParallel: 1, CtxPerSeq: min(spec.Ctx, 256), Threads: spec.Threads, Logger: h.Logger,
		Model: kernels.ModelParams{GPULayers: spec.GPULayers, NoRepack: true, Progress: h.LoadProgress}})
	if err != nil {
		return lora.Summary{}, err
	}
	defer e.Close()
	tok := engineTokenizer{e}
	dopt := dataset.Options{Format: format, Strict: spec.Strict, Window: spec.Ctx, Stride: spec.Stride, Documents: ragDocuments{ctx}}
	load := func(path string) ([]dataset.Example, error) {
		ex, warns, err := dataset.Load(path, tok, dopt)
		for _, w := range warns {
			if h.Warn != nil {
				h.Warn(w)
			}
		}
		if err != nil {
			return nil, err
		}
		if len(ex) == 0 {
			return nil, fmt.Errorf("%s: no usable examples", path)
		}
		return ex, nil
	}
	var train []dataset.Example
	if spec.Collection != "" {
		if train, err = collectionExamples(ctx, spec, tok, dopt); err != nil {
			return lora.Summary{}, err
		}
	}
	if spec.Data != "" {
		ex, err := load(spec.Data)
		if err != nil {
			return lora.Summary{}, err
		}
		train = append(train, ex...)
	}
	var evalEx []dataset.Example
	if spec.EvalData != "" {
		if evalEx, err = load(spec.EvalData); err != nil {
			return lora.Summary{}, err
		}
	} else {
		train, evalEx = dataset.Split(train, spec.EvalSplit)
	}
	var st, evSt dataset.Stats
	data := lora.Data{Train: dataset.Pack(train, spec.Ctx, &st)}
	if len(evalEx) > 0 {
		data.Eval = dataset.Pack(evalEx, spec.Ctx, &evSt)
	}
	data.Stats = st
	if h.Loaded != nil {
		h.Loaded(st, evSt.Examples)
	}
	net, err := kernels.NewNet(e.Model(), kernels.NetParams{Threads: spec.Threads, Rank: spec.Rank, Alpha: float32(spec.Alpha), Targets: spec.Targets, Seed: spec.Seed})
	if err != nil {
		return lora.Summary{}, err
	}
	defer net.Close()
	b, err := lora.NewNetBackend(net, e.Info().Arch, float32(spec.Alpha), kernels.DefaultAdam)
	if err != nil {
		return lora.Summary{}, err
	}
	meta := map[string]string{
		"general.name":        strings.TrimSuffix(filepath.Base(spec.Out), ".gguf"),
		"llmrt.base":          spec.BaseName,
		"llmrt.base.desc":     e.Info().Description,
		"llmrt.chat_template": e.Info().ChatTemplate,
		"llmrt.eos_token_id":  fmt.Sprint(e.Info().EOS),
		"llmrt.lora.rank":     fmt.Sprint(spec.Rank),
		"llmrt.lora.targets":  strings.Join(spec.Targets, ","),
		"llmrt.train.data":    trainData(spec),
		"llmrt.train.epochs":  fmt.Sprint(spec.Epochs),
		"llmrt.train.lr":      fmt.Sprint(spec.LR),
	}
	if conv != "" {
		meta["llmrt.train.base_converted"] = conv
	}
	for k, v := range spec.Meta {
		meta[k] = v
	}
	cfg := lora.Config{Epochs: spec.Epochs, LR: spec.LR, Schedule: sched, Warmup: spec.Warmup, Batch: spec.Batch, GradAccum: spec.GradAccum,
		Seed: spec.Seed, CheckpointEvery: spec.CheckpointEvery, Out: spec.Out, Resume: spec.Resume, Meta: meta}
	return lora.Run(ctx, b, data, cfg, h.Progress)
}

// trainData names the training data in the adapter's metadata.
func trainData(spec Spec) string {
	if spec.Collection == "" {
		return spec.Data
	}
	return strings.TrimSpace(spec.Data + " collection:" + spec.Collection)
}

// ragDocuments reads documents with the parsers of ingestion (text,
// Markdown, HTML, PDF through pdftotext).
type ragDocuments struct{ ctx context.Context }

func (ragDocuments) IsDocument(p string) bool { return rag.FormatOf(p) != "" }

func (d ragDocuments) Text(p string) (string, error) {
	doc, err := rag.ReadDocument(d.ctx, p)
	return doc.Text, err
}

// collectionExamples are the windows of a collection's documents, rebuilt
// from its chunks.
func collectionExamples(ctx context.Context, spec Spec, tok dataset.Tokenizer, opt dataset.Options) ([]dataset.Example, error) {
	st, err := rag.OpenStore(spec.CollectionsDir, rag.StoreOptions{})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	c, err := st.Get(ctx, spec.Collection)
	if err != nil {
		return nil, fmt.Errorf("collection %s: %w", spec.Collection, err)
	}
	var docs []dataset.Document
	for _, t := range c.Texts() {
		docs = append(docs, dataset.Document{Source: t.Source, Text: t.Text})
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("collection %s has no documents", spec.Collection)
	}
	return dataset.DocumentExamples(docs, tok, opt)
}

// trainableBase returns the model file to train on and, when the base had
// to be converted, what was done ("F16 -> Q8_0").
func trainableBase(ctx context.Context, spec Spec, log *slog.Logger) (string, string, error) {
	f, err := gguf.Open(spec.BasePath)
	if err != nil {
		return "", "", err
	}
	half := ""
	q8ok := true // Q8_0 needs rows in blocks of 32 values
	for _, t := range f.Tensors {
		if len(t.Dims) == 2 && (t.Type == gguf.TypeF16 || t.Type == gguf.TypeBF16) {
			half = t.Type.String()
		}
		if len(t.Dims) == 2 && t.Dims[0]%32 != 0 {
			q8ok = false
		}
	}
	if half == "" {
		return spec.BasePath, "", nil
	}
	to, ft := "Q8_0", kernels.FTypeQ8_0
	if !q8ok {
		to, ft = "F32", kernels.FTypeF32
	}
	conv := strings.TrimSuffix(spec.Out, ".gguf") + ".base-" + strings.ToLower(to) + ".gguf"
	note := half + " -> " + to
	reason := half + " weights have no backward pass in ggml"
	if st, err := os.Stat(conv); err == nil && st.Size() > 0 {
		log.Info("training on a converted copy of the base", "base", spec.BasePath, "copy", conv, "conversion", note, "reason", reason)
		return conv, note, nil
	}
	log.Info("converting the base for training", "base", spec.BasePath, "copy", conv, "conversion", note, "reason", reason)
	if err := kernels.Quantize(ctx, spec.BasePath, conv, ft, spec.Threads); err != nil {
		return "", "", fmt.Errorf("convert %s to %s for training: %w", spec.BasePath, to, err)
	}
	return conv, note, nil
}

// TrainableBase is the file a base trains on: the base itself, or its
// converted copy beside spec.Out when its weights are F16/BF16.
func TrainableBase(ctx context.Context, spec Spec) (string, error) {
	p, _, err := trainableBase(ctx, spec, slog.Default())
	return p, err
}
