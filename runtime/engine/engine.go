// Package engine runs a llama.cpp model for many concurrent requests.
//
// One Engine owns one model and one llama.cpp context with NParallel
// sequences. A single goroutine (the loop) drives the context: every step it
// admits waiting requests into free sequences, packs the next token of every
// generating sequence and a chunk of every prefilling prompt into one batch
// (continuous batching with chunked prefill), decodes, and samples each
// sequence with its own sampler chain. Requests receive their tokens through
// a Stream that buffers, so a slow reader never stalls the other sequences.
//
// Prompt-prefix cache: a finished sequence keeps its KV cells; a new request
// is placed in the free sequence whose cached tokens share the longest
// prefix with its prompt, and only the rest is computed. The cache is keyed
// by the adapter set as well as the tokens.
//
// Adapters: llama.cpp applies LoRA adapters to the whole context, so one
// of its decode steps runs one adapter set. For llama-family models the
// engine also has llmrt's own decoder (kernels.Decoder), whose steps give
// each sequence its own adapter: a request with one adapter runs there, and
// a request without one joins the decoder's steps while it has work, so
// requests for different adapters are batched together. Adapters are
// registered by name; their weights are read when a request needs them
// (off the loop) into one of MaxAdapters resident slots, the least recently
// used one without running sequences giving way. Requests the decoder
// cannot serve (several adapters at once, adapters of other weights, other
// architectures, or Options.GroupAdapters) run on llama.cpp's context,
// grouped by adapter set: the loop admits only requests of the active set
// while any sequence of that set is running, and switches sets when the
// running ones finish (requests for another set that have waited stop
// further admissions of the current set so they cannot starve). Switches
// are counted in Stats.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/chat"
)

// Options configure an Engine.
type Options struct {
	// Path is the GGUF model file.
	Path string
	// Model controls loading (GPU layers, mmap, progress).
	Model kernels.ModelParams
	// CtxPerSeq is the context length of one sequence (default: the
	// model's training context, capped at 4096).
	CtxPerSeq int
	// NParallel is the number of sequences decoded together (default 4).
	NParallel int
	// NBatch is the most tokens per decode step (default 512); prompts
	// longer than that are prefilled in chunks between decode steps.
	NBatch int
	// PrefillChunk caps the prompt tokens added to a step while other
	// sequences are generating (default NBatch/4, at least 64), so a long
	// prompt delays running streams by a chunk, not by the whole prompt.
	// With no sequence generating, prompts fill the whole batch.
	PrefillChunk int
	// Threads for decode and prompt processing (default: all cores).
	Threads int
	// QueueLen bounds the requests waiting for a sequence (default 64);
	// Submit returns ErrQueueFull beyond it.
	QueueLen int
	// Logger receives engine events (default: slog.Default()).
	Logger *slog.Logger
	// Name names the model in logs and memory bookings (default: the
	// file name of Path).
	Name string
	// MaxAdapters bounds the adapters whose weights are in memory at once
	// (default 8); registered adapters beyond it are read again from disk
	// when a request needs them.
	MaxAdapters int
	// GroupAdapters runs every request on llama.cpp's context, one adapter
	// set per step, instead of batching requests for different adapters
	// together in llmrt's decoder.
	GroupAdapters bool
	// Bookings, when set, books the memory the engine allocates after it
	// opened (the multi-adapter decoder, adapters loaded into llama.cpp)
	// in the memory scheduler's ledger.
	Bookings MemoryBooker
}

// MemoryBooker books memory in a ledger under a name (sched.Bookings
// satisfies it).
type MemoryBooker interface {
	SetMemory(name string, bytes int64)
	Forget(name string)
}

// WithDefaults fills the sizes that decide an engine's memory (sequences
// and batch) as Open does, so that a memory estimate made before Open
// sees the same numbers. The context length needs the model: see
// DefaultCtxPerSeq.
func (o Options) WithDefaults() Options {
	if o.NParallel <= 0 {
		o.NParallel = 4
	}
	if o.NBatch <= 0 {
		o.NBatch = 512
	}
	if o.MaxAdapters <= 0 {
		o.MaxAdapters = 8
	}
	return o
}

// ErrQueueFull is returned when QueueLen requests are already waiting.
var ErrQueueFull = errors.New("engine: request queue is full")

// ErrClosed is returned by calls on a closed engine.
var ErrClosed = errors.New("engine: closed")

// PromptTooLongError reports a prompt that does not fit one sequence.
type PromptTooLongError struct{ Tokens, Limit int }

