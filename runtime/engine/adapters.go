package engine

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/llmrt/llmrt/kernels"
)

// adapterEntry is a registered adapter. Registering reads only its
// description; its weights are resident (in a decoder slot, or loaded in
// llama.cpp for the grouped path) while requests use it and as long as the
// bounded resident set keeps it, least recently used first out.
//
// Locking: refs, removed, llama, llamaGen, lastUsed, resident, loading and
// host are guarded by Engine.adaptersMu; slot and running belong to the
// loop.
// An entry lives in Engine.entries until it is unregistered and unused.
type adapterEntry struct {
	name string
	path string
	id   uint64 // registration number: a name registered again is another adapter
	// decodable: the multi-adapter decoder can serve it (rank, targets).
	decodable bool
	rank      int
	targets   []string
	typ       string // number format of its tensors (see kernels.LoRA.Type)
	bytes     int64  // file size: what loading it into llama.cpp costs

	refs     int  // streams queued or running with it
	removed  bool // unregistered: freed when refs reaches 0
	llama    *kernels.Adapter
	llamaGen int // llama.cpp loads so far: part of the grouped path's key
	lastUsed time.Time

	slot     int           // decoder slot holding it, -1: none
	running  int           // decoder sequences running with it
	resident bool          // slot >= 0
	loading  bool          // its weights are being read for a slot
	host     *kernels.LoRA // weights read, waiting for a slot
}

// loadResult is an adapter's weights read off the loop.
type loadResult struct {
	ent *adapterEntry
	l   *kernels.LoRA
	err error
}

// LoadAdapter registers a LoRA adapter under name; requests refer to it by
// name. It reads the file's description and checks it against the model
// (as llama.cpp would when loading it); the weights are read when a
// request needs them. Registering a name twice is an error.
func (e *Engine) LoadAdapter(name, path string) error {
	if e.closed.Load() {
		return ErrClosed
	}
	e.adaptersMu.Lock()
	_, dup := e.adapters[name]
	e.adaptersMu.Unlock()
	if dup {
		return fmt.Errorf("adapter %q is already loaded", name)
	}
	l, err := kernels.ReadLoRA(e.model, path, false)
	if err != nil {
		return err
	}
	defer l.Close()
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("adapter %s: %w", path, err)
	}
	ent := &adapterEntry{name: name, path: path, rank: l.Rank(), targets: l.Targets(), typ: l.Type(), bytes: st.Size(), slot: -1,
		decodable: e.decErr == nil && l.Unsupported() == ""}
	if e.decErr == nil && l.Unsupported() != "" {
		e.log.Info("adapter served with grouped batching", "adapter", name, "reason", l.Unsupported())
	}
	e.adaptersMu.Lock()
	defer e.adaptersMu.Unlock()
	if _, ok := e.adapters[name]; ok {
		return fmt.Errorf("adapter %q is already loaded", name)
	}
	e.adapterSeq++
	ent.id = e.adapterSeq
	e.adapters[name] = ent
	e.entries[ent] = struct{}{}
	return nil
}

// UnloadAdapter unregisters an adapter: new requests cannot use it, and its
// memory is freed once the requests that use it have finished.
func (e *Engine) UnloadAdapter(name string) error {
	e.adaptersMu.Lock()
	ent, ok := e.adapters[name]
	if !ok {
		e.adaptersMu.Unlock()
		return fmt.Errorf("adapter %q is not loaded", name)
	}
	delete(e.adapters, name)
	ent.removed = true
	var free *kernels.Adapter
	if ent.refs == 0 {
		free, ent.llama = ent.llama, nil
		delete(e.entries, ent)
	}
	e.adaptersMu.Unlock()
	e.wake()
	return free.Close()
}

