package engine

import (
	"fmt"
	"time"

	"github.com/llmrt/llmrt/kernels"
)

// streamPath is where a request's sequence runs.
type streamPath int

const (
	// pathLlama: llama.cpp's context, one adapter set per step (requests
	// for other sets wait their turn).
	pathLlama streamPath = iota
	// pathDecoder: llmrt's decoder, an adapter per sequence.
	pathDecoder
	// pathEither: no adapter; it joins the decoder's steps while the
	// decoder runs or has requests waiting, else llama.cpp's.
	pathEither
)

// decoderSide is the loop's multi-adapter decoder: created when a request
// first needs it, with adapter stacks that cover the registered adapters'
// ranks and projections (made again, once idle, for an adapter that does
// not fit), a fixed number of resident adapter slots filled least recently
// used first, and one sequence slot per parallel sequence. Loop-owned.
type decoderSide struct {
	d       *kernels.Decoder
	rank    int
	targets map[string]bool
	typ     string          // number format of the stacks
	owners  []*adapterEntry // resident slot -> adapter
	lastUse []uint64        // resident slot -> step that last used it
	slots   []*slot
	hosts   map[*adapterEntry]struct{} // adapters whose weights are read and wait for a slot
	tick    uint64
	// refit: a waiting adapter does not fit the stacks; the decoder takes
	// no more sequences until it drains and is made again.
	refit bool
}

// fits reports whether the decoder's stacks can hold ent.
func (ds *decoderSide) fits(ent *adapterEntry) bool {
	if ds.d == nil {
		return false
	}
	if ent == nil {
		return true
	}
	if ent.rank > ds.rank || (ent.typ != ds.typ && ds.typ != "f32") {
		return false
	}
	for _, t := range ent.targets {
		if !ds.targets[t] {
			return false
		}
	}
	return true
}

// openDecoder (re)creates the decoder with stacks for every registered
// adapter it can serve and extra: the largest rank, every projection, and
// the adapters' number format when they share one (F16 adapters in F16
// stacks compute as llama.cpp computes them, with half the bytes read).
// The previous decoder must be idle.
func (e *Engine) openDecoder(extra *adapterEntry) error {
	ds := &e.ds
	rank, targets, typ := 0, map[string]bool{}, ""
	add := func(ent *adapterEntry) {
		rank = max(rank, ent.rank)
		for _, t := range ent.targets {
			targets[t] = true
		}
		if typ == "" {
			typ = ent.typ
		} else if typ != ent.typ {
			typ = "f32"
		}
	}
	e.adaptersMu.Lock()
	for _, ent := range e.adapters {
		if ent.decodable {
			add(ent)
		}
	}
	e.adaptersMu.Unlock()
	if extra != nil {
		add(extra)
	}
	if rank == 0 { // no adapter yet: a decoder for base rows, with stacks for a typical one
		rank = 16
		for _, t := range kernels.LoRATargets() {
			targets[t] = true
		}
	}
	e.closeDecoder()
	names := make([]string, 0, len(targets))
	for _, t := range kernels.LoRATargets() {
		if targets[t] {
			names = append(names, t)
		}
	}
	if typ == "" {
		typ = "f32"
	}
	d, err := kernels.NewDecoder(e.model, kernels.DecoderParams{Threads: e.opt.Threads, Seqs: e.opt.NParallel, CtxPerSeq: e.opt.CtxPerSeq,
		Adapters: e.opt.MaxAdapters, Rank: rank, Targets: names, Type: typ})
	if err != nil {
		return err
	}
	ds.d, ds.rank, ds.targets, ds.typ, ds.refit = d, rank, targets, typ, false
	ds.owners = make([]*adapterEntry, e.opt.MaxAdapters)
	ds.lastUse = make([]uint64, e.opt.MaxAdapters)
	e.stats.decResident.Store(0)
	m := d.Memory()
	e.log.Info("multi-adapter decoder ready", "adapter_slots", e.opt.MaxAdapters, "rank", rank, "targets", names, "type", typ,
		"kv_bytes", m.KV, "adapter_bytes", m.LoRA)
	e.bookMemory()
	return nil
}

// closeDecoder frees the decoder; its sequences must have ended.
func (e *Engine) closeDecoder() {
	ds := &e.ds
	if ds.d == nil {
		return
	}
	e.adaptersMu.Lock()
	for _, o := range ds.owners {
		if o != nil {
			o.slot, o.resident = -1, false
		}
	}
	e.adaptersMu.Unlock()
	for _, sl := range ds.slots {
		sl.cached = sl.cached[:0]
	}
	ds.d.Close()
	ds.d, ds.owners, ds.lastUse = nil, nil, nil
	e.stats.decResident.Store(0)
}

