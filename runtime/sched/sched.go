// Package sched is llmrt's GPU memory scheduler. It keeps one ledger per
// device (each GPU, found through NVML and matched to ggml's backend devices,
// and the host's RAM), and every consumer reserves memory before it
// allocates: a model's weights, KV cache and compute buffers (placed by the
// scheduler layer by layer across the GPUs and the CPU), LoRA training jobs,
// index vectors.
//
// A request that does not fit waits in a FIFO queue while idle models are
// evicted least-recently-used (pinned models, models in use and models within
// their keep-alive are spared); it fails after a bounded wait with a FitError
// that explains who holds the memory, and at once when it could never fit.
// Every decision is logged and visible in Snapshot.
//
// Estimates follow llama.cpp at the pinned commit: weights from the GGUF
// tensor sizes, KV cache = cells x layers x (K row + V row), and the compute
// buffer from a replay of llama.cpp's worst-case graph reservation; the
// engine reports what llama.cpp really allocated through RecordActual, which
// learns a per-model correction.
package sched

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Config configures a Scheduler. The zero value discovers NVIDIA GPUs
// through the system's NVML and budgets host RAM from /proc/meminfo.
type Config struct {
	// NVML is the management library (nil: the system's, nvml.New()).
	// When Init fails, the scheduler runs without NVML.
	NVML NVML
	// NoNVML skips NVML entirely.
	NoNVML bool
	// Backends are ggml's devices (from the kernels binding). GPUs are
	// ordered as ggml orders them, which is the order of llama.cpp's
	// tensor split. Nil means unknown: NVML's order is used.
	Backends []BackendDevice
	// Safety margin kept free on every device: the larger of MarginBytes
	// (default 512 MiB) and MarginFraction of the device's total (default
	// 0.05). Negative values disable a term.
	MarginBytes    int64
	MarginFraction float64
	// CPULimit is the host RAM budget; 0: MemAvailable minus the margin.
	CPULimit int64
	// GPULimit caps every GPU's budget (0: no cap): to leave part of a GPU
	// to other programs, or to test memory pressure on a large GPU.
	GPULimit int64
	// MeminfoPath is read for host memory (default /proc/meminfo).
	MeminfoPath string
	// MaxWait bounds how long a request waits in the queue (default 2
	// minutes); a shorter context deadline wins.
	MaxWait time.Duration
	// EvictTimeout bounds one Evict callback (default 1 minute).
	EvictTimeout time.Duration
	// LogSize is the number of decisions kept for Snapshot (default 200).
	LogSize int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives decisions and detected bugs (default slog.Default()).
	Logger *slog.Logger
	// OnChange, if set, is called after every change of a ledger, with the
	// scheduler's lock held (it must not call back into the Scheduler).
	OnChange func([]LedgerState)
}

// LedgerState is one device's ledger, for Config.OnChange.
type LedgerState struct {
	Device   string
	Budget   int64
	Reserved int64
}

const (
	defaultMargin = 512 << 20
	defaultFrac   = 0.05
)

func (c Config) margin(total int64) int64 {
	b, f := c.MarginBytes, c.MarginFraction
	if b == 0 {
		b = defaultMargin
	}
	if f == 0 {
		f = defaultFrac
	}
	return max(0, b, int64(f*float64(total)))
}

// gpuBudget is a GPU's budget: total - used by others - margin, capped at
// GPULimit.
func (c Config) gpuBudget(d Device) int64 {
	b := max(0, d.Total-d.UsedByOthers-d.Margin)
	if c.GPULimit > 0 {
		b = min(b, c.GPULimit)
	}
	return b
}

func (c Config) meminfoPath() string {
	if c.MeminfoPath != "" {
		return c.MeminfoPath
	}
	return "/proc/meminfo"
}

// Errors that FitError and Release wrap.
var (
	ErrNeverFits     = errors.New("request can never fit")
	ErrWaitTimeout   = errors.New("no room before the wait ended")
	ErrClosed        = errors.New("scheduler closed")
	ErrDoubleRelease = errors.New("reservation released twice")
	ErrEvicting      = errors.New("reservation is being evicted")
	ErrReleased      = errors.New("reservation already released")
)

