// Package registry keeps the models a server runs: it resolves model ids
// (a base, BASE+ADAPTER, a registered adapter's name), loads a model on
// first use under a memory-scheduler reservation, leases it to requests,
// unloads it after its keep-alive or when the scheduler evicts it, and
// registers LoRA adapters from the folders it allows. It knows nothing of
// HTTP: the server, collections, fine-tuning and evaluations all lease
// models through it.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/names"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/sched"
)

// ModelResolver maps a base model name to its GGUF file; the model store
// satisfies it.
type ModelResolver interface {
	Resolve(name string) (string, error)
}

// ModelLister lists the names a resolver knows (for /v1/models).
type ModelLister interface {
	Names() ([]string, error)
}

// RegistryConfig configures a Registry.
type RegistryConfig struct {
	Resolver ModelResolver
	// Engine is the template for every engine (Path is set per model).
	Engine engine.Options
	// KeepAlive unloads a model idle that long (< 0: never; 0: right after
	// its last request).
	KeepAlive time.Duration
	// AdapterDir holds adapters usable as BASE+NAME (NAME.gguf). Adapters
	// registered with AddAdapter must live in it or in AdapterRoots.
	AdapterDir string
	// AdapterRoots are further folders AddAdapter may take adapters from.
	AdapterRoots []string
	Logger       *slog.Logger
	// Open loads an engine (default engine.Open); tests may wrap it.
	Open func(ctx context.Context, opt engine.Options) (*engine.Engine, error)
	// Sched, when set, reserves every model's memory before it loads:
	// its placement decides the GPU layers, a model that does not fit
	// waits (idle models are evicted least recently used), and one that
	// can never fit fails at once with what it would need.
	Sched *sched.Scheduler
}

// Registry resolves model ids, loads models on first use, unloads idle ones
// after their keep-alive, and tracks adapters.
//
// Model ids: a base model ("stories260K"), a base with an adapter
// ("stories260K+my-adapter"), or an adapter's alias ("my-adapter" or
// "ft:stories260K:suffix") registered with AddAdapter.
type Registry struct {
	cfg  RegistryConfig
	mu   sync.Mutex
	cond *sync.Cond
	// models by base name
	models   map[string]*modelEntry
	adapters map[string]AdapterInfo // alias -> adapter
	closed   bool
	stop     chan struct{}
	done     chan struct{}
}

// AdapterInfo describes a registered adapter.
type AdapterInfo struct {
	Name    string    `json:"name"`
	Base    string    `json:"base"`
	Path    string    `json:"path"`
	Scale   float32   `json:"scale"`
	Created time.Time `json:"created"`
}

type modelEntry struct {
	name     string
	path     string
	e        *engine.Engine
	loading  bool
	err      error
	refs     int
	lastUsed time.Time
	pinned   bool
	loadedAt time.Time
	res      *sched.Reservation // nil without a scheduler
	// keepAlive, when set, overrides the registry's KeepAlive for this
	// model (SetKeepAlive).
	keepAlive *time.Duration
	// memory is llama.cpp's allocation by buffer type, read once at load.
	memory map[string]kernels.Memory
}

// keepAliveLocked is how long the model stays loaded when idle (< 0: never).
func (me *modelEntry) keepAliveLocked(def time.Duration) time.Duration {
	switch {
	case me.pinned:
		return -1
	case me.keepAlive != nil:
		return *me.keepAlive
	}
	return def
}

// NewRegistry starts a registry and its keep-alive janitor.
func NewRegistry(cfg RegistryConfig) *Registry {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Open == nil {
		cfg.Open = engine.Open
	}
	r := &Registry{cfg: cfg, models: map[string]*modelEntry{}, adapters: map[string]AdapterInfo{}, stop: make(chan struct{}), done: make(chan struct{})}
	r.cond = sync.NewCond(&r.mu)
	go r.janitor()
	return r
}

// Lease is a model in use by one request. Release it when done.
type Lease struct {
	ID       string // the model id as requested
	Base     string
	Engine   *engine.Engine
	Adapters []engine.AdapterRef
	release  func()
	once     sync.Once
}

// Release returns the model to the registry.
func (l *Lease) Release() { l.once.Do(l.release) }

// ErrUnknownModel wraps a model id that resolves to nothing.
type ErrUnknownModel struct {
	ID  string
	Err error
}

func (e *ErrUnknownModel) Error() string {
	return fmt.Sprintf("model %q not found: %v", e.ID, e.Err)
}

