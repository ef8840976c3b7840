package rag

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/llmrt/llmrt/internal/atomicfile"
	"github.com/llmrt/llmrt/runtime/index"
)

// Store is a directory of collections. Collections are opened on first use
// and stay open until Delete or Close. A writing store locks (flock) each
// collection it opens, so two processes cannot write one at a time; a
// read-only store takes no lock and reads beside a writer.
type Store struct {
	root     string
	emb      Embedder
	embFor   func(model string) Embedder
	mem      MemoryReporter
	log      *slog.Logger
	readOnly bool

	mu     sync.Mutex
	closed bool
	open   map[string]*Collection
}

// StoreOptions configure a Store.
type StoreOptions struct {
	// Embedder embeds chunks and queries; nil opens the store for
	// listing, stats, deletion and keyword search only.
	Embedder Embedder
	// ReadOnly opens collections for searching, listing and stats only,
	// without their lock, so while another process (llmrt serve) writes
	// them. Each collection is read as it was when opened. Create,
	// Delete and writes fail with ErrReadOnly.
	ReadOnly bool
	// Embedders, if set, gives the embedder of a model by name: each
	// collection is then embedded with the model it was built with, and
	// Embedder (or CreateOptions.Model) only picks the model of new ones.
	Embedders func(model string) Embedder
	// Memory, if set, is told how much memory each open collection's
	// index holds (llmrt serve books it in the scheduler's ledger).
	Memory MemoryReporter
	// Logger, if set, is told what opening a collection for writing
	// repaired (see Recovery).
	Logger *slog.Logger
}

// MemoryReporter receives the memory of open collections' indexes.
type MemoryReporter interface {
	// SetMemory reports a collection's current index memory.
	SetMemory(collection string, bytes int64)
	// Forget reports that the collection was closed or deleted.
	Forget(collection string)
}

// Metrics a collection can use (index.ParseMetric reads them).
const (
	Cosine = "cosine"
	Dot    = "dot"
	L2     = "l2"
)

// CreateOptions configure a new collection.
type CreateOptions struct {
	// Metric is Cosine (default), Dot or L2.
	Metric string
	// Model names the embedding model (needs StoreOptions.Embedders;
	// "" : the store's Embedder).
	Model    string
	Chunking ChunkOptions
	Index    IndexOptions
}

// OpenStore opens (creating if needed) the store rooted at dir.
func OpenStore(dir string, opt StoreOptions) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s := &Store{root: dir, emb: opt.Embedder, embFor: opt.Embedders, mem: opt.Memory, log: opt.Logger, readOnly: opt.ReadOnly, open: map[string]*Collection{}}
	return s, nil
}

