package rag

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// SourceInfo describes an ingested source file.
type SourceInfo struct {
	// Path is the source's absolute path (or the name given to
	// AddDocument).
	Path   string `json:"path"`
	Format string `json:"format"`
	// Hash is the SHA-256 of the file's bytes, hex.
	Hash    string    `json:"hash"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	Added   time.Time `json:"added"`
	Chunks  int       `json:"chunks"`
	Tokens  int       `json:"tokens"`
}

// storedChunk is a chunk as the log holds it (its source is the record's).
type storedChunk struct {
	ID     uint64 `json:"id"`
	Title  string `json:"title"`
	Start  int    `json:"start"`
	End    int    `json:"end"`
	Tokens int    `json:"tokens"`
	Text   string `json:"text"`
}

// logRecord is one line of chunks.jsonl: "put" sets a source's chunks
// (replacing any earlier ones), "del" removes a source.
type logRecord struct {
	Op     string        `json:"op"`
	Source *SourceInfo   `json:"source,omitempty"`
	Chunks []storedChunk `json:"chunks,omitempty"`
	Path   string        `json:"path,omitempty"`
}

// chunkLog is the append-only log of a collection's sources.
type chunkLog struct {
	path string
	f    *os.File
	size int64
}

// openChunkLog replays the log through apply (with each record's line
// length) and opens it for appending. A torn last line is cut off and its
// length returned; a bad line before the last is an error.
func openChunkLog(path string, apply func(rec *logRecord, n int64) error) (*chunkLog, int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	end, err := replayChunkLog(f, st.Size(), path, apply)
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if st.Size() > end {
		if err := f.Truncate(end); err != nil {
			f.Close()
			return nil, 0, err
		}
	}
	return &chunkLog{path: path, f: f, size: end}, st.Size() - end, nil
}

// readChunkLog replays the log like openChunkLog but changes nothing: a
// torn last line (or one a writer is appending) is passed over. It returns
// what the open file was when read (nil if there is no log) for the caller
// to compare with the file at path later, and the bytes passed over.
func readChunkLog(path string, apply func(rec *logRecord, n int64) error) (os.FileInfo, int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	end, err := replayChunkLog(f, st.Size(), path, apply)
	if err != nil {
		return nil, 0, err
	}
	return st, st.Size() - end, nil
}

// replayChunkLog applies the records of f's first size bytes and returns
// the offset after the last whole one.
func replayChunkLog(f *os.File, size int64, path string, apply func(rec *logRecord, n int64) error) (int64, error) {
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20)
	var off int64
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			// A line without its newline was torn by a crash.
			return off, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", path, err)
		}
		var rec logRecord
		if jerr := json.Unmarshal(bytes.TrimSpace(line), &rec); jerr != nil {
			// Only the last line can be torn; then nothing follows it.
			if _, perr := r.Peek(1); perr == io.EOF {
				return off, nil
			}
			return 0, fmt.Errorf("%s: corrupt record at byte %d: %w", path, off, jerr)
		}
		if err := apply(&rec, int64(len(line))); err != nil {
			return 0, fmt.Errorf("%s: record at byte %d: %w", path, off, err)
		}
		off += int64(len(line))
	}
}

// append writes records and syncs; it returns the bytes each took.
func (l *chunkLog) append(recs ...*logRecord) ([]int64, error) {
	var buf bytes.Buffer
	ns := make([]int64, len(recs))
	for i, rec := range recs {
		before := buf.Len()
		b, err := json.Marshal(rec)
		if err != nil {
			return nil, err
		}
		buf.Write(b)
		buf.WriteByte('\n')
		ns[i] = int64(buf.Len() - before)
	}
	if _, err := l.f.WriteAt(buf.Bytes(), l.size); err != nil {
		return nil, fmt.Errorf("write %s: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return nil, fmt.Errorf("sync %s: %w", l.path, err)
	}
	l.size += int64(buf.Len())
	return ns, nil
}

// rewrite replaces the log by recs, atomically.
func (l *chunkLog) rewrite(recs []*logRecord) ([]int64, error) {
	tmp := l.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	w := bufio.NewWriterSize(f, 1<<20)
	ns := make([]int64, len(recs))
	var size int64
	for i, rec := range recs {
		b, err := json.Marshal(rec)
		if err != nil {
			f.Close()
			return nil, err
		}
		w.Write(b)
		w.WriteByte('\n')
		ns[i] = int64(len(b) + 1)
		size += ns[i]
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	if err := os.Rename(tmp, l.path); err != nil {
		f.Close()
		return nil, err
	}
	if err := syncDir(l.path); err != nil {
		f.Close()
		return nil, err
	}
	l.f.Close()
	l.f, l.size = f, size
	return ns, nil
}

func (l *chunkLog) close() error { return l.f.Close() }

// syncDir syncs the directory holding path, so a rename or a new file in
// it survives a crash.
func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
