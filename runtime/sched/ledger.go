package sched

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// ledger is one device's account: its budget and what is reserved on it.
// The Scheduler's lock guards it.
type ledger struct {
	Device
	reserved int64
}

func (l *ledger) free() int64 { return l.Budget - l.reserved }

// Owner says who holds a reservation.
type Owner struct {
	Kind string `json:"kind"` // "model", "job", "collection", ...
	ID   string `json:"id"`
}

func (o Owner) String() string {
	if o.Kind == "" {
		return o.ID
	}
	return o.Kind + " " + o.ID
}

// Kind is what a reservation's memory is for.
type Kind string

// Kinds of reservations.
const (
	// KindModel is a loaded model: weights, KV cache and compute buffers,
	// placed by the scheduler.
	KindModel    Kind = "model"
	KindWeights  Kind = "weights"
	KindKV       Kind = "kv_cache"
	KindCompute  Kind = "compute"
	KindTraining Kind = "lora_training" // adapter, gradients, AdamW moments, activations
	KindIndex    Kind = "index_vectors"
	// KindAdapters is memory a served model allocates for adapters beside
	// its own reservation: the multi-adapter decoder (KV cache, resident
	// adapter slots, compute buffers) and adapters loaded into llama.cpp.
	KindAdapters Kind = "lora_serving"
	KindOther    Kind = "other"
)

// Reservation is memory granted on one or more devices. Release it exactly
// once when the memory is freed; a second Release is a detected bug that
// returns ErrDoubleRelease and never credits the ledger twice.
type Reservation struct {
	s         *Scheduler
	id        uint64
	owner     Owner
	kind      Kind
	reason    string
	perDevice []DeviceBytes
	placement *Placement
	modelKey  string
	evictFn   func(context.Context) error
	created   time.Time

	// guarded by s.mu
	pinned    bool
	keepAlive time.Duration
	keepUntil time.Time
	refs      int
	lastUsed  time.Time
	releases  int
	evicting  bool
	noEvict   bool // its Evict callback failed: not tried again
}

// ID is the reservation's number, unique in its scheduler.
func (r *Reservation) ID() uint64 { return r.id }

// Owner is who holds it.
func (r *Reservation) Owner() Owner { return r.owner }

// Kind is what the memory is for.
func (r *Reservation) Kind() Kind { return r.kind }

// Reason is the human reason given with the request.
func (r *Reservation) Reason() string { return r.reason }

// PerDevice is the memory held on each device.
func (r *Reservation) PerDevice() []DeviceBytes {
	return append([]DeviceBytes(nil), r.perDevice...)
}

// Placement is the model placement the engine must load with (ok false for
// reservations that are not models).
func (r *Reservation) Placement() (Placement, bool) {
	if r.placement == nil {
		return Placement{}, false
	}
	p := *r.placement
	p.TensorSplit = append([]float32(nil), p.TensorSplit...)
	p.PerDevice = append([]DeviceBytes(nil), p.PerDevice...)
	return p, true
}

// Estimated is the reservation's memory summed over devices, by kind: what
// to pass to RecordActual with what llama.cpp reported.
func (r *Reservation) Estimated() Breakdown {
	var b Breakdown
	for _, d := range r.perDevice {
		b = b.Add(d.Breakdown)
	}
	return b
}

// Total is the reservation's bytes over all devices.
func (r *Reservation) Total() int64 { return r.Estimated().Total() }

// Release returns the memory to the ledgers and lets queued requests in.
// It is safe to call more than once, but only the first call credits the
// ledgers: later calls are counted, logged and return ErrDoubleRelease.
func (r *Reservation) Release() error {
	s := r.s
	s.mu.Lock()
	r.releases++
	if r.releases > 1 {
		s.stats.DoubleReleases++
		msg := fmt.Sprintf("reservation %d of %s (%s) released %d times: ignored", r.id, r.owner, FormatBytes(r.Total()), r.releases)
		s.decideLocked(Decision{Action: "double-release", Owner: r.owner, Reservation: r.id, Reason: msg})
		s.mu.Unlock()
		s.cfg.Logger.Error("gpu scheduler: "+msg, "owner", r.owner.String())
		return fmt.Errorf("release reservation %d of %s: %w", r.id, r.owner, ErrDoubleRelease)
	}
	s.releaseLocked(r, "released")
	s.mu.Unlock()
	s.poke()
	return nil
}

