package rag

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// AddOptions control ingestion.
type AddOptions struct {
	// BatchSize is how many chunks go to one Embed call (default 32).
	BatchSize int
	// Progress, if set, is called after every embedding batch with the
	// chunks embedded so far and the chunks to embed in all.
	Progress func(done, total int)
	// Prune removes, when a folder is added, the collection's sources
	// under that folder whose files are gone.
	Prune bool
	// Stored, if set, is called after each document is stored: it
	// survives a crash from then on.
	Stored func(SourceInfo)
}

// AddReport says what an ingestion did. Paths are absolute.
type AddReport struct {
	Added     []string    // new sources
	Updated   []string    // changed sources whose chunks were replaced
	Unchanged []string    // sources whose content hash matched: skipped
	Removed   []string    // sources pruned
	Failed    []FileError // files that could not be read or parsed
	Chunks    int         // chunks stored
	Tokens    int         // tokens in those chunks
}

// Merge adds o's sources and counts to r (reports of several ingestions).
func (r *AddReport) Merge(o AddReport) {
	r.Added = append(r.Added, o.Added...)
	r.Updated = append(r.Updated, o.Updated...)
	r.Unchanged = append(r.Unchanged, o.Unchanged...)
	r.Removed = append(r.Removed, o.Removed...)
	r.Failed = append(r.Failed, o.Failed...)
	r.Chunks += o.Chunks
	r.Tokens += o.Tokens
}

// FileError is a file that failed to ingest.
type FileError struct {
	Path string
	Err  error
}

func (e FileError) Error() string { return e.Path + ": " + e.Err.Error() }

// pending is a document on its way into the collection.
type pending struct {
	info   SourceInfo
	text   string
	pieces []Piece
	vecs   [][]float32
	left   int // pieces not yet embedded
	update bool
}

// AddPath ingests a file or, recursively, a folder (files with a known
// extension; hidden files and folders are skipped, symbolic links to files
// followed, to folders not). Unchanged files (same
// SHA-256) are skipped without embedding; changed files have their chunks
// replaced. Files that fail to read or parse are listed in the report and
// the others still ingest; the error is for what stops the whole ingestion
// (cancellation, embedding, storage).
func (c *Collection) AddPath(ctx context.Context, path string, opt AddOptions) (AddReport, error) {
	var rep AddReport
	if err := c.writable(); err != nil {
		return rep, err
	}
	root := absPath(path)
	st, err := os.Stat(root)
	if err != nil {
		return rep, err
	}
	var files []string
	if st.IsDir() {
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				rep.Failed = append(rep.Failed, FileError{p, err})
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if p != root && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if FormatOf(p) == "" || d.IsDir() {
				return nil
			}
			if d.Type()&fs.ModeSymlink != 0 {
				// Linked files count; linked folders are not followed.
				if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
					return nil
				}
			} else if !d.Type().IsRegular() {
				return nil
			}
			files = append(files, p)
			return nil
		})
		if err != nil {
			return rep, err
		}
	} else {
		if FormatOf(root) == "" {
			return rep, fmt.Errorf("%s: %w (want .txt, .md, .html or .pdf)", root, ErrUnsupported)
		}
		files = []string{root}
	}

	c.ingestMu.Lock()
	defer c.ingestMu.Unlock()
	var docs []*pending
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		data, err := os.ReadFile(f)
		if err != nil {
			rep.Failed = append(rep.Failed, FileError{f, err})
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			rep.Failed = append(rep.Failed, FileError{f, err})
			continue
		}
		hash := hashBytes(data)
		c.mu.RLock()
		old := c.sources[f]
		c.mu.RUnlock()
		if old != nil && old.info.Hash == hash {
			rep.Unchanged = append(rep.Unchanged, f)
			continue
		}
		doc, err := ParseDocument(ctx, f, data)
		if err != nil {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			rep.Failed = append(rep.Failed, FileError{f, err})
			continue
		}
		p, err := c.prepare(doc, SourceInfo{Path: f, Format: doc.Format, Hash: hash, Size: fi.Size(), ModTime: fi.ModTime().UTC()})
		if err != nil {
			rep.Failed = append(rep.Failed, FileError{f, err})
			continue
		}
		p.update = old != nil
		docs = append(docs, p)
	}
	if err := c.embedAndCommit(ctx, docs, opt, &rep); err != nil {
		return rep, err
	}
	if st.IsDir() && opt.Prune {
		seen := map[string]bool{}
		for _, f := range files {
			seen[f] = true
		}
		for _, f := range rep.Failed {
			seen[f.Path] = true // unreadable is not gone
		}
		for _, s := range c.Sources() {
			if underDir(s.Path, root) && !seen[s.Path] {
				if _, err := os.Stat(s.Path); errors.Is(err, fs.ErrNotExist) {
					if err := c.removeSource(ctx, s.Path); err != nil {
						return rep, err
					}
					rep.Removed = append(rep.Removed, s.Path)
				}
			}
		}
	}
	return rep, nil
}