func (e *ErrUnknownModel) Unwrap() error { return e.Err }

// ParseID splits a model id into its base and adapter parts (the grammar
// is models/names'): a registered adapter's name, a base the resolver
// knows, BASE+ADAPTER with ADAPTER registered or in the adapters folder,
// or ft:BASE:SUFFIX.
func (r *Registry) ParseID(id string) (base string, ad *AdapterInfo, err error) {
	r.mu.Lock()
	a, ok := r.adapters[id]
	r.mu.Unlock()
	if ok {
		return a.Base, &a, nil
	}
	base, name, split := names.SplitAdapter(id)
	if !split {
		return id, nil, nil
	}
	if _, err := r.cfg.Resolver.Resolve(id); err == nil {
		return id, nil, nil // a base whose own name has a '+'
	}
	r.mu.Lock()
	a, ok = r.adapters[name]
	r.mu.Unlock()
	if ok {
		if a.Base != base {
			return "", nil, &ErrUnknownModel{ID: id, Err: fmt.Errorf("adapter %q was trained for %q, not %q", name, a.Base, base)}
		}
		return base, &a, nil
	}
	if fa, err := names.AdapterDir(r.cfg.AdapterDir).Lookup(name); err == nil {
		// fa.Name is the version NAME resolved to (NAME@k when NAME is
		// versioned): engines load it under that name, so a promotion
		// switches requests over at once, without a restart.
		return base, &AdapterInfo{Name: fa.Name, Base: base, Path: fa.Path, Scale: 1, Created: fa.Modified}, nil
	}
	return "", nil, &ErrUnknownModel{ID: id, Err: fmt.Errorf("no adapter named %q", name)}
}

// validName admits any file name, as models are the user's own files (rag.CheckName is strict: llmrt makes those names).
func validName(s string) bool { return names.Valid(s) }

// Names lists the base models the resolver knows (nil when it cannot
// list them).
func (r *Registry) Names() ([]string, error) {
	if l, ok := r.cfg.Resolver.(ModelLister); ok {
		return l.Names()
	}
	return nil, nil
}

// ModelInfo is a base model the resolver knows.
type ModelInfo struct {
	Name     string
	Path     string
	Modified time.Time // the file's modification time
}

// Models lists the base models the resolver knows, with their files.
func (r *Registry) Models() ([]ModelInfo, error) {
	list, err := r.Names()
	out := make([]ModelInfo, 0, len(list))
	for _, n := range list {
		m := ModelInfo{Name: n}
		if p, err := r.cfg.Resolver.Resolve(n); err == nil {
			m.Path = p
			if st, err := os.Stat(p); err == nil {
				m.Modified = st.ModTime()
			}
		}
		out = append(out, m)
	}
	return out, err
}

// FolderAdapters lists the adapters of the adapters folder that record
// their base, as the AdapterInfo of their BASE+NAME id (Name is NAME).
func (r *Registry) FolderAdapters() ([]AdapterInfo, error) {
	list, err := names.AdapterDir(r.cfg.AdapterDir).List()
	var out []AdapterInfo
	for _, a := range list {
		if a.Base != "" {
			out = append(out, AdapterInfo{Name: a.Name, Base: a.Base, Path: a.Path, Scale: 1, Created: a.Modified})
		}
	}
	return out, err
}

// Scheduler is the memory scheduler the registry books with (nil: none).
func (r *Registry) Scheduler() *sched.Scheduler { return r.cfg.Sched }

// AdapterDir is the folder BASE+NAME adapters are read from.
func (r *Registry) AdapterDir() string { return r.cfg.AdapterDir }

