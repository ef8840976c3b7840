package index

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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

func addRange(t *testing.T, s *Store, from, n, dim int) {
	t.Helper()
	ids := make([]uint64, n)
	vecs := make([][]float32, n)
	metas := make([]Meta, n)
	for i := range ids {
		ids[i] = uint64(from + i)
		vecs[i] = vecFor(ids[i], dim)
		metas[i] = Meta{"n": fmt.Sprintf("%08d", from+i)} // fixed width: equal record sizes
	}
	if err := s.Add(context.Background(), ids, vecs, metas); err != nil {
		t.Fatal(err)
	}
}

func TestStoreRoundTrip(t *testing.T) {
	for _, snap := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshot=%v", snap), func(t *testing.T) {
			dir := t.TempDir()
			const dim = 32
			s, rec, err := Open(dir, StoreOptions{Options: Options{Dim: dim, Metric: L2}, SnapshotEvery: -1})
			if err != nil || rec.Snapshot || rec.Replayed != 0 {
				t.Fatalf("open: %+v %v", rec, err)
			}
			addRange(t, s, 0, 1000, dim)
			if snap {
				if err := s.Snapshot(); err != nil {
					t.Fatal(err)
				}
			}
			addRange(t, s, 1000, 1000, dim)
			var dels []uint64
			for i := uint64(0); i < 2000; i += 7 {
				dels = append(dels, i)
			}
			if err := s.Delete(context.Background(), dels); err != nil {
				t.Fatal(err)
			}
			q := vecFor(5, dim)
			want, _ := s.Search(q, 10, SearchOptions{Ef: 100})
			n := s.Len()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, rec, err := Open(dir, StoreOptions{Options: Options{Dim: dim, Metric: L2}})
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			if rec.Snapshot != snap || rec.Corrupt != nil || rec.TornBytes != 0 {
				t.Fatalf("recovery %+v", rec)
			}
			if s2.Len() != n {
				t.Fatalf("%d items after reopening, want %d", s2.Len(), n)
			}
			got, _ := s2.Search(q, 10, SearchOptions{Ef: 100})
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("results after reopening\n got %v\nwant %v", got, want)
			}
			if _, ok := s2.Index().Vector(7); ok {
				t.Fatal("a deleted item came back")
			}
			// Another dimension is refused.
			s2.Close()
			if _, _, err := Open(dir, StoreOptions{Options: Options{Dim: 16, Metric: L2}}); err == nil {
				t.Fatal("opened with another dimension")
			}
		})
	}
}

