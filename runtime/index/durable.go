package index

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Store is an HNSW index persisted in a directory so that it survives
// kill -9: every insert and delete is appended to a log and fsynced before
// it is acknowledged, snapshots are written every SnapshotEvery operations,
// and Open loads the newest snapshot and replays the log after it.
//
// Directory:
//
//	LOCK                 flock held while the store is open
//	snapshot-<gen>.hnsw  HNSW.WriteTo output (checksummed)
//	log-<gen>.wal        operations after snapshot <gen> (gen 0: none)
//
// Log file: header "LLMRTWAL" | u32 version (1) | u64 generation; then
// records u32 payload length | u8 op (1 add, 2 delete) | payload |
// u32 CRC-32C of op and payload. Add payload: u64 id | u32 dim | dim×f32 |
// u32 n | n × (u16 klen | key | u16 vlen | value); delete: u64 id. All
// little-endian.
//
// A snapshot of generation g+1 is written to a temporary file, fsynced,
// renamed and the directory fsynced before log g+1 is created and log g
// removed, so at every instant the newest complete snapshot plus its log
// hold every acknowledged operation. Recovery cuts a torn last record
// (reported in Recovery.TornBytes) and stops at a record whose checksum
// fails with more data after it (Recovery.Corrupt): the log is truncated
// there and nothing after it is loaded.
type Store struct {
	dir  string
	opt  StoreOptions
	lock *os.File

	mu    sync.Mutex // serialises writers and snapshots
	h     *HNSW
	hp    atomic.Pointer[HNSW] // h for readers, who never wait for a writer
	log   *os.File
	gen   uint64
	since int // operations since the snapshot
	bad   bool
}

// StoreOptions configure a Store.
type StoreOptions struct {
	Options           // for a new store; an existing one keeps its own
	SnapshotEvery int // operations between snapshots (default 10000; < 0 never)
	NoSync        bool
}

// Recovery is what Open found.
type Recovery struct {
	Snapshot  bool  // a snapshot was loaded
	Replayed  int   // log records applied
	TornBytes int64 // bytes of an incomplete last record cut off
	Corrupt   error // a record failed its checksum; the log was cut there
}

const (
	walMagic   = "LLMRTWAL"
	walHeader  = 20
	opAdd      = 1
	opDelete   = 2
	maxRecord  = 64 << 20
	lockName   = "LOCK"
	snapPrefix = "snapshot-"
	logPrefix  = "log-"
)

var walCRC = crc32.MakeTable(crc32.Castagnoli)

// ErrLocked reports a store open in another process.
var ErrLocked = errors.New("index: store is open in another process")

// Open opens (or creates) the store in dir.
func Open(dir string, opt StoreOptions) (*Store, Recovery, error) {
	var rec Recovery
	if opt.SnapshotEvery == 0 {
		opt.SnapshotEvery = 10000
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, rec, err
	}
	lf, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, rec, err
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		return nil, rec, fmt.Errorf("%w: %s", ErrLocked, dir)
	}
	s := &Store{dir: dir, opt: opt, lock: lf}
	if err := s.load(&rec); err != nil {
		s.release()
		return nil, rec, err
	}
	s.hp.Store(s.h)
	return s, rec, nil
}

func (s *Store) release() {
	if s.log != nil {
		s.log.Close()
	}
	if s.h != nil {
		s.h.Close()
	}
	syscall.Flock(int(s.lock.Fd()), syscall.LOCK_UN)
	s.lock.Close()
}

// generations lists the generations of files named prefix<gen><suffix>.
func generations(dir, prefix, suffix string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, prefix) || !strings.HasSuffix(n, suffix) {
			continue
		}
		g, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, prefix), suffix), 10, 64)
		if err == nil {
			out = append(out, g)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] > out[j] })
	return out, nil
}

func (s *Store) snapPath(g uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%s%d.hnsw", snapPrefix, g))
}
func (s *Store) logPath(g uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%s%d.wal", logPrefix, g))
}

