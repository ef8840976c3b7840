package sched

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Bookings keeps one pinned reservation of one kind per named owner on one
// device, for memory that lives as long as its owner is open (a
// collection's HNSW index, a served model's adapter memory). A booking is
// replaced when its size changes by more than a MiB, so small growth does
// not churn the ledger. Its methods match what runtime/rag reports
// collections' memory and runtime/engine its adapter memory through.
type Bookings struct {
	s         *Scheduler
	kind      Kind
	ownerKind string // Owner.Kind of every booking, e.g. "collection"
	device    string
	reason    string // prefix of each booking's reason, before the name
	log       *slog.Logger
	mu        sync.Mutex
	res       map[string]*Reservation
}

// NewIndexBookings makes index (KindIndex) Bookings on s for owners of
// ownerKind on device ("cpu" or a GPU id); each booking's reason is
// reason + name.
func (s *Scheduler) NewIndexBookings(ownerKind, device, reason string, log *slog.Logger) *Bookings {
	return s.NewBookings(KindIndex, ownerKind, device, reason, log)
}

// NewBookings makes Bookings of kind (KindIndex or KindAdapters) on s for
// owners of ownerKind on device; each booking's reason is reason + name.
func (s *Scheduler) NewBookings(kind Kind, ownerKind, device, reason string, log *slog.Logger) *Bookings {
	if log == nil {
		log = slog.Default()
	}
	return &Bookings{s: s, kind: kind, ownerKind: ownerKind, device: device, reason: reason, log: log, res: map[string]*Reservation{}}
}

// SetMemory books bytes for name, replacing its booking if the size moved
// by more than a MiB. A booking the scheduler refuses is logged, not fatal:
// the memory is in use whatever the ledger says.
func (b *Bookings) SetMemory(name string, bytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.res[name]
	if old != nil && abs(old.Total()-bytes) < 1<<20 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bd := Breakdown{Index: max(bytes, 1)}
	if b.kind == KindAdapters {
		bd = Breakdown{Adapter: max(bytes, 1)}
	}
	r, err := b.s.Acquire(ctx, Request{
		Owner: Owner{Kind: b.ownerKind, ID: name}, Kind: b.kind, Reason: b.reason + name,
		Bytes:  []DeviceBytes{{Device: b.device, Breakdown: bd}},
		Pinned: true,
	})
	if err != nil {
		b.log.Warn("cannot book memory", "owner", b.ownerKind+" "+name, "bytes", bytes, "err", err)
		return
	}
	if old != nil {
		old.Release()
	}
	b.res[name] = r
}

// Forget releases name's booking.
func (b *Bookings) Forget(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r := b.res[name]; r != nil {
		r.Release()
		delete(b.res, name)
	}
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
