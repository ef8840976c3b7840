package sched

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a manual clock for keep-alive and LRU order.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// recorder records evictions in order.
type recorder struct {
	mu    sync.Mutex
	names []string
}

func (r *recorder) add(n string) { r.mu.Lock(); r.names = append(r.names, n); r.mu.Unlock() }

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.names...)
}

// holder is what an engine keeps for a loaded model: its reservation, and
// an Evict callback that unloads it (here: releases the reservation).
type holder struct {
	name string
	res  atomic.Pointer[Reservation]
}

func (h *holder) evict(rec *recorder) func(context.Context) error {
	return func(context.Context) error {
		rec.add(h.name)
		return h.res.Load().Release()
	}
}

func loadModel(t *testing.T, s *Scheduler, rec *recorder, name string, f ModelFacts, c ContextParams, mod func(*Request)) *holder {
	t.Helper()
	h := &holder{name: name}
	f.Name = name
	req := Request{Owner: Owner{"model", name}, Model: &f, Context: c, Evict: h.evict(rec), Reason: "test load"}
	if mod != nil {
		mod(&req)
	}
	r, err := s.Acquire(t.Context(), req)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	h.res.Store(r)
	return h
}

func actions(ds []Decision, kinds ...string) []string {
	var out []string
	for _, d := range ds {
		for _, k := range kinds {
			if d.Action == k {
				out = append(out, d.Action+" "+d.Owner.ID)
			}
		}
	}
	return out
}

func TestEvictionLRU(t *testing.T) {
	clk := newClock()
	s := newSched(t, Config{NVML: fakeNVML(fakeGPU("RTX 4090", 24*GiB, 0)), Now: clk.Now})
	rec := &recorder{}
	// Three 7B models at 4k context (about 6 GiB each on the GPU) fit on
	// the 24 GiB card with about 4.6 GiB to spare.
	a := loadModel(t, s, rec, "a", llama7, ctx4k, nil)
	clk.Add(time.Minute)
	b := loadModel(t, s, rec, "b", llama7, ctx4k, nil)
	clk.Add(time.Minute)
	c := loadModel(t, s, rec, "c", llama7, ctx4k, nil)
	clk.Add(time.Minute)
	a.res.Load().Touch() // a served a request: LRU order is now b, c, a
	clk.Add(time.Minute)
	for _, h := range []*holder{a, b, c} {
		if p, _ := h.res.Load().Placement(); !p.Full {
			t.Fatalf("%s not fully offloaded: %s", h.name, p.Explanation)
		}
	}
	// A 7B at 16k context needs about 12.8 GiB: two evictions.
	d := loadModel(t, s, rec, "d", llama7, ContextParams{NCtx: 16384}, nil)
	if got := rec.list(); fmt.Sprint(got) != "[b c]" {
		t.Fatalf("evicted %v, want [b c]", got)
	}
	if p, _ := d.res.Load().Placement(); !p.Full {
		t.Errorf("d not fully offloaded after the evictions: %s", p.Explanation)
	}
	snap := s.Snapshot()
	got := actions(snap.Decisions, "evicting", "evicted", "placed")
	want := []string{"placed a", "placed b", "placed c", "evicting b", "evicting c", "evicted b", "evicted c", "placed d"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("decisions %v, want %v", got, want)
	}
	for _, dec := range snap.Decisions {
		if dec.Action == "evicting" && !strings.Contains(dec.Reason, "least recently used") {
			t.Errorf("eviction without its reason: %q", dec.Reason)
		}
	}
	if snap.Stats.Evictions != 2 || len(snap.Reservations) != 2 {
		t.Errorf("stats %+v, %d reservations; want 2 evictions and a, d left", snap.Stats, len(snap.Reservations))
	}
	if err := b.res.Load().Release(); !errors.Is(err, ErrDoubleRelease) {
		t.Errorf("releasing an evicted reservation again: %v, want ErrDoubleRelease", err)
	}
}