func (s *Store) load(rec *Recovery) error {
	snaps, err := generations(s.dir, snapPrefix, ".hnsw")
	if err != nil {
		return err
	}
	// The newest snapshot that loads; an older one only if the newer is
	// damaged and the older's log is still there.
	for i, g := range snaps {
		f, err := os.Open(s.snapPath(g))
		if err != nil {
			return err
		}
		h, rerr := Read(bufio.NewReaderSize(f, 1<<20))
		f.Close()
		if rerr == nil {
			if i > 0 {
				if _, err := os.Stat(s.logPath(g)); err != nil {
					h.Close()
					return fmt.Errorf("index %s: snapshot %d is damaged (%v) and the log of %d is gone", s.dir, snaps[0], rerr, g)
				}
			}
			o := h.Options()
			if s.opt.Dim != 0 && (o.Dim != s.opt.Dim || o.Metric != s.opt.Metric) {
				h.Close()
				return fmt.Errorf("index %s holds %s vectors of dimension %d, not %s of %d", s.dir, o.Metric, o.Dim, s.opt.Metric, s.opt.Dim)
			}
			s.h, s.gen, rec.Snapshot = h, g, true
			break
		}
		if i == len(snaps)-1 {
			return fmt.Errorf("index %s: snapshot %d: %w", s.dir, g, rerr)
		}
	}
	if s.h == nil {
		h, err := New(s.opt.Options)
		if err != nil {
			return err
		}
		s.h, s.gen = h, 0
	}
	if err := s.replay(rec); err != nil {
		return err
	}
	// Older files are no longer needed.
	for _, g := range snaps {
		if g < s.gen {
			os.Remove(s.snapPath(g))
		}
	}
	logs, _ := generations(s.dir, logPrefix, ".wal")
	for _, g := range logs {
		if g < s.gen {
			os.Remove(s.logPath(g))
		}
	}
	return nil
}

// replay applies log gen to the index and leaves it open for appending.
func (s *Store) replay(rec *Recovery) error {
	p := s.logPath(s.gen)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	if st.Size() < walHeader {
		// New, or torn before its header was synced: start it over.
		var hdr [walHeader]byte
		copy(hdr[:], walMagic)
		binary.LittleEndian.PutUint32(hdr[8:], 1)
		binary.LittleEndian.PutUint64(hdr[12:], s.gen)
		if err := f.Truncate(0); err == nil {
			_, err = f.WriteAt(hdr[:], 0)
		}
		if err == nil {
			err = s.sync(f)
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", p, err)
		}
		if _, err := f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return err
		}
		s.log = f
		return syncDir(s.dir)
	}
	var hdr [walHeader]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil || string(hdr[:8]) != walMagic || binary.LittleEndian.Uint64(hdr[12:]) != s.gen {
		f.Close()
		return fmt.Errorf("%s: not the log of generation %d", p, s.gen)
	}
	r := bufio.NewReaderSize(io.NewSectionReader(f, walHeader, st.Size()-walHeader), 1<<20)
	off := int64(walHeader)
	end := st.Size()
	for off < end {
		n, op, payload, err := readRecord(r, end-off)
		if err != nil {
			if errors.Is(err, errTorn) {
				rec.TornBytes = end - off
			} else {
				rec.Corrupt = fmt.Errorf("%s at offset %d: %w", p, off, err)
			}
			if terr := f.Truncate(off); terr != nil {
				f.Close()
				return terr
			}
			if err := s.sync(f); err != nil {
				f.Close()
				return err
			}
			break
		}
		if err := s.apply(op, payload); err != nil {
			f.Close()
			return fmt.Errorf("%s at offset %d: %w", p, off, err)
		}
		rec.Replayed++
		s.since++
		off += n
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		return err
	}
	s.log = f
	return nil
}

var errTorn = errors.New("torn record")