func (e *PromptTooLongError) Error() string {
	return fmt.Sprintf("prompt is %d tokens, longer than the context of %d tokens", e.Tokens, e.Limit)
}

// Engine serves one model. Create it with Open; it is safe for concurrent use.
type Engine struct {
	opt   Options
	model *kernels.Model
	info  kernels.ModelInfo
	lctx  *kernels.Context
	batch *kernels.Batch
	log   *slog.Logger

	submit chan *Stream
	stop   chan struct{}
	done   chan struct{}
	closed atomic.Bool

	adaptersMu  sync.Mutex
	adapters    map[string]*adapterEntry // registered, by name
	entries     map[*adapterEntry]struct{}
	adapterSeq  uint64
	llamaLoadMu sync.Mutex // serialises loads into llama.cpp
	// decErr says why the model has no multi-adapter decoder (nil: it has).
	decErr error
	ds     decoderSide // the loop's
	loaded chan loadResult
	loads  sync.WaitGroup
	// noLoads: Close is waiting for the reads; none may start.
	noLoads bool
	kick    chan struct{}
	// Memory bookings (see bookMemory).
	booked   int64
	bookCh   chan int64
	bookDone chan struct{}

	tmplOnce sync.Once
	tmpl     *chat.Template

	embedMu  sync.Mutex
	embedCtx *kernels.Context
	embedB   *kernels.Batch
	// embedNet computes mean-pooled embeddings without the output head;
	// embedNetFailed records that the architecture cannot use it.
	embedNet       *kernels.Net
	embedNetFailed bool
	// rankCtx and rankB score query/document pairs (rank.go), under embedMu.
	rankCtx *kernels.Context
	rankB   *kernels.Batch

	stats statsCounters
}

// Open loads the model and starts the engine loop.
func Open(ctx context.Context, opt Options) (*Engine, error) {
	opt = opt.WithDefaults()
	if opt.PrefillChunk <= 0 {
		opt.PrefillChunk = max(64, opt.NBatch/4)
	}
	opt.PrefillChunk = min(opt.PrefillChunk, opt.NBatch)
	if opt.Threads <= 0 {
		opt.Threads = runtime.NumCPU()
	}
	if opt.QueueLen <= 0 {
		opt.QueueLen = 64
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	m, err := kernels.LoadModel(ctx, opt.Path, opt.Model)
	if err != nil {
		return nil, err
	}
	info := m.Info()
	if opt.CtxPerSeq <= 0 {
		opt.CtxPerSeq = DefaultCtxPerSeq(info.CtxTrain)
	}
	lctx, err := m.NewContext(kernels.ContextParams{
		NCtx:    opt.CtxPerSeq * opt.NParallel,
		NBatch:  opt.NBatch,
		NSeqMax: opt.NParallel,
		// One KV stream per sequence: a sequence attends over its own cells
		// only, not over every cached sequence of the unified buffer (prefix
		// reuse stays within a sequence, so nothing is shared across them).
		NoKVUnified: opt.NParallel > 1,
		Threads:     opt.Threads,
	})
	if err != nil {
		m.Close()
		return nil, err
	}
	b, err := kernels.NewBatch(opt.NBatch, 1)
	if err != nil {
		lctx.Close()
		m.Close()
		return nil, err
	}
	if opt.Name == "" {
		opt.Name = strings.TrimSuffix(filepath.Base(opt.Path), ".gguf")
	}
	e := &Engine{
		opt: opt, model: m, info: info, lctx: lctx, batch: b, log: opt.Logger,
		submit:   make(chan *Stream, opt.QueueLen),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		adapters: map[string]*adapterEntry{},
		entries:  map[*adapterEntry]struct{}{},
		decErr:   kernels.DecoderSupport(m),
		loaded:   make(chan loadResult, 4),
		kick:     make(chan struct{}, 1),
		bookCh:   make(chan int64, 1),
		bookDone: make(chan struct{}),
	}
	e.ds.hosts = map[*adapterEntry]struct{}{}
	e.ds.slots = make([]*slot, opt.NParallel)
	for i := range e.ds.slots {
		e.ds.slots[i] = &slot{id: i, pending: -1, dec: true}
	}
	if opt.Bookings != nil {
		go e.booker()
	} else {
		close(e.bookDone)
	}
	go e.loop()
	return e, nil
}

// DefaultCtxPerSeq is the context length of one sequence when none is
// asked for: the model's training context (0 when its GGUF names none),
// at most 4096, and 2048 without one.
func DefaultCtxPerSeq(ctxTrain int) int {
	if ctxTrain <= 0 {
		return 2048
	}
	return min(ctxTrain, 4096)
}

// Info returns the model's facts.
func (e *Engine) Info() kernels.ModelInfo { return e.info }

// Model returns the loaded model (for tokenization and templates).
func (e *Engine) Model() *kernels.Model { return e.model }

// Options returns the engine's effective options.
func (e *Engine) Options() Options { return e.opt }

// CtxPerSeq is the longest prompt + completion one request may have.
func (e *Engine) CtxPerSeq() int { return e.opt.CtxPerSeq }

// Tokenize converts text to tokens; addSpecial adds BOS as the model
// wants, parseSpecial maps special-token text to special tokens.
func (e *Engine) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	return e.model.Tokenize(text, addSpecial, parseSpecial)
}

