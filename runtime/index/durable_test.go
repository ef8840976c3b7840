package index

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// vecFor is a deterministic vector for id, so a reader can check that a
// recovered item holds exactly what was written.
func vecFor(id uint64, dim int) []float32 {
	r := rand.New(rand.NewPCG(id, 99))
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

func storeMeta(id uint64) Meta { return Meta{"n": strconv.FormatUint(id, 10)} }

// addIDs adds ids [from, from+n) with their vectors and metadata.
func addIDs(s *Store, from, n, dim int) error {
	ids := make([]uint64, n)
	vecs := make([][]float32, n)
	metas := make([]Meta, n)
	for i := range ids {
		ids[i] = uint64(from + i)
		vecs[i] = vecFor(ids[i], dim)
		metas[i] = storeMeta(ids[i])
	}
	return s.Add(context.Background(), ids, vecs, metas)
}

func addRange(t *testing.T, s *Store, from, n, dim int) {
	t.Helper()
	if err := addIDs(s, from, n, dim); err != nil {
		t.Fatal(err)
	}
}

func openStore(t *testing.T, dir string, opt StoreOptions) (*Store, Recovery) {
	t.Helper()
	s, rec, err := Open(dir, opt)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	return s, rec
}

// checkItem fails unless id is live with exactly its vector and metadata.
func checkItem(t *testing.T, s *Store, id uint64, dim int) {
	t.Helper()
	v, m, ok := s.Get(id)
	if !ok {
		t.Fatalf("item %d is missing", id)
	}
	if !slices.Equal(v, vecFor(id, dim)) || m["n"] != storeMeta(id)["n"] || len(m) != 1 {
		t.Fatalf("item %d has another vector or metadata (%v)", id, m)
	}
}

// logRecords returns the offset of every record of a log and its end.
func logRecords(t *testing.T, path string, dim int) ([]int64, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	var offs []int64
	sc, err := scanLog(f, st.Size(), dim, func(off int64, _ byte, _ []byte) error {
		offs = append(offs, off)
		return nil
	})
	if err != nil || sc.end != st.Size() {
		t.Fatalf("scan %s: %+v %v", path, sc, err)
	}
	return offs, sc.end
}

func TestStoreRoundTrip(t *testing.T) {
	const dim = 32
	n := 2000
	if testing.Short() || raceEnabled {
		n = 700
	}
	for _, mode := range []string{"log", "snapshot-mid", "snapshot-end"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			// ExactBelow above n: searches scan, so results depend only on
			// the stored data, not on the (rebuilt) graph.
			opt := StoreOptions{Options: Options{Dim: dim, Metric: L2, EfConstruction: 64, ExactBelow: 1 << 20}, SnapshotEvery: -1}
			s, rec := openStore(t, dir, opt)
			if rec.Snapshot || rec.Replayed != 0 {
				t.Fatalf("new store: %+v", rec)
			}
			addRange(t, s, 0, n/2, dim)
			if mode == "snapshot-mid" {
				if err := s.Snapshot(); err != nil {
					t.Fatal(err)
				}
			}
			addRange(t, s, n/2, n/2, dim)
			var dels []uint64
			for i := uint64(0); i < uint64(n); i += 7 {
				dels = append(dels, i)
			}
			if err := s.Delete(context.Background(), dels); err != nil {
				t.Fatal(err)
			}
			if mode == "snapshot-end" {
				if err := s.Snapshot(); err != nil {
					t.Fatal(err)
				}
			}
			var want [][]Result
			for q := uint64(0); q < 20; q++ {
				r, err := s.Search(vecFor(q+5000, dim), 10, SearchOptions{})
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, r)
			}
			live := s.Len()
			if live != n-len(dels) {
				t.Fatalf("%d live, want %d", live, n-len(dels))
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s, rec = openStore(t, dir, opt)
			defer s.Close()
			wantReplayed := map[string]int{"log": n + len(dels), "snapshot-mid": n/2 + len(dels), "snapshot-end": 0}[mode]
			if !rec.Snapshot || rec.Replayed != wantReplayed || rec.Corrupt != nil || rec.TornBytes != 0 || rec.DamagedSnapshot != nil {
				t.Fatalf("recovery %+v, want %d replayed", rec, wantReplayed)
			}
			if s.Len() != live {
				t.Fatalf("%d items after reopening, want %d", s.Len(), live)
			}
			for id := uint64(0); id < uint64(n); id++ {
				if id%7 == 0 {
					if s.Has(id) {
						t.Fatalf("deleted item %d came back", id)
					}
					continue
				}
				checkItem(t, s, id, dim)
			}
			for q := range want {
				got, err := s.Search(vecFor(uint64(q)+5000, dim), 10, SearchOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, want[q]) {
					t.Fatalf("query %d after reopening\n got %v\nwant %v", q, got, want[q])
				}
			}
			// A deleted id may be added again, durably.
			addRange(t, s, 7, 1, dim)
			s.Close()
			s, _ = openStore(t, dir, opt)
			checkItem(t, s, 7, dim)
		})
	}
}

