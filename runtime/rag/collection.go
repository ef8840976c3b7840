package rag

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/llmrt/llmrt/runtime/index"
)

// Chunk is a stored piece of a source document.
type Chunk struct {
	ID uint64 `json:"id"`
	// Source is the document's path; SourceHash its content hash.
	Source     string `json:"source"`
	SourceHash string `json:"source_hash"`
	// Title is the heading path of the chunk's section.
	Title string `json:"title"`
	// Start and End are byte offsets of Text in the document's text (see
	// Document.Text).
	Start  int    `json:"start"`
	End    int    `json:"end"`
	Tokens int    `json:"tokens"`
	Text   string `json:"text"`
}

// Manifest describes a collection; it is written once, at creation.
type Manifest struct {
	Name     string       `json:"name"`
	Model    string       `json:"model"`
	Dim      int          `json:"dim"`
	Metric   string       `json:"metric"`
	Chunking ChunkOptions `json:"chunking"`
	Index    IndexOptions `json:"index"`
	Created  time.Time    `json:"created"`
}

// IndexOptions tune the HNSW index (zero values take the index's defaults).
type IndexOptions struct {
	M              int `json:"m,omitempty"`
	EfConstruction int `json:"ef_construction,omitempty"`
	EfSearch       int `json:"ef_search,omitempty"`
}

// Errors of collections.
var (
	ErrNotFound      = errors.New("rag: no such collection")
	ErrExists        = errors.New("rag: collection already exists")
	ErrClosed        = errors.New("rag: collection is closed")
	ErrModelMismatch = errors.New("rag: collection was built with another embedding model")
	ErrLocked        = errors.New("rag: collection is open in another process")
	ErrNoSource      = errors.New("rag: no such source in the collection")
	ErrReadOnly      = errors.New("rag: collection is open read-only")
)

const (
	manifestFile = "manifest.json"
	chunksFile   = "chunks.jsonl"
	indexDir     = "index"
	lockFile     = "lock"
)

// source is an ingested source and its chunk ids.
type source struct {
	info    SourceInfo
	ids     []uint64
	logSize int64 // bytes of its put record in the log
}

// Collection is an open collection. It is safe for concurrent use: searches
// run in parallel; ingestions and removals are serialised.
//
// A writer (the default) holds the collection's lock and keeps the chunk
// vectors in an index.Store; a read-only collection holds no lock and reads
// the vectors once, at open, with index.OpenReadOnly.
type Collection struct {
	mem      MemoryReporter
	name     string
	dir      string
	man      Manifest
	emb      Embedder
	readOnly bool
	rec      Recovery

	// ingestMu admits one ingestion or removal at a time; it guards the
	// log, nextID and the vector store's writes.
	ingestMu sync.Mutex

	mu       sync.RWMutex
	closed   bool
	sources  map[string]*source
	chunks   map[uint64]*Chunk
	bm       *bm25
	store    *index.Store // the writer's chunk vectors
	frozen   *index.HNSW  // the reader's chunk vectors
	log      *chunkLog    // nil when read-only
	nextID   uint64
	lock     *os.File
	liveLog  int64 // log bytes of live records
	maxLogID uint64
}

// Recovery is what opening a collection found and mended.
type Recovery struct {
	// Index is the vector store's own recovery (see index.Recovery).
	Index index.Recovery
	// TornBytes is an unfinished record at the end of the chunk log (cut
	// off by a writer; passed over by a reader).
	TornBytes int64
	// OrphanVectors are vectors of no live chunk, left by a commit or a
	// removal that was cut short: deleted.
	OrphanVectors int
	// Reembedded counts live chunks whose vector was lost (to a corrupt
	// log record, or a removed index directory): embedded again.
	Reembedded int
	// MissingVectors counts such chunks left without a vector (read-only
	// or without an embedder): keyword search still finds them.
	MissingVectors int
	// Migrated is set when the collection was converted from the
	// vectors.bin layout.
	Migrated bool
}