// Acquire resolves id, loads its model if needed (waiting for a load in
// progress), attaches its adapter, and leases it to the caller.
func (r *Registry) Acquire(ctx context.Context, id string) (*Lease, error) {
	base, ad, err := r.ParseID(id)
	if err != nil {
		return nil, err
	}
	if !validName(base) {
		return nil, &ErrUnknownModel{ID: id, Err: errors.New("invalid model name")}
	}
	path, err := r.cfg.Resolver.Resolve(base)
	if err != nil {
		return nil, &ErrUnknownModel{ID: id, Err: err}
	}
	r.mu.Lock()
	for {
		if r.closed {
			r.mu.Unlock()
			return nil, engine.ErrClosed
		}
		me := r.models[base]
		if me == nil {
			me = &modelEntry{name: base, path: path, loading: true}
			r.models[base] = me
			r.mu.Unlock()
			e, res, err := r.load(ctx, base, path)
			var mem map[string]kernels.Memory
			if err == nil {
				mem, _ = e.MemoryByBuffer()
			}
			r.mu.Lock()
			me.loading = false
			if err != nil {
				delete(r.models, base)
				r.cond.Broadcast()
				r.mu.Unlock()
				return nil, err
			}
			me.e, me.res, me.memory = e, res, mem
			me.loadedAt = time.Now()
			r.cond.Broadcast()
			continue
		}
		if me.loading {
			if err := r.waitLocked(ctx); err != nil {
				r.mu.Unlock()
				return nil, err
			}
			continue
		}
		var busyDone func()
		if me.res != nil {
			done, err := me.res.Use()
			if err != nil {
				// Being evicted: wait for it to go, then load again.
				if err := r.waitLocked(ctx); err != nil {
					r.mu.Unlock()
					return nil, err
				}
				continue
			}
			busyDone = done
		}
		me.refs++
		me.lastUsed = time.Now()
		e := me.e
		r.mu.Unlock()
		lease := &Lease{ID: id, Base: base, Engine: e}
		lease.release = func() {
			r.mu.Lock()
			me.refs--
			me.lastUsed = time.Now()
			ka := me.keepAliveLocked(r.cfg.KeepAlive)
			r.mu.Unlock()
			// Only now tell the scheduler: it may evict the model at once,
			// which needs the request count at zero.
			if busyDone != nil {
				busyDone()
			}
			if ka == 0 {
				r.sweep()
			}
		}
		if ad != nil {
			if err := r.attach(e, *ad); err != nil {
				lease.Release()
				return nil, err
			}
			lease.Adapters = []engine.AdapterRef{{Name: ad.Name, Scale: ad.Scale}}
		}
		return lease, nil
	}
}

// waitLocked waits on the condition variable until woken or ctx ends.
func (r *Registry) waitLocked(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer stop()
	r.cond.Wait()
	return ctx.Err()
}

func (r *Registry) load(ctx context.Context, base, path string) (*engine.Engine, *sched.Reservation, error) {
	opt := r.cfg.Engine
	opt.Path = path
	opt.Name = base
	opt.Logger = r.cfg.Logger
	var res *sched.Reservation
	if r.cfg.Sched != nil {
		var err error
		res, err = r.reserve(ctx, base, path, &opt)
		if err != nil {
			return nil, nil, err
		}
		// The adapter memory the engine allocates later (the multi-adapter
		// decoder, adapters loaded into llama.cpp) is booked beside the
		// model's reservation, on the device that holds most of its layers.
		opt.Bookings = r.cfg.Sched.NewBookings(sched.KindAdapters, "model", mainDevice(res), "adapter serving of ", r.cfg.Logger)
	}
	start := time.Now()
	r.cfg.Logger.Info("loading model", "model", base, "path", path, "gpu_layers", opt.Model.GPULayers)
	e, err := r.cfg.Open(ctx, opt)
	if err != nil {
		if res != nil {
			res.Release()
		}
		r.cfg.Logger.Error("model load failed", "model", base, "err", err)
		return nil, nil, fmt.Errorf("load model %s: %w", base, err)
	}
	r.cfg.Logger.Info("model loaded", "model", base, "seconds", math.Round(time.Since(start).Seconds()*100)/100,
		"parallel", e.Options().NParallel, "ctx_per_seq", e.CtxPerSeq())
	// Check the estimate against what llama.cpp allocated; the scheduler
	// learns the ratio for this model's next placement.
	if res != nil {
		if m, err := e.Memory(); err == nil && m.Total() > 0 {
			est := res.Estimated()
			actual := sched.Breakdown{Weights: m.Weights, KV: m.KV, Compute: m.Compute}
			r.cfg.Sched.RecordActual(base, est, actual)
			r.cfg.Logger.Info("memory estimate checked", "model", base, "estimated_bytes", est.Total(), "allocated_bytes", actual.Total(),
				"error_percent", math.Round(1000*float64(est.Total()-actual.Total())/float64(actual.Total()))/10)
		}
	}
	return e, res, nil
}

