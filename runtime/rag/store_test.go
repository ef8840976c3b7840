package rag

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/llmrt/llmrt/runtime/index"
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

// kbWithTopics creates collection "kb" in s holding the corpus and a file
// per topic, in a folder it returns.
func kbWithTopics(t *testing.T, s *Store, opt CreateOptions) (*Collection, string) {
	t.Helper()
	c, err := s.Create(context.Background(), "kb", opt)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	corpus(t, dir, false)
	for i, tp := range topics {
		writeFile(t, filepath.Join(dir, "topics", fmt.Sprintf("%d.md", i)), "# Topic\n\n"+tp+"\n")
	}
	if _, err := c.AddPath(context.Background(), dir, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	return c, dir
}

func TestPersistence(t *testing.T) {
	emb := newBOW()
	root := t.TempDir()
	ctx := context.Background()
	s, err := OpenStore(root, StoreOptions{Embedder: emb})
	if err != nil {
		t.Fatal(err)
	}
	c, dir := kbWithTopics(t, s, CreateOptions{Chunking: ChunkOptions{Size: 24, Overlap: 4}})
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
	// The layout: the chunk log, and the vectors in an index.Store,
	// snapshotted by the clean close.
	if got := filesIn(t, filepath.Join(root, "kb")); !slices.Equal(got, []string{"chunks.jsonl", "index/LOCK", "index/log-0.wal", "index/log-1.wal", "index/snapshot-0.hnsw", "index/snapshot-1.hnsw", "lock", "manifest.json"}) {
		t.Fatalf("collection files %q", got)
	}
	var c2 *Collection
	for _, lost := range []bool{false, true} {
		if lost {
			// The chunk log decides: vectors lost with their directory
			// are embedded again, and nothing changes.
			s.Close()
			os.RemoveAll(filepath.Join(root, "kb", indexDir))
		}
		s, err = OpenStore(root, StoreOptions{Embedder: emb})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if c2, err = s.Get(ctx, "kb"); err != nil {
			t.Fatal(err)
		}
		rec := c2.Recovery()
		if (!lost && (rec.String() != "" || rec.Index.Replayed != 0)) || (lost && rec.Reembedded != st1.Chunks) {
			t.Fatalf("reopened (index lost: %v): recovery %+v", lost, rec)
		}
		for _, m := range []Mode{Vector, Hybrid, Keyword} {
			if got := searchAll(t, c2, queries, m); !slices.Equal(got, want[m]) {
				t.Fatalf("%v results after reopening differ (index lost: %v):\n got %+v\nwant %+v", m, lost, got, want[m])
			}
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

// filesIn lists the files under dir, relative, sorted.
func filesIn(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return err
	})
	slices.Sort(out)
	return out
}

// vectorHits searches by vector for every chunk (the index scans exactly
// while small) and returns the hits' chunk ids and scores.
func vectorHits(t *testing.T, c *Collection, q string) []snapshot {
	t.Helper()
	hits, err := c.Search(context.Background(), q, SearchOptions{K: 1000, Mode: Vector})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]snapshot, len(hits))
	for i, h := range hits {
		out[i] = snapshot{ID: h.Chunk.ID, Score: h.Score, Text: h.Chunk.Text}
	}
	return out
}

// crash drops a collection's files and lock without closing it, as a
// killed process would.
func crash(s *Store, c *Collection) {
	c.mu.Lock()
	c.closed = true
	c.release()
	c.mu.Unlock()
	s.mu.Lock()
	delete(s.open, c.name)
	s.mu.Unlock()
}