// validName is strict as llmrt makes each name a directory and URL segment (model names in runtime/registry are the user's files).
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckName reports whether name can name a collection: 1 to 64 letters,
// digits, '.', '_' or '-', starting with a letter or digit.
func CheckName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("invalid collection name %q: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// Create makes a new collection embedded with the store's model.
func (s *Store) Create(ctx context.Context, name string, opt CreateOptions) (*Collection, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if s.readOnly {
		return nil, fmt.Errorf("create %s: %w", name, ErrReadOnly)
	}
	emb := s.emb
	if opt.Model != "" {
		if s.embFor == nil {
			return nil, fmt.Errorf("embedding model %s: this store embeds with one model only", opt.Model)
		}
		emb = s.embFor(opt.Model)
	}
	if emb == nil {
		return nil, ErrNoEmbedder
	}
	if opt.Metric == "" {
		opt.Metric = Cosine
	}
	metric, err := index.ParseMetric(opt.Metric)
	if err != nil {
		return nil, err
	}
	opt.Metric = metric.String()
	ch := opt.Chunking.withDefaults()
	sh, err := emb.Shape(ctx)
	if err != nil {
		return nil, fmt.Errorf("embedding model %s: %w", emb.Name(), err)
	}
	if ch.Size > sh.MaxTokens {
		return nil, fmt.Errorf("chunk size %d is over the embedding model's limit of %d tokens", ch.Size, sh.MaxTokens)
	}
	if sh.Dim <= 0 {
		return nil, fmt.Errorf("embedding model %s has dimension %d", emb.Name(), sh.Dim)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	dir := filepath.Join(s.root, name)
	if _, err := os.Stat(filepath.Join(dir, manifestFile)); err == nil {
		return nil, fmt.Errorf("%s: %w", name, ErrExists)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	m := Manifest{Name: name, Model: emb.Name(), Dim: sh.Dim, Metric: opt.Metric, Chunking: ch, Index: opt.Index, Created: time.Now().UTC().Truncate(time.Second)}
	// The manifest is written last: a directory without one is not a
	// collection (a crash during Create leaves nothing to open).
	if err := atomicfile.WriteJSON(filepath.Join(dir, manifestFile), m); err != nil {
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	c, err := openCollection(ctx, dir, emb, false)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	c.mem = s.mem
	s.open[name] = c
	c.reportMemory()
	return c, nil
}

// Get opens a collection (or returns the open one). It fails with
// ErrNotFound for unknown names and ErrModelMismatch when the store's
// embedder is not the collection's model (never with Embedders, which
// gives each collection its own).
func (s *Store) Get(ctx context.Context, name string) (*Collection, error) {
	if err := CheckName(name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if c := s.open[name]; c != nil {
		return c, nil
	}
	dir := filepath.Join(s.root, name)
	if _, err := os.Stat(filepath.Join(dir, manifestFile)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		return nil, err
	}
	emb := s.emb
	if s.embFor != nil {
		// The collection's own model embeds it.
		m, err := readManifest(dir)
		if err != nil {
			return nil, fmt.Errorf("open collection %s: %w", name, err)
		}
		emb = s.embFor(m.Model)
	}
	c, err := openCollection(ctx, dir, emb, s.readOnly)
	if err != nil {
		return nil, fmt.Errorf("open collection %s: %w", name, err)
	}
	if r := c.Recovery().String(); r != "" && s.log != nil && !s.readOnly {
		s.log.Info("collection recovered", "collection", name, "repairs", r)
	}
	c.mem = s.mem
	s.open[name] = c
	c.reportMemory()
	return c, nil
}

// List returns the manifests of the store's collections by name.
func (s *Store) List() ([]Manifest, error) {
	ents, err := os.ReadDir(s.root)
	if err != nil {
		return nil, err
	}
	var out []Manifest
	for _, e := range ents {
		if !e.IsDir() || CheckName(e.Name()) != nil {
			continue
		}
		m, err := readManifest(filepath.Join(s.root, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// EmbeddingModel is the model a collection was built with, read from its
// manifest without opening it; an unknown or invalid name gives an error
// matching ErrNotFound.
func (s *Store) EmbeddingModel(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	m, err := readManifest(filepath.Join(s.root, name))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("collection %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("collection %q: %w", name, err)
	}
	return m.Model, nil
}

// Stats opens a collection and returns its figures.
func (s *Store) Stats(ctx context.Context, name string) (Stats, error) {
	c, err := s.Get(ctx, name)
	if err != nil {
		return Stats{}, err
	}
	return c.Stats()
}

// Delete closes a collection and removes its directory.
func (s *Store) Delete(name string) error {
	if err := CheckName(name); err != nil {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if s.readOnly {
		return fmt.Errorf("delete %s: %w", name, ErrReadOnly)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := filepath.Join(s.root, name)
	if _, err := os.Stat(filepath.Join(dir, manifestFile)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		return err
	}
	if c := s.open[name]; c != nil {
		c.close()
		delete(s.open, name)
		if s.mem != nil {
			s.mem.Forget(name)
		}
	} else if err := tryLock(dir); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	// Remove the manifest first so a crash midway leaves no half
	// collection that looks whole.
	if err := os.Remove(filepath.Join(dir, manifestFile)); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// Close closes every open collection.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for name, c := range s.open {
		if err := c.close(); err != nil {
			errs = append(errs, err)
		}
		delete(s.open, name)
		if s.mem != nil {
			s.mem.Forget(name)
		}
	}
	return errors.Join(errs...)
}