// admitDecoder starts s in a decoder sequence when it can: the decoder
// fits its adapter, the adapter is resident (else its weights are read in
// the background, or it waits for a slot to free), and a sequence is free.
// It reports whether s started, or the error that ends s.
func (e *Engine) admitDecoder(s *Stream) (bool, error) {
	ds := &e.ds
	ent := s.ad
	if ds.refit {
		return false, nil
	}
	if !ds.fits(ent) {
		if countStarted(ds.slots) > 0 {
			ds.refit = true // let it drain, then make the stacks anew
			return false, nil
		}
		if err := e.openDecoder(ent); err != nil {
			return false, fmt.Errorf("multi-adapter decoder: %w", err)
		}
	}
	if ent != nil && ent.slot < 0 {
		ok, err := e.makeResident(ent)
		if err != nil || !ok {
			return false, err
		}
	}
	sl := e.pickSlot(ds.slots, s)
	if sl == nil {
		return false, nil
	}
	e.startSlot(sl, s)
	if ent != nil {
		ds.lastUse[ent.slot] = ds.tick
	}
	return true, nil
}

// makeResident puts ent's weights into a decoder slot. Reading them from
// disk happens off the loop (running sequences keep decoding); the copy
// into the slot is a memory copy between steps.
func (e *Engine) makeResident(ent *adapterEntry) (bool, error) {
	ds := &e.ds
	e.adaptersMu.Lock()
	h := ent.host
	if h == nil {
		e.startLoadLocked(ent)
	}
	e.adaptersMu.Unlock()
	if h == nil {
		return false, nil
	}
	slot := e.freeAdapterSlot()
	if slot < 0 {
		return false, nil // every slot holds an adapter with running sequences
	}
	if err := ds.d.SetAdapter(slot, h); err != nil {
		return false, err
	}
	e.adaptersMu.Lock()
	e.dropHostLocked(ent)
	ent.resident = true
	e.adaptersMu.Unlock()
	ds.owners[slot] = ent
	ent.slot = slot
	e.stats.adapterLoads.Add(1)
	e.stats.decResident.Add(1)
	return true, nil
}

// startLoadLocked reads ent's weights in the background unless they are
// resident, being read or read; the loop takes them in onLoaded. The
// caller holds adaptersMu.
func (e *Engine) startLoadLocked(ent *adapterEntry) {
	if ent.resident || ent.loading || ent.host != nil || e.noLoads {
		return
	}
	ent.loading = true
	e.loads.Add(1)
	go func() {
		defer e.loads.Done()
		l, err := kernels.ReadLoRA(e.model, ent.path, true)
		select {
		case e.loaded <- loadResult{ent: ent, l: l, err: err}:
		case <-e.stop:
			l.Close()
		}
	}()
}

// freeAdapterSlot empties a resident slot: a free one, else the least
// recently used one whose adapter no sequence runs with, preferring
// adapters no request waits for. -1 when there is none.
func (e *Engine) freeAdapterSlot() int {
	ds := &e.ds
	e.adaptersMu.Lock()
	defer e.adaptersMu.Unlock()
	best, bestIdle := -1, false
	for i, o := range ds.owners {
		if o == nil {
			return i
		}
		if o.running > 0 {
			continue
		}
		idle := o.refs == 0
		if best < 0 || (idle && !bestIdle) || (idle == bestIdle && ds.lastUse[i] < ds.lastUse[best]) {
			best, bestIdle = i, idle
		}
	}
	if best >= 0 {
		ds.owners[best].slot, ds.owners[best].resident = -1, false
		ds.owners[best] = nil
		e.stats.decResident.Add(-1)
	}
	return best
}

// onLoaded takes an adapter's weights read in the background. A failed
// read ends the requests waiting for that adapter.
func (e *Engine) onLoaded(r loadResult, waiting []*Stream) []*Stream {
	e.adaptersMu.Lock()
	r.ent.loading = false
	if r.err == nil && r.ent.refs > 0 && !r.ent.resident { // else nobody waits for it any more
		r.ent.host = r.l
		e.ds.hosts[r.ent] = struct{}{}
		r.l = nil
	}
	e.adaptersMu.Unlock()
	r.l.Close() // weights nobody needs any more
	if r.err == nil {
		return waiting
	}
	e.log.Error("adapter load failed", "adapter", r.ent.name, "err", r.err)
	kept := waiting[:0]
	for _, s := range waiting {
		if s.ad == r.ent {
			e.stats.queued.Add(-1)
			s.finish(Result{}, fmt.Errorf("load adapter %s: %w", r.ent.name, r.err))
			continue
		}
		kept = append(kept, s)
	}
	return kept
}

// dropHostLocked frees the weights read for ent; the caller holds
// adaptersMu.
func (e *Engine) dropHostLocked(ent *adapterEntry) {
	ent.host.Close()
	ent.host = nil
	delete(e.ds.hosts, ent)
}