// A crash can leave, in any combination: a torn chunk log record and a
// torn vector log record (appends cut short), vectors without a log record
// (a commit cut short), a removal logged whose vectors were not deleted,
// and (from a corrupt vector log record) a chunk without its vector. A
// read-only open sees past all of it and changes nothing; the next writer
// cuts the tails, deletes the stray vectors and embeds the chunk again.
func TestCrashRecovery(t *testing.T) {
	emb := newBOW()
	root := t.TempDir()
	ctx := context.Background()
	s, err := OpenStore(root, StoreOptions{Embedder: emb})
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
	files := map[string]string{}
	for _, src := range c.Sources() {
		files[filepath.Base(src.Path)] = src.Path
	}
	gone := files["faq.html"]               // removed, its vectors not deleted
	lost := c.Chunks(files["notes.txt"])[0] // its vector lost
	goneIDs := chunkIDs(c, gone)
	want := vectorHits(t, c, "llama meadow")
	crash(s, c)
	cdir := filepath.Join(root, "kb")
	appendBytes(t, filepath.Join(cdir, chunksFile), []byte(`{"op":"del","path":"`+gone+`"}`+"\n"))
	st, _, err := index.Open(filepath.Join(cdir, indexDir), index.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stray := make([]float32, emb.dim)
	stray[0] = 1
	if err := st.Add(ctx, []uint64{1 << 40}, [][]float32{stray}, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, []uint64{lost.ID}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	wals, _ := filepath.Glob(filepath.Join(cdir, indexDir, "log-*.wal"))
	wal := wals[len(wals)-1]
	appendBytes(t, filepath.Join(cdir, chunksFile), []byte(`{"op":"put","source":{"path":"/x/torn.md"`))
	// The first 13 bytes of an add record of dimension 512 (2064 bytes).
	appendBytes(t, wal, []byte{0x10, 0x08, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9})
	logSize, walSize := fileSize(t, filepath.Join(cdir, chunksFile)), fileSize(t, wal)

	var wantLeft []snapshot
	for _, h := range want {
		if !slices.Contains(goneIDs, h.ID) {
			wantLeft = append(wantLeft, h)
		}
	}
	reader, err := OpenStore(root, StoreOptions{Embedder: emb, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	rc, err := reader.Get(ctx, "kb")
	if err != nil {
		t.Fatal(err)
	}
	rrec := rc.Recovery()
	if rrec.MissingVectors != 1 || rrec.TornBytes == 0 || rrec.Index.TornBytes != 13 || rc.Chunks(gone) != nil {
		t.Fatalf("read-only recovery %+v", rrec)
	}
	var wantRO []snapshot
	for _, h := range wantLeft {
		if h.ID != lost.ID {
			wantRO = append(wantRO, h)
		}
	}
	if got := vectorHits(t, rc, "llama meadow"); !slices.Equal(got, wantRO) {
		t.Fatalf("read-only results:\n got %+v\nwant %+v", got, wantRO)
	}
	if fileSize(t, filepath.Join(cdir, chunksFile)) != logSize || fileSize(t, wal) != walSize {
		t.Fatal("a read-only open changed the files")
	}

	c2, err := s.Get(ctx, "kb")
	if err != nil {
		t.Fatal(err)
	}
	rec := c2.Recovery()
	if rec.OrphanVectors != len(goneIDs)+1 || rec.Reembedded != 1 || rec.MissingVectors != 0 || rec.TornBytes == 0 || rec.Index.TornBytes != 13 {
		t.Fatalf("recovery %+v", rec)
	}
	t.Logf("recovered: %s", rec)
	if c2.vectors().Len() != len(c2.chunks) {
		t.Fatalf("%d vectors for %d chunks after recovery", c2.vectors().Len(), len(c2.chunks))
	}
	if got := vectorHits(t, c2, "llama meadow"); !slices.Equal(got, wantLeft) {
		t.Fatalf("results after recovery differ:\n got %+v\nwant %+v", got, wantLeft)
	}
	if fileSize(t, filepath.Join(cdir, chunksFile)) >= logSize {
		t.Error("the torn chunk log tail was not cut")
	}
	// Mended for good: the next open finds nothing to do.
	s.Close()
	s2, _ := OpenStore(root, StoreOptions{Embedder: emb})
	if c3, err := s2.Get(ctx, "kb"); err != nil || c3.Recovery().String() != "" {
		t.Fatalf("second open after recovery: %v, %+v", err, c3.Recovery())
	}
	s2.Close()
	// A corrupt record in the middle of the log is an error, not silence.
	b, _ := os.ReadFile(filepath.Join(cdir, chunksFile))
	b = append([]byte("{broken\n"), b...)
	os.WriteFile(filepath.Join(cdir, chunksFile), b, 0o644)
	s3, _ := OpenStore(root, StoreOptions{Embedder: emb})
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
	s, err := OpenStore(root, StoreOptions{Embedder: emb})
	if err != nil {
		t.Fatal(err)
	}
	// A small graph: the test is about the files, not the search.
	c, err := s.Create(ctx, "kb", CreateOptions{Chunking: ChunkOptions{Size: 16, Overlap: -1}, Index: IndexOptions{M: 4, EfConstruction: 8}})
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
	if dead := c.vectors().Tombstones(); dead > len(c.chunks)+1024 {
		t.Errorf("%d deleted vectors kept for %d chunks", dead, len(c.chunks))
	}
	want := searchAll(t, c, []string{"version 39", "stable"}, Hybrid)
	if !strings.Contains(want[0].Text, "version 39") {
		t.Fatalf("latest version not found first: %+v", want[0])
	}
	s.Close()
	s2, _ := OpenStore(root, StoreOptions{Embedder: emb})
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
	s, root := openTestStore(t, emb)
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
	other, err := OpenStore(root, StoreOptions{Embedder: emb})
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
	wrong, _ := OpenStore(root, StoreOptions{Embedder: &tableEmbedder{}})
	defer wrong.Close()
	if _, err := wrong.Get(ctx, "b"); !errors.Is(err, ErrModelMismatch) {
		t.Errorf("other model: %v", err)
	}
	none, _ := OpenStore(root, StoreOptions{})
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
	if got := rec.last["kb"]; got <= empty || got != c.vectors().MemoryBytes() {
		t.Fatalf("reported %d bytes after ingestion (empty %d, index %d)", got, empty, c.vectors().MemoryBytes())
	}
	s.Close()
	if _, ok := rec.last["kb"]; ok {
		t.Fatal("memory still reported after close")
	}
}

// A read-only store opens a collection that a writer holds, sees what the
// writer committed before the open (consistently, while the writer keeps
// committing), and refuses to write; writers still exclude each other.
func TestReadOnlyBesideWriter(t *testing.T) {
	emb := newBOW()
	root := t.TempDir()
	ctx := context.Background()
	w, err := OpenStore(root, StoreOptions{Embedder: emb})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	wc, err := w.Create(ctx, "kb", CreateOptions{Chunking: ChunkOptions{Size: 12, Overlap: -1}})
	if err != nil {
		t.Fatal(err)
	}
	// Opened before anything was added: an empty collection.
	r0, _ := OpenStore(root, StoreOptions{Embedder: emb, ReadOnly: true})
	if c, err := r0.Get(ctx, "kb"); err != nil || len(c.Sources()) != 0 {
		t.Fatalf("read-only open of a new collection: %v", err)
	}
	r0.Close()
	docs := t.TempDir()
	text := func(i, v int) string {
		return fmt.Sprintf("Document %d version %d. %s", i, v, strings.Repeat(fmt.Sprintf("word%dv%d ", i, v), 30))
	}
	for i := 0; i < 4; i++ {
		writeFile(t, filepath.Join(docs, fmt.Sprintf("d%d.txt", i)), text(i, 0))
	}
	if _, err := wc.AddPath(ctx, docs, AddOptions{}); err != nil {
		t.Fatal(err)
	}

	other, _ := OpenStore(root, StoreOptions{Embedder: emb})
	defer other.Close()
	if _, err := other.Get(ctx, "kb"); !errors.Is(err, ErrLocked) {
		t.Fatalf("second writer: %v", err)
	}
	r, _ := OpenStore(root, StoreOptions{Embedder: emb, ReadOnly: true})
	rc, err := r.Get(ctx, "kb")
	if err != nil {
		t.Fatal(err)
	}
	if !rc.ReadOnly() || !slices.Equal(sourcesOf(rc), sourcesOf(wc)) {
		t.Fatalf("read-only sources %q, writer's %q", sourcesOf(rc), sourcesOf(wc))
	}
	if _, err := rc.AddPath(ctx, docs, AddOptions{}); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only add: %v", err)
	}
	if err := rc.RemoveSource(ctx, filepath.Join(docs, "d0.txt")); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only remove: %v", err)
	}
	if _, err := r.Create(ctx, "x", CreateOptions{}); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only create: %v", err)
	}
	if err := r.Delete("kb"); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only delete: %v", err)
	}
	r.Close()

	// The writer replaces and removes documents while readers open.
	done := make(chan error)
	go func() {
		var err error
		for v := 1; v <= 12 && err == nil; v++ {
			p := filepath.Join(docs, fmt.Sprintf("d%d.txt", v%4))
			if v%5 == 0 {
				err = wc.RemoveSource(ctx, p)
				continue
			}
			writeFile(t, p, text(v%4, v))
			_, err = wc.AddPath(ctx, p, AddOptions{})
		}
		done <- err
	}()
	reads := 0
	for running := true; running; reads++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			running = false
		default:
		}
		r, _ := OpenStore(root, StoreOptions{Embedder: emb, ReadOnly: true})
		rc, err := r.Get(ctx, "kb")
		if err != nil {
			t.Fatalf("read-only open %d beside the writer: %v", reads, err)
		}
		checkConsistent(t, rc)
		r.Close()
	}
	r, _ = OpenStore(root, StoreOptions{Embedder: emb, ReadOnly: true})
	defer r.Close()
	rc, err = r.Get(ctx, "kb")
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, rc)
	if !slices.Equal(sourcesOf(rc), sourcesOf(wc)) || len(rc.chunks) != len(wc.chunks) {
		t.Fatalf("read-only after the writer: %q, writer %q", sourcesOf(rc), sourcesOf(wc))
	}
	t.Logf("%d read-only opens beside the writer", reads)
}