// Close stops the loop, fails the waiting and running requests with
// ErrClosed, and frees the model.
func (e *Engine) Close() error {
	if !e.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(e.stop)
	<-e.done
	<-e.bookDone
	e.adaptersMu.Lock()
	e.noLoads = true // no read may start now that it is waited for
	e.adaptersMu.Unlock()
	e.loads.Wait()
	e.closeDecoder()
	e.adaptersMu.Lock()
	for ent := range e.ds.hosts {
		e.dropHostLocked(ent)
	}
	e.adaptersMu.Unlock()
	e.embedMu.Lock()
	if e.embedNet != nil {
		e.embedNet.Close()
		e.embedNet = nil
	}
	if e.embedCtx != nil {
		e.embedCtx.Close()
		e.embedB.Close()
		e.embedCtx, e.embedB = nil, nil
	}
	if e.rankCtx != nil {
		e.rankCtx.Close()
		e.rankB.Close()
		e.rankCtx, e.rankB = nil, nil
	}
	e.embedMu.Unlock()
	e.batch.Close()
	e.lctx.Close()
	return e.model.Close()
}

// AdapterRef names a loaded adapter and its scale (0 means 1).
type AdapterRef struct {
	Name  string
	Scale float32
}

// Request is one generation.
type Request struct {
	// Prompt is the tokenized prompt (at least one token).
	Prompt []int32
	// MaxTokens bounds the completion (0: until the sequence's context is
	// full).
	MaxTokens int
	// Sampling configures the sampler chain (zero value: greedy).
	Sampling kernels.SamplerParams
	// Stop strings end the completion; they are not included in the text.
	Stop []string
	// Adapters applied for this request.
	Adapters []AdapterRef
	// TopLogprobs > 0 returns that many alternatives per token; Logprobs
	// returns the chosen token's log-probability.
	Logprobs    bool
	TopLogprobs int
	// IgnoreEOS keeps generating past end-of-generation tokens.
	IgnoreEOS bool
	// WakeInterval > 0 wakes the stream's reader at most once per interval
	// while tokens keep coming, instead of once per token: a chunk that
	// comes sooner waits, merged with the ones after it, until the first
	// token at least the interval after the last wake-up, and Next hands
	// chunks out only at those wake-ups, even to a reader that comes back
	// sooner. The first chunk and the end wake the reader at once. Readers
	// that pass text on in bursts anyway (the server flushes a stream at
	// most once per interval) lose nothing by it, and each wake-up saved
	// leaves the cores to llama.cpp's workers.
	WakeInterval time.Duration
}

// Submit queues a request and returns its stream. Cancelling ctx ends the
// request and frees its sequence at the next step.
func (e *Engine) Submit(ctx context.Context, req Request) (*Stream, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	if len(req.Prompt) == 0 {
		return nil, errors.New("engine: empty prompt")
	}
	if len(req.Prompt) >= e.opt.CtxPerSeq {
		return nil, &PromptTooLongError{Tokens: len(req.Prompt), Limit: e.opt.CtxPerSeq}
	}
	if err := e.model.CheckTokens(req.Prompt); err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	if req.Sampling.Grammar != "" {
		// Past the grammar's end only end-of-generation is allowed;
		// llama.cpp aborts if a token is accepted there.
		req.IgnoreEOS = false
	}
	smp, err := e.model.NewSampler(req.Sampling)
	if err != nil {
		return nil, err
	}
	ents, set, key, path, err := e.acquireAdapters(req.Adapters)
	if err != nil {
		smp.Close()
		return nil, err
	}
	s := newStream(ctx, req, smp, set, key)
	s.path = path
	if path == pathDecoder {
		s.ad, s.scale = ents[0], scaleOf(req.Adapters[0])
	}
	s.onClose = func() { e.releaseEntries(ents) }
	select {
	case e.submit <- s:
		e.stats.queued.Add(1)
		return s, nil
	default:
		s.finishEarly()
		return nil, ErrQueueFull
	}
}