// String summarises what recovery did; it is empty for a clean open.
func (r Recovery) String() string {
	var parts []string
	add := func(n int64, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	if r.Migrated {
		parts = append(parts, "migrated from vectors.bin to the vector store")
	}
	add(r.TornBytes, "bytes of an unfinished chunk log record cut")
	add(r.Index.TornBytes, "bytes of an unfinished vector log record cut")
	if r.Index.Corrupt != nil {
		parts = append(parts, r.Index.Corrupt.Error())
	}
	if r.Index.DamagedSnapshot != nil {
		parts = append(parts, "fell back from a damaged snapshot: "+r.Index.DamagedSnapshot.Error())
	}
	add(int64(r.OrphanVectors), "vectors of uncommitted or removed chunks deleted")
	add(int64(r.Reembedded), "chunks without a vector embedded again")
	add(int64(r.MissingVectors), "chunks without a vector (found by keyword search only)")
	return strings.Join(parts, "; ")
}

// lockDir takes the collection's lock file, exclusively.
func lockDir(dir string) (*os.File, error) {
	lf, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return lf, nil
}

// tryLock checks that no process holds the collection open.
func tryLock(dir string) error {
	lf, err := lockDir(dir)
	if err != nil {
		return err
	}
	syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)
	return lf.Close()
}

// openCollection opens the collection in dir for writing (under its lock)
// or, with readOnly, for reading beside a writer.
func openCollection(ctx context.Context, dir string, emb Embedder, readOnly bool) (_ *Collection, err error) {
	c := &Collection{dir: dir, emb: emb, readOnly: readOnly}
	if !readOnly {
		if c.lock, err = lockDir(dir); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			c.release()
		}
	}()
	man, err := readManifest(dir)
	if err != nil {
		return nil, err
	}
	c.man, c.name = man, man.Name
	if emb != nil {
		sh, err := emb.Shape(ctx)
		if err != nil {
			return nil, fmt.Errorf("collection %s: embedding model %s: %w", man.Name, emb.Name(), err)
		}
		if emb.Name() != man.Model || sh.Dim != man.Dim {
			return nil, fmt.Errorf("%w: %s uses %s (dimension %d), the store embeds with %s (dimension %d)",
				ErrModelMismatch, man.Name, man.Model, man.Dim, emb.Name(), sh.Dim)
		}
	}
	if readOnly {
		return c, c.openReader(ctx)
	}
	return c, c.openWriter(ctx)
}

// indexOptions are the vector index's options from the manifest.
func (c *Collection) indexOptions() (index.Options, error) {
	metric, err := index.ParseMetric(c.man.Metric)
	if err != nil {
		return index.Options{}, fmt.Errorf("collection %s: %w", c.name, err)
	}
	return index.Options{Dim: c.man.Dim, Metric: metric, M: c.man.Index.M, EfConstruction: c.man.Index.EfConstruction, EfSearch: c.man.Index.EfSearch}, nil
}

// reset empties the in-memory state before the chunk log is replayed.
func (c *Collection) reset() {
	c.sources, c.chunks, c.bm = map[string]*source{}, map[uint64]*Chunk{}, newBM25()
	c.liveLog, c.maxLogID = 0, 0
}

// apply replays one chunk log record of n bytes.
func (c *Collection) apply(rec *logRecord, n int64) error {
	switch rec.Op {
	case "put":
		if rec.Source == nil {
			return errors.New("put without a source")
		}
		c.dropSource(rec.Source.Path)
		for _, sc := range rec.Chunks {
			c.maxLogID = max(c.maxLogID, sc.ID)
		}
		c.putSource(*rec.Source, rec.Chunks, n)
	case "del":
		c.dropSource(rec.Path)
	default:
		return fmt.Errorf("unknown op %q", rec.Op)
	}
	return nil
}