// AddDocument ingests a parsed document under doc.Source; hash identifies
// its content (an unchanged hash skips it; empty means the SHA-256 of
// doc.Text).
func (c *Collection) AddDocument(ctx context.Context, doc Document, hash string, opt AddOptions) (AddReport, error) {
	var rep AddReport
	if err := c.writable(); err != nil {
		return rep, err
	}
	if doc.Source == "" {
		return rep, errors.New("document has no source")
	}
	if hash == "" {
		hash = hashBytes([]byte(doc.Text))
	}
	if doc.Sections == nil {
		doc.Sections = []Section{{Title: filepath.Base(doc.Source), End: len(doc.Text)}}
	}
	c.ingestMu.Lock()
	defer c.ingestMu.Unlock()
	c.mu.RLock()
	old := c.sources[doc.Source]
	c.mu.RUnlock()
	if old != nil && old.info.Hash == hash {
		rep.Unchanged = append(rep.Unchanged, doc.Source)
		return rep, nil
	}
	p, err := c.prepare(doc, SourceInfo{Path: doc.Source, Format: doc.Format, Hash: hash, Size: int64(len(doc.Text))})
	if err != nil {
		return rep, fmt.Errorf("chunk %s: %w", doc.Source, err)
	}
	p.update = old != nil
	return rep, c.embedAndCommit(ctx, []*pending{p}, opt, &rep)
}

// prepare chunks a document.
func (c *Collection) prepare(doc Document, info SourceInfo) (*pending, error) {
	count := func(s string) (int, error) {
		t, err := c.emb.Tokenize(s)
		return len(t), err
	}
	pieces, err := Split(doc, count, c.man.Chunking)
	if err != nil {
		return nil, err
	}
	return &pending{info: info, text: doc.Text, pieces: pieces, vecs: make([][]float32, len(pieces)), left: len(pieces)}, nil
}

// embedAndCommit embeds the documents' chunks in batches and commits each
// document as soon as all its chunks have vectors.
func (c *Collection) embedAndCommit(ctx context.Context, docs []*pending, opt AddOptions, rep *AddReport) error {
	defer c.reportMemory()
	bs := opt.BatchSize
	if bs <= 0 {
		bs = 32
	}
	type ref struct{ doc, piece int }
	var refs []ref
	for i, d := range docs {
		if d.left == 0 {
			if err := c.commit(ctx, d, opt, rep); err != nil {
				return err
			}
		}
		for j := range d.pieces {
			refs = append(refs, ref{i, j})
		}
	}
	total := len(refs)
	if opt.Progress != nil {
		opt.Progress(0, total)
	}
	for done := 0; done < total; {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch := refs[done:min(done+bs, total)]
		texts := make([]string, len(batch))
		for i, r := range batch {
			p := docs[r.doc].pieces[r.piece]
			texts[i] = EmbedText(p.Title, docs[r.doc].text[p.Start:p.End])
		}
		vecs, err := c.emb.Embed(ctx, texts)
		if err != nil {
			return fmt.Errorf("embed chunks %d..%d: %w", done, done+len(batch)-1, err)
		}
		if len(vecs) != len(batch) {
			return fmt.Errorf("embedder returned %d vectors for %d texts", len(vecs), len(batch))
		}
		for i, r := range batch {
			if len(vecs[i]) != c.man.Dim {
				return fmt.Errorf("embedder returned a vector of dimension %d, the collection has %d", len(vecs[i]), c.man.Dim)
			}
			d := docs[r.doc]
			d.vecs[r.piece] = vecs[i]
			d.left--
			if d.left == 0 {
				if err := c.commit(ctx, d, opt, rep); err != nil {
					return err
				}
			}
		}
		done += len(batch)
		if opt.Progress != nil {
			opt.Progress(done, total)
		}
	}
	return nil
}