// releaseLocked credits the ledgers (first release only).
func (s *Scheduler) releaseLocked(r *Reservation, action string) {
	for _, d := range r.perDevice {
		if l := s.byID[d.Device]; l != nil {
			l.reserved -= d.Total()
		}
	}
	delete(s.active, r.id)
	s.stats.Released++
	if r.evicting {
		s.stats.Evictions++
		action = "evicted"
	}
	s.decideLocked(Decision{Action: action, Owner: r.owner, Reservation: r.id,
		Reason: fmt.Sprintf("%s freed %s", r.kind, perDeviceString(r.perDevice))})
	s.changedLocked()
}

// Use marks the reservation in use until done is called (done may be called
// more than once; only the first counts). A reservation in use is never
// evicted. Use fails if the reservation is released or being evicted.
func (r *Reservation) Use() (done func(), err error) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case r.releases > 0:
		return nil, fmt.Errorf("use reservation %d of %s: %w", r.id, r.owner, ErrReleased)
	case r.evicting:
		return nil, fmt.Errorf("use reservation %d of %s: %w", r.id, r.owner, ErrEvicting)
	}
	r.refs++
	r.lastUsed = s.now()
	r.noEvict = false // in use again: a later eviction may succeed
	return sync.OnceFunc(func() {
		s.mu.Lock()
		r.refs--
		r.lastUsed = s.now()
		s.mu.Unlock()
		s.poke()
	}), nil
}

// Touch records a use without holding the reservation (for LRU order).
func (r *Reservation) Touch() {
	r.s.mu.Lock()
	r.lastUsed = r.s.now()
	r.s.mu.Unlock()
}

// SetKeepAlive keeps the reservation from eviction until d after its last
// use (0: evictable as soon as it is idle).
func (r *Reservation) SetKeepAlive(d time.Duration) {
	r.s.mu.Lock()
	r.keepAlive = d
	r.s.mu.Unlock()
	r.s.poke()
}

// KeepUntil keeps the reservation from eviction until t (zero: no deadline).
func (r *Reservation) KeepUntil(t time.Time) {
	r.s.mu.Lock()
	r.keepUntil = t
	r.s.mu.Unlock()
	r.s.poke()
}

// SetPinned pins the reservation (never evicted) or unpins it.
func (r *Reservation) SetPinned(p bool) {
	r.s.mu.Lock()
	r.pinned = p
	r.s.mu.Unlock()
	r.s.poke()
}

// keepDeadline is when the reservation's keep-alive ends.
func (r *Reservation) keepDeadline() time.Time {
	t := r.lastUsed.Add(r.keepAlive)
	if r.keepUntil.After(t) {
		t = r.keepUntil
	}
	return t
}

// evictable says whether the scheduler may evict r now.
func (r *Reservation) evictable(now time.Time) bool {
	return r.evictFn != nil && !r.pinned && !r.noEvict && !r.evicting && r.refs == 0 && r.releases == 0 && !now.Before(r.keepDeadline())
}

// state describes r for explanations.
func (r *Reservation) state(now time.Time) string {
	switch {
	case r.evicting:
		return "being evicted"
	case r.pinned:
		return "pinned"
	case r.refs > 0:
		return fmt.Sprintf("busy (%d in use)", r.refs)
	case r.evictFn == nil:
		return "held until its owner releases it"
	case r.noEvict:
		return "idle, eviction failed"
	case now.Before(r.keepDeadline()):
		return "idle, keep-alive until " + r.keepDeadline().UTC().Format(time.RFC3339)
	default:
		return fmt.Sprintf("idle %s, evictable", now.Sub(r.lastUsed).Round(time.Second))
	}
}

func perDeviceString(ds []DeviceBytes) string {
	s := ""
	for i, d := range ds {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s on %s", FormatBytes(d.Total()), d.Device)
	}
	if s == "" {
		return "nothing"
	}
	return s
}