// Scheduler hands out memory reservations on a machine's devices.
type Scheduler struct {
	cfg      Config
	nv       NVML
	source   string
	warnings []string
	notes    []string

	mu      sync.Mutex
	ledgers []*ledger // GPUs in ggml order, then the CPU
	byID    map[string]*ledger
	active  map[uint64]*Reservation
	nextID  uint64
	queue   []*waiter
	log     []Decision
	factors map[string]Factors
	stats   Stats
	closed  bool
	timer   *time.Timer

	kick        chan struct{}
	done        chan struct{}
	loopDone    chan struct{}
	evictCtx    context.Context
	evictCancel context.CancelFunc
}

// Stats count what the scheduler did.
type Stats struct {
	Granted        int64 `json:"granted"`
	Released       int64 `json:"released"`
	DoubleReleases int64 `json:"double_releases"`
	Queued         int64 `json:"queued"`
	Evictions      int64 `json:"evictions"`
	EvictFailures  int64 `json:"evict_failures"`
	Refused        int64 `json:"refused"`
	TimedOut       int64 `json:"timed_out"`
}

// New discovers the devices and starts the scheduler. Close it when done.
func New(cfg Config) (*Scheduler, error) {
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 2 * time.Minute
	}
	if cfg.EvictTimeout <= 0 {
		cfg.EvictTimeout = time.Minute
	}
	if cfg.LogSize <= 0 {
		cfg.LogSize = 200
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d, err := discover(cfg)
	if err != nil {
		return nil, fmt.Errorf("gpu scheduler: %w", err)
	}
	s := &Scheduler{
		cfg: cfg, nv: d.nv, source: d.source, warnings: d.warnings, notes: d.notes,
		byID: map[string]*ledger{}, active: map[uint64]*Reservation{}, factors: map[string]Factors{},
		kick: make(chan struct{}, 1), done: make(chan struct{}), loopDone: make(chan struct{}),
	}
	s.evictCtx, s.evictCancel = context.WithCancel(context.Background())
	for i := range d.devices {
		l := &ledger{Device: d.devices[i]}
		s.ledgers = append(s.ledgers, l)
		s.byID[l.ID] = l
	}
	// A GPU that only NVML or only ggml sees is never ignored silently:
	// the log, the decisions and the snapshot all say what became of it.
	for _, n := range d.notes {
		s.decideLocked(Decision{Action: "discovery", Reason: n})
		cfg.Logger.Info("gpu scheduler: " + n)
	}
	for _, w := range d.warnings {
		s.decideLocked(Decision{Action: "discovery", Reason: w})
	}
	for _, w := range d.unused { // other warnings (no NVML on this machine) are routine
		cfg.Logger.Warn("gpu scheduler: " + w)
	}
	for _, l := range s.ledgers {
		s.decideLocked(Decision{Action: "discovery", Reason: fmt.Sprintf("%s %s (%s): total %s, used by others %s, margin %s, budget %s",
			l.ID, l.Name, l.Source, FormatBytes(l.Total), FormatBytes(l.UsedByOthers), FormatBytes(l.Margin), FormatBytes(l.Budget))})
	}
	go s.loop()
	return s, nil
}

// Close fails every queued request with ErrClosed, stops evictions in
// progress and shuts NVML down. Reservations still held may be released
// afterwards.
func (s *Scheduler) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, w := range s.queue {
		w.finish(nil, fmt.Errorf("wait for %s: %w", w.req.Owner, ErrClosed))
	}
	s.queue = nil
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
	s.evictCancel()
	close(s.done)
	<-s.loopDone
	if s.nv != nil {
		return shutdownNVML(s.nv)
	}
	return nil
}

// Devices returns the devices with their current budgets.
func (s *Scheduler) Devices() []Device {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Device, len(s.ledgers))
	for i, l := range s.ledgers {
		out[i] = l.Device
	}
	return out
}

// Estimate returns the memory model f needs with context c, with the
// correction learned for key (see RecordActual; "" = f.Name).
func (s *Scheduler) Estimate(key string, f ModelFacts, c ContextParams) (Estimate, error) {
	e, err := EstimateModel(f, c)
	if err != nil {
		return Estimate{}, err
	}
	if key == "" {
		key = f.Name
	}
	s.mu.Lock()
	k, ok := s.factors[key]
	s.mu.Unlock()
	if ok {
		e, _ = e.scaled(f, k)
	}
	return e, nil
}