// writable reports why the collection cannot take writes, if it cannot.
func (c *Collection) writable() error {
	if c.readOnly {
		return fmt.Errorf("%s: %w", c.name, ErrReadOnly)
	}
	if c.emb == nil {
		return ErrNoEmbedder
	}
	return nil
}

// isClosed reports whether close has run.
func (c *Collection) isClosed() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.closed
}

// commit stores one embedded document; the caller holds ingestMu. The
// vectors go first (durable in the vector store), then the log record,
// which is the commit point; then the document replaces its old version in
// memory and the old chunks' vectors are deleted. A crash between the steps
// leaves vectors of no live chunk, which the next open deletes.
func (c *Collection) commit(ctx context.Context, d *pending, opt AddOptions, rep *AddReport) error {
	if c.isClosed() {
		return ErrClosed
	}
	ids := make([]uint64, len(d.pieces))
	for i := range ids {
		ids[i] = c.nextID + uint64(i)
	}
	if len(ids) > 0 {
		if err := c.store.Add(ctx, ids, d.vecs, nil); err != nil {
			return fmt.Errorf("store the vectors of %s: %w", d.info.Path, err)
		}
		c.nextID += uint64(len(ids))
	}
	info := d.info
	info.Added = time.Now().UTC()
	info.Chunks = len(d.pieces)
	rec := &logRecord{Op: "put", Source: &info, Chunks: make([]storedChunk, len(d.pieces))}
	for i, p := range d.pieces {
		rec.Chunks[i] = storedChunk{ID: ids[i], Title: p.Title, Start: p.Start, End: p.End, Tokens: p.Tokens, Text: d.text[p.Start:p.End]}
		info.Tokens += p.Tokens
	}
	ns, err := c.log.append(rec)
	if err != nil {
		c.store.Delete(context.WithoutCancel(ctx), ids) // else the next open does
		return err
	}
	c.mu.Lock()
	old := c.dropSource(info.Path)
	c.putSource(info, rec.Chunks, ns[0])
	c.mu.Unlock()
	if opt.Stored != nil {
		opt.Stored(info)
	}
	// Searches skip ids without a chunk, and the next open deletes what
	// this fails to.
	c.store.Delete(context.WithoutCancel(ctx), old)
	if d.update {
		rep.Updated = append(rep.Updated, info.Path)
	} else {
		rep.Added = append(rep.Added, info.Path)
	}
	rep.Chunks += len(d.pieces)
	rep.Tokens += info.Tokens
	return c.compact()
}

// RemoveSource removes a source and its chunks from the collection.
func (c *Collection) RemoveSource(ctx context.Context, path string) error {
	if c.readOnly {
		return fmt.Errorf("%s: %w", c.name, ErrReadOnly)
	}
	c.ingestMu.Lock()
	defer c.ingestMu.Unlock()
	c.mu.RLock()
	_, ok := c.sources[path]
	c.mu.RUnlock()
	if !ok {
		path = absPath(path)
	}
	defer c.reportMemory()
	return c.removeSource(ctx, path)
}

// removeSource logs the removal (the commit point), drops the source from
// memory and deletes its vectors; the caller holds ingestMu.
func (c *Collection) removeSource(ctx context.Context, path string) error {
	c.mu.RLock()
	closed, known := c.closed, c.sources[path] != nil
	c.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if !known {
		return fmt.Errorf("%s: %w", path, ErrNoSource)
	}
	if _, err := c.log.append(&logRecord{Op: "del", Path: path}); err != nil {
		return err
	}
	c.mu.Lock()
	old := c.dropSource(path)
	c.mu.Unlock()
	c.store.Delete(context.WithoutCancel(ctx), old) // else the next open does
	return c.compact()
}