// openWriter replays the chunk log, opens the vector store (migrating the
// vectors.bin layout first) and reconciles the two.
func (c *Collection) openWriter(ctx context.Context) error {
	c.reset()
	var err error
	if c.log, c.rec.TornBytes, err = openChunkLog(filepath.Join(c.dir, chunksFile), c.apply); err != nil {
		return err
	}
	opt, err := c.indexOptions()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(c.dir, legacyVectors)); err == nil {
		if err := c.migrate(ctx, opt); err != nil {
			return fmt.Errorf("collection %s: migrate %s to the vector store: %w", c.name, legacyVectors, err)
		}
		c.rec.Migrated = true
	}
	dir := filepath.Join(c.dir, indexDir)
	if c.store, c.rec.Index, err = index.Open(dir, index.StoreOptions{Options: opt}); err != nil {
		return fmt.Errorf("collection %s: %w (moving %s away makes the next open embed every chunk again)", c.name, err, dir)
	}
	c.nextID = c.maxLogID + 1
	if err := c.reconcile(ctx); err != nil {
		return err
	}
	return c.compact()
}

// reconcile makes the vector store agree with the chunk log, which decides:
// vectors of no live chunk are deleted, and live chunks without a vector
// are embedded again (with no embedder they are only counted).
func (c *Collection) reconcile(ctx context.Context) error {
	h := c.store.Index()
	var orphans []uint64
	for _, id := range h.IDs() {
		c.nextID = max(c.nextID, id+1)
		if c.chunks[id] == nil {
			orphans = append(orphans, id)
		}
	}
	if err := c.store.Delete(ctx, orphans); err != nil {
		return fmt.Errorf("collection %s: delete vectors of no chunk: %w", c.name, err)
	}
	c.rec.OrphanVectors = len(orphans)
	missing := c.withoutVector(h)
	if c.emb == nil {
		c.rec.MissingVectors = len(missing)
		return nil
	}
	for len(missing) > 0 {
		n := min(32, len(missing))
		texts := make([]string, n)
		for i, id := range missing[:n] {
			texts[i] = EmbedText(c.chunks[id].Title, c.chunks[id].Text)
		}
		vecs, err := c.emb.Embed(ctx, texts)
		if err == nil && len(vecs) != n {
			err = fmt.Errorf("embedder returned %d vectors for %d texts", len(vecs), n)
		}
		if err == nil {
			err = c.store.Add(ctx, missing[:n], vecs, nil)
		}
		if err != nil {
			return fmt.Errorf("collection %s: embed chunks that lost their vector: %w", c.name, err)
		}
		c.rec.Reembedded += n
		missing = missing[n:]
	}
	return nil
}

// withoutVector lists the live chunks that h holds no vector for.
func (c *Collection) withoutVector(h *index.HNSW) []uint64 {
	var out []uint64
	for id := range c.chunks {
		if !h.Has(id) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// openReader loads the collection without its lock and without writing,
// beside a writer in another process. The chunk log and the vectors are
// read one after the other: a writer stores a document's vectors before its
// log record and deletes vectors only after a log record, so the two agree
// unless the log changed meanwhile, and then both are read again.
func (c *Collection) openReader(ctx context.Context) error {
	const attempts = 20
	var err error
	for try := 0; try < attempts; try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(try) * 10 * time.Millisecond):
			}
		}
		var stable bool
		if stable, err = c.readOnce(); err == nil && stable {
			return nil
		}
		if c.frozen != nil {
			c.frozen.Close()
			c.frozen = nil
		}
	}
	if err == nil {
		err = fmt.Errorf("collection %s changed on every one of %d reads; try again", c.name, attempts)
	}
	return err
}

// readOnce reads the chunk log and then the vectors, and reports whether
// the log stayed the same meanwhile.
func (c *Collection) readOnce() (bool, error) {
	before, err := c.readLog()
	if err != nil {
		return false, err
	}
	if err := c.readVectors(); err != nil {
		return false, err
	}
	return c.logUnchanged(before), nil
}

// readLog replays the chunk log into memory, changing no file, and
// returns what the log file was (nil if there is none).
func (c *Collection) readLog() (os.FileInfo, error) {
	c.reset()
	c.rec = Recovery{}
	st, torn, err := readChunkLog(filepath.Join(c.dir, chunksFile), c.apply)
	c.rec.TornBytes = torn
	return st, err
}