func TestStoreTornTailAndCorruption(t *testing.T) {
	dir := t.TempDir()
	const dim = 8
	s, _, err := Open(dir, StoreOptions{Options: Options{Dim: dim, Metric: L2}, SnapshotEvery: -1, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		addRange(t, s, i, 1, dim) // one record each
	}
	s.Close()
	log := filepath.Join(dir, "log-0.wal")
	full, _ := os.ReadFile(log)
	recLen := (len(full) - walHeader) / 20
	// Every cut inside the last record: the first 19 survive.
	for cut := 1; cut < recLen; cut++ {
		os.WriteFile(log, full[:len(full)-cut], 0o644)
		s, rec, err := Open(dir, StoreOptions{Options: Options{Dim: dim, Metric: L2}, SnapshotEvery: -1, NoSync: true})
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if s.Len() != 19 || rec.TornBytes != int64(recLen-cut) || rec.Corrupt != nil {
			t.Fatalf("cut %d: %d items, recovery %+v", cut, s.Len(), rec)
		}
		s.Close()
	}
	// A flipped byte in record 5 with more after it: reported, and nothing
	// from record 5 on is loaded.
	bad := append([]byte(nil), full...)
	bad[walHeader+5*recLen+20] ^= 0xff
	os.WriteFile(log, bad, 0o644)
	s, rec, err := Open(dir, StoreOptions{Options: Options{Dim: dim, Metric: L2}, SnapshotEvery: -1, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if rec.Corrupt == nil || !strings.Contains(rec.Corrupt.Error(), "checksum") || s.Len() != 5 {
		t.Fatalf("corrupt record: %d items, recovery %+v", s.Len(), rec)
	}
	for id := uint64(0); id < 5; id++ {
		if v, ok := s.Index().Vector(id); !ok || fmt.Sprint(v) != fmt.Sprint(vecFor(id, dim)) {
			t.Fatalf("item %d lost or changed", id)
		}
	}
}

func TestStoreLockAndValidation(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(dir, StoreOptions{Options: Options{Dim: 4, Metric: Cosine}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := Open(dir, StoreOptions{Options: Options{Dim: 4, Metric: Cosine}}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	// A bad item fails the whole batch before anything is written.
	err = s.Add(context.Background(), []uint64{1, 2}, [][]float32{{1, 2, 3, 4}, {1, 2, 3}}, nil)
	if err == nil || s.Len() != 0 {
		t.Fatalf("bad batch: %v, %d items", err, s.Len())
	}
	if err := s.Add(context.Background(), []uint64{1}, [][]float32{{1, 0, 0, 0}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(context.Background(), []uint64{1}, [][]float32{{0, 1, 0, 0}}, nil); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate: %v", err)
	}
}

func TestStoreConcurrentAddSearch(t *testing.T) {
	const dim = 16
	s, _, err := Open(t.TempDir(), StoreOptions{Options: Options{Dim: dim, Metric: L2}, SnapshotEvery: 200, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for b := 0; b < 10; b++ {
				addRange(t, s, w*10000+b*20, 20, dim)
			}
		}(w)
	}
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if _, err := s.Search(vecFor(uint64(i), dim), 5, SearchOptions{}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if s.Len() != 600 {
		t.Fatalf("%d items, want 600", s.Len())
	}
}

// TestHelperIngest is the child process of TestKill9Recovery: it adds
// batches forever and prints each acknowledged range.
func TestHelperIngest(t *testing.T) {
	dir := os.Getenv("LLMRT_INDEX_CHILD")
	if dir == "" {
		t.Skip("child process of TestKill9Recovery")
	}
	start, _ := strconv.Atoi(os.Getenv("LLMRT_INDEX_START"))
	s, _, err := Open(dir, StoreOptions{Options: Options{Dim: 16, Metric: L2}, SnapshotEvery: 300})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for i := start; ; i += 25 {
		addRange(t, s, i, 25, 16)
		fmt.Printf("ack %d %d\n", i, i+25)
	}
}

// TestKill9Recovery kills an ingesting child with SIGKILL at random points,
// several rounds on the same directory: every acknowledged item is found
// with its exact vector, and nothing else is there.
func TestKill9Recovery(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 7))
	acked := map[uint64]bool{}
	next := 0
	rounds := 5
	if testing.Short() {
		rounds = 2
	}
	for round := 0; round < rounds; round++ {
		cmd := exec.Command(exe, "-test.run=^TestHelperIngest$", "-test.count=1")
		cmd.Env = append(os.Environ(), "LLMRT_INDEX_CHILD="+dir, "LLMRT_INDEX_START="+strconv.Itoa(next))
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		deadline := time.After(time.Duration(50+rng.IntN(350)) * time.Millisecond)
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				var a, b int
				if _, err := fmt.Sscanf(l, "ack %d %d", &a, &b); err == nil {
					for id := a; id < b; id++ {
						acked[uint64(id)] = true
					}
					next = b
				} else if strings.HasPrefix(l, "error") {
					t.Fatalf("child: %s", l)
				}
			case <-deadline:
				cmd.Process.Kill()
				for l := range lines { // acks printed before the kill count too
					var a, b int
					if _, err := fmt.Sscanf(l, "ack %d %d", &a, &b); err == nil {
						for id := a; id < b; id++ {
							acked[uint64(id)] = true
						}
						next = b
					}
				}
				break read
			}
		}
		cmd.Wait()
		// Ids of a batch in flight at the kill may or may not be there;
		// the next round starts after them.
		next += 25
	}
	s, rec, err := Open(dir, StoreOptions{Options: Options{Dim: 16, Metric: L2}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if rec.Corrupt != nil {
		t.Fatalf("corruption after kill -9: %v", rec.Corrupt)
	}
	if len(acked) == 0 {
		t.Fatal("the child acknowledged nothing")
	}
	for id := range acked {
		v, ok := s.Index().Vector(id)
		if !ok {
			t.Fatalf("acknowledged item %d lost (recovery %+v)", id, rec)
		}
		if fmt.Sprint(v) != fmt.Sprint(vecFor(id, 16)) {
			t.Fatalf("item %d has another vector", id)
		}
	}
	// Anything beyond the acknowledged items is a whole batch in flight,
	// with its exact vectors.
	extra := s.Len() - len(acked)
	if extra < 0 || extra > rounds*25 {
		t.Fatalf("%d items for %d acknowledged", s.Len(), len(acked))
	}
	t.Logf("%d rounds: %d acknowledged, %d more in flight kept; last recovery %+v", rounds, len(acked), extra, rec)
}