// Generate is Submit followed by collecting the whole completion.
func (e *Engine) Generate(ctx context.Context, req Request) (Result, error) {
	s, err := e.Submit(ctx, req)
	if err != nil {
		return Result{}, err
	}
	return s.Collect(ctx)
}

// Stats is a snapshot of the engine's counters.
type Stats struct {
	Active          int     `json:"active_sequences"`
	Queued          int     `json:"queued_requests"`
	KVCellsUsed     int     `json:"kv_cells_used"`
	KVCells         int     `json:"kv_cells"`
	PromptTokens    int64   `json:"prompt_tokens_total"`
	CachedTokens    int64   `json:"prompt_tokens_cached_total"`
	GeneratedTokens int64   `json:"generated_tokens_total"`
	Requests        int64   `json:"requests_total"`
	AdapterSwitches int64   `json:"adapter_switches_total"`
	SequenceMoves   int64   `json:"sequence_moves_total"`
	DecodeSteps     int64   `json:"decode_steps_total"`
	DecodeSeconds   float64 `json:"decode_seconds_total"`
	// ResidentAdapters have their weights in memory; AdapterLoads counts
	// reads of adapter weights into memory.
	ResidentAdapters int   `json:"resident_adapters"`
	AdapterLoads     int64 `json:"adapter_loads_total"`
	// StepAdapters[k] counts decode steps that ran k distinct adapters
	// (an adapter set counts as one on llama.cpp's context).
	StepAdapters []int64 `json:"step_adapters"`
	// The multi-adapter decoder's memory: its KV cache, its resident
	// adapter slots and its compute buffers (0 until it is first needed).
	DecoderKVBytes      int64 `json:"decoder_kv_bytes"`
	DecoderAdapterBytes int64 `json:"decoder_adapter_bytes"`
	DecoderComputeBytes int64 `json:"decoder_compute_bytes"`
}

type statsCounters struct {
	active, queued, kvUsed                        atomic.Int64
	prompt, cached, generated, requests, switches atomic.Int64
	steps, moves                                  atomic.Int64
	decodeNanos                                   atomic.Int64
	adapterLoads, decResident, hostCopies         atomic.Int64
	decKV, decLoRA, decCompute                    atomic.Int64
	stepAdapters                                  [maxStepAdapters + 1]atomic.Int64
}

// maxStepAdapters is the largest distinct-adapter count Stats tells apart
// (larger counts are counted as it).
const maxStepAdapters = 64

func (c *statsCounters) countStep(adapters int) {
	c.stepAdapters[min(adapters, maxStepAdapters)].Add(1)
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	c := &e.stats
	st := Stats{
		Active: int(c.active.Load()), Queued: int(c.queued.Load()),
		KVCellsUsed: int(c.kvUsed.Load()), KVCells: e.opt.CtxPerSeq * e.opt.NParallel,
		PromptTokens: c.prompt.Load(), CachedTokens: c.cached.Load(), GeneratedTokens: c.generated.Load(),
		Requests: c.requests.Load(), AdapterSwitches: c.switches.Load(), SequenceMoves: c.moves.Load(),
		DecodeSteps: c.steps.Load(), DecodeSeconds: time.Duration(c.decodeNanos.Load()).Seconds(),
		ResidentAdapters: e.residentAdapters(), AdapterLoads: c.adapterLoads.Load(),
		DecoderKVBytes: c.decKV.Load(), DecoderAdapterBytes: c.decLoRA.Load(), DecoderComputeBytes: c.decCompute.Load(),
	}
	last := 0
	for k := range c.stepAdapters {
		if c.stepAdapters[k].Load() > 0 {
			last = k
		}
	}
	st.StepAdapters = make([]int64, last+1)
	for k := range st.StepAdapters {
		st.StepAdapters[k] = c.stepAdapters[k].Load()
	}
	return st
}

// Memory is what llama.cpp allocated for the serving context (weights, KV
// cache, compute buffers), by its own accounting.
func (e *Engine) Memory() (kernels.Memory, error) { return e.lctx.Memory() }

// MemoryByBuffer is Memory per buffer type ("CPU", "CUDA0", "SIM1", ...):
// which device llama.cpp put each part on, to check a placement against.
func (e *Engine) MemoryByBuffer() (map[string]kernels.Memory, error) { return e.lctx.MemoryByBuffer() }
