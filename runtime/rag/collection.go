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
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
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
)

const (
	manifestFile = "manifest.json"
	chunksFile   = "chunks.jsonl"
	vectorsFile  = "vectors.bin"
	indexDir     = "index"
	dirtyFile    = "dirty"
	lockFile     = "lock"
)

// indexOpener opens (or creates) the vector index of a collection in dir.
type indexOpener func(ctx context.Context, dir string, m Manifest) (vectorIndex, error)

// source is an ingested source and its chunk ids.
type source struct {
	info    SourceInfo
	ids     []uint64
	logSize int64 // bytes of its put record in the log
}

// Collection is an open collection. It is safe for concurrent use: searches
// run in parallel; ingestions and removals are serialised.
type Collection struct {
	mem  MemoryReporter
	name string
	dir  string
	man  Manifest
	emb  Embedder

	ingestMu sync.Mutex // one ingestion or removal at a time

	mu      sync.RWMutex
	closed  bool
	sources map[string]*source
	chunks  map[uint64]*Chunk
	bm      *bm25
	vecs    *vecFile
	idx     vectorIndex
	log     *chunkLog
	nextID  uint64
	dirty   bool // the dirty marker exists
	stale   bool // the index missed an update: rebuild on next open
	lock    *os.File
	liveLog int64 // log bytes of live records
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

func openCollection(ctx context.Context, dir string, emb Embedder, openIndex indexOpener) (_ *Collection, err error) {
	lf, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	c := &Collection{dir: dir, emb: emb, lock: lf, sources: map[string]*source{}, chunks: map[uint64]*Chunk{}, bm: newBM25()}
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
	if c.vecs, err = openVecFile(filepath.Join(dir, vectorsFile), man.Dim); err != nil {
		return nil, err
	}
	var maxChunk uint64
	c.log, err = openChunkLog(filepath.Join(dir, chunksFile), func(rec *logRecord, n int64) error {
		switch rec.Op {
		case "put":
			if rec.Source == nil {
				return errors.New("put without a source")
			}
			c.dropSource(rec.Source.Path)
			for _, sc := range rec.Chunks {
				maxChunk = max(maxChunk, sc.ID)
			}
			c.putSource(*rec.Source, rec.Chunks, n)
		case "del":
			c.dropSource(rec.Path)
		default:
			return fmt.Errorf("unknown op %q", rec.Op)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	missing := 0
	for id := range c.chunks {
		if _, ok := c.vecs.offs[id]; !ok {
			missing++
		}
	}
	if missing > 0 {
		return nil, fmt.Errorf("%s: %d chunks have no vector in %s", dir, missing, vectorsFile)
	}
	c.nextID = max(maxChunk, c.vecs.maxID()) + 1
	if _, err := os.Stat(filepath.Join(dir, dirtyFile)); err == nil {
		c.dirty = true
	}
	if c.idx, err = openIndex(ctx, filepath.Join(dir, indexDir), man); err != nil {
		return nil, fmt.Errorf("open index of %s: %w", man.Name, err)
	}
	if c.dirty || c.idx.Len() != len(c.chunks) {
		if err := c.rebuildIndex(ctx, openIndex); err != nil {
			return nil, err
		}
	}
	// Vectors of removed chunks go once the index agrees with the log.
	live := c.liveIDs()
	for id := range c.vecs.offs {
		if !live[id] {
			c.vecs.forget([]uint64{id})
		}
	}
	if err := c.compact(); err != nil {
		return nil, err
	}
	return c, nil
}

// rebuildIndex recreates the index from vectors.bin.
func (c *Collection) rebuildIndex(ctx context.Context, openIndex indexOpener) error {
	if err := c.markDirty(); err != nil {
		return err
	}
	c.idx.Close()
	c.idx = nil
	dir := filepath.Join(c.dir, indexDir)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	idx, err := openIndex(ctx, dir, c.man)
	if err != nil {
		return fmt.Errorf("create index of %s: %w", c.name, err)
	}
	c.idx = idx
	ids := make([]uint64, 0, len(c.chunks))
	for id := range c.chunks {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	const batch = 1024
	for len(ids) > 0 {
		n := min(batch, len(ids))
		vs := make([][]float32, n)
		for i, id := range ids[:n] {
			v, err := c.vecs.get(id)
			if err != nil {
				return err
			}
			vs[i] = v
		}
		if err := idx.Add(ctx, ids[:n], vs); err != nil {
			return fmt.Errorf("rebuild index of %s: %w", c.name, err)
		}
		ids = ids[n:]
	}
	return nil
}

func (c *Collection) liveIDs() map[uint64]bool {
	live := make(map[uint64]bool, len(c.chunks))
	for id := range c.chunks {
		live[id] = true
	}
	return live
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

// markDirty records that the index may disagree with the log until a
// clean close.
func (c *Collection) markDirty() error {
	if c.dirty {
		return nil
	}
	p := filepath.Join(c.dir, dirtyFile)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		return err
	}
	if err := syncDir(p); err != nil {
		return err
	}
	c.dirty = true
	return nil
}

// compact rewrites the log and the vector file when most of them is dead.
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
		c.liveLog = 0
		for i, p := range paths {
			c.sources[p].logSize = ns[i]
			c.liveLog += ns[i]
		}
	}
	if dead := c.vecs.dead(); dead > 1024 && dead > int64(len(c.vecs.offs)) {
		if err := c.vecs.compact(c.liveIDs()); err != nil {
			return fmt.Errorf("compact %s: %w", c.vecs.path, err)
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
	c.mu.RLock()
	idx := c.idx
	var n int64
	if idx != nil {
		n = idx.MemoryBytes()
	}
	c.mu.RUnlock()
	c.mem.SetMemory(c.name, n)
}

// Name is the collection's name.
func (c *Collection) Name() string { return c.name }

// Manifest returns the collection's manifest.
func (c *Collection) Manifest() Manifest { return c.man }

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
		Created: c.man.Created, Documents: len(c.sources), Chunks: len(c.chunks), IndexBytes: c.idx.MemoryBytes()}
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

// close closes the index and files; the dirty marker goes when the index
// closed cleanly.
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
	if c.idx != nil {
		if err := c.idx.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close index of %s: %w", c.name, err))
		} else if c.dirty && !c.stale {
			if err := os.Remove(filepath.Join(c.dir, dirtyFile)); err != nil && !os.IsNotExist(err) {
				errs = append(errs, err)
			}
		}
	}
	c.idx = nil
	c.release()
	return errors.Join(errs...)
}

// release closes the files and drops the lock.
func (c *Collection) release() {
	if c.idx != nil {
		c.idx.Close()
	}
	if c.vecs != nil {
		c.vecs.close()
	}
	if c.log != nil {
		c.log.close()
	}
	if c.lock != nil {
		syscall.Flock(int(c.lock.Fd()), syscall.LOCK_UN)
		c.lock.Close()
		c.lock = nil
	}
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