// Adapters lists the registered adapter names.
func (e *Engine) Adapters() []string {
	e.adaptersMu.Lock()
	defer e.adaptersMu.Unlock()
	out := make([]string, 0, len(e.adapters))
	for n := range e.adapters {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// AdapterBatching says how requests for different adapters are batched:
// "mixed" (each sequence of a step under its own adapter) or "grouped"
// (one adapter set per step), with the reason for grouping.
func (e *Engine) AdapterBatching() string {
	switch {
	case e.opt.GroupAdapters:
		return "grouped: multi-adapter batching is turned off"
	case e.decErr != nil:
		return "grouped: " + e.decErr.Error()
	}
	return "mixed: requests for different adapters share decode steps (llmrt's decoder); adapters it cannot serve are grouped"
}

// acquireAdapters takes a reference on each named adapter for a request
// and works out its path: the decoder (one adapter it can serve), llama.cpp
// (loading the adapters there if needed), or either (no adapter).
func (e *Engine) acquireAdapters(refs []AdapterRef) (ents []*adapterEntry, set []kernels.AdapterScale, key string, path streamPath, err error) {
	e.adaptersMu.Lock()
	for _, r := range refs {
		ent, ok := e.adapters[r.Name]
		if !ok {
			e.adaptersMu.Unlock()
			e.releaseEntries(ents)
			return nil, nil, "", 0, fmt.Errorf("engine: adapter %q is not loaded", r.Name)
		}
		ent.refs++
		ent.lastUsed = time.Now()
		ents = append(ents, ent)
	}
	e.adaptersMu.Unlock()
	multi := e.decErr == nil && !e.opt.GroupAdapters
	switch {
	case len(refs) == 0 && multi:
		return nil, nil, "", pathEither, nil
	case len(refs) == 0:
		return nil, nil, "", pathLlama, nil
	case len(refs) == 1 && multi && ents[0].decodable:
		// Its weights are read now, while the request waits for the loop.
		e.adaptersMu.Lock()
		e.startLoadLocked(ents[0])
		e.adaptersMu.Unlock()
		return ents, nil, fmt.Sprintf("%s#%d@%g", refs[0].Name, ents[0].id, scaleOf(refs[0])), pathDecoder, nil
	}
	set, key, err = e.llamaSet(refs, ents)
	if err != nil {
		e.releaseEntries(ents)
		return nil, nil, "", 0, err
	}
	return ents, set, key, pathLlama, nil
}

func scaleOf(r AdapterRef) float32 {
	if r.Scale == 0 {
		return 1
	}
	return r.Scale
}

// llamaSet loads the adapters into llama.cpp where they are not, then
// evicts the least recently used ones no request holds beyond the
// resident bound. The key names each load, so that a context never keeps
// an adapter set whose adapters were freed and loaded again.
func (e *Engine) llamaSet(refs []AdapterRef, ents []*adapterEntry) ([]kernels.AdapterScale, string, error) {
	e.llamaLoadMu.Lock()
	defer e.llamaLoadMu.Unlock()
	parts := make([]string, len(refs))
	set := make([]kernels.AdapterScale, len(refs))
	for i, ent := range ents {
		e.adaptersMu.Lock()
		a, gen := ent.llama, ent.llamaGen
		e.adaptersMu.Unlock()
		if a == nil {
			var err error
			if a, err = e.model.LoadAdapter(ent.path); err != nil {
				return nil, "", err
			}
			e.stats.adapterLoads.Add(1)
			e.adaptersMu.Lock()
			ent.llamaGen++
			ent.llama, gen = a, ent.llamaGen
			e.adaptersMu.Unlock()
		}
		set[i] = kernels.AdapterScale{Adapter: a, Scale: scaleOf(refs[i])}
		parts[i] = fmt.Sprintf("%s#%d.%d@%g", refs[i].Name, ent.id, gen, scaleOf(refs[i]))
	}
	sort.Strings(parts)
	e.evictLlamaAdapters()
	return set, strings.Join(parts, ","), nil
}

// evictLlamaAdapters frees llama.cpp-loaded adapters that no request holds,
// least recently used first, until at most MaxAdapters remain.
func (e *Engine) evictLlamaAdapters() {
	e.adaptersMu.Lock()
	var loaded []*adapterEntry
	for ent := range e.entries {
		if ent.llama != nil {
			loaded = append(loaded, ent)
		}
	}
	sort.Slice(loaded, func(i, j int) bool { return loaded[i].lastUsed.Before(loaded[j].lastUsed) })
	var free []*kernels.Adapter
	for _, ent := range loaded {
		if len(loaded)-len(free) <= e.opt.MaxAdapters {
			break
		}
		if ent.refs == 0 {
			free = append(free, ent.llama)
			ent.llama = nil
		}
	}
	e.adaptersMu.Unlock()
	for _, a := range free {
		a.Close()
	}
}

// releaseEntries drops a request's references; an unregistered adapter
// that nobody uses any more is freed.
func (e *Engine) releaseEntries(ents []*adapterEntry) {
	if len(ents) == 0 {
		return
	}
	var free []*kernels.Adapter
	e.adaptersMu.Lock()
	for _, ent := range ents {
		ent.refs--
		ent.lastUsed = time.Now()
		if ent.refs == 0 && ent.removed {
			if ent.llama != nil {
				free = append(free, ent.llama)
				ent.llama = nil
			}
			delete(e.entries, ent)
		}
	}
	e.adaptersMu.Unlock()
	for _, a := range free {
		a.Close()
	}
	e.wake()
}

// residentAdapters counts adapters whose weights are in memory.
func (e *Engine) residentAdapters() int {
	e.adaptersMu.Lock()
	n := 0
	for ent := range e.entries {
		if ent.llama != nil {
			n++
		}
	}
	e.adaptersMu.Unlock()
	return n + int(e.stats.decResident.Load())
}

// llamaAdapterBytes is the memory of the adapters loaded into llama.cpp.
func (e *Engine) llamaAdapterBytes() int64 {
	e.adaptersMu.Lock()
	defer e.adaptersMu.Unlock()
	var n int64
	for ent := range e.entries {
		if ent.llama != nil {
			n += ent.bytes
		}
	}
	return n
}

// wake nudges a loop that sleeps while requests wait, so that it sees an
// adapter freed.
func (e *Engine) wake() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// llamaLoaded counts adapters loaded into llama.cpp.
func (e *Engine) llamaLoaded() int {
	e.adaptersMu.Lock()
	defer e.adaptersMu.Unlock()
	n := 0
	for ent := range e.entries {
		if ent.llama != nil {
			n++
		}
	}
	return n
}
