package rag

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

type snapshot struct {
	Source, Title, Text string
	ID                  uint64
	Score               float32
}

func searchAll(t *testing.T, c *Collection, queries []string, mode Mode) []snapshot {
	t.Helper()
	var out []snapshot
	for _, q := range queries {
		hits, err := c.Search(context.Background(), q, SearchOptions{K: 3, Mode: mode, MMR: 0.8})
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hits {
			out = append(out, snapshot{h.Chunk.Source, h.Chunk.Title, h.Chunk.Text, h.Chunk.ID, h.Score})
		}
	}
	return out
}

func TestPersistence(t *testing.T) {
	emb := newBOW()
	root := t.TempDir()
	ctx := context.Background()
	s, err := OpenStore(root, StoreOptions{Embedder: emb, Exact: false})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Create(ctx, "kb", CreateOptions{Chunking: ChunkOptions{Size: 24, Overlap: 4}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	corpus(t, dir, false)
	for i, tp := range topics {
		writeFile(t, filepath.Join(dir, "topics", fmt.Sprintf("%d.md", i)), "# Topic\n\n"+tp+"\n")
	}
	if _, err := c.AddPath(ctx, dir, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	// Some history in the log: an update and a removal.
	writeFile(t, filepath.Join(dir, "topics", "0.md"), "# Topic\n\nThe lighthouse was automated in 1990.\n")
	if _, err := c.AddPath(ctx, dir, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveSource(ctx, filepath.Join(dir, "topics", "1.md")); err != nil {
		t.Fatal(err)
	}
	queries := append([]string{"lighthouse automated", "sourdough starter", "reset password"}, topics[2:]...)
	want := map[Mode][]snapshot{}
	for _, m := range []Mode{Vector, Hybrid, Keyword} {
		want[m] = searchAll(t, c, queries, m)
	}
	st1, _ := c.Stats()
	srcs := c.Sources()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "kb", dirtyFile)); !os.IsNotExist(err) {
		t.Fatalf("dirty marker left after a clean close: %v", err)
	}
	// The HNSW snapshot is derived data: a damaged one is rebuilt from
	// vectors.bin and the results stay the same.
	graph := filepath.Join(root, "kb", indexDir, graphFile)
	g, err := os.ReadFile(graph)
	if err != nil || len(g) < 100 {
		t.Fatalf("no index snapshot after a clean close: %v", err)
	}
	g[len(g)/2] ^= 0x40
	os.WriteFile(graph, g, 0o644)

	s2, err := OpenStore(root, StoreOptions{Embedder: emb, Exact: false})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	c2, err := s2.Get(ctx, "kb")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []Mode{Vector, Hybrid, Keyword} {
		if got := searchAll(t, c2, queries, m); !slices.Equal(got, want[m]) {
			t.Fatalf("%v results after reopening differ:\n got %+v\nwant %+v", m, got, want[m])
		}
	}
	st2, _ := c2.Stats()
	st1.DiskBytes, st2.DiskBytes = 0, 0
	if st1 != st2 {
		t.Errorf("stats %+v after reopening, were %+v", st2, st1)
	}
	if got := c2.Sources(); !slices.EqualFunc(got, srcs, func(a, b SourceInfo) bool {
		return a.Path == b.Path && a.Hash == b.Hash && a.Chunks == b.Chunks && a.Added.Equal(b.Added)
	}) {
		t.Errorf("sources %+v after reopening, were %+v", got, srcs)
	}
	// New ids continue after the old ones.
	maxID := uint64(0)
	for id := range c2.chunks {
		maxID = max(maxID, id)
	}
	writeFile(t, filepath.Join(dir, "new.txt"), "fresh content")
	if _, err := c2.AddPath(ctx, filepath.Join(dir, "new.txt"), AddOptions{}); err != nil {
		t.Fatal(err)
	}
	if ids := chunkIDs(c2, filepath.Join(dir, "new.txt")); len(ids) != 1 || ids[0] <= maxID {
		t.Errorf("new chunk ids %v, want above %d", ids, maxID)
	}
}

// A crash leaves a torn record at the end of the log and of the vector
// file, and the dirty marker; opening cuts the torn tails, rebuilds the
// index and finds everything committed.
func TestCrashRecovery(t *testing.T) {
	emb := newBOW()
	root := t.TempDir()
	ctx := context.Background()
	s, err := OpenStore(root, StoreOptions{Embedder: emb, Exact: false})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Create(ctx, "kb", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	corpus(t, dir, false)
	if _, err := c.AddPath(ctx, dir, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	want := searchAll(t, c, []string{"llama meadow", "password"}, Hybrid)
	n := len(c.chunks)
	// Simulate the crash: release the files without a clean close.
	c.mu.Lock()
	c.closed = true
	c.release()
	c.mu.Unlock()
	s.mu.Lock()
	delete(s.open, "kb")
	s.mu.Unlock()
	cdir := filepath.Join(root, "kb")
	if _, err := os.Stat(filepath.Join(cdir, dirtyFile)); err != nil {
		t.Fatalf("no dirty marker while open: %v", err)
	}
	appendBytes(t, filepath.Join(cdir, chunksFile), []byte(`{"op":"put","source":{"path":"/x/torn.md"`))
	appendBytes(t, filepath.Join(cdir, vectorsFile), make([]byte, 100))
	logSize, vecSize := fileSize(t, filepath.Join(cdir, chunksFile)), fileSize(t, filepath.Join(cdir, vectorsFile))

	c2, err := s.Get(ctx, "kb")
	if err != nil {
		t.Fatal(err)
	}
	if len(c2.chunks) != n || c2.idx.Len() != n {
		t.Fatalf("%d chunks, %d vectors after recovery, want %d", len(c2.chunks), c2.idx.Len(), n)
	}
	if got := searchAll(t, c2, []string{"llama meadow", "password"}, Hybrid); !slices.Equal(got, want) {
		t.Fatalf("results after recovery differ:\n got %+v\nwant %+v", got, want)
	}
	if fileSize(t, filepath.Join(cdir, chunksFile)) >= logSize || fileSize(t, filepath.Join(cdir, vectorsFile)) >= vecSize {
		t.Error("torn tails were not cut")
	}
	// A corrupt record in the middle of the log is an error, not silence.
	s.Close()
	b, _ := os.ReadFile(filepath.Join(cdir, chunksFile))
	b = append([]byte("{broken\n"), b...)
	os.WriteFile(filepath.Join(cdir, chunksFile), b, 0o644)
	s3, _ := OpenStore(root, StoreOptions{Embedder: emb, Exact: false})
	defer s3.Close()
	if _, err := s3.Get(ctx, "kb"); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt log opened: %v", err)
	}
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// Many updates of one file make the log mostly dead; it is compacted and
// still replays to the same state.
func TestCompaction(t *testing.T) {
	emb := newBOW()
	root := t.TempDir()
	ctx := context.Background()
	s, err := OpenStore(root, StoreOptions{Embedder: emb, Exact: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Create(ctx, "kb", CreateOptions{Chunking: ChunkOptions{Size: 16, Overlap: -1}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "stable.txt"), "stable text stays")
	p := filepath.Join(dir, "churn.txt")
	big := strings.Repeat("filler words for the chunk log. ", 200)
	written := int64(0)
	for i := 0; i < 40; i++ {
		writeFile(t, p, fmt.Sprintf("version %d. %s", i, big))
		if _, err := c.AddPath(ctx, dir, AddOptions{}); err != nil {
			t.Fatal(err)
		}
		written += int64(len(big))
	}
	logBytes := fileSize(t, filepath.Join(root, "kb", chunksFile))
	if logBytes > written/4 {
		t.Errorf("log is %d bytes after %d bytes of updates: not compacted", logBytes, written)
	}
	if dead := c.vecs.dead(); dead > int64(len(c.vecs.offs))+1024 {
		t.Errorf("%d dead vectors kept", dead)
	}
	want := searchAll(t, c, []string{"version 39", "stable"}, Hybrid)
	if !strings.Contains(want[0].Text, "version 39") {
		t.Fatalf("latest version not found first: %+v", want[0])
	}
	s.Close()
	s2, _ := OpenStore(root, StoreOptions{Embedder: emb, Exact: true})
	defer s2.Close()
	c2, err := s2.Get(ctx, "kb")
	if err != nil {
		t.Fatal(err)
	}
	if got := searchAll(t, c2, []string{"version 39", "stable"}, Hybrid); !slices.Equal(got, want) {
		t.Fatalf("after compaction and reopening:\n got %+v\nwant %+v", got, want)
	}
}

func TestStoreCollections(t *testing.T) {
	emb := newBOW()
	s, root := openTestStore(t, emb, false)
	ctx := context.Background()
	for _, bad := range []string{"", "../x", "a/b", ".hidden", strings.Repeat("x", 65)} {
		if _, err := s.Create(ctx, bad, CreateOptions{}); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	if _, err := s.Create(ctx, "x", CreateOptions{Metric: "manhattan"}); err == nil {
		t.Error("unknown metric accepted")
	}
	if _, err := s.Create(ctx, "x", CreateOptions{Chunking: ChunkOptions{Size: 4096}}); err == nil {
		t.Error("chunk size over the model limit accepted")
	}
	for _, n := range []string{"b", "a"} {
		if _, err := s.Create(ctx, n, CreateOptions{Metric: Dot}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Create(ctx, "a", CreateOptions{}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate create: %v", err)
	}
	ms, err := s.List()
	if err != nil || len(ms) != 2 || ms[0].Name != "a" || ms[1].Name != "b" || ms[0].Metric != Dot || ms[0].Model != "bow-test" || ms[0].Chunking.Size != 256 || ms[0].Chunking.Overlap != 32 {
		t.Fatalf("list %+v, %v", ms, err)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get unknown: %v", err)
	}
	if _, err := s.Stats(ctx, "a"); err != nil {
		t.Error(err)
	}
	// Another process (here: another store) cannot open or delete an open
	// collection.
	other, err := OpenStore(root, StoreOptions{Embedder: emb, Exact: true})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Get(ctx, "a"); !errors.Is(err, ErrLocked) {
		t.Errorf("second open: %v", err)
	}
	if err := other.Delete("a"); !errors.Is(err, ErrLocked) {
		t.Errorf("delete of a collection open elsewhere: %v", err)
	}
	// Delete removes everything.
	if err := s.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "a")); !os.IsNotExist(err) {
		t.Errorf("collection folder left: %v", err)
	}
	if err := s.Delete("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	if ms, _ := s.List(); len(ms) != 1 {
		t.Errorf("list after delete: %+v", ms)
	}
	// A different model cannot open the collection; no model can still
	// list it and search it by keyword.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "k.txt"), "kangaroo facts")
	b, _ := s.Get(ctx, "b")
	if _, err := b.AddPath(ctx, dir, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Get(ctx, "b"); !errors.Is(err, ErrClosed) {
		t.Errorf("get on a closed store: %v", err)
	}
	wrong, _ := OpenStore(root, StoreOptions{Embedder: &tableEmbedder{}, Exact: true})
	defer wrong.Close()
	if _, err := wrong.Get(ctx, "b"); !errors.Is(err, ErrModelMismatch) {
		t.Errorf("other model: %v", err)
	}
	none, _ := OpenStore(root, StoreOptions{Exact: true})
	defer none.Close()
	nb, err := none.Get(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if hits, err := nb.Search(ctx, "kangaroo", SearchOptions{Mode: Keyword}); err != nil || len(hits) != 1 {
		t.Errorf("keyword search without a model: %+v, %v", hits, err)
	}
	if _, err := nb.Search(ctx, "kangaroo", SearchOptions{}); !errors.Is(err, ErrNoEmbedder) {
		t.Errorf("vector search without a model: %v", err)
	}
	if _, err := nb.AddPath(ctx, dir, AddOptions{}); !errors.Is(err, ErrNoEmbedder) {
		t.Errorf("ingestion without a model: %v", err)
	}
	if _, err := none.Create(ctx, "c", CreateOptions{}); !errors.Is(err, ErrNoEmbedder) {
		t.Errorf("create without a model: %v", err)
	}
}

type memRecorder struct {
	mu   sync.Mutex
	last map[string]int64
}

func (m *memRecorder) SetMemory(name string, b int64) {
	m.mu.Lock()
	m.last[name] = b
	m.mu.Unlock()
}
func (m *memRecorder) Forget(name string) {
	m.mu.Lock()
	delete(m.last, name)
	m.mu.Unlock()
}

// The index's memory is reported on open and after every ingestion, and
// forgotten on close.
func TestIndexMemoryReported(t *testing.T) {
	rec := &memRecorder{last: map[string]int64{}}
	s, err := OpenStore(t.TempDir(), StoreOptions{Embedder: newBOW(), Memory: rec})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := s.Create(ctx, "kb", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	empty, ok := rec.last["kb"]
	if !ok {
		t.Fatal("no memory reported on create")
	}
	dir := t.TempDir()
	corpus(t, dir, false)
	if _, err := c.AddPath(ctx, dir, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := rec.last["kb"]; got <= empty || got != c.idx.MemoryBytes() {
		t.Fatalf("reported %d bytes after ingestion (empty %d, index %d)", got, empty, c.idx.MemoryBytes())
	}
	s.Close()
	if _, ok := rec.last["kb"]; ok {
		t.Fatal("memory still reported after close")
	}
}