// readVectors loads the vectors into memory, changing no file.
func (c *Collection) readVectors() error {
	if c.frozen != nil {
		c.frozen.Close()
		c.frozen = nil
	}
	opt, err := c.indexOptions()
	if err != nil {
		return err
	}
	dir := filepath.Join(c.dir, indexDir)
	if _, serr := os.Stat(filepath.Join(c.dir, legacyVectors)); serr == nil {
		c.frozen, err = c.legacyIndex(opt)
	} else {
		c.frozen, c.rec.Index, err = index.OpenReadOnly(dir, opt)
		if _, serr := os.Stat(dir); errors.Is(err, fs.ErrNotExist) && errors.Is(serr, fs.ErrNotExist) {
			c.frozen, err = index.New(opt) // created, never written
		}
	}
	if err != nil {
		return fmt.Errorf("collection %s: %w", c.name, err)
	}
	c.rec.MissingVectors = len(c.withoutVector(c.frozen))
	return nil
}

// logUnchanged reports whether the chunk log is still the file readLog
// read, at the same size and time.
func (c *Collection) logUnchanged(before os.FileInfo) bool {
	after, err := os.Stat(filepath.Join(c.dir, chunksFile))
	if before == nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	return err == nil && os.SameFile(before, after) && before.Size() == after.Size() && before.ModTime().Equal(after.ModTime())
}

// vectors is the index of the chunk vectors; nil once closed.
func (c *Collection) vectors() *index.HNSW {
	if c.store != nil {
		return c.store.Index()
	}
	return c.frozen
}

// putSource installs a source's chunks in memory (the caller removed any
// earlier version).
func (c *Collection) putSource(info SourceInfo, cs []storedChunk, logSize int64) {
	s := &source{info: info, logSize: logSize, ids: make([]uint64, len(cs))}
	for i, sc := range cs {
		ch := &Chunk{ID: sc.ID, Source: info.Path, SourceHash: info.Hash, Title: sc.Title, Start: sc.Start, End: sc.End, Tokens: sc.Tokens, Text: sc.Text}
		c.chunks[sc.ID] = ch
		c.bm.add(sc.ID, ch.Title+"\n"+ch.Text)
		s.ids[i] = sc.ID
	}
	c.sources[info.Path] = s
	c.liveLog += logSize
}

// dropSource removes a source from memory and returns its chunk ids.
func (c *Collection) dropSource(path string) []uint64 {
	s := c.sources[path]
	if s == nil {
		return nil
	}
	for _, id := range s.ids {
		if ch := c.chunks[id]; ch != nil {
			c.bm.remove(id, ch.Title+"\n"+ch.Text)
			delete(c.chunks, id)
		}
	}
	delete(c.sources, path)
	c.liveLog -= s.logSize
	return s.ids
}