// reapAdapterSlots frees the resident slots of unregistered adapters that
// no request uses any more, and weights read for adapters no request
// waits for any more (their requests went away before they ran).
func (e *Engine) reapAdapterSlots() {
	ds := &e.ds
	e.adaptersMu.Lock()
	defer e.adaptersMu.Unlock()
	for i, o := range ds.owners {
		if o != nil && o.removed && o.refs == 0 {
			o.slot, o.resident = -1, false
			ds.owners[i] = nil
			e.stats.decResident.Add(-1)
		}
	}
	for ent := range ds.hosts {
		if ent.refs == 0 {
			e.dropHostLocked(ent)
		}
	}
}

// stepDecoder runs one decoder step over its sequences: the next token of
// every generating one, and prompt chunks in the room left. It reports
// whether a step ran.
func (e *Engine) stepDecoder() bool {
	ds := &e.ds
	if ds.d == nil {
		return false
	}
	generating := 0
	for _, sl := range ds.slots {
		if sl.s != nil && !sl.prefill {
			generating++
		}
	}
	budget := e.opt.NBatch - generating
	if generating > 0 {
		budget = min(budget, e.opt.PrefillChunk)
	}
	var seqs []kernels.DecodeSeq
	var stepSlots []*slot
	used := map[int]bool{}
	out := 0
	for _, sl := range ds.slots {
		s := sl.s
		if s == nil {
			continue
		}
		q := kernels.DecodeSeq{Seq: sl.id, Pos: sl.nPast, Adapter: -1}
		switch {
		case !sl.prefill:
			q.Tokens = []int32{sl.pending}
			q.Logits = true
		case budget > 0:
			rest := sl.prompt[sl.nPast:]
			n := min(len(rest), budget)
			q.Tokens = rest[:n]
			q.Logits = n == len(rest)
			budget -= n
		default:
			continue
		}
		if s.ad != nil {
			q.Adapter, q.Scale = s.ad.slot, s.scale
			used[s.ad.slot] = true
		}
		sl.outIdx = -1
		if q.Logits {
			sl.outIdx = out
			out++
		}
		seqs = append(seqs, q)
		stepSlots = append(stepSlots, sl)
	}
	if len(seqs) == 0 {
		return false
	}
	ds.tick++
	for slot := range used {
		ds.lastUse[slot] = ds.tick
	}
	e.stats.countStep(len(used))
	t0 := time.Now()
	err := ds.d.Step(seqs)
	e.stats.decodeNanos.Add(int64(time.Since(t0)))
	e.stats.steps.Add(1)
	if err != nil {
		e.log.Error("decoder step failed", "err", err, "sequences", len(seqs))
		for _, sl := range stepSlots {
			e.endSlot(sl, Result{}, fmt.Errorf("decode: %w", err), true)
		}
		return true
	}
	for i, sl := range stepSlots {
		if sl.prefill {
			sl.nPast += len(seqs[i].Tokens)
		}
		if sl.outIdx < 0 {
			continue
		}
		if sl.prefill {
			sl.prefill = false
			e.stats.prompt.Add(int64(len(sl.prompt)))
			e.stats.cached.Add(int64(sl.reused))
		} else {
			sl.nPast++
		}
		e.sampleSlot(sl)
	}
	e.bookMemory()
	return true
}

// bookMemory hands the memory the engine allocated beyond its context (the
// decoder's KV cache, adapter stacks and compute buffers, and adapters
// loaded into llama.cpp) to the booking goroutine, which books it without
// holding up the loop.
func (e *Engine) bookMemory() {
	var m kernels.DecoderMemory
	if e.ds.d != nil {
		m = e.ds.d.Memory()
	}
	e.stats.decKV.Store(m.KV)
	e.stats.decLoRA.Store(m.LoRA)
	e.stats.decCompute.Store(m.Compute)
	e.stats.hostCopies.Store(int64(len(e.ds.hosts)))
	if e.opt.Bookings == nil {
		return
	}
	n := m.Total() + e.llamaAdapterBytes()
	if n == e.booked {
		return
	}
	e.booked = n
	select {
	case e.bookCh <- n:
	default:
		select { // replace the value not yet booked
		case <-e.bookCh:
		default:
		}
		select {
		case e.bookCh <- n:
		default:
		}
	}
}

// booker books what bookMemory reports until the engine closes.
func (e *Engine) booker() {
	defer close(e.bookDone)
	name := e.opt.Name
	for {
		select {
		case n := <-e.bookCh:
			e.opt.Bookings.SetMemory(name, n)
		case <-e.stop:
			e.opt.Bookings.Forget(name)
			return
		}
	}
}
