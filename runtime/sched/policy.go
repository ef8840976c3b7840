package sched

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Request asks for memory. Either Model (the scheduler places the model's
// layers) or Bytes (fixed amounts on named devices) is set.
type Request struct {
	Owner  Owner
	Kind   Kind   // default KindModel with Model, else KindOther
	Reason string // why, for humans: "serve qwen2.5-0.5b for /v1/chat"

	// Model to place with Context; the engine loads it with exactly the
	// granted Placement.
	Model   *ModelFacts
	Context ContextParams
	// ModelKey names the model for learned corrections (default
	// Model.Name).
	ModelKey string
	// AcceptPartial takes the most GPU layers available without waiting
	// for busy reservations to end. By default a model waits until it can
	// be placed as well as the memory not held for good allows.
	AcceptPartial bool

	// Bytes are fixed amounts per device; Device "" means the first GPU
	// (the CPU when there is none).
	Bytes []DeviceBytes

	// Evict asks the owner to free the memory: unload, then Release the
	// reservation. Nil: the scheduler never evicts it.
	Evict func(ctx context.Context) error
	// Pinned reservations are never evicted.
	Pinned bool
	// KeepAlive spares an idle reservation from eviction until this long
	// after its last use.
	KeepAlive time.Duration
	// MaxWait bounds the wait in the queue (default Config.MaxWait).
	MaxWait time.Duration
}

// waiter is a request in (or on its way into) the queue.
type waiter struct {
	req      Request
	facts    ModelFacts // with learned corrections
	est      Estimate
	parts    []DeviceBytes // Bytes, devices resolved
	enqueued time.Time
	ready    chan struct{}
	finished bool
	res      *Reservation
	err      error
}

func (w *waiter) finish(r *Reservation, err error) {
	if w.finished {
		return
	}
	w.finished = true
	w.res, w.err = r, err
	close(w.ready)
}

// need is what the request asks for, for explanations: the parts, or the
// model's whole estimate.
func (w *waiter) need() string {
	if w.req.Model != nil {
		return fmt.Sprintf("%s (%s)", FormatBytes(w.est.Total.Total()), w.est.Total)
	}
	return perDeviceString(w.parts)
}

// FitError explains why a request got no memory. The server maps it to 503.
type FitError struct {
	Owner Owner `json:"owner"`
	// Never is true when the request cannot fit even with everything
	// evicted and the most offloaded to the CPU.
	Never bool `json:"never"`
	// Total is everything the request needs, by kind.
	Total Breakdown `json:"total"`
	// Need is what the request needs per device (its best placement when
	// there is one).
	Need []DeviceBytes `json:"need,omitempty"`
	// Devices are the budgets and what is free on each.
	Devices []DeviceFree `json:"devices"`
	// Holders describe the reservations holding memory.
	Holders     []string      `json:"holders,omitempty"`
	Waited      time.Duration `json:"waited"`
	Explanation string        `json:"explanation"`
	cause       error
}

// DeviceFree is a device's budget and free memory in a FitError.
type DeviceFree struct {
	Device   string `json:"device"`
	Total    int64  `json:"total"`
	Budget   int64  `json:"budget"`
	Reserved int64  `json:"reserved"`
	Free     int64  `json:"free"`
}

func (e *FitError) Error() string { return e.Explanation }

// Unwrap returns ErrNeverFits or ErrWaitTimeout, and the context's error
// when the wait ended by cancellation.
func (e *FitError) Unwrap() []error {
	errs := []error{ErrWaitTimeout}
	if e.Never {
		errs[0] = ErrNeverFits
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// prepare validates a request and estimates it.
func (s *Scheduler) prepare(req Request) (*waiter, error) {
	if req.Owner.ID == "" {
		return nil, errors.New("gpu scheduler: request without an owner id")
	}
	w := &waiter{req: req, ready: make(chan struct{})}
	switch {
	case req.Model != nil && len(req.Bytes) > 0:
		return nil, fmt.Errorf("gpu scheduler: request of %s has both a model and fixed bytes", req.Owner)
	case req.Model != nil:
		if w.req.Kind == "" {
			w.req.Kind = KindModel
		}
		if w.req.ModelKey == "" {
			w.req.ModelKey = req.Model.Name
		}
		e, err := EstimateModel(*req.Model, req.Context)
		if err != nil {
			return nil, fmt.Errorf("gpu scheduler: request of %s: %w", req.Owner, err)
		}
		w.facts = *req.Model
		s.mu.Lock()
		k, ok := s.factors[w.req.ModelKey]
		s.mu.Unlock()
		if ok {
			e, w.facts = e.scaled(w.facts, k)
		}
		w.est = e
	case len(req.Bytes) > 0:
		if w.req.Kind == "" {
			w.req.Kind = KindOther
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, p := range req.Bytes {
			if p.Device == "" {
				p.Device = s.ledgers[0].ID // the first GPU, or the CPU
			}
			if s.byID[p.Device] == nil {
				return nil, fmt.Errorf("gpu scheduler: request of %s: unknown device %q", req.Owner, p.Device)
			}
			if p.Total() < 0 || p.Weights < 0 || p.KV < 0 || p.Compute < 0 || p.Output < 0 || p.Adapter < 0 ||
				p.Gradients < 0 || p.Optimizer < 0 || p.Activations < 0 || p.Index < 0 {
				return nil, fmt.Errorf("gpu scheduler: request of %s: negative bytes on %s", req.Owner, p.Device)
			}
			w.parts = append(w.parts, p)
		}
	default:
		return nil, fmt.Errorf("gpu scheduler: request of %s asks for nothing", req.Owner)
	}
	return w, nil
}

// Acquire reserves memory for req, waiting in the FIFO queue while it does
// not fit (and evicting idle reservations for it). It fails at once with a
// FitError wrapping ErrNeverFits when the request is larger than the
// machine, and after the wait (ctx or MaxWait) with one wrapping
// ErrWaitTimeout.
func (s *Scheduler) Acquire(ctx context.Context, req Request) (*Reservation, error) {
	w, err := s.prepare(req)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("acquire for %s: %w", req.Owner, ErrClosed)
	}
	w.enqueued = s.now()
	if _, never, _ := s.targetLocked(w); never {
		ferr := s.fitErrorLocked(w, true, nil)
		s.stats.Refused++
		s.decideLocked(Decision{Action: "refused", Owner: req.Owner, Reason: ferr.Explanation})
		s.mu.Unlock()
		return nil, ferr
	}
	if len(s.queue) == 0 {
		if pl := s.planLocked(w); pl.grant != nil {
			r := s.grantLocked(w, *pl.grant)
			s.mu.Unlock()
			return r, nil
		}
	}
	s.queue = append(s.queue, w)
	s.stats.Queued++
	s.decideLocked(Decision{Action: "queued", Owner: req.Owner, Reason: fmt.Sprintf(
		"needs %s; waits at position %d; free now: %s", w.need(), len(s.queue), s.freeStringLocked())})
	s.mu.Unlock()
	s.poke()

	wait := req.MaxWait
	if wait <= 0 {
		wait = s.cfg.MaxWait
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	var cause error
	select {
	case <-w.ready:
		return w.res, w.err
	case <-ctx.Done():
		cause = ctx.Err()
	case <-t.C:
		cause = fmt.Errorf("waited the maximum of %s", wait)
	}
	s.mu.Lock()
	if w.finished { // granted (or closed) while we were leaving
		s.mu.Unlock()
		return w.res, w.err
	}
	w.finished = true
	s.queue = slices.DeleteFunc(s.queue, func(x *waiter) bool { return x == w })
	ferr := s.fitErrorLocked(w, false, cause)
	s.stats.TimedOut++
	s.decideLocked(Decision{Action: "timeout", Owner: req.Owner, Reason: ferr.Explanation})
	s.mu.Unlock()
	s.poke() // the head may have changed
	return nil, ferr
}

// Plan returns where req would be placed now, without reserving anything.
func (s *Scheduler) Plan(req Request) (Placement, error) {
	w, err := s.prepare(req)
	if err != nil {
		return Placement{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w.enqueued = s.now()
	if p, ok := s.fitLocked(w, s.freeLocked(), 0); ok {
		return p, nil
	}
	_, never, _ := s.targetLocked(w)
	return Placement{}, s.fitErrorLocked(w, never, nil)
}

// plan is what serving the head of the queue needs.
type plan struct {
	grant   *Placement
	victims []*Reservation
	wake    time.Time // a keep-alive ends then
	err     error
}

// planLocked decides whether w fits now, fits after evicting idle
// reservations (least recently used first), or must wait.
func (s *Scheduler) planLocked(w *waiter) plan {
	now := s.now()
	target, never, ideal := s.targetLocked(w)
	if never {
		return plan{err: s.fitErrorLocked(w, true, nil)}
	}
	free := s.freeLocked()
	if w.req.AcceptPartial && w.req.Model != nil {
		all := maps.Clone(free)
		for _, r := range s.active {
			if r.evicting || r.evictable(now) {
				addBytes(all, r.perDevice, +1)
			}
		}
		if p, ok := s.fitLocked(w, all, 0); ok {
			target = min(target, p.NGPULayers)
		}
	}
	if p, ok := s.fitLocked(w, free, target); ok {
		return plan{grant: &p}
	}
	pending := maps.Clone(free)
	for _, r := range s.active {
		if r.evicting {
			addBytes(pending, r.perDevice, +1)
		}
	}
	if _, ok := s.fitLocked(w, pending, target); ok {
		return plan{} // evictions under way will make room
	}
	// Devices where the request is short; evicting elsewhere cannot help.
	short := map[string]bool{}
	for _, d := range ideal {
		if d.Total() > pending[d.Device] {
			short[d.Device] = true
		}
	}
	var cands []*Reservation
	for _, r := range s.active {
		if !r.evictable(now) {
			continue
		}
		for _, d := range r.perDevice {
			if (short[d.Device] || len(short) == 0) && d.Total() > 0 {
				cands = append(cands, r)
				break
			}
		}
	}
	slices.SortFunc(cands, func(a, b *Reservation) int {
		if c := a.lastUsed.Compare(b.lastUsed); c != 0 {
			return c
		}
		return int(a.id) - int(b.id)
	})
	var victims []*Reservation
	for _, r := range cands {
		addBytes(pending, r.perDevice, +1)
		victims = append(victims, r)
		if _, ok := s.fitLocked(w, pending, target); ok {
			return plan{victims: victims}
		}
	}
	// Blocked by busy, pinned or kept-alive reservations: wake when the
	// first keep-alive ends.
	var wake time.Time
	for _, r := range s.active {
		if r.evictFn != nil && !r.pinned && !r.noEvict && !r.evicting && r.refs == 0 {
			if d := r.keepDeadline(); d.After(now) && (wake.IsZero() || d.Before(wake)) {
				wake = d
			}
		}
	}
	return plan{wake: wake}
}

// targetLocked returns the fewest GPU layers a model request accepts: as
// many as fit when every reservation that may go (evictable, busy or not)
// has gone. never is true when the request cannot fit even if everything
// but pinned reservations left. ideal is that best placement's need.
func (s *Scheduler) targetLocked(w *waiter) (target int, never bool, ideal []DeviceBytes) {
	stays := s.freeExcluding(func(r *Reservation) bool { return r.pinned || r.evictFn == nil || r.noEvict })
	if p, ok := s.fitLocked(w, stays, 0); ok {
		return p.NGPULayers, false, p.PerDevice
	}
	if p, ok := s.fitLocked(w, s.freeExcluding(func(r *Reservation) bool { return r.pinned }), 0); ok {
		return p.NGPULayers, false, p.PerDevice
	}
	return 0, true, nil
}

// fitLocked places w in free memory; a model must get at least target
// GPU layers.
func (s *Scheduler) fitLocked(w *waiter, free map[string]int64, target int) (Placement, bool) {
	if w.req.Model == nil {
		need := map[string]int64{}
		addBytes(need, w.parts, +1)
		for d, n := range need {
			if n > free[d] {
				return Placement{}, false
			}
		}
		return Placement{PerDevice: w.parts, Explanation: perDeviceString(w.parts)}, true
	}
	var gpus []capacity
	var cpu capacity
	for _, l := range s.ledgers {
		c := capacity{dev: &l.Device, free: free[l.ID]}
		if l.Kind == "gpu" {
			gpus = append(gpus, c)
		} else {
			cpu = c
		}
	}
	p, ok := placeModel(w.facts, w.est, gpus, cpu)
	return p, ok && p.NGPULayers >= target
}

func (s *Scheduler) freeLocked() map[string]int64 {
	m := make(map[string]int64, len(s.ledgers))
	for _, l := range s.ledgers {
		m[l.ID] = l.free()
	}
	return m
}

// freeExcluding is each budget minus the reservations that stay.
func (s *Scheduler) freeExcluding(stays func(*Reservation) bool) map[string]int64 {
	m := make(map[string]int64, len(s.ledgers))
	for _, l := range s.ledgers {
		m[l.ID] = l.Budget
	}
	for _, r := range s.active {
		if stays(r) {
			addBytes(m, r.perDevice, -1)
		}
	}
	return m
}

func addBytes(m map[string]int64, ds []DeviceBytes, sign int64) {
	for _, d := range ds {
		m[d.Device] += sign * d.Total()
	}
}

// serveLocked grants from the head of the queue while it fits; it returns
// reservations to evict for the head, or nil when the head must wait.
func (s *Scheduler) serveLocked() []*Reservation {
	for len(s.queue) > 0 {
		w := s.queue[0]
		pl := s.planLocked(w)
		switch {
		case pl.err != nil:
			s.queue = s.queue[1:]
			s.stats.Refused++
			s.decideLocked(Decision{Action: "refused", Owner: w.req.Owner, Reason: pl.err.Error()})
			w.finish(nil, pl.err)
		case pl.grant != nil:
			s.queue = s.queue[1:]
			s.grantLocked(w, *pl.grant)
		case len(pl.victims) > 0:
			now := s.now()
			for i, v := range pl.victims {
				s.decideLocked(Decision{Action: "evicting", Owner: v.owner, Reservation: v.id, Reason: fmt.Sprintf(
					"%s (%s, least recently used #%d, holds %s) makes room for %s",
					v.owner, v.state(now), i+1, perDeviceString(v.perDevice), w.req.Owner)})
				v.evicting = true
			}
			return pl.victims
		default:
			if !pl.wake.IsZero() {
				if s.timer != nil {
					s.timer.Stop()
				}
				s.timer = time.AfterFunc(max(0, pl.wake.Sub(s.now())), s.poke)
			}
			return nil
		}
	}
	return nil
}

// grantLocked creates the reservation and credits the request's wait.
func (s *Scheduler) grantLocked(w *waiter, p Placement) *Reservation {
	s.nextID++
	now := s.now()
	r := &Reservation{
		s: s, id: s.nextID, owner: w.req.Owner, kind: w.req.Kind, reason: w.req.Reason,
		perDevice: p.PerDevice, modelKey: w.req.ModelKey, evictFn: w.req.Evict, created: now,
		pinned: w.req.Pinned, keepAlive: w.req.KeepAlive, lastUsed: now,
	}
	if w.req.Model != nil {
		pc := p
		r.placement = &pc
	}
	for _, d := range r.perDevice {
		l := s.byID[d.Device]
		l.reserved += d.Total()
		if l.reserved > l.Budget { // placement only uses free memory: a bug
			s.cfg.Logger.Error("gpu scheduler: ledger over budget", "device", l.ID, "reserved", l.reserved, "budget", l.Budget)
		}
	}
	s.active[r.id] = r
	s.stats.Granted++
	reason := p.Explanation
	if w.req.Reason != "" {
		reason = w.req.Reason + ": " + reason
	}
	if waited := now.Sub(w.enqueued); waited > 0 {
		reason += fmt.Sprintf(" (after waiting %s)", waited.Round(time.Millisecond))
	}
	s.decideLocked(Decision{Action: "placed", Owner: r.owner, Reservation: r.id, Reason: reason})
	s.changedLocked()
	w.finish(r, nil)
	return r
}

// evict asks each victim's owner to unload, in order, outside the lock.
func (s *Scheduler) evict(victims []*Reservation) {
	for _, v := range victims {
		ctx, cancel := context.WithTimeout(s.evictCtx, s.cfg.EvictTimeout)
		err := v.evictFn(ctx)
		cancel()
		s.mu.Lock()
		switch {
		case err != nil && v.releases == 0:
			v.evicting = false
			v.noEvict = true
			s.stats.EvictFailures++
			s.decideLocked(Decision{Action: "evict-failed", Owner: v.owner, Reservation: v.id,
				Reason: fmt.Sprintf("%s did not unload: %v; not evicted again until it is used", v.owner, err)})
		case v.releases == 0:
			v.releases = 1
			s.releaseLocked(v, "evicted")
			s.decideLocked(Decision{Action: "evict-unreleased", Owner: v.owner, Reservation: v.id,
				Reason: fmt.Sprintf("%s's Evict returned without releasing its reservation: released by the scheduler", v.owner)})
		}
		s.mu.Unlock()
	}
}

// fitErrorLocked explains why w has no memory.
func (s *Scheduler) fitErrorLocked(w *waiter, never bool, cause error) *FitError {
	now := s.now()
	e := &FitError{Owner: w.req.Owner, Never: never, Waited: now.Sub(w.enqueued), cause: cause}
	if w.req.Model != nil {
		e.Total = w.est.Total
	} else {
		for _, p := range w.parts {
			e.Total = e.Total.Add(p.Breakdown)
		}
	}
	if _, nv, ideal := s.targetLocked(w); !nv {
		e.Need = ideal
	} else if w.req.Model == nil {
		e.Need = w.parts
	}
	var devs []string
	for _, l := range s.ledgers {
		e.Devices = append(e.Devices, DeviceFree{Device: l.ID, Total: l.Total, Budget: l.Budget, Reserved: l.reserved, Free: l.free()})
		devs = append(devs, fmt.Sprintf("%s budget %s of %s (%s free)", l.ID, FormatBytes(l.Budget), FormatBytes(l.Total), FormatBytes(l.free())))
	}
	holders := s.sortedActiveLocked()
	for _, r := range holders {
		e.Holders = append(e.Holders, fmt.Sprintf("%s: %s, %s", r.owner, perDeviceString(r.perDevice), r.state(now)))
	}
	var b strings.Builder
	if never {
		fmt.Fprintf(&b, "%s can never fit: it needs %s", w.req.Owner, w.need())
		if w.req.Model != nil {
			gpus := 0
			for _, l := range s.ledgers {
				if l.Kind == "gpu" {
					gpus++
				}
			}
			if gpus == 0 {
				b.WriteString("; there is no GPU, so the CPU must hold all of it")
			} else {
				fmt.Fprintf(&b, "; with every layer the GPUs can take offloaded, the rest still does not fit in the CPU's budget (fully offloaded the CPU keeps %s)",
					FormatBytes(cpuShare(w.facts, w.est, 0, w.facts.NLayer+1).Total()))
			}
		}
		fmt.Fprintf(&b, "; devices: %s", strings.Join(devs, ", "))
		var pinned []string
		for _, r := range holders {
			if r.pinned {
				pinned = append(pinned, fmt.Sprintf("%s (%s)", r.owner, perDeviceString(r.perDevice)))
			}
		}
		if len(pinned) > 0 {
			fmt.Fprintf(&b, "; pinned: %s", strings.Join(pinned, ", "))
		}
		return withExplanation(e, b.String())
	}
	fmt.Fprintf(&b, "%s got no memory after waiting %s", w.req.Owner, e.Waited.Round(time.Millisecond))
	if cause != nil {
		fmt.Fprintf(&b, " (%v)", cause)
	}
	fmt.Fprintf(&b, ": it needs %s", perDeviceString(e.Need))
	fmt.Fprintf(&b, "; devices: %s", strings.Join(devs, ", "))
	if len(e.Holders) > 0 {
		fmt.Fprintf(&b, "; held by: %s", strings.Join(e.Holders, "; "))
	}
	return withExplanation(e, b.String())
}

func withExplanation(e *FitError, s string) *FitError {
	e.Explanation = s
	return e
}

func (s *Scheduler) freeStringLocked() string {
	var parts []string
	for _, l := range s.ledgers {
		parts = append(parts, fmt.Sprintf("%s %s", l.ID, FormatBytes(l.free())))
	}
	return strings.Join(parts, ", ")
}

func (s *Scheduler) sortedActiveLocked() []*Reservation {
	rs := make([]*Reservation, 0, len(s.active))
	for _, r := range s.active {
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b *Reservation) int { return int(a.id) - int(b.id) })
	return rs
}