// readRecord reads one record; errTorn when the file ends inside it.
func readRecord(r *bufio.Reader, left int64) (int64, byte, []byte, error) {
	var l [4]byte
	if left < 9 {
		return 0, 0, nil, errTorn
	}
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return 0, 0, nil, errTorn
	}
	n := int64(binary.LittleEndian.Uint32(l[:]))
	if n > maxRecord {
		if 9+n > left {
			return 0, 0, nil, errTorn
		}
		return 0, 0, nil, fmt.Errorf("record length %d is implausible", n)
	}
	if 9+n > left {
		return 0, 0, nil, errTorn
	}
	body := make([]byte, 1+n+4)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, 0, nil, errTorn
	}
	if crc32.Checksum(body[:1+n], walCRC) != binary.LittleEndian.Uint32(body[1+n:]) {
		if 9+n == left {
			return 0, 0, nil, errTorn // the last record, half written
		}
		return 0, 0, nil, errors.New("checksum mismatch")
	}
	return 9 + n, body[0], body[1 : 1+n], nil
}

func (s *Store) apply(op byte, p []byte) error {
	switch op {
	case opAdd:
		id, vec, meta, err := decodeAdd(p)
		if err != nil {
			return err
		}
		if _, ok := s.h.Vector(id); ok {
			return nil // already in the snapshot
		}
		return s.h.Add(id, vec, meta)
	case opDelete:
		if len(p) != 8 {
			return errors.New("malformed delete record")
		}
		s.h.Delete(binary.LittleEndian.Uint64(p))
		return nil
	}
	return fmt.Errorf("unknown operation %d", op)
}

func encodeAdd(id uint64, vec []float32, meta Meta) []byte {
	b := make([]byte, 0, 16+4*len(vec)+8)
	b = binary.LittleEndian.AppendUint64(b, id)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(vec)))
	for _, x := range vec {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(k)))
		b = append(b, k...)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(meta[k])))
		b = append(b, meta[k]...)
	}
	return b
}

func decodeAdd(p []byte) (uint64, []float32, Meta, error) {
	bad := errors.New("malformed add record")
	if len(p) < 12 {
		return 0, nil, nil, bad
	}
	id := binary.LittleEndian.Uint64(p)
	dim := int(binary.LittleEndian.Uint32(p[8:]))
	p = p[12:]
	if dim > MaxDim || len(p) < 4*dim+4 {
		return 0, nil, nil, bad
	}
	vec := make([]float32, dim)
	for i := range vec {
		vec[i] = math.Float32frombits(binary.LittleEndian.Uint32(p[4*i:]))
	}
	p = p[4*dim:]
	n := int(binary.LittleEndian.Uint32(p))
	p = p[4:]
	var meta Meta
	for i := 0; i < n; i++ {
		if meta == nil {
			meta = Meta{}
		}
		var kv [2]string
		for j := range kv {
			if len(p) < 2 {
				return 0, nil, nil, bad
			}
			l := int(binary.LittleEndian.Uint16(p))
			if len(p) < 2+l {
				return 0, nil, nil, bad
			}
			kv[j] = string(p[2 : 2+l])
			p = p[2+l:]
		}
		meta[kv[0]] = kv[1]
	}
	return id, vec, meta, nil
}

func appendRecord(b []byte, op byte, payload []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	start := len(b)
	b = append(b, op)
	b = append(b, payload...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], walCRC))
}

func (s *Store) sync(f *os.File) error {
	if s.opt.NoSync {
		return nil
	}
	return f.Sync()
}

// write appends records and syncs them: the operations are durable when
// it returns nil. On a failed write the log is cut back to where it was.
func (s *Store) write(b []byte) error {
	if s.bad {
		return errors.New("index: the log failed earlier; reopen the store")
	}
	off, err := s.log.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err = s.log.Write(b); err == nil {
		err = s.sync(s.log)
	}
	if err != nil {
		if terr := s.log.Truncate(off); terr != nil {
			s.bad = true
		} else if _, serr := s.log.Seek(off, io.SeekStart); serr != nil {
			s.bad = true
		}
		return fmt.Errorf("index: append to %s: %w", s.log.Name(), err)
	}
	return nil
}