func TestStoreOptionsPersist(t *testing.T) {
	dir := t.TempDir()
	opt := StoreOptions{Options: Options{Dim: 8, Metric: Dot, M: 8}, NoSync: true}
	s, _ := openStore(t, dir, opt)
	addRange(t, s, 0, 10, 8)
	s.Close()
	// The options live in snapshot 0 even though nothing was snapshotted.
	for _, bad := range []Options{{Dim: 16, Metric: Dot}, {Dim: 8, Metric: L2}, {Dim: 8}} {
		if _, _, err := Open(dir, StoreOptions{Options: bad}); err == nil || !strings.Contains(err.Error(), "dimension 8") {
			t.Fatalf("opened a dot/8 store with %+v: %v", bad, err)
		}
	}
	s, rec := openStore(t, dir, StoreOptions{}) // Dim 0: whatever is stored
	defer s.Close()
	if o := s.Index().Options(); o.Dim != 8 || o.Metric != Dot || o.M != 8 || s.Len() != 10 || rec.Replayed != 10 {
		t.Fatalf("options %+v, %d items, %+v", o, s.Len(), rec)
	}
	if _, _, err := Open(t.TempDir(), StoreOptions{}); err == nil {
		t.Fatal("created a store without a dimension")
	}
}

func TestStoreTornTail(t *testing.T) {
	dir := t.TempDir()
	const dim = 8
	opt := StoreOptions{Options: Options{Dim: dim, Metric: L2}, SnapshotEvery: -1, NoSync: true}
	s, _ := openStore(t, dir, opt)
	for i := 0; i < 20; i++ {
		addRange(t, s, i, 1, dim) // one record each, of two lengths
	}
	s.Close()
	log := filepath.Join(dir, "log-0.wal")
	full, _ := os.ReadFile(log)
	offs, end := logRecords(t, log, dim)
	if len(offs) != 20 || end != int64(len(full)) {
		t.Fatalf("%d records", len(offs))
	}
	last := offs[19]
	for cut := last + 1; cut < end; cut++ {
		os.WriteFile(log, full[:cut], 0o644)
		s, rec := openStore(t, dir, opt)
		if s.Len() != 19 || rec.TornBytes != cut-last || rec.Corrupt != nil || rec.Replayed != 19 {
			t.Fatalf("cut at %d: %d items, recovery %+v", cut, s.Len(), rec)
		}
		for id := uint64(0); id < 19; id++ {
			checkItem(t, s, id, dim)
		}
		s.Close()
		if st, _ := os.Stat(log); st.Size() != last {
			t.Fatalf("cut at %d: log is %d bytes, want %d", cut, st.Size(), last)
		}
	}
	// Appending after a cut works, and the next Open finds nothing torn.
	s, _ = openStore(t, dir, opt)
	addRange(t, s, 19, 1, dim)
	s.Close()
	// A zero-filled tail (what a power cut can leave) is torn too.
	f, _ := os.OpenFile(log, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(make([]byte, 4096))
	f.Close()
	s, rec := openStore(t, dir, opt)
	defer s.Close()
	if s.Len() != 20 || rec.TornBytes != 4096 || rec.Corrupt != nil {
		t.Fatalf("zero tail: %d items, recovery %+v", s.Len(), rec)
	}
	checkItem(t, s, 19, dim)
}

func TestStoreCorruptMiddle(t *testing.T) {
	dir := t.TempDir()
	const dim = 8
	opt := StoreOptions{Options: Options{Dim: dim, Metric: L2}, SnapshotEvery: -1, NoSync: true}
	s, _ := openStore(t, dir, opt)
	for i := 0; i < 20; i++ {
		addRange(t, s, i, 1, dim)
	}
	s.Close()
	log := filepath.Join(dir, "log-0.wal")
	full, _ := os.ReadFile(log)
	offs, _ := logRecords(t, log, dim)
	// Flip each byte of record 5 in turn (length, op, id, dimension,
	// vector, metadata, CRC): always reported, and records 0..4 only.
	for at := offs[5]; at < offs[6]; at++ {
		bad := slices.Clone(full)
		bad[at] ^= 0xff
		os.WriteFile(log, bad, 0o644)
		for _, f := range must(filepath.Glob(log + ".corrupt-*")) {
			os.Remove(f)
		}
		s, rec := openStore(t, dir, opt)
		if rec.Corrupt == nil || rec.TornBytes != 0 || s.Len() != 5 || rec.Replayed != 5 {
			t.Fatalf("byte %d of record 5 flipped: %d items, recovery %+v", at-offs[5], s.Len(), rec)
		}
		if !strings.Contains(rec.Corrupt.Error(), fmt.Sprintf("offset %d", offs[5])) || !strings.Contains(rec.Corrupt.Error(), "log-0.wal") {
			t.Fatalf("corruption report without file and offset: %v", rec.Corrupt)
		}
		for id := uint64(0); id < 5; id++ {
			checkItem(t, s, id, dim)
		}
		s.Close()
		if at == offs[5] || at == offs[5]+20 || at == offs[6]-1 {
			t.Logf("byte %d flipped: %v", at-offs[5], rec.Corrupt)
		}
		saved, err := os.ReadFile(fmt.Sprintf("%s.corrupt-%d", log, offs[5]))
		if err != nil || !slices.Equal(saved, bad[offs[5]:]) {
			t.Fatalf("cut bytes not saved: %v", err)
		}
		// The log was cut: the next Open is clean and can append.
		s, rec = openStore(t, dir, opt)
		if rec.Corrupt != nil || s.Len() != 5 {
			t.Fatalf("second open after corruption: %d items, %+v", s.Len(), rec)
		}
		s.Close()
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestStoreSnapshotFallback(t *testing.T) {
	const dim = 8
	opt := StoreOptions{Options: Options{Dim: dim, Metric: Cosine}, SnapshotEvery: -1}
	build := func(t *testing.T) string {
		dir := t.TempDir()
		s, _ := openStore(t, dir, opt)
		addRange(t, s, 0, 100, dim)
		if err := s.Snapshot(); err != nil { // generation 1
			t.Fatal(err)
		}
		addRange(t, s, 100, 100, dim)
		s.Delete(context.Background(), []uint64{1, 150})
		if err := s.Snapshot(); err != nil { // generation 2
			t.Fatal(err)
		}
		addRange(t, s, 200, 50, dim)
		s.Delete(context.Background(), []uint64{2, 210})
		s.Close()
		return dir
	}
	check := func(t *testing.T, s *Store) {
		t.Helper()
		if s.Len() != 246 {
			t.Fatalf("%d items, want 246", s.Len())
		}
		for id := uint64(0); id < 250; id++ {
			if id == 1 || id == 2 || id == 150 || id == 210 {
				if s.Has(id) {
					t.Fatalf("deleted %d is back", id)
				}
			} else if !s.Has(id) {
				t.Fatalf("%d is missing", id)
			}
		}
	}
	t.Run("damaged newest", func(t *testing.T) {
		dir := build(t)
		// Generations 1 and 2 are both kept.
		for _, f := range []string{"snapshot-1.hnsw", "log-1.wal", "snapshot-2.hnsw", "log-2.wal"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		p := filepath.Join(dir, "snapshot-2.hnsw")
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 1
		os.WriteFile(p, b, 0o644)
		s, rec := openStore(t, dir, opt)
		if rec.DamagedSnapshot == nil || !errors.Is(rec.DamagedSnapshot, ErrCorrupt) || rec.Corrupt != nil || rec.Generation != 3 {
			t.Fatalf("recovery %+v", rec)
		}
		t.Logf("fell back: %v", rec.DamagedSnapshot)
		check(t, s)
		s.Close()
		if _, err := os.Stat(p + ".damaged"); err != nil {
			t.Fatal(err)
		}
		s, rec = openStore(t, dir, opt)
		defer s.Close()
		if rec.DamagedSnapshot != nil || rec.Replayed != 0 {
			t.Fatalf("after the fallback snapshot: %+v", rec)
		}
		check(t, s)
	})
	t.Run("no way back", func(t *testing.T) {
		dir := build(t)
		p := filepath.Join(dir, "snapshot-2.hnsw")
		os.WriteFile(p, []byte("LLMRTHNS garbage"), 0o644)
		os.Remove(filepath.Join(dir, "log-1.wal"))
		if _, _, err := Open(dir, opt); err == nil || !strings.Contains(err.Error(), "log-1.wal is missing") {
			t.Fatalf("open without the previous log: %v", err)
		}
		os.WriteFile(filepath.Join(dir, "snapshot-1.hnsw"), nil, 0o644)
		if _, _, err := Open(dir, opt); err == nil || !strings.Contains(err.Error(), "snapshot-2.hnsw") {
			t.Fatalf("open with every snapshot damaged: %v", err)
		}
	})
}

// TestStoreRotationCrash recreates what a crash at each step of a
// rotation leaves on disk.
func TestStoreRotationCrash(t *testing.T) {
	const dim = 8
	opt := StoreOptions{Options: Options{Dim: dim, Metric: L2}, SnapshotEvery: -1}
	dir := t.TempDir()
	s, _ := openStore(t, dir, opt)
	addRange(t, s, 0, 100, dim)
	s.Snapshot() // generation 1
	addRange(t, s, 100, 50, dim)
	s.Delete(context.Background(), []uint64{3})
	s.Close()

	// Crash after step 2 (log 2 created, snapshot 2 not renamed): the
	// half-written snapshot is ignored and log 1 replayed, then the empty
	// log 2, which takes the new appends.
	os.WriteFile(filepath.Join(dir, "snapshot-2.hnsw.tmp"), []byte("half a snapshot"), 0o644)
	os.WriteFile(filepath.Join(dir, "log-2.wal"), walHeader(2), 0o644)
	s, rec := openStore(t, dir, opt)
	if s.Len() != 149 || rec.Replayed != 51 || rec.Generation != 2 || s.Has(3) {
		t.Fatalf("crash before rename: %d items, %+v", s.Len(), rec)
	}
	if _, err := os.Stat(filepath.Join(dir, "snapshot-2.hnsw.tmp")); !os.IsNotExist(err) {
		t.Fatal("temporary snapshot left behind")
	}
	addRange(t, s, 150, 10, dim)
	s.Close()
	s, rec = openStore(t, dir, opt)
	if s.Len() != 159 || rec.Replayed != 61 {
		t.Fatalf("appended to the empty log: %d items, %+v", s.Len(), rec)
	}
	// Crash after step 3 (snapshot 3 renamed, log 3 empty, log 2 still
	// there): log 2 must not be replayed on snapshot 3.
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, rec = openStore(t, dir, opt)
	if s.Len() != 159 || rec.Replayed != 0 || rec.Generation != 3 {
		t.Fatalf("crash after rename: %d items, %+v", s.Len(), rec)
	}
	s.Close()
	// The newest snapshot and the one before it (1: snapshot 2 was never
	// written) are kept, with the logs from the older one on.
	names, _ := filepath.Glob(filepath.Join(dir, "*-*"))
	for i := range names {
		names[i] = filepath.Base(names[i])
	}
	if !slices.Equal(names, []string{"log-1.wal", "log-2.wal", "log-3.wal", "snapshot-1.hnsw", "snapshot-3.hnsw"}) {
		t.Fatalf("files %v", names)
	}

	// A store whose creation died before snapshot 0 was renamed.
	dir = t.TempDir()
	os.WriteFile(filepath.Join(dir, "log-0.wal"), walHeader(0), 0o644)
	s, rec = openStore(t, dir, opt)
	if rec.Snapshot || s.Len() != 0 {
		t.Fatalf("interrupted creation: %+v", rec)
	}
	addRange(t, s, 0, 5, dim)
	s.Close()
	// Records without any snapshot are not silently dropped.
	os.Remove(filepath.Join(dir, "snapshot-0.hnsw"))
	if _, _, err := Open(dir, opt); err == nil || !strings.Contains(err.Error(), "no snapshot") {
		t.Fatalf("log without snapshot: %v", err)
	}
}

func TestStoreLockAndValidation(t *testing.T) {
	dir := t.TempDir()
	opt := StoreOptions{Options: Options{Dim: 4, Metric: Cosine}}
	s, _ := openStore(t, dir, opt)
	_, _, err := Open(dir, opt)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second open: %v", err)
	}
	t.Logf("second open: %v", err)
	log := filepath.Join(dir, "log-0.wal")
	size := func() int64 { st, _ := os.Stat(log); return st.Size() }
	bg := context.Background()
	for _, c := range []struct {
		ids   []uint64
		vecs  [][]float32
		metas []Meta
		want  error
	}{
		{[]uint64{1, 2}, [][]float32{{1, 2, 3, 4}, {1, 2, 3}}, nil, ErrDim},
		{[]uint64{1, 2}, [][]float32{{1, 2, 3, 4}, {1, float32(math.NaN()), 3, 4}}, nil, ErrNotFinite},
		{[]uint64{1, 2}, [][]float32{{1, 2, 3, 4}, {0, 0, 0, 0}}, nil, ErrZero},
		{[]uint64{1, 1}, [][]float32{{1, 2, 3, 4}, {1, 2, 3, 5}}, nil, ErrDuplicate},
		{[]uint64{1, 2}, [][]float32{{1, 2, 3, 4}, {1, 2, 3, 5}}, []Meta{nil, {"k": strings.Repeat("x", 70000)}}, nil},
	} {
		before := size()
		err := s.Add(bg, c.ids, c.vecs, c.metas)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) || s.Len() != 0 || size() != before {
			t.Fatalf("bad batch: %v, %d items, log %d -> %d bytes", err, s.Len(), before, size())
		}
	}
	if err := s.Add(bg, []uint64{1}, [][]float32{{1, 0, 0, 0}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(bg, []uint64{2, 1}, [][]float32{{0, 1, 0, 0}, {0, 1, 0, 0}}, nil); !errors.Is(err, ErrDuplicate) || s.Has(2) {
		t.Fatalf("duplicate of a stored id: %v", err)
	}
	before := size()
	if err := s.Delete(bg, []uint64{42, 43}); err != nil || size() != before {
		t.Fatalf("delete of unknown ids: %v, log grew %d bytes", err, size()-before)
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if err := s.Add(ctx, []uint64{3}, [][]float32{{1, 1, 0, 0}}, nil); !errors.Is(err, context.Canceled) || s.Has(3) {
		t.Fatalf("cancelled add: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(bg, []uint64{3}, [][]float32{{1, 1, 0, 0}}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("add after close: %v", err)
	}
	if _, err := s.Search([]float32{1, 0, 0, 0}, 1, SearchOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("search after close: %v", err)
	}
	s, _ = openStore(t, dir, opt) // the lock was released
	defer s.Close()
	if s.Len() != 1 || s.Health() != nil {
		t.Fatalf("%d items, health %v", s.Len(), s.Health())
	}
}

func TestStoreConcurrent(t *testing.T) {
	const dim = 16
	dir := t.TempDir()
	opt := StoreOptions{Options: Options{Dim: dim, Metric: L2, ExactBelow: -1}, SnapshotEvery: 150, NoSync: true}
	s, _ := openStore(t, dir, opt)
	batches := 10
	if testing.Short() {
		batches = 5
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < batches; b++ {
				from := w*10000 + b*20
				if err := addIDs(s, from, 20, dim); err != nil {
					t.Error(err)
					return
				}
				if err := s.Delete(context.Background(), []uint64{uint64(from)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var readers sync.WaitGroup
	for r := 0; r < 2; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				if _, err := s.Search(vecFor(uint64(i), dim), 5, SearchOptions{}); err != nil {
					t.Error(err)
					return
				}
				s.Get(uint64(i % 100))
				s.Len()
				s.MemoryBytes()
			}
		}()
	}
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if err := s.Snapshot(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	close(done)
	readers.Wait()
	want := 3 * batches * 19
	if s.Len() != want || s.Health() != nil {
		t.Fatalf("%d items, want %d; health %v", s.Len(), want, s.Health())
	}
	s.Close()
	s, _ = openStore(t, dir, opt)
	defer s.Close()
	if s.Len() != want {
		t.Fatalf("%d items after reopening, want %d", s.Len(), want)
	}
	for w := 0; w < 3; w++ {
		for b := 0; b < batches; b++ {
			from := uint64(w*10000 + b*20)
			if s.Has(from) {
				t.Fatalf("deleted %d is back", from)
			}
			for id := from + 1; id < from+20; id++ {
				checkItem(t, s, id, dim)
			}
		}
	}
}

// TestMain runs the package's tests, or, when TestKill9Recovery starts
// this binary as its child (LLMRT_INDEX_CHILD set), the child's ingest
// loop instead.
func TestMain(m *testing.M) {
	if dir := os.Getenv("LLMRT_INDEX_CHILD"); dir != "" {
		ingestChild(dir)
		return
	}
	os.Exit(m.Run())
}

// ingestChild is the child process of TestKill9Recovery: it adds batches
// of 25 forever, deleting the first id of each batch after it, and prints
// every acknowledged operation.
func ingestChild(dir string) {
	start, _ := strconv.Atoi(os.Getenv("LLMRT_INDEX_START"))
	every, _ := strconv.Atoi(os.Getenv("LLMRT_INDEX_SNAPSHOT_EVERY"))
	s, rec, err := Open(dir, StoreOptions{Options: Options{Dim: 16, Metric: L2}, SnapshotEvery: every})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Printf("open %+v\n", rec)
	for i := start; ; i += 25 {
		if err := addIDs(s, i, 25, 16); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Printf("ack %d %d\n", i, i+25)
		if err := s.Delete(context.Background(), []uint64{uint64(i)}); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Printf("del %d\n", i)
	}
}

// TestKill9Recovery kills an ingesting child process with SIGKILL at random
// moments, several rounds on one directory (every round recovers what the
// previous kill left, and small SnapshotEvery values put kills inside
// rotations): every acknowledged item is there with its exact vector and
// metadata, every acknowledged delete holds, and nothing else is stored but
// the one batch (and delete) in flight at each kill, also exact. Meanwhile
// read-only opens beside the child see everything it acknowledged.
func TestKill9Recovery(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const dim = 16
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("LLMRT_KILL_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("kill delays from LLMRT_KILL_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	added := map[uint64]bool{}   // acknowledged adds
	deleted := map[uint64]bool{} // acknowledged deletes
	unsure := map[uint64]bool{}  // in flight at a kill
	next := 0
	midRotation := 0 // kills that left a rotation unfinished
	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	for round := 0; round < rounds; round++ {
		every := []int{300, 1, 40}[round%3]
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), "LLMRT_INDEX_CHILD="+dir,
			"LLMRT_INDEX_START="+strconv.Itoa(next), "LLMRT_INDEX_SNAPSHOT_EVERY="+strconv.Itoa(every))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		pendingDel := int64(-1)
		childRec := ""
		handle := func(l string) {
			var a, b int
			switch {
			case strings.HasPrefix(l, "ack "):
				fmt.Sscanf(l, "ack %d %d", &a, &b)
				for id := a; id < b; id++ {
					added[uint64(id)] = true
				}
				next, pendingDel = b, int64(a)
			case strings.HasPrefix(l, "del "):
				fmt.Sscanf(l, "del %d", &a)
				deleted[uint64(a)] = true
				pendingDel = -1
			case strings.HasPrefix(l, "open "):
				childRec = strings.TrimPrefix(l, "open ")
				if strings.Contains(l, "Corrupt:index") {
					t.Errorf("round %d: child recovery found corruption: %s", round, l)
				}
			case strings.HasPrefix(l, "error"):
				t.Errorf("round %d: child: %s", round, l)
			}
		}
		delay := time.Duration(50+rng.IntN(350)) * time.Millisecond
		deadline := time.After(delay)
		lockChecked := round > 0
		roChecks, acks := 0, 0
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				handle(l)
				if !lockChecked && strings.HasPrefix(l, "ack ") {
					// Another process holds the store: a clear refusal.
					_, _, err := Open(dir, StoreOptions{Options: Options{Dim: dim, Metric: L2}})
					if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(cmd.Process.Pid)) {
						t.Errorf("open while the child holds the store: %v", err)
					}
					lockChecked = true
				}
				if strings.HasPrefix(l, "ack ") {
					acks++
				}
				if strings.HasPrefix(l, "ack ") && (acks == 2 || acks == 10 || acks == 40) {
					// A reader beside the writer sees all it acknowledged.
					roChecks++
					checkReadOnly(t, dir, added, deleted, unsure, pendingDel)
				}
			case <-deadline:
				cmd.Process.Signal(syscall.SIGKILL)
				for l := range lines { // what it printed before dying counts
					handle(l)
				}
				break read
			}
		}
		cmd.Wait()
		if t.Failed() {
			t.FailNow()
		}
		if inRotation(dir) {
			midRotation++
		}
		// The batch after the last acknowledged one may or may not be there,
		// and so may the delete in flight; the next round starts beyond.
		for id := next; id < next+25; id++ {
			unsure[uint64(id)] = true
		}
		if pendingDel >= 0 {
			unsure[uint64(pendingDel)] = true
		}
		next += 25
		t.Logf("round %d: child recovered %s; killed after %v (snapshot every %d), %d items acknowledged so far, %d read-only opens beside it", round, childRec, delay, every, len(added), roChecks)
	}
	s, rec := openStore(t, dir, StoreOptions{Options: Options{Dim: dim, Metric: L2}})
	defer s.Close()
	if rec.Corrupt != nil || rec.DamagedSnapshot != nil || s.Health() != nil {
		t.Fatalf("after kill -9: %+v, health %v", rec, s.Health())
	}
	if len(added) == 0 {
		t.Fatal("the child acknowledged nothing")
	}
	present := 0
	for id := uint64(0); id < uint64(next); id++ {
		has := s.Has(id)
		switch {
		case unsure[id]:
		case deleted[id] && has:
			t.Fatalf("item %d was deleted (acknowledged) but is back", id)
		case added[id] && !deleted[id] && !has:
			t.Fatalf("acknowledged item %d lost (recovery %+v)", id, rec)
		case !added[id] && has:
			t.Fatalf("item %d was never added but is there", id)
		}
		if has {
			checkItem(t, s, id, dim)
			present++
		}
	}
	if present != s.Len() {
		t.Fatalf("%d items stored, %d of them in the ids written", s.Len(), present)
	}
	t.Logf("%d rounds (%d killed inside a rotation): %d adds and %d deletes acknowledged, %d live; last recovery %+v",
		rounds, midRotation, len(added), len(deleted), s.Len(), rec)
}

// checkReadOnly opens the store read-only while the child writes to it:
// every add and delete acknowledged so far holds (but those in flight now or
// at an earlier kill), and every item it holds, acknowledged yet or not, is
// exact.
func checkReadOnly(t *testing.T, dir string, added, deleted, unsure map[uint64]bool, pendingDel int64) {
	t.Helper()
	const dim = 16
	var h *HNSW
	var err error
	for try := 0; try < 20; try++ {
		if h, _, err = OpenReadOnly(dir, Options{Dim: dim, Metric: L2}); !errors.Is(err, os.ErrNotExist) {
			break // a file vanishes only when the child rotates meanwhile
		}
	}
	if err != nil {
		t.Errorf("read-only open beside the writer: %v", err)
		return
	}
	defer h.Close()
	for id := range added {
		switch ok := h.Has(id); {
		case int64(id) == pendingDel || unsure[id]:
		case deleted[id] && ok:
			t.Errorf("read-only: deleted %d is there", id)
		case !deleted[id] && !ok:
			t.Errorf("read-only: acknowledged %d is missing", id)
		}
	}
	for _, id := range h.IDs() {
		if v, m, _ := h.Get(id); !slices.Equal(v, vecFor(id, dim)) || m["n"] != storeMeta(id)["n"] {
			t.Errorf("read-only: %d holds another vector or metadata", id)
		}
	}
}

// inRotation reports whether a store's directory shows a rotation cut
// short: a temporary snapshot, or a newest log without its snapshot.
func inRotation(dir string) bool {
	if tmp, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(tmp) > 0 {
		return true
	}
	snaps, _ := listGens(dir, snapPrefix, snapSuffix)
	logs, _ := listGens(dir, logPrefix, logSuffix)
	return len(snaps) > 0 && len(logs) > 0 && logs[len(logs)-1] > snaps[len(snaps)-1]
}

// A read-only open sees the store as Open would recover it, beside an open
// Store, and changes no file: not a torn tail, not a temporary snapshot.
func TestStoreReadOnly(t *testing.T) {
	const dim = 8
	dir := t.TempDir()
	opt := StoreOptions{Options: Options{Dim: dim, Metric: Cosine}, SnapshotEvery: -1, NoSync: true}
	if _, _, err := OpenReadOnly(filepath.Join(dir, "none"), opt.Options); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read-only open of no store: %v", err)
	}
	s, _ := openStore(t, dir, opt)
	addRange(t, s, 0, 50, dim)
	if err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	addRange(t, s, 50, 20, dim)
	s.Delete(context.Background(), []uint64{3, 55})
	h, rec, err := OpenReadOnly(dir, opt.Options) // the writer holds the lock
	if err != nil {
		t.Fatal(err)
	}
	if h.Len() != 68 || rec.Replayed != 22 || !rec.Snapshot || rec.Generation != 1 || h.Has(3) || h.Has(55) {
		t.Fatalf("read-only: %d items, %+v", h.Len(), rec)
	}
	for id := uint64(0); id < 70; id++ {
		if id != 3 && id != 55 {
			want, _ := s.Index().Vector(id)
			if v, _, ok := h.Get(id); !ok || !slices.Equal(v, want) {
				t.Fatalf("read-only: item %d differs", id)
			}
		}
	}
	h.Close()
	s.Close()
	if _, _, err := OpenReadOnly(dir, Options{Dim: 4, Metric: Cosine}); err == nil || !strings.Contains(err.Error(), "dimension 8") {
		t.Fatalf("read-only open with another dimension: %v", err)
	}

	// A torn tail and a half-written snapshot are seen past, and left.
	log := filepath.Join(dir, "log-1.wal")
	appendRaw(t, log, []byte{9, 0, 0})
	tmp := filepath.Join(dir, "snapshot-2.hnsw.tmp")
	os.WriteFile(tmp, []byte("half"), 0o644)
	before := must(os.ReadFile(log))
	h, rec, err = OpenReadOnly(dir, Options{})
	if err != nil || h.Len() != 68 || rec.TornBytes != 3 {
		t.Fatalf("read-only over a torn tail: %v, %+v", err, rec)
	}
	h.Close()
	if after := must(os.ReadFile(log)); !slices.Equal(after, before) {
		t.Fatal("read-only open changed the log")
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("read-only open removed a file: %v", err)
	}
	s, rec = openStore(t, dir, opt)
	defer s.Close()
	if s.Len() != 68 || rec.TornBytes != 3 {
		t.Fatalf("open after the read-only one: %d items, %+v", s.Len(), rec)
	}
}

func appendRaw(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// Compact drops the tombstones: the live items, their vectors and
// metadata stay, and a reopened store holds the compacted graph.
func TestStoreCompact(t *testing.T) {
	const dim = 16
	dir := t.TempDir()
	opt := StoreOptions{Options: Options{Dim: dim, Metric: L2, ExactBelow: -1}, SnapshotEvery: -1, NoSync: true}
	s, _ := openStore(t, dir, opt)
	addRange(t, s, 0, 600, dim)
	var dels []uint64
	for id := uint64(0); id < 600; id++ {
		if id%3 != 0 {
			dels = append(dels, id)
		}
	}
	if err := s.Delete(context.Background(), dels); err != nil {
		t.Fatal(err)
	}
	if s.Index().Tombstones() != 400 {
		t.Fatalf("%d tombstones", s.Index().Tombstones())
	}
	old := s.Index()
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	if s.Index().Tombstones() != 0 || s.Len() != 200 || s.Index().MemoryBytes() >= old.MemoryBytes() {
		t.Fatalf("after compaction: %d tombstones, %d items, %d bytes (were %d)", s.Index().Tombstones(), s.Len(), s.Index().MemoryBytes(), old.MemoryBytes())
	}
	// A search that holds the old graph still works.
	if _, err := old.Search(vecFor(7, dim), 3, SearchOptions{}); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store) {
		t.Helper()
		for id := uint64(0); id < 600; id++ {
			if id%3 == 0 {
				checkItem(t, s, id, dim)
				if r, err := s.Search(vecFor(id, dim), 1, SearchOptions{}); err != nil || r[0].ID != id {
					t.Fatalf("search for %d: %v %v", id, r, err)
				}
			} else if s.Has(id) {
				t.Fatalf("deleted %d is back", id)
			}
		}
	}
	check(s)
	addRange(t, s, 1000, 5, dim)
	s.Close()
	s, rec := openStore(t, dir, opt)
	defer s.Close()
	if s.Len() != 205 || s.Index().Tombstones() != 0 || rec.Replayed != 5 {
		t.Fatalf("reopened: %d items, %d tombstones, %+v", s.Len(), s.Index().Tombstones(), rec)
	}
	check(s)
	if ids := s.Index().IDs(); len(ids) != 205 || ids[0] != 0 || ids[204] != 1004 || !slices.IsSorted(ids) {
		t.Fatalf("ids %v", ids)
	}
}
