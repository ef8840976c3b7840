package index

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"testing"
)

// smallIndex is a graph-searched index with metadata, tombstones and
// (optionally) quantisation: every part of the snapshot is non-trivial.
func smallIndex(t testing.TB, n int, quant bool) (*HNSW, *dataset) {
	d := makeDataset(8, n, 30, 24, 6, false)
	h, err := New(Options{Dim: 24, Metric: Cosine, M: 8, Quantize: quant, ExactBelow: -1, Seed: 8})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range d.vecs {
		var m Meta
		if i%3 == 0 {
			m = Meta{"doc": "d" + strconv.Itoa(i/10), "parity": strconv.Itoa(i % 2)}
		}
		if err := h.Add(uint64(1000+i), v, m); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 9 {
		h.Delete(uint64(1000 + i))
	}
	return h, d
}

func snapshot(t testing.TB, h *HNSW) []byte {
	var buf bytes.Buffer
	n, err := h.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo returned %d, wrote %d", n, buf.Len())
	}
	return buf.Bytes()
}

func TestSnapshotRoundTrip(t *testing.T) {
	for _, quant := range []bool{false, true} {
		h, d := smallIndex(t, 3000, quant)
		b := snapshot(t, h)
		h2, err := Read(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if h2.Len() != h.Len() || h2.Options() != h.Options() {
			t.Fatalf("quant=%v: loaded Len %d opts %+v, want %d %+v", quant, h2.Len(), h2.Options(), h.Len(), h.Options())
		}
		checkInDegrees(t, h2)
		filter := func(_ uint64, m Meta) bool { return m["parity"] == "1" }
		for _, opt := range []SearchOptions{{}, {Ef: 10}, {Filter: filter}} {
			for qi, q := range d.queries {
				a, err1 := h.Search(q, 10, opt)
				b, err2 := h2.Search(q, 10, opt)
				if err1 != nil || err2 != nil {
					t.Fatal(err1, err2)
				}
				if len(a) != len(b) {
					t.Fatalf("quant=%v query %d: %d vs %d results", quant, qi, len(a), len(b))
				}
				for i := range a {
					if a[i] != b[i] {
						t.Fatalf("quant=%v query %d result %d: %v before, %v after the round trip", quant, qi, i, a[i], b[i])
					}
				}
			}
		}
		// The loaded snapshot is byte-for-byte the same snapshot (metadata
		// order aside, so compare lengths), and stays writable.
		if b2 := snapshot(t, h2); len(b2) != len(b) {
			t.Fatalf("re-snapshot is %d bytes, first was %d", len(b2), len(b))
		}
		if err := h2.Add(1, d.queries[0], nil); err != nil {
			t.Fatalf("add to a loaded index: %v", err)
		}
		if res, _ := h2.Search(d.queries[0], 1, SearchOptions{}); len(res) != 1 || res[0].ID != 1 {
			t.Fatalf("search a loaded index after add: %v", res)
		}
		// A deleted id stays deleted; a live one deletes.
		if h2.Delete(1000) || !h2.Delete(1001) {
			t.Fatal("tombstones not restored")
		}
	}
	// An empty index round-trips too.
	e, _ := New(Options{Dim: 5, Metric: Dot})
	e2, err := Read(bytes.NewReader(snapshot(t, e)))
	if err != nil || e2.Len() != 0 || e2.Options().Metric != Dot {
		t.Fatalf("empty round trip: %v", err)
	}
}

func TestSnapshotCorruption(t *testing.T) {
	h, _ := smallIndex(t, 300, false)
	b := snapshot(t, h)
	// Every truncation fails (every short prefix, then a sample).
	for n := 0; n < len(b); n++ {
		if n > 300 && n < len(b)-8 && n%97 != 0 {
			continue
		}
		_, err := Read(bytes.NewReader(b[:n]))
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d of %d bytes: err = %v", n, len(b), err)
		}
	}
	// Every single bit flip fails (CRC-32C catches them all), sampled.
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 2000; i++ {
		c := bytes.Clone(b)
		pos := rng.IntN(len(c))
		c[pos] ^= 1 << rng.IntN(8)
		if _, err := Read(bytes.NewReader(c)); err == nil {
			t.Fatalf("bit flip at byte %d of %d accepted", pos, len(c))
		}
	}
	if _, err := Read(bytes.NewReader([]byte("not a snapshot at all, just text"))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("garbage: %v", err)
	}
	// A reader error is reported as itself.
	boom := errors.New("disk on fire")
	if _, err := Read(io.MultiReader(bytes.NewReader(b[:100]), errReader{boom})); !errors.Is(err, boom) {
		t.Fatalf("reader error: %v", err)
	}
	if _, err := h.WriteTo(failWriter{}); err == nil {
		t.Fatal("WriteTo a failing writer succeeded")
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("no space") }

func FuzzRead(f *testing.F) {
	h, _ := smallIndex(f, 40, true)
	b := snapshot(f, h)
	f.Add(b)
	f.Add(b[:len(b)/2])
	e, _ := New(Options{Dim: 2})
	f.Add(snapshot(f, e))
	f.Add([]byte(snapMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := Read(bytes.NewReader(data))
		if err != nil {
			return
		}
		// Whatever loads must be usable.
		q := make([]float32, h.Options().Dim)
		q[0] = 1
		if _, err := h.Search(q, 3, SearchOptions{}); err != nil {
			t.Fatalf("search a loaded index: %v", err)
		}
		var buf bytes.Buffer
		if _, err := h.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := Read(&buf); err != nil {
			t.Fatalf("re-read: %v", err)
		}
	})
}
