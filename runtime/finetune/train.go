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
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/lora/dataset"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/quant"
	"github.com/llmrt/llmrt/models/versions"
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

	// Method is MethodSupervised (default) or MethodDPO; Beta is DPO's
	// temperature (default 0.1); SFTWeight adds that weight times the
	// chosen answers' own loss to DPO's (RPO; 0: plain DPO). DPO data is
	// preference pairs (dataset.LoadPairs).
	Method    string
	Beta      float64
	SFTWeight float64

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
	// KeepCheckpoint keeps the checkpoint (and the base's converted copy)
	// after a successful run; otherwise they are removed then. A failed or
	// interrupted run always keeps them, so that Resume can continue it.
	KeepCheckpoint bool
	// Sample generates, after training, the adapter's answer to one
	// held-out prompt (Result.Sample).
	Sample    bool
	Threads   int
	GPULayers int

	Meta map[string]string // extra adapter metadata
}

// Training methods.
const (
	MethodSupervised = "supervised"
	MethodDPO        = "dpo"
)

// ParseMethod validates a method name ("sft" is supervised).
func ParseMethod(s string) (string, error) {
	switch s {
	case "", MethodSupervised, "sft":
		return MethodSupervised, nil
	case MethodDPO:
		return MethodDPO, nil
	}
	return "", fmt.Errorf("unknown training method %q (supervised or dpo)", s)
}