// reserve asks the scheduler for the model's memory (weights, KV cache for
// every sequence, compute buffers) and applies the granted placement.
func (r *Registry) reserve(ctx context.Context, base, path string, opt *engine.Options) (*sched.Reservation, error) {
	facts, err := Facts(base, path)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", base, err)
	}
	// Fix the context length now so the estimate and the engine agree.
	if opt.CtxPerSeq <= 0 {
		opt.CtxPerSeq = engine.DefaultCtxPerSeq(facts.NCtxTrain)
	}
	*opt = opt.WithDefaults()
	res, err := r.cfg.Sched.Acquire(ctx, sched.Request{
		Owner:     sched.Owner{Kind: "model", ID: base},
		Reason:    "serve " + base,
		Model:     &facts,
		Context:   sched.ContextParams{NCtx: opt.CtxPerSeq * opt.NParallel, NBatch: opt.NBatch, NSeq: opt.NParallel, KVPerSeq: opt.NParallel > 1},
		Evict:     func(ctx context.Context) error { return r.Unload(base) },
		KeepAlive: max(r.cfg.KeepAlive, 0),
	})
	if err != nil {
		return nil, err
	}
	if p, ok := res.Placement(); ok {
		opt.Model.GPULayers = p.NGPULayers
		opt.Model.TensorSplit = p.TensorSplit
		opt.Model.MainGPU = p.MainGPU
	}
	return res, nil
}

// mainDevice is the device holding most of a model's layers ("cpu" when
// it is not placed on a GPU).
func mainDevice(res *sched.Reservation) string {
	dev, most := "cpu", 0
	if p, ok := res.Placement(); ok {
		for _, d := range p.PerDevice {
			if d.Layers > most {
				dev, most = d.Device, d.Layers
			}
		}
	}
	return dev
}

// Facts reads what the scheduler's estimates need from the GGUF file at
// path (tensor sizes by layer, attention shape), naming the model name.
func Facts(name, path string) (sched.ModelFacts, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return sched.ModelFacts{}, err
	}
	sizes := make([]sched.TensorSize, len(f.Tensors))
	for i, t := range f.Tensors {
		sizes[i] = sched.TensorSize{Name: t.Name, Dims: t.Dims, Bytes: t.Size()}
	}
	return sched.FactsFromMetadata(name, f.Architecture(), f.Uint, sizes)
}

// attach loads the adapter into the engine unless it already holds it.
func (r *Registry) attach(e *engine.Engine, ad AdapterInfo) error {
	for _, n := range e.Adapters() {
		if n == ad.Name {
			return nil
		}
	}
	err := e.LoadAdapter(ad.Name, ad.Path)
	if err != nil && strings.Contains(err.Error(), "already loaded") {
		return nil // a concurrent request loaded it
	}
	if err != nil {
		return fmt.Errorf("adapter %s: %w", ad.Name, err)
	}
	return nil
}

// AddAdapter registers an adapter under name for base. It is loaded into
// the base's engine on first use. The file must be in the adapters folder
// (a relative path is taken from there) or in one of AdapterRoots, and be
// a GGUF LoRA adapter for the base's architecture.
func (r *Registry) AddAdapter(a AdapterInfo) error {
	if !validName(a.Name) || strings.Contains(a.Name, "+") {
		return fmt.Errorf("invalid adapter name %q", a.Name)
	}
	basePath, err := r.cfg.Resolver.Resolve(a.Base)
	if err != nil {
		return &ErrUnknownModel{ID: a.Base, Err: err}
	}
	path, err := r.adapterPath(a.Path)
	if err != nil {
		return err
	}
	if err := checkAdapterFile(path, basePath); err != nil {
		return fmt.Errorf("adapter %s: %w", a.Name, err)
	}
	a.Path = path
	if a.Scale == 0 {
		a.Scale = 1
	}
	if a.Created.IsZero() {
		a.Created = time.Now()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.adapters[a.Name]; ok {
		return fmt.Errorf("adapter %q is already registered", a.Name)
	}
	r.adapters[a.Name] = a
	return nil
}

// ErrAdapterPath reports an adapter path outside the allowed folders.
var ErrAdapterPath = errors.New("adapter files must be in the adapters folder or a folder the server allows (--adapter-root)")

// adapterPath resolves p against the adapters folder and checks that it
// lies, after symbolic links, in an allowed folder. Whether a refused path
// exists is not said.
func (r *Registry) adapterPath(p string) (string, error) {
	var roots []string
	for _, d := range append([]string{r.cfg.AdapterDir}, r.cfg.AdapterRoots...) {
		if d == "" {
			continue
		}
		abs, err := filepath.Abs(d)
		if err != nil {
			continue
		}
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			abs = real
		}
		roots = append(roots, abs)
	}
	if p == "" || len(roots) == 0 || strings.ContainsRune(p, 0) {
		return "", ErrAdapterPath
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(roots[0], p)
	}
	p = filepath.Clean(p)
	inside := func(p string) bool {
		for _, root := range roots {
			if rel, err := filepath.Rel(root, p); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && rel != "." {
				return true
			}
		}
		return false
	}
	// Symbolic links in the folder itself (e.g. /tmp -> /private/tmp) are
	// resolved on both sides before comparing.
	if dir, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil {
		p = filepath.Join(dir, filepath.Base(p))
	}
	if !inside(p) {
		return "", ErrAdapterPath
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("no adapter file %s in the allowed folders", filepath.Base(p))
	}
	if !inside(real) {
		return "", ErrAdapterPath
	}
	return real, nil
}