// TestEvictionSkipsPinnedBusyAndKeepAlive: only idle, unpinned reservations
// past their keep-alive are evicted, whatever their age.
func TestEvictionSkipsPinnedBusyAndKeepAlive(t *testing.T) {
	clk := newClock()
	s := newSched(t, Config{NVML: fakeNVML(fakeGPU("RTX 4090", 24*GiB, 0)), Now: clk.Now})
	rec := &recorder{}
	gpu := func(n int64) []DeviceBytes { return []DeviceBytes{{Device: "gpu0", Breakdown: Breakdown{Weights: n}}} }
	hold := func(name string, mod func(*Request)) *holder {
		h := &holder{name: name}
		req := Request{Owner: Owner{"model", name}, Kind: KindWeights, Bytes: gpu(5 * GiB), Evict: h.evict(rec)}
		if mod != nil {
			mod(&req)
		}
		r, err := s.Acquire(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		h.res.Store(r)
		clk.Add(time.Minute)
		return h
	}
	hold("pinned", func(r *Request) { r.Pinned = true })
	busy := hold("busy", nil)
	done, err := busy.res.Load().Use()
	if err != nil {
		t.Fatal(err)
	}
	kept := hold("kept", func(r *Request) { r.KeepAlive = time.Hour })
	hold("idle", nil)
	// 20 GiB of the 22.8 GiB budget held; 6 GiB more needs one eviction:
	// only "idle" (the newest) qualifies.
	e, err := s.Acquire(t.Context(), Request{Owner: Owner{"job", "e"}, Bytes: gpu(6 * GiB)})
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.list(); fmt.Sprint(got) != "[idle]" {
		t.Fatalf("evicted %v, want [idle]", got)
	}
	// Nothing else may go: the request times out and says why.
	_, err = s.Acquire(t.Context(), Request{Owner: Owner{"job", "f"}, Bytes: gpu(4 * GiB), MaxWait: 50 * time.Millisecond})
	var fe *FitError
	if !errors.As(err, &fe) || !errors.Is(err, ErrWaitTimeout) || fe.Never {
		t.Fatalf("err %v, want a FitError wrapping ErrWaitTimeout", err)
	}
	for _, want := range []string{"pinned", "busy (1 in use)", "keep-alive until", "job f", "gpu0"} {
		if !strings.Contains(fe.Explanation, want) {
			t.Errorf("explanation lacks %q: %s", want, fe.Explanation)
		}
	}
	// Past the keep-alive, "kept" is the one to go (pinned and busy are
	// older but stay).
	clk.Add(2 * time.Hour)
	if _, err := s.Acquire(t.Context(), Request{Owner: Owner{"job", "g"}, Bytes: gpu(4 * GiB)}); err != nil {
		t.Fatal(err)
	}
	if got := rec.list(); fmt.Sprint(got) != "[idle kept]" {
		t.Fatalf("evicted %v, want [idle kept]", got)
	}
	if kept.res.Load().Release() == nil {
		t.Error("kept was evicted but releasing it again succeeded")
	}
	// Done with the busy model: it becomes evictable.
	done()
	done() // a second call does nothing
	if _, err := s.Acquire(t.Context(), Request{Owner: Owner{"job", "h"}, Bytes: gpu(4 * GiB)}); err != nil {
		t.Fatal(err)
	}
	if got := rec.list(); fmt.Sprint(got) != "[idle kept busy]" {
		t.Fatalf("evicted %v, want [idle kept busy]", got)
	}
	e.Release()
}

func TestQueueWaitsForRelease(t *testing.T) {
	s := newSched(t, Config{NVML: fakeNVML(fakeGPU("RTX 4090", 24*GiB, 0))})
	gpu := func(n int64) []DeviceBytes { return []DeviceBytes{{Device: "gpu0", Breakdown: Breakdown{Weights: n}}} }
	first, err := s.Acquire(t.Context(), Request{Owner: Owner{"job", "first"}, Bytes: gpu(20 * GiB)})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	var second *Reservation
	go func() {
		r, err := s.Acquire(context.Background(), Request{Owner: Owner{"job", "second"}, Bytes: gpu(10 * GiB), Reason: "queued test"})
		second = r
		got <- err
	}()
	waitFor(t, "second request queued", func() bool { return len(s.Snapshot().Queue) == 1 })
	select {
	case err := <-got:
		t.Fatalf("second request returned while the GPU was full: %v", err)
	default:
	}
	q := s.Snapshot().Queue[0]
	if q.Owner.ID != "second" || q.Position != 1 || len(q.Need) != 1 || q.Need[0].Total() != 10*GiB {
		t.Errorf("queue entry %+v", q)
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("second request after release: %v", err)
	}
	if second.Total() != 10*GiB {
		t.Errorf("second got %d bytes", second.Total())
	}
	if got := actions(s.Snapshot().Decisions, "queued", "released", "placed"); fmt.Sprint(got) != "[placed first queued second released first placed second]" {
		t.Errorf("decisions %v", got)
	}
	second.Release()
}

// TestQueueBusyModel: a model that is busy is not evicted; the request waits
// until the model is idle, then the model is evicted for it.
func TestQueueBusyModel(t *testing.T) {
	s := newSched(t, Config{NVML: fakeNVML(fakeGPU("RTX 4090", 24*GiB, 0))})
	rec := &recorder{}
	big := loadModel(t, s, rec, "llama-70b", llama70, ctx4k, nil) // fills the GPU (44 layers)
	done, err := big.res.Load().Use()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Reservation, 1)
	go func() {
		m := llama7
		r, err := s.Acquire(context.Background(), Request{Owner: Owner{"model", "llama-7b"}, Model: &m, Context: ctx4k})
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	waitFor(t, "7B queued behind the busy 70B", func() bool { return len(s.Snapshot().Queue) == 1 })
	if len(rec.list()) != 0 {
		t.Fatal("a busy model was evicted")
	}
	done()
	r := <-got
	if p, _ := r.Placement(); !p.Full {
		t.Errorf("7B not fully offloaded after the 70B left: %s", p.Explanation)
	}
	if fmt.Sprint(rec.list()) != "[llama-70b]" {
		t.Errorf("evicted %v", rec.list())
	}
	if _, err := big.res.Load().Use(); !errors.Is(err, ErrReleased) {
		t.Errorf("using an evicted model: %v, want ErrReleased", err)
	}
}

func TestQueueDeadline(t *testing.T) {
	s := newSched(t, Config{NVML: fakeNVML(fakeGPU("RTX 4090", 24*GiB, 0))})
	rec := &recorder{}
	h := loadModel(t, s, rec, "busy-70b", llama70, ctx4k, nil)
	done, _ := h.res.Load().Use()
	defer done()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	m := llama7
	_, err := s.Acquire(ctx, Request{Owner: Owner{"model", "late-7b"}, Model: &m, Context: ctx4k})
	var fe *FitError
	if !errors.As(err, &fe) || !errors.Is(err, ErrWaitTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want a FitError wrapping ErrWaitTimeout and the deadline", err)
	}
	for _, want := range []string{"late-7b", "busy-70b", "busy (1 in use)", "needs"} {
		if !strings.Contains(fe.Explanation, want) {
			t.Errorf("explanation lacks %q: %s", want, fe.Explanation)
		}
	}
	if len(fe.Need) == 0 || fe.Need[0].Device != "gpu0" {
		t.Errorf("need %+v", fe.Need)
	}
	snap := s.Snapshot()
	if len(snap.Queue) != 0 || snap.Stats.TimedOut != 1 || last(snap.Decisions).Action != "timeout" {
		t.Errorf("after the deadline: queue %d, stats %+v, last %+v", len(snap.Queue), snap.Stats, last(snap.Decisions))
	}
}

func TestDoubleRelease(t *testing.T) {
	s := newSched(t, Config{NVML: missingNVML(), CPULimit: 8 * GiB})
	r, err := s.Acquire(t.Context(), Request{Owner: Owner{"collection", "docs"}, Kind: KindIndex,
		Bytes: []DeviceBytes{{Breakdown: Breakdown{Index: GiB}}}})
	if err != nil {
		t.Fatal(err)
	}
	if r.PerDevice()[0].Device != "cpu" {
		t.Errorf("default device %q without a GPU, want cpu", r.PerDevice()[0].Device)
	}
	if err := r.Release(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := r.Release(); !errors.Is(err, ErrDoubleRelease) {
			t.Fatalf("release %d: %v, want ErrDoubleRelease", i+2, err)
		}
	}
	snap := s.Snapshot()
	if snap.Stats.DoubleReleases != 2 || snap.Stats.Released != 1 || snap.Devices[0].Reserved != 0 {
		t.Errorf("stats %+v, reserved %d", snap.Stats, snap.Devices[0].Reserved)
	}
	if last(snap.Decisions).Action != "double-release" {
		t.Errorf("double release not logged: %+v", last(snap.Decisions))
	}
}

// TestConcurrentLedgerInvariant: many goroutines reserve and release random
// amounts on random devices; the ledger never goes over budget (checked on
// every change), every grant is released exactly once, and deliberate
// double releases are caught without crediting the ledger twice.
func TestConcurrentLedgerInvariant(t *testing.T) {
	var violations, changes atomic.Int64
	s := newSched(t, Config{
		NVML:     fakeNVML(fakeGPU("A", 16*GiB, 0), fakeGPU("B", 8*GiB, 2*GiB)),
		CPULimit: 32 * GiB,
		OnChange: func(ls []LedgerState) {
			changes.Add(1)
			for _, l := range ls {
				if l.Reserved > l.Budget || l.Reserved < 0 {
					violations.Add(1)
				}
			}
		},
	})
	devs := s.Devices()
	const workers, rounds = 16, 150
	var granted, doubles, timeouts atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for i := 0; i < rounds; i++ {
				var parts []DeviceBytes
				for _, d := range devs {
					if rng.IntN(2) == 0 {
						parts = append(parts, DeviceBytes{Device: d.ID, Breakdown: Breakdown{Weights: rng.Int64N(d.Budget / 3)}})
					}
				}
				if len(parts) == 0 {
					parts = []DeviceBytes{{Device: "cpu", Breakdown: Breakdown{KV: 1}}}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				r, err := s.Acquire(ctx, Request{Owner: Owner{"job", fmt.Sprintf("w%d-%d", w, i)}, Bytes: parts})
				cancel()
				if errors.Is(err, ErrWaitTimeout) {
					timeouts.Add(1)
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				granted.Add(1)
				if rng.IntN(4) == 0 {
					done, err := r.Use()
					if err != nil {
						t.Error(err)
					}
					done()
				}
				if err := r.Release(); err != nil {
					t.Error(err)
				}
				if i%10 == 0 {
					if err := r.Release(); errors.Is(err, ErrDoubleRelease) {
						doubles.Add(1)
					} else {
						t.Errorf("double release: %v", err)
					}
				}
			}
		}(w)
	}
	wg.Wait()
	snap := s.Snapshot()
	if violations.Load() != 0 {
		t.Errorf("%d ledger states over budget (of %d changes)", violations.Load(), changes.Load())
	}
	if snap.Stats.Granted != granted.Load() || snap.Stats.Released != granted.Load() {
		t.Errorf("granted %d, released %d; workers got %d", snap.Stats.Granted, snap.Stats.Released, granted.Load())
	}
	if snap.Stats.DoubleReleases != doubles.Load() || doubles.Load() == 0 {
		t.Errorf("double releases counted %d, made %d", snap.Stats.DoubleReleases, doubles.Load())
	}
	for _, d := range snap.Devices {
		if d.Reserved != 0 {
			t.Errorf("%s still has %d bytes reserved", d.ID, d.Reserved)
		}
	}
	if len(snap.Reservations) != 0 || len(snap.Queue) != 0 {
		t.Errorf("%d reservations, %d queued left", len(snap.Reservations), len(snap.Queue))
	}
	t.Logf("%d grants, %d timeouts, %d double releases, %d ledger changes", granted.Load(), timeouts.Load(), doubles.Load(), changes.Load())
}

func TestCloseFailsWaiters(t *testing.T) {
	s, err := New(Config{NVML: missingNVML(), CPULimit: 4 * GiB})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Acquire(t.Context(), Request{Owner: Owner{"job", "a"}, Bytes: []DeviceBytes{{Device: "cpu", Breakdown: Breakdown{Weights: 3 * GiB}}}})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := s.Acquire(context.Background(), Request{Owner: Owner{"job", "b"}, Bytes: []DeviceBytes{{Device: "cpu", Breakdown: Breakdown{Weights: 3 * GiB}}}})
		got <- err
	}()
	waitFor(t, "b queued", func() bool { return len(s.Snapshot().Queue) == 1 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; !errors.Is(err, ErrClosed) {
		t.Errorf("queued request after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Acquire(t.Context(), Request{Owner: Owner{"job", "c"}, Bytes: []DeviceBytes{{Device: "cpu"}}}); !errors.Is(err, ErrClosed) {
		t.Errorf("acquire after Close: %v", err)
	}
	if err := r.Release(); err != nil {
		t.Errorf("release after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestRecordActualLearns(t *testing.T) {
	s := newSched(t, Config{NVML: missingNVML(), CPULimit: 16 * GiB})
	m := llama7
	r, err := s.Acquire(t.Context(), Request{Owner: Owner{"model", m.Name}, Model: &m, Context: ctx4k})
	if err != nil {
		t.Fatal(err)
	}
	est := r.Estimated()
	actual := est
	actual.Compute = est.Compute * 5 / 4 // llama.cpp needed 25% more compute buffer
	r.Release()
	s.RecordActual(m.Name, est, actual)
	e, err := s.Estimate(m.Name, m, ctx4k)
	if err != nil {
		t.Fatal(err)
	}
	if e.Compute != actual.Compute || e.Total.Weights != est.Weights || e.Total.KV != est.KV {
		t.Errorf("after learning: compute %d (want %d), weights %d (want %d), KV %d (want %d)",
			e.Compute, actual.Compute, e.Total.Weights, est.Weights, e.Total.KV, est.KV)
	}
	r, err = s.Acquire(t.Context(), Request{Owner: Owner{"model", m.Name}, Model: &m, Context: ctx4k})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Estimated().Compute; got != actual.Compute {
		t.Errorf("next placement reserves %d compute bytes, want the learned %d", got, actual.Compute)
	}
	if d := actions(s.Snapshot().Decisions, "learned"); len(d) != 1 {
		t.Errorf("learning not logged: %v", d)
	}
	// Another model is unaffected.
	other := qwen05
	e2, _ := s.Estimate("", other, ctx4k)
	base, _ := EstimateModel(other, ctx4k)
	if e2.Compute != base.Compute {
		t.Error("a correction leaked to another model")
	}
}

func TestRequestValidation(t *testing.T) {
	s := newSched(t, Config{NVML: missingNVML()})
	m := llama7
	for _, req := range []Request{
		{Bytes: []DeviceBytes{{Device: "cpu"}}},                                                              // no owner
		{Owner: Owner{"job", "x"}},                                                                           // nothing asked
		{Owner: Owner{"job", "x"}, Model: &m, Bytes: []DeviceBytes{{Device: "cpu"}}},                         // both
		{Owner: Owner{"job", "x"}, Bytes: []DeviceBytes{{Device: "gpu7"}}},                                   // unknown device
		{Owner: Owner{"job", "x"}, Bytes: []DeviceBytes{{Device: "cpu", Breakdown: Breakdown{Weights: -1}}}}, // negative
	} {
		if _, err := s.Acquire(t.Context(), req); err == nil {
			t.Errorf("request %+v accepted", req)
		}
	}
}

// waitFor polls cond (for state another goroutine reaches); it fails the
// test only if the state never comes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