// Hooks report a run's progress; any may be nil.
type Hooks struct {
	Logger *slog.Logger
	// Status gets a readable line about slow preparation (the base's
	// conversion); the same goes to Logger as a record.
	Status       func(string)
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
	if m, err := ParseMethod(s.Method); err == nil {
		s.Method = m
	}
	if s.Method == MethodDPO && s.Beta == 0 {
		s.Beta = 0.1
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
	if _, err := ParseMethod(s.Method); err != nil {
		return err
	}
	if s.Beta < 0 || math.IsNaN(s.Beta) || math.IsInf(s.Beta, 0) {
		return fmt.Errorf("DPO beta must be positive, got %v", s.Beta)
	}
	if s.SFTWeight < 0 || math.IsNaN(s.SFTWeight) || math.IsInf(s.SFTWeight, 0) {
		return fmt.Errorf("the chosen answers' loss weight must be >= 0, got %v", s.SFTWeight)
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

// Result is a finished run.
type Result struct {
	lora.Summary
	// Sample is the adapter's answer to a held-out prompt (Spec.Sample;
	// nil without held-out examples).
	Sample *Sample
}

// Sample is an answer of the trained adapter to a prompt it did not train on.
type Sample struct {
	Source   string `json:"source"` // file:line of the example
	Prompt   string `json:"prompt"`
	Expected string `json:"expected"`
	Answer   string `json:"answer"`
}

// Train runs spec to the end (or until ctx is cancelled, which saves a
// checkpoint that Resume continues).
func Train(ctx context.Context, spec Spec, h Hooks) (Result, error) {
	if err := spec.Validate(); err != nil {
		return Result{}, err
	}
	if h.Logger == nil {
		h.Logger = slog.Default()
	}
	if h.Status == nil {
		h.Status = func(string) {}
	}
	format, _ := dataset.ParseFormat(spec.Format)
	sched, _ := lora.ParseSchedule(spec.Schedule)
	if err := os.MkdirAll(filepath.Dir(spec.Out), 0o755); err != nil {
		return Result{}, err
	}
	// ggml has no matmul backward for F16/BF16 weights on the CPU: such a
	// base trains on a Q8_0 copy (F32 when its rows do not split into
	// Q8_0 blocks), kept beside the adapter, and the adapter then serves
	// on the original base.
	trainPath, conv, err := trainableBase(ctx, spec, h.Logger, h.Status)
	if err != nil {
		return Result{}, err
	}
	// The engine gives the chat template and tokenizer as serving uses
	// them; training runs on our graph over the same loaded weights, kept
	// out of the CPU's repacked buffers (which have no backward pass).
	e, err := engine.Open(ctx, engine.Options{Path: trainPath, NParallel: 1, CtxPerSeq: min(spec.Ctx, 256), Threads: spec.Threads, Logger: h.Logger,
		Model: kernels.ModelParams{GPULayers: spec.GPULayers, NoRepack: true, Progress: h.LoadProgress}})
	if err != nil {
		return Result{}, err
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
	var (
		data     lora.Data
		st, evSt dataset.Stats
		evalEx   []dataset.Example // held out, for the sample answer
		loadErr  error
		dpo      = spec.Method == MethodDPO
	)
	if dpo {
		data, st, evSt, loadErr = loadPairs(spec, tok, h)
	} else {
		data, st, evSt, evalEx, loadErr = loadExamples(spec, load, func() ([]dataset.Example, error) {
			return collectionExamples(ctx, spec, tok, dopt)
		})
	}
	if loadErr != nil {
		return Result{}, loadErr
	}
	if h.Loaded != nil {
		h.Loaded(st, evSt.Examples)
	}
	net, err := kernels.NewNet(e.Model(), kernels.NetParams{Threads: spec.Threads, Rank: spec.Rank, Alpha: float32(spec.Alpha), Targets: spec.Targets, Seed: spec.Seed, Tiles: true})
	if err != nil {
		return Result{}, err
	}
	defer net.Close()
	h.Logger.Debug("training kernels", "amx_int8_matmuls", kernels.Q8AMXAvailable(), "amx_bf16_gradients", kernels.OutProdAMXAvailable())
	nb, err := lora.NewNetBackend(net, e.Info().Arch, float32(spec.Alpha), kernels.DefaultAdam)
	if err != nil {
		return Result{}, err
	}
	var b lora.Backend = nb
	if dpo {
		if b, err = lora.NewDPOBackend(nb, spec.Beta, spec.SFTWeight); err != nil {
			return Result{}, err
		}
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
		"llmrt.train.method":  spec.Method,
	}
	if dpo {
		meta["llmrt.train.dpo_beta"] = fmt.Sprint(spec.Beta)
		meta["llmrt.train.dpo_sft_weight"] = fmt.Sprint(spec.SFTWeight)
	}
	if conv != "" {
		meta["llmrt.train.base_converted"] = conv
	}
	for k, v := range spec.Meta {
		meta[k] = v
	}
	cfg := lora.Config{Epochs: spec.Epochs, LR: spec.LR, Schedule: sched, Warmup: spec.Warmup, Batch: spec.Batch, GradAccum: spec.GradAccum,
		Seed: spec.Seed, CheckpointEvery: spec.CheckpointEvery, Out: spec.Out, Resume: spec.Resume, Meta: meta, Vocab: e.Info().Vocab}
	sum, err := lora.Run(ctx, b, data, cfg, h.Progress)
	if err != nil {
		return Result{Summary: sum}, err
	}
	res := Result{Summary: sum}
	if spec.Sample {
		if res.Sample, err = sample(ctx, e, spec.Out, evalEx); err != nil {
			h.Logger.Warn("no sample answer", "err", err)
		}
	}
	// Done: what only resuming needs goes, unless the caller keeps it.
	if !spec.KeepCheckpoint {
		side := []string{lora.CheckpointPath(spec.Out)}
		if conv != "" {
			side = append(side, trainPath)
		}
		for _, p := range side {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				h.Logger.Warn("could not remove a file the run no longer needs", "path", p, "err", err)
			}
		}
	}
	return res, nil
}

// sampleTokens bounds the sample answer.
const sampleTokens = 64

// sample answers the first held-out example that has an answer with the
// adapter at out, greedily, next to the answer the data gives.
func sample(ctx context.Context, e *engine.Engine, out string, held []dataset.Example) (*Sample, error) {
	var ex *dataset.Example
	var cut int
	for i := range held {
		if c := slices.Index(held[i].Train, true); c > 0 {
			ex, cut = &held[i], c
			break
		}
	}
	if ex == nil {
		return nil, nil
	}
	m := e.Model()
	prompt := ex.Tokens[:cut]
	end := cut
	for end < len(ex.Tokens) && ex.Train[end] {
		end++
	}
	want, err := m.Detokenize(ex.Tokens[cut:end], true, false)
	if err != nil {
		return nil, err
	}
	text, err := m.Detokenize(prompt, true, false)
	if err != nil {
		return nil, err
	}
	if err := e.LoadAdapter("sample", out); err != nil {
		return nil, err
	}
	defer e.UnloadAdapter("sample")
	n := min(sampleTokens, end-cut+16)
	if keep := e.CtxPerSeq() - n - 1; len(prompt) > keep {
		prompt = prompt[len(prompt)-keep:]
	}
	r, err := e.Generate(ctx, engine.Request{Prompt: prompt, MaxTokens: n, Adapters: []engine.AdapterRef{{Name: "sample"}}})
	if err != nil {
		return nil, err
	}
	return &Sample{Source: ex.Source, Prompt: strings.TrimSpace(text), Expected: strings.TrimSpace(want), Answer: strings.TrimSpace(r.Text)}, nil
}

// loadExamples reads supervised data and packs it into rows; it also
// returns the held-out examples.
func loadExamples(spec Spec, load func(string) ([]dataset.Example, error), collection func() ([]dataset.Example, error)) (lora.Data, dataset.Stats, dataset.Stats, []dataset.Example, error) {
	var st, evSt dataset.Stats
	var train []dataset.Example
	if spec.Collection != "" {
		ex, err := collection()
		if err != nil {
			return lora.Data{}, st, evSt, nil, err
		}
		train = ex
	}
	if spec.Data != "" {
		ex, err := load(spec.Data)
		if err != nil {
			return lora.Data{}, st, evSt, nil, err
		}
		train = append(train, ex...)
	}
	var err error
	var evalEx []dataset.Example
	if spec.EvalData != "" {
		if evalEx, err = load(spec.EvalData); err != nil {
			return lora.Data{}, st, evSt, nil, err
		}
	} else {
		train, evalEx = dataset.Split(train, spec.EvalSplit)
	}
	data := lora.Data{Train: dataset.Pack(train, spec.Ctx, &st)}
	if len(evalEx) > 0 {
		data.Eval = dataset.Pack(evalEx, spec.Ctx, &evSt)
	}
	data.Stats = st
	return data, st, evSt, evalEx, nil
}

// loadPairs reads preference data and packs it into rows of pairs.
func loadPairs(spec Spec, tok dataset.Tokenizer, h Hooks) (lora.Data, dataset.Stats, dataset.Stats, error) {
	var st, evSt dataset.Stats
	load := func(path string) ([]dataset.Pair, error) {
		ps, warns, err := dataset.LoadPairs(path, tok, dataset.Options{Strict: spec.Strict})
		for _, w := range warns {
			if h.Warn != nil {
				h.Warn(w)
			}
		}
		return ps, err
	}
	train, err := load(spec.Data)
	if err != nil {
		return lora.Data{}, st, evSt, err
	}
	var evalP []dataset.Pair
	if spec.EvalData != "" {
		if evalP, err = load(spec.EvalData); err != nil {
			return lora.Data{}, st, evSt, err
		}
	} else {
		train, evalP = dataset.SplitPairs(train, spec.EvalSplit)
	}
	data := lora.Data{Train: dataset.PackPairs(train, spec.Ctx, &st)}
	if len(data.Train) == 0 {
		return lora.Data{}, st, evSt, fmt.Errorf("%s: no pair fits %d tokens with an answer on both sides", spec.Data, spec.Ctx)
	}
	if len(evalP) > 0 {
		data.Eval = dataset.PackPairs(evalP, spec.Ctx, &evSt)
	}
	data.Stats = st
	return data, st, evSt, nil
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
// to be converted, what was done ("F16 -> Q8_0"). Only the F16/BF16
// matrices are converted; quantized ones (whatever `llmrt quantize` left,
// Q5_0 and Q8_0 fallbacks included) are copied as they are.
func trainableBase(ctx context.Context, spec Spec, log *slog.Logger, status func(string)) (string, string, error) {
	f, err := gguf.Open(spec.BasePath)
	if err != nil {
		return "", "", err
	}
	half, names, to := quant.Half(f)
	if half == "" {
		return spec.BasePath, "", nil
	}
	// The copy is shared by the versions of an adapter (NAME@N trains on
	// NAME.base-q8_0.gguf): it depends on the base only.
	stem := strings.TrimSuffix(spec.Out, ".gguf")
	if name, n, err := versions.Parse(filepath.Base(stem)); err == nil && n > 0 {
		stem = filepath.Join(filepath.Dir(stem), name)
	}
	conv := stem + ".base-" + strings.ToLower(to.String()) + ".gguf"
	note := half + " -> " + to.String()
	reason := fmt.Sprintf("%d %s matrices, which have no backward pass in ggml", len(names), half)
	if to == gguf.TypeF32 {
		reason += " (F32, as not all their rows split into Q8_0 blocks of 32)"
	}
	if st, err := os.Stat(conv); err == nil && st.Size() > 0 {
		log.Info("training on a converted copy of the base", "base", spec.BasePath, "copy", conv, "conversion", note, "reason", reason)
		return conv, note, nil
	}
	log.Info("converting the base for training", "base", spec.BasePath, "copy", conv, "conversion", note, "reason", reason)
	status(fmt.Sprintf("converting the base %s for training (%s: %s) into %s", filepath.Base(spec.BasePath), note, reason, conv))
	if err := quant.TrainableCopy(ctx, spec.BasePath, conv); err != nil {
		return "", "", fmt.Errorf("convert %s to %s for training: %w", spec.BasePath, to, err)
	}
	return conv, note, nil
}

// TrainableBase is the file a base trains on: the base itself, or its
// converted copy beside spec.Out when its weights are F16/BF16.
func TrainableBase(ctx context.Context, spec Spec) (string, error) {
	p, _, err := trainableBase(ctx, spec, slog.Default(), func(string) {})
	return p, err
}