// checkAdapterFile checks that path is a GGUF LoRA adapter whose
// architecture is the base model's. Its messages name what is wrong, never
// the file's bytes.
func checkAdapterFile(path, basePath string) error {
	f, err := gguf.Open(path)
	if err != nil {
		return errors.New("not a readable GGUF file")
	}
	if typ, _ := f.String("general.type"); typ != "adapter" {
		return errors.New("the GGUF file is not an adapter (general.type is not \"adapter\")")
	}
	if typ, _ := f.String("adapter.type"); typ != "lora" {
		return errors.New("the GGUF file is not a LoRA adapter (adapter.type is not \"lora\")")
	}
	base, err := gguf.Open(basePath)
	if err != nil {
		return fmt.Errorf("read the base model: %w", err)
	}
	if f.Architecture() != base.Architecture() {
		return fmt.Errorf("the adapter is for architecture %q, the base model is %q", f.Architecture(), base.Architecture())
	}
	return nil
}

// RemoveAdapter unregisters an adapter. New requests cannot use it at
// once; its engine frees its memory when the requests that use it end.
func (r *Registry) RemoveAdapter(name string) error {
	r.mu.Lock()
	a, ok := r.adapters[name]
	if !ok {
		r.mu.Unlock()
		return &ErrUnknownModel{ID: name, Err: errors.New("no such adapter")}
	}
	me := r.models[a.Base]
	r.mu.Unlock()
	if me != nil && me.e != nil {
		if err := me.e.UnloadAdapter(name); err != nil && !strings.Contains(err.Error(), "not loaded") {
			return err
		}
	}
	r.mu.Lock()
	delete(r.adapters, name)
	r.mu.Unlock()
	return nil
}

