package sched

import "testing"

// A collection's index booking: made on first report, kept through growth
// under a MiB, replaced (not added to) past it, released by Forget.
func TestIndexBookings(t *testing.T) {
	s := newSched(t, Config{NoNVML: true, CPULimit: 8 * GiB})
	b := s.NewIndexBookings("collection", "cpu", "HNSW index of collection ", nil)
	booked := func() (n int, bytes int64, reason string) {
		for _, r := range s.Snapshot().Reservations {
			if r.Owner.Kind == "collection" {
				n++
				bytes += r.Bytes
				reason = r.Reason
				if !r.Pinned || r.Kind != KindIndex {
					t.Fatalf("booking %+v is not a pinned index reservation", r)
				}
			}
		}
		return
	}
	b.SetMemory("docs", 10<<20)
	if n, bytes, reason := booked(); n != 1 || bytes != 10<<20 || reason != "HNSW index of collection docs" {
		t.Fatalf("after the first report: %d bookings, %d bytes, %q", n, bytes, reason)
	}
	b.SetMemory("docs", 10<<20+512<<10)
	if _, bytes, _ := booked(); bytes != 10<<20 {
		t.Fatalf("growth under a MiB rebooked: %d bytes", bytes)
	}
	b.SetMemory("docs", 40<<20)
	if n, bytes, _ := booked(); n != 1 || bytes != 40<<20 {
		t.Fatalf("after growth: %d bookings, %d bytes", n, bytes)
	}
	b.SetMemory("other", 1)
	b.Forget("docs")
	if n, bytes, _ := booked(); n != 1 || bytes != 1 {
		t.Fatalf("after Forget: %d bookings, %d bytes", n, bytes)
	}
}

// A served model's adapter memory is booked as such, in the adapter column.
func TestAdapterBookings(t *testing.T) {
	s := newSched(t, Config{NoNVML: true, CPULimit: 8 * GiB})
	b := s.NewBookings(KindAdapters, "model", "cpu", "multi-adapter decoder of ", nil)
	b.SetMemory("qwen", 300<<20)
	var found bool
	for _, r := range s.Snapshot().Reservations {
		if r.Owner.Kind == "model" && r.Owner.ID == "qwen" {
			found = true
			if r.Kind != KindAdapters || r.Bytes != 300<<20 || !r.Pinned || r.Reason != "multi-adapter decoder of qwen" {
				t.Fatalf("booking %+v", r)
			}
		}
	}
	if !found {
		t.Fatal("no booking")
	}
	b.Forget("qwen")
	for _, r := range s.Snapshot().Reservations {
		if r.Owner.ID == "qwen" {
			t.Fatalf("booking %+v left after Forget", r)
		}
	}
}