// RecordActual tells the scheduler what llama.cpp really allocated for a
// model (summed over devices) against what was estimated (Reservation's
// Estimated), and learns a per-kind factor for the model's next placement.
func (s *Scheduler) RecordActual(modelKey string, estimated, actual Breakdown) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.factors[modelKey]
	if !ok {
		k = unitFactors()
	}
	learn := func(old float64, est, act int64) float64 {
		if est <= 0 || act <= 0 {
			return old
		}
		return min(4, max(0.25, old*float64(act)/float64(est)))
	}
	k.Weights = learn(k.Weights, estimated.Weights, actual.Weights)
	k.KV = learn(k.KV, estimated.KV, actual.KV)
	k.Compute = learn(k.Compute, estimated.Compute, actual.Compute)
	s.factors[modelKey] = k
	s.decideLocked(Decision{Action: "learned", Owner: Owner{Kind: "model", ID: modelKey}, Reason: fmt.Sprintf(
		"estimated %s, llama.cpp allocated %s: factors weights %.3f, KV %.3f, compute %.3f",
		estimated, actual, k.Weights, k.KV, k.Compute)})
}

// Refresh measures the devices again (NVML, /proc/meminfo) and updates the
// budgets: other processes may have grown or shrunk. A budget that falls
// below what is reserved is logged; nothing is revoked.
func (s *Scheduler) Refresh() error {
	var readings = map[int]gpuReading{}
	var errs []error
	if s.nv != nil {
		for _, d := range s.Devices() {
			if d.nvmlIndex < 0 {
				continue
			}
			r, err := readNVMLDevice(s.nv, d.nvmlIndex, selfPID())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			readings[d.nvmlIndex] = r
		}
	}
	var memTotal, memAvail int64
	var memErr error
	if s.cfg.CPULimit <= 0 {
		memTotal, memAvail, memErr = readMeminfo(s.cfg.meminfoPath())
		if memErr != nil {
			errs = append(errs, memErr)
		}
	}
	s.mu.Lock()
	for _, l := range s.ledgers {
		switch {
		case l.Kind == "gpu" && l.nvmlIndex >= 0:
			r, ok := readings[l.nvmlIndex]
			if !ok {
				continue
			}
			l.Free, l.Processes, l.UtilizationGPU, l.UtilizationMem = r.free, r.procs, r.utilGPU, r.utilMem
			l.UsedByOthers = r.others
			if !r.procsKnown { // cannot tell ours from theirs: assume our reservations are allocated
				l.UsedByOthers = max(0, r.others-l.reserved)
			}
			l.Budget = s.cfg.gpuBudget(l.Device)
		case l.Kind == "cpu" && s.cfg.CPULimit <= 0 && memErr == nil:
			l.Total, l.Free = memTotal, memAvail
			l.UsedByOthers = max(0, memTotal-memAvail-l.reserved)
			l.Budget = max(0, memTotal-l.UsedByOthers-l.Margin)
		}
		if l.reserved > l.Budget {
			s.decideLocked(Decision{Action: "over-budget", Reason: fmt.Sprintf("%s: %s reserved but the budget is now %s (other processes use %s)",
				l.ID, FormatBytes(l.reserved), FormatBytes(l.Budget), FormatBytes(l.UsedByOthers))})
		}
	}
	s.changedLocked()
	s.mu.Unlock()
	s.poke()
	return errors.Join(errs...)
}

// loop serves the queue: it runs in its own goroutine so that Release never
// waits for an eviction.
func (s *Scheduler) loop() {
	defer close(s.loopDone)
	for {
		select {
		case <-s.kick:
			s.pump()
		case <-s.done:
			return
		}
	}
}

func (s *Scheduler) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// pump grants what fits from the head of the queue and evicts for it.
func (s *Scheduler) pump() {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		victims := s.serveLocked()
		s.mu.Unlock()
		if len(victims) == 0 {
			return
		}
		s.evict(victims)
	}
}

func (s *Scheduler) now() time.Time { return s.cfg.Now() }

// changedLocked runs the invariant hook.
func (s *Scheduler) changedLocked() {
	if s.cfg.OnChange == nil {
		return
	}
	st := make([]LedgerState, len(s.ledgers))
	for i, l := range s.ledgers {
		st[i] = LedgerState{Device: l.ID, Budget: l.Budget, Reserved: l.reserved}
	}
	s.cfg.OnChange(st)
}