// AdapterList returns the registered adapters.
func (r *Registry) AdapterList() []AdapterInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]AdapterInfo, 0, len(r.adapters))
	for _, a := range r.adapters {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Preload loads a model now and pins it (never unloaded by keep-alive).
func (r *Registry) Preload(ctx context.Context, name string) error {
	l, err := r.Acquire(ctx, name)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if me := r.models[l.Base]; me != nil {
		me.pinned = true
		if me.res != nil { // the scheduler must not evict it either
			me.res.SetPinned(true)
		}
	}
	r.mu.Unlock()
	l.Release()
	return nil
}

// SetKeepAlive sets how long a loaded model stays loaded when idle,
// overriding the registry's KeepAlive for it: d < 0 keeps it loaded (and
// pinned in the scheduler), 0 unloads it as soon as it is idle.
func (r *Registry) SetKeepAlive(name string, d time.Duration) error {
	r.mu.Lock()
	me := r.models[name]
	if me == nil || me.e == nil {
		r.mu.Unlock()
		return fmt.Errorf("model %q is not loaded", name)
	}
	me.pinned = d < 0
	if d >= 0 {
		me.keepAlive = &d
	}
	res := me.res
	r.mu.Unlock()
	if res != nil {
		res.SetPinned(d < 0)
		res.SetKeepAlive(max(d, 0))
	}
	if d >= 0 {
		r.sweep()
	}
	return nil
}

// LoadedModel describes a loaded model.
type LoadedModel struct {
	Name     string       `json:"name"`
	Path     string       `json:"path"`
	Busy     int          `json:"active_requests"`
	Pinned   bool         `json:"pinned"`
	LoadedAt time.Time    `json:"loaded_at"`
	LastUsed time.Time    `json:"last_used"`
	Stats    engine.Stats `json:"stats"`
	Adapters []string     `json:"adapters"`
	// KeepAliveSeconds is how long the model stays loaded when idle (-1:
	// until unloaded); ExpiresAt is when that ends for an idle model.
	KeepAliveSeconds float64    `json:"keep_alive_seconds"`
	ExpiresAt        *time.Time `json:"expires_at,omitempty"`
	// SizeBytes is what llama.cpp allocated (weights, KV cache, compute
	// buffers); MemoryByDevice splits it by device ("CPU", "CUDA0").
	SizeBytes      int64            `json:"size_bytes"`
	MemoryByDevice map[string]int64 `json:"memory_by_device,omitempty"`
	Parallel       int              `json:"parallel"`
	CtxPerSeq      int              `json:"ctx_per_seq"`
	// AdapterBatching says whether requests for different adapters share
	// decode steps ("mixed") or wait for each other ("grouped", and why).
	AdapterBatching string `json:"adapter_batching"`
}

// Loaded lists the loaded models.
func (r *Registry) Loaded() []LoadedModel {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []LoadedModel
	for _, me := range r.models {
		if me.e == nil {
			continue
		}
		lm := LoadedModel{Name: me.name, Path: me.path, Busy: me.refs, Pinned: me.pinned,
			LoadedAt: me.loadedAt, LastUsed: me.lastUsed, Stats: me.e.Stats(), Adapters: me.e.Adapters(), KeepAliveSeconds: -1,
			Parallel: me.e.Options().NParallel, CtxPerSeq: me.e.CtxPerSeq(), AdapterBatching: me.e.AdapterBatching()}
		if len(me.memory) > 0 {
			lm.MemoryByDevice = map[string]int64{}
			for buf, m := range me.memory {
				lm.MemoryByDevice[deviceOf(buf)] += m.Total()
				lm.SizeBytes += m.Total()
			}
		}
		if ka := me.keepAliveLocked(r.cfg.KeepAlive); ka >= 0 {
			lm.KeepAliveSeconds = ka.Seconds()
			if me.refs == 0 {
				t := me.lastUsed.Add(ka)
				lm.ExpiresAt = &t
			}
		}
		out = append(out, lm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// deviceOf names the device of a llama.cpp buffer type: "CUDA0" is on
// CUDA0, "CPU_Mapped" and "CPU_REPACK" on the CPU, and "CUDA_Host" (pinned
// host memory) in the CPU's RAM too.
func deviceOf(buf string) string {
	dev, kind, ok := strings.Cut(buf, "_")
	if ok && kind == "Host" {
		return "CPU"
	}
	return dev
}

// Unload frees a loaded model that no request uses.
func (r *Registry) Unload(name string) error {
	r.mu.Lock()
	me := r.models[name]
	if me == nil || me.e == nil {
		r.mu.Unlock()
		return fmt.Errorf("model %q is not loaded", name)
	}
	if me.refs > 0 {
		r.mu.Unlock()
		return fmt.Errorf("model %q is serving %d requests", name, me.refs)
	}
	delete(r.models, name)
	r.cond.Broadcast()
	r.mu.Unlock()
	r.cfg.Logger.Info("unloading model", "model", name)
	err := me.e.Close()
	if me.res != nil {
		me.res.Release()
	}
	return err
}

// sweep unloads models idle past their keep-alive.
func (r *Registry) sweep() {
	r.mu.Lock()
	var idle []*modelEntry
	for name, me := range r.models {
		if ka := me.keepAliveLocked(r.cfg.KeepAlive); me.e != nil && me.refs == 0 && ka >= 0 && time.Since(me.lastUsed) >= ka {
			idle = append(idle, me)
			delete(r.models, name)
		}
	}
	r.mu.Unlock()
	for _, me := range idle {
		r.cfg.Logger.Info("unloading idle model", "model", me.name, "idle", time.Since(me.lastUsed).Round(time.Second))
		me.e.Close()
		if me.res != nil {
			me.res.Release()
		}
	}
}

func (r *Registry) janitor() {
	defer close(r.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.sweep()
		}
	}
}

// Close unloads every model.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	models := r.models
	r.models = map[string]*modelEntry{}
	r.cond.Broadcast()
	r.mu.Unlock()
	close(r.stop)
	<-r.done
	var errs []error
	for _, me := range models {
		if me.e != nil {
			errs = append(errs, me.e.Close())
		}
		if me.res != nil {
			me.res.Release()
		}
	}
	return errors.Join(errs...)
}