// compact rewrites the chunk log when most of it is dead, and rebuilds the
// vector graph when most of its nodes are deleted ones. The caller is the
// writer, holding ingestMu (or opening).
func (c *Collection) compact() error {
	if dead := c.log.size - c.liveLog; dead > 64<<10 && dead > c.liveLog {
		paths := make([]string, 0, len(c.sources))
		for p := range c.sources {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		recs := make([]*logRecord, len(paths))
		for i, p := range paths {
			recs[i] = c.putRecord(c.sources[p])
		}
		ns, err := c.log.rewrite(recs)
		if err != nil {
			return fmt.Errorf("compact %s: %w", c.log.path, err)
		}
		c.mu.Lock()
		c.liveLog = 0
		for i, p := range paths {
			c.sources[p].logSize = ns[i]
			c.liveLog += ns[i]
		}
		c.mu.Unlock()
	}
	if h := c.store.Index(); h != nil && h.Tombstones() > 1024 && h.Tombstones() > h.Len() {
		if err := c.store.Compact(); err != nil {
			return fmt.Errorf("compact the vectors of %s: %w", c.name, err)
		}
	}
	return nil
}

func (c *Collection) putRecord(s *source) *logRecord {
	info := s.info
	rec := &logRecord{Op: "put", Source: &info, Chunks: make([]storedChunk, len(s.ids))}
	for i, id := range s.ids {
		ch := c.chunks[id]
		rec.Chunks[i] = storedChunk{ID: id, Title: ch.Title, Start: ch.Start, End: ch.End, Tokens: ch.Tokens, Text: ch.Text}
	}
	return rec
}

// reportMemory tells the store's MemoryReporter the index's size.
func (c *Collection) reportMemory() {
	if c.mem == nil {
		return
	}
	var n int64
	c.mu.RLock()
	if h := c.vectors(); h != nil {
		n = h.MemoryBytes()
	}
	c.mu.RUnlock()
	c.mem.SetMemory(c.name, n)
}

// Name is the collection's name.
func (c *Collection) Name() string { return c.name }

// Manifest returns the collection's manifest.
func (c *Collection) Manifest() Manifest { return c.man }

// ReadOnly reports whether the collection was opened for reading only.
func (c *Collection) ReadOnly() bool { return c.readOnly }

// Recovery is what opening the collection found and mended.
func (c *Collection) Recovery() Recovery { return c.rec }

// Sources lists the ingested sources by path.
func (c *Collection) Sources() []SourceInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]SourceInfo, 0, len(c.sources))
	for _, s := range c.sources {
		out = append(out, s.info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Chunks returns the chunks of a source in document order.
func (c *Collection) Chunks(path string) []Chunk {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s := c.sources[path]
	if s == nil {
		s = c.sources[absPath(path)]
	}
	if s == nil {
		return nil
	}
	out := make([]Chunk, len(s.ids))
	for i, id := range s.ids {
		out[i] = *c.chunks[id]
	}
	return out
}

// Stats summarises a collection.
type Stats struct {
	Name      string       `json:"name"`
	Model     string       `json:"model"`
	Dim       int          `json:"dim"`
	Metric    string       `json:"metric"`
	Chunking  ChunkOptions `json:"chunking"`
	Created   time.Time    `json:"created"`
	Documents int          `json:"documents"`
	Chunks    int          `json:"chunks"`
	Tokens    int          `json:"tokens"`
	// IndexBytes is the vector index's memory; DiskBytes what the
	// collection directory holds.
	IndexBytes int64 `json:"index_bytes"`
	DiskBytes  int64 `json:"disk_bytes"`
}

// Stats returns the collection's figures.
func (c *Collection) Stats() (Stats, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return Stats{}, ErrClosed
	}
	st := Stats{Name: c.name, Model: c.man.Model, Dim: c.man.Dim, Metric: c.man.Metric, Chunking: c.man.Chunking,
		Created: c.man.Created, Documents: len(c.sources), Chunks: len(c.chunks), IndexBytes: c.vectors().MemoryBytes()}
	for _, ch := range c.chunks {
		st.Tokens += ch.Tokens
	}
	st.DiskBytes = dirSize(c.dir)
	return st, nil
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// close snapshots the vectors (so the next open replays no log), closes
// the files and drops the lock.
func (c *Collection) close() error {
	c.ingestMu.Lock()
	defer c.ingestMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	if c.store != nil {
		if err := c.store.Snapshot(); err != nil {
			errs = append(errs, fmt.Errorf("close collection %s: %w", c.name, err))
		}
	}
	if err := c.release(); err != nil {
		errs = append(errs, fmt.Errorf("close collection %s: %w", c.name, err))
	}
	return errors.Join(errs...)
}

// release closes the vectors and files and drops the lock.
func (c *Collection) release() error {
	var err error
	if c.store != nil {
		err = c.store.Close()
	}
	if c.frozen != nil {
		c.frozen.Close()
	}
	if c.log != nil {
		c.log.close()
	}
	if c.lock != nil {
		syscall.Flock(int(c.lock.Fd()), syscall.LOCK_UN)
		c.lock.Close()
		c.lock = nil
	}
	return err
}

func readManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%s: %w", filepath.Join(dir, manifestFile), err)
	}
	return m, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}

// hashBytes is the hex SHA-256 of data.
func hashBytes(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// underDir reports whether path is dir or inside it.
func underDir(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, string(filepath.Separator))+string(filepath.Separator))
}