// Add inserts a batch durably: every item is validated first (a failed
// batch writes nothing), the records are appended and fsynced, then the
// items enter the graph.
func (s *Store) Add(ctx context.Context, ids []uint64, vecs [][]float32, metas []Meta) error {
	if len(ids) != len(vecs) || (metas != nil && len(metas) != len(ids)) {
		return fmt.Errorf("index: add %d ids with %d vectors and %d metadata", len(ids), len(vecs), len(metas))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return ErrClosed
	}
	seen := make(map[uint64]bool, len(ids))
	var b []byte
	for i, id := range ids {
		if _, err := s.h.checkVec(vecs[i]); err != nil {
			return fmt.Errorf("index: add id %d: %w", id, err)
		}
		if _, ok := s.h.Vector(id); ok || seen[id] {
			return fmt.Errorf("index: add id %d: %w", id, ErrDuplicate)
		}
		seen[id] = true
		var m Meta
		if metas != nil {
			m = metas[i]
		}
		for k, v := range m {
			if len(k) > math.MaxUint16 || len(v) > math.MaxUint16 {
				return fmt.Errorf("index: add id %d: metadata %q longer than 65535 bytes", id, k)
			}
		}
		b = appendRecord(b, opAdd, encodeAdd(id, vecs[i], m))
	}
	if err := s.write(b); err != nil {
		return err
	}
	if err := s.h.AddBatch(ids, vecs, metas, 0); err != nil {
		return err
	}
	s.since += len(ids)
	return s.maybeSnapshot()
}

// Delete removes ids durably; unknown ids are ignored.
func (s *Store) Delete(ctx context.Context, ids []uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return ErrClosed
	}
	var b []byte
	for _, id := range ids {
		b = appendRecord(b, opDelete, binary.LittleEndian.AppendUint64(nil, id))
	}
	if err := s.write(b); err != nil {
		return err
	}
	for _, id := range ids {
		s.h.Delete(id)
	}
	s.since += len(ids)
	return s.maybeSnapshot()
}

func (s *Store) maybeSnapshot() error {
	if s.opt.SnapshotEvery > 0 && s.since >= s.opt.SnapshotEvery {
		return s.snapshotLocked()
	}
	return nil
}

// Snapshot writes a snapshot and starts a new log generation.
func (s *Store) Snapshot() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return ErrClosed
	}
	return s.snapshotLocked()
}

func (s *Store) snapshotLocked() error {
	g := s.gen + 1
	p := s.snapPath(g)
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	_, err = s.h.WriteTo(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = s.sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err == nil && !s.opt.NoSync {
		err = syncDir(s.dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("index: snapshot %s: %w", p, err)
	}
	// Snapshot g holds everything: start log g, then drop the old files.
	old := s.gen
	s.log.Close()
	s.log, s.gen, s.since = nil, g, 0
	var rec Recovery
	if err := s.replay(&rec); err != nil {
		s.bad = true
		return err
	}
	os.Remove(s.logPath(old))
	os.Remove(s.snapPath(old))
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Search searches the index.
func (s *Store) Search(q []float32, k int, opt SearchOptions) ([]Result, error) {
	h := s.Index()
	if h == nil {
		return nil, ErrClosed
	}
	return h.Search(q, k, opt)
}

// Len is the number of live items.
func (s *Store) Len() int {
	if h := s.Index(); h != nil {
		return h.Len()
	}
	return 0
}

// MemoryBytes is the index's memory.
func (s *Store) MemoryBytes() int64 {
	if h := s.Index(); h != nil {
		return h.MemoryBytes()
	}
	return 0
}

// Index is the in-memory index (nil after Close).
func (s *Store) Index() *HNSW { return s.hp.Load() }

// Close syncs the log and releases the store; the log is replayed on the
// next Open.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return nil
	}
	var err error
	if s.log != nil {
		err = s.sync(s.log)
	}
	s.hp.Store(nil)
	s.release()
	s.h, s.log = nil, nil
	return err
}