// A reader whose read of the chunk log and of the vectors straddles a
// commit sees the log change, and reads both again.
func TestReadOnlyRereads(t *testing.T) {
	emb := newBOW()
	root := t.TempDir()
	ctx := context.Background()
	w, _ := OpenStore(root, StoreOptions{Embedder: emb})
	defer w.Close()
	wc, err := w.Create(ctx, "kb", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "a.txt")
	writeFile(t, p, "the first version of the text")
	if _, err := wc.AddPath(ctx, p, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	r, _ := OpenStore(root, StoreOptions{Embedder: emb, ReadOnly: true})
	defer r.Close()
	rc, err := r.Get(ctx, "kb")
	if err != nil {
		t.Fatal(err)
	}
	before, err := rc.readLog()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p, "the second version of the text") // replaced between the reads
	if _, err := wc.AddPath(ctx, p, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := rc.readVectors(); err != nil {
		t.Fatal(err)
	}
	if rc.logUnchanged(before) || rc.Recovery().MissingVectors != 1 {
		t.Fatalf("a commit between the reads went unseen: %+v", rc.Recovery())
	}
	if stable, err := rc.readOnce(); err != nil || !stable {
		t.Fatalf("read again: %v, stable %v", err, stable)
	}
	checkConsistent(t, rc)
	if ch := rc.Chunks(p); len(ch) != 1 || !strings.Contains(ch[0].Text, "second") {
		t.Fatalf("chunks %+v", ch)
	}
}

// checkConsistent fails unless every chunk of every source of c is there
// with its vector: searching for a chunk's own text finds it first.
func checkConsistent(t *testing.T, c *Collection) {
	t.Helper()
	if rec := c.Recovery(); rec.MissingVectors != 0 {
		t.Fatalf("read-only: %+v", rec)
	}
	for _, src := range c.Sources() {
		chunks := c.Chunks(src.Path)
		if len(chunks) != src.Chunks || len(chunks) == 0 {
			t.Fatalf("%s: %d chunks, its record says %d", src.Path, len(chunks), src.Chunks)
		}
		for _, ch := range chunks {
			hits, err := c.Search(context.Background(), EmbedText(ch.Title, ch.Text), SearchOptions{K: 1, Mode: Vector})
			if err != nil || len(hits) != 1 || hits[0].Chunk.Text != ch.Text {
				t.Fatalf("%s: chunk %d not found by its text: %+v %v", src.Path, ch.ID, hits, err)
			}
		}
	}
}

// writeLegacyVectors writes vectors.bin as collections kept it before
// their vectors moved into an index.Store.
func writeLegacyVectors(t *testing.T, path string, dim int, ids []uint64, vecs [][]float32) {
	t.Helper()
	b := []byte("LLMRTVEC")
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint32(b, uint32(dim))
	for i, id := range ids {
		start := len(b)
		b = binary.LittleEndian.AppendUint64(b, id)
		for _, x := range vecs[i] {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
		b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], crc32.MakeTable(crc32.Castagnoli)))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A collection in the vectors.bin layout is read as it is by a read-only
// open and migrated by a writer, also when a migration was cut short.
func TestMigrateLegacy(t *testing.T) {
	emb := newBOW()
	root := t.TempDir()
	ctx := context.Background()
	s, _ := OpenStore(root, StoreOptions{Embedder: emb})
	c, _ := kbWithTopics(t, s, CreateOptions{})
	want := vectorHits(t, c, "lighthouse harbour llama")
	wantSources := c.Sources()
	// The old layout: every vector but one in vectors.bin (and a vector of
	// no chunk), a stale graph, the dirty marker.
	var ids []uint64
	var vecs [][]float32
	for _, id := range c.vectors().IDs() {
		v, _ := c.vectors().Vector(id)
		ids, vecs = append(ids, id), append(vecs, v)
	}
	lost := ids[2]
	ids, vecs = slices.Delete(ids, 2, 3), slices.Delete(vecs, 2, 3)
	ids, vecs = append(ids, ids[len(ids)-1]+100), append(vecs, vecs[0])
	s.Close()
	cdir := filepath.Join(root, "kb")
	os.RemoveAll(filepath.Join(cdir, indexDir))
	os.MkdirAll(filepath.Join(cdir, indexDir), 0o755)
	os.WriteFile(filepath.Join(cdir, indexDir, "graph.hnsw"), []byte("LLMRTHNS stale"), 0o644)
	os.WriteFile(filepath.Join(cdir, legacyDirty), nil, 0o644)
	writeLegacyVectors(t, filepath.Join(cdir, legacyVectors), emb.dim, ids, vecs)
	legacy := filesIn(t, cdir)

	r, _ := OpenStore(root, StoreOptions{Embedder: emb, ReadOnly: true})
	rc, err := r.Get(ctx, "kb")
	if err != nil {
		t.Fatal(err)
	}
	var wantRO []snapshot
	for _, h := range want {
		if h.ID != lost {
			wantRO = append(wantRO, h)
		}
	}
	if got := vectorHits(t, rc, "lighthouse harbour llama"); !slices.Equal(got, wantRO) || rc.Recovery().MissingVectors != 1 {
		t.Fatalf("read-only over vectors.bin (%+v):\n got %+v\nwant %+v", rc.Recovery(), got, wantRO)
	}
	r.Close()
	if got := filesIn(t, cdir); !slices.Equal(got, legacy) {
		t.Fatalf("a read-only open changed the files: %q, were %q", got, legacy)
	}

	// Twice: the second time as if the first migration died after moving
	// the new store in place but before removing vectors.bin, with a
	// half-built store of yet another attempt beside it.
	saved, _ := os.ReadFile(filepath.Join(cdir, legacyVectors))
	for round := 0; round < 2; round++ {
		if round == 1 {
			os.WriteFile(filepath.Join(cdir, legacyVectors), saved, 0o644)
			os.MkdirAll(filepath.Join(cdir, indexDir+".new"), 0o755)
			os.WriteFile(filepath.Join(cdir, indexDir+".new", "log-0.wal"), []byte("LLMRTWAL"), 0o644)
		}
		s, _ = OpenStore(root, StoreOptions{Embedder: emb})
		c, err = s.Get(ctx, "kb")
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		rec := c.Recovery()
		if !rec.Migrated || rec.Reembedded != 1 || rec.OrphanVectors != 0 {
			t.Fatalf("round %d: recovery %+v", round, rec)
		}
		t.Logf("round %d: %s", round, rec)
		if got := vectorHits(t, c, "lighthouse harbour llama"); !slices.Equal(got, want) {
			t.Fatalf("round %d after migration:\n got %+v\nwant %+v", round, got, want)
		}
		if got := c.Sources(); !slices.EqualFunc(got, wantSources, func(a, b SourceInfo) bool { return a.Path == b.Path && a.Chunks == b.Chunks }) {
			t.Fatalf("round %d: sources %+v", round, got)
		}
		s.Close()
		for _, gone := range []string{legacyVectors, legacyDirty, indexDir + ".new", filepath.Join(indexDir, "graph.hnsw")} {
			if _, err := os.Stat(filepath.Join(cdir, gone)); !os.IsNotExist(err) {
				t.Fatalf("round %d: %s left after migration (%v)", round, gone, err)
			}
		}
	}
	s, _ = OpenStore(root, StoreOptions{Embedder: emb})
	defer s.Close()
	if c, err = s.Get(ctx, "kb"); err != nil || c.Recovery().String() != "" {
		t.Fatalf("open after migration: %v %+v", err, c.Recovery())
	}
}
