package index

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
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
// kill -9 and power loss: an append-only log of inserts and deletes,
// periodic snapshots, and recovery that replays the log.
//
// Directory:
//
//	LOCK                   flock(LOCK_EX) held while a Store is open; holds its pid
//	snapshot-<g>.hnsw      HNSW.WriteTo output (checksummed) of generation g
//	log-<g>.wal            operations after snapshot g (format: see wal.go)
//	snapshot-<g>.hnsw.tmp  a snapshot being written (removed by Open)
//	snapshot-<g>.hnsw.damaged  a snapshot that failed to load, set aside
//	log-<g>.wal.corrupt-<offset>  the bytes cut from a log at a corrupt record
//
// Snapshot g holds every operation of logs < g, so the state is snapshot g
// followed by the logs g, g+1, ... in order. A new store writes snapshot 0
// (an empty index: it records the Options) and log 0 at once, so every
// store has a snapshot that fixes its dimension, metric and graph options.
//
// Acknowledgement: Add and Delete append all their records with one write,
// fsync the log, and only then change the in-memory index and return; an
// operation that returned nil survives any crash. An operation that did not
// return (the process died inside it) may be present or absent after
// recovery, possibly in part for a batch; records are never half applied.
//
// Rotation to generation g+1 (Snapshot, or every SnapshotEvery operations):
//
//  1. write snapshot-<g+1>.hnsw.tmp and fsync it;
//  2. create log-<g+1>.wal holding only its header, fsync it;
//  3. rename the temporary file to snapshot-<g+1>.hnsw and fsync the
//     directory; from here on records go to log g+1;
//  4. remove the generations older than g (snapshot g and log g stay as
//     the fallback if snapshot g+1 is ever damaged).
//
// A crash before 3 leaves snapshot g, log g and an empty log g+1: Open
// replays logs g and g+1 (the latter empty) on snapshot g. A crash after 3
// leaves snapshot g+1 beside log g: Open uses snapshot g+1 and log g+1, and
// never replays log g onto it. Two snapshots and their logs are therefore
// kept on disk at all times (a store needs about twice its snapshot size).
//
// Open loads the newest snapshot that passes its checksum. If a newer one
// fails, it is renamed *.damaged, reported in Recovery.DamagedSnapshot, and
// the previous generation is loaded and every log from it on replayed (an
// error if one of those logs is missing); a fresh snapshot is then written.
// The newest log may end in a torn record, which is cut off (TornBytes); a
// corrupt record with data after it cuts the log there, the cut bytes are
// saved beside it, and Recovery.Corrupt says where: nothing from that
// record on is loaded. Damage in any log but the newest is an error.
// Replay is idempotent: an add of an id already live is skipped and a
// delete of an unknown id ignored.
type Store struct {
	dir  string
	opt  StoreOptions
	lock *os.File

	mu      sync.Mutex // serialises Add, Delete, Snapshot and Close
	h       *HNSW
	hp      atomic.Pointer[HNSW] // h for readers, nil once closed
	log     *os.File             // log-<gen>.wal, appended at logEnd
	logEnd  int64
	gen     uint64 // generation of the log being appended
	snapGen uint64 // generation of the snapshot the current state starts from
	since   int    // operations since that snapshot
	failed  error  // sticky: the log may not match memory; writes refused
	snapErr error  // why the last automatic snapshot failed
	closed  bool
	ro      bool // OpenReadOnly: recover into memory, change no file
}

// StoreOptions configure Open.
type StoreOptions struct {
	// Options are the index options of a new store. An existing store keeps
	// the options saved in its snapshot; Open fails if Dim is non-zero and
	// Dim or Metric differ from the saved ones (Dim 0 accepts any).
	Options
	// SnapshotEvery is the number of logged operations (items added or
	// deleted) between automatic snapshots: default 10000, negative never.
	SnapshotEvery int
	// NoSync skips every fsync. Data then survives kill -9 (it is in the
	// page cache) but not power loss. For tests and benchmarks.
	NoSync bool
}

// Recovery is what Open found.
type Recovery struct {
	Snapshot  bool  // an existing store's snapshot was loaded (false: a new store)
	Replayed  int   // log records read and applied after the snapshot
	TornBytes int64 // bytes of an incomplete last record cut from the log
	// Corrupt is set when a record failed its checksum (or was malformed)
	// with more data after it: the log was cut there, the cut bytes saved
	// to log-<g>.wal.corrupt-<offset>, and nothing from it on was loaded.
	Corrupt error
	// DamagedSnapshot is set when a newer snapshot failed to load and an
	// older generation was loaded instead (the state is complete: the logs
	// since the older snapshot were replayed).
	DamagedSnapshot error
	Generation      uint64 // generation of the log now being appended
}

// ErrLocked reports a store already open (in this or another process).
var ErrLocked = errors.New("index: store is locked (open in another Store)")

const (
	lockName   = "LOCK"
	snapPrefix = "snapshot-"
	snapSuffix = ".hnsw"
	logPrefix  = "log-"
	logSuffix  = ".wal"
)

// Open opens the store in dir, creating the directory and an empty store
// if there is none, and recovers its state as described on Store.
func Open(dir string, opt StoreOptions) (*Store, Recovery, error) {
	var rec Recovery
	if opt.SnapshotEvery == 0 {
		opt.SnapshotEvery = 10000
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, rec, fmt.Errorf("index: open store: %w", err)
	}
	lp := filepath.Join(dir, lockName)
	lf, err := os.OpenFile(lp, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, rec, fmt.Errorf("index: open store: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := ""
			if b, rerr := os.ReadFile(lp); rerr == nil && len(b) > 0 {
				holder = " by pid " + strings.TrimSpace(string(b))
			}
			return nil, rec, fmt.Errorf("%w: %s is held%s", ErrLocked, lp, holder)
		}
		return nil, rec, fmt.Errorf("index: lock %s: %w", lp, err)
	}
	if err := lf.Truncate(0); err == nil {
		lf.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	s := &Store{dir: dir, opt: opt, lock: lf}
	if err := s.recover(&rec); err != nil {
		s.release()
		return nil, rec, err
	}
	rec.Generation = s.gen
	s.hp.Store(s.h)
	return s, rec, nil
}

// OpenReadOnly recovers the state of the store in dir into memory as Open
// would, without taking the lock or changing any file, so it works while a
// Store in another process has dir open. It sees every operation that Store
// acknowledged before the call; an append in progress ends the log like a
// torn tail. When that Store's rotations remove a file being read, the
// error wraps fs.ErrNotExist and calling again succeeds. opt.Dim, if not
// zero, must match the store's as in Open. The index is the caller's: it
// is not durable, and Close frees it.
func OpenReadOnly(dir string, opt Options) (*HNSW, Recovery, error) {
	var rec Recovery
	s := &Store{dir: dir, opt: StoreOptions{Options: opt}, ro: true}
	if err := s.recover(&rec); err != nil {
		if s.h != nil {
			s.h.Close()
		}
		return nil, rec, err
	}
	rec.Generation = s.gen
	return s.h, rec, nil
}

func (s *Store) release() {
	if s.log != nil {
		s.log.Close()
		s.log = nil
	}
	if s.h != nil {
		s.h.Close()
	}
	s.lock.Truncate(0)
	syscall.Flock(int(s.lock.Fd()), syscall.LOCK_UN)
	s.lock.Close()
}

func (s *Store) snapPath(g uint64) string {
	return filepath.Join(s.dir, snapPrefix+strconv.FormatUint(g, 10)+snapSuffix)
}

func (s *Store) logPath(g uint64) string {
	return filepath.Join(s.dir, logPrefix+strconv.FormatUint(g, 10)+logSuffix)
}

// listGens returns the generations of the files in dir named
// prefix<g>suffix, ascending.
func listGens(dir, prefix, suffix string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	var out []uint64
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, prefix) || !strings.HasSuffix(n, suffix) {
			continue
		}
		num := strings.TrimSuffix(strings.TrimPrefix(n, prefix), suffix)
		if g, err := strconv.ParseUint(num, 10, 64); err == nil && num == strconv.FormatUint(g, 10) {
			out = append(out, g)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

func (s *Store) sync(f *os.File) error {
	if s.opt.NoSync {
		return nil
	}
	return f.Sync()
}

func (s *Store) syncDir() error {
	if s.opt.NoSync {
		return nil
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// recover loads the newest good snapshot and replays the logs after it.
func (s *Store) recover(rec *Recovery) error {
	// Snapshots that never reached their rename are garbage.
	if ents, err := os.ReadDir(s.dir); err == nil && !s.ro {
		for _, e := range ents {
			if n := e.Name(); strings.HasPrefix(n, snapPrefix) && strings.HasSuffix(n, snapSuffix+".tmp") {
				os.Remove(filepath.Join(s.dir, n))
			}
		}
	}
	snaps, err := listGens(s.dir, snapPrefix, snapSuffix)
	if err != nil {
		return err
	}
	logs, err := listGens(s.dir, logPrefix, logSuffix)
	if err != nil {
		return err
	}
	if len(snaps) == 0 {
		return s.create(logs)
	}
	var damaged []uint64
	for i := len(snaps) - 1; i >= 0 && s.h == nil; i-- {
		g := snaps[i]
		h, err := s.readSnapshot(g)
		if errors.Is(err, fs.ErrNotExist) {
			return err // removed since it was listed (a rotation elsewhere)
		}
		if err != nil {
			damaged = append(damaged, g)
			if rec.DamagedSnapshot == nil {
				rec.DamagedSnapshot = err
			}
			continue
		}
		s.h, s.snapGen = h, g
	}
	if s.h == nil {
		return rec.DamagedSnapshot
	}
	rec.Snapshot = true
	if o := s.h.Options(); s.opt.Dim != 0 && (o.Dim != s.opt.Dim || o.Metric != s.opt.Metric) {
		return fmt.Errorf("index: store %s holds %s vectors of dimension %d, not %s of %d", s.dir, o.Metric, o.Dim, s.opt.Metric, s.opt.Dim)
	}

	// The chain: logs snapGen, snapGen+1, ... with no gap. When a newer
	// snapshot is damaged, the logs up to its generation must all be there.
	var chain []uint64
	for _, g := range logs {
		if g >= s.snapGen {
			chain = append(chain, g)
		}
	}
	need := s.snapGen
	if len(damaged) > 0 {
		need = damaged[0] // the newest damaged one
	}
	for i, g := range chain {
		if g != s.snapGen+uint64(i) {
			return fmt.Errorf("index: store %s: %s is missing (found %s)", s.dir, s.logPath(s.snapGen+uint64(i)), filepath.Base(s.logPath(g)))
		}
	}
	if len(damaged) > 0 && (len(chain) == 0 || chain[len(chain)-1] < need) {
		missing := s.snapGen + uint64(len(chain))
		return fmt.Errorf("%w; cannot fall back to %s: %s is missing", rec.DamagedSnapshot, s.snapPath(s.snapGen), s.logPath(missing))
	}
	if len(chain) == 0 && !s.ro {
		chain = []uint64{s.snapGen} // created below
	}
	for i, g := range chain {
		if err := s.replay(g, i == len(chain)-1, rec); err != nil {
			return err
		}
	}
	s.since = rec.Replayed
	if s.ro {
		return nil
	}
	if len(damaged) > 0 {
		for _, g := range damaged {
			p := s.snapPath(g)
			if err := os.Rename(p, p+".damaged"); err != nil {
				return fmt.Errorf("index: set aside damaged snapshot: %w", err)
			}
		}
		if err := s.syncDir(); err != nil {
			return fmt.Errorf("index: sync %s: %w", s.dir, err)
		}
		// Start again from a sound snapshot; if that fails the store still
		// works on the chain of logs.
		if err := s.rotate(s.gen + 1); err != nil {
			if s.failed != nil {
				return err
			}
			s.snapErr = err
		}
		return nil
	}
	s.prune()
	return nil
}

// create starts a new store: snapshot 0 of an empty index and log 0.
func (s *Store) create(logs []uint64) error {
	// Logs without any snapshot are left from a creation that did not
	// finish (header only); anything more means the snapshots were lost.
	for _, g := range logs {
		p := s.logPath(g)
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("index: %w", err)
		}
		if st.Size() > walHeaderSize {
			return fmt.Errorf("index: store %s: %s holds %d bytes of records but no snapshot exists", s.dir, p, st.Size()-walHeaderSize)
		}
	}
	h, err := New(s.opt.Options)
	if err != nil {
		return fmt.Errorf("index: new store %s: %w", s.dir, err)
	}
	s.h = h
	if s.ro {
		return nil
	}
	for _, g := range logs {
		os.Remove(s.logPath(g))
	}
	return s.rotate(0)
}

func (s *Store) readSnapshot(g uint64) (*HNSW, error) {
	p := s.snapPath(g)
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	defer f.Close()
	h, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("index: %s: %w", p, err)
	}
	return h, nil
}

// replay applies log g to the index. The last log of the chain stays open
// for appending: a torn tail is cut off, a corrupt record cuts the log and
// is reported; in an earlier log either is an error.
func (s *Store) replay(g uint64, last bool, rec *Recovery) error {
	p := s.logPath(g)
	flag := os.O_RDWR | os.O_CREATE
	if s.ro {
		flag, s.gen = os.O_RDONLY, g
	}
	f, err := os.OpenFile(p, flag, 0o644)
	if err != nil {
		return fmt.Errorf("index: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("index: %w", err)
	}
	size := st.Size()
	if size < walHeaderSize {
		// New, or its header never reached the disk: (re)write it.
		if !last && size > 0 {
			return fmt.Errorf("index: %s: %d-byte file, shorter than the log header", p, size)
		}
		if s.ro {
			return nil
		}
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("index: %s: %w", p, err)
		}
		if _, err := f.WriteAt(walHeader(g), 0); err != nil {
			return fmt.Errorf("index: %s: %w", p, err)
		}
		if err := s.sync(f); err != nil {
			return fmt.Errorf("index: %s: %w", p, err)
		}
		if err := s.syncDir(); err != nil {
			return fmt.Errorf("index: sync %s: %w", s.dir, err)
		}
		if last {
			s.log, s.logEnd, s.gen, keep = f, walHeaderSize, g, true
		}
		return nil
	}
	hdr := make([]byte, walHeaderSize)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return fmt.Errorf("index: %s: %w", p, err)
	}
	if err := checkWALHeader(hdr, g); err != nil {
		return fmt.Errorf("index: %s: %w", p, err)
	}
	rp := replayer{h: s.h}
	sc, err := scanLog(f, size, s.h.dim, func(off int64, op byte, payload []byte) error {
		rec.Replayed++
		return rp.apply(op, payload)
	})
	if err == nil {
		err = rp.flush()
	}
	if err != nil {
		return fmt.Errorf("index: replay %s: %w", p, err)
	}
	if sc.end < size {
		if !last {
			what := "a torn record"
			if sc.corrupt != nil {
				what = sc.corrupt.Error()
			}
			return fmt.Errorf("index: %s (not the newest log) is damaged at offset %d: %s", p, sc.end, what)
		}
		if s.ro {
			// Report what Open would cut, and leave the file alone.
			if sc.corrupt != nil {
				rec.Corrupt = fmt.Errorf("index: %s: %w (%d bytes from there not loaded)", p, sc.corrupt, size-sc.end)
			} else {
				rec.TornBytes += size - sc.end
			}
			return nil
		}
		if sc.corrupt != nil {
			// Keep the evidence before cutting it off.
			cp := fmt.Sprintf("%s.corrupt-%d", p, sc.end)
			if err := s.saveTail(f, sc.end, size, cp); err != nil {
				return fmt.Errorf("index: %s: save corrupt tail: %w", p, err)
			}
			rec.Corrupt = fmt.Errorf("index: %s: %w (log cut there, %d bytes saved to %s)", p, sc.corrupt, size-sc.end, filepath.Base(cp))
		} else {
			rec.TornBytes += size - sc.end
		}
		if err := f.Truncate(sc.end); err != nil {
			return fmt.Errorf("index: %s: truncate at %d: %w", p, sc.end, err)
		}
		if err := s.sync(f); err != nil {
			return fmt.Errorf("index: %s: %w", p, err)
		}
	}
	if last && !s.ro {
		s.log, s.logEnd, s.gen, keep = f, sc.end, g, true
	}
	return nil
}

// saveTail copies f's bytes [from, to) into a new file at path.
func (s *Store) saveTail(f *os.File, from, to int64, path string) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := from; off < to && err == nil; {
		n := min(int64(len(buf)), to-off)
		if _, err = f.ReadAt(buf[:n], off); err == nil {
			_, err = out.Write(buf[:n])
		}
		off += n
	}
	if err == nil {
		err = s.sync(out)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.syncDir()
	}
	return err
}

// replayer applies log records, inserting runs of adds with AddBatch.
type replayer struct {
	h       *HNSW
	ids     []uint64
	vecs    [][]float32
	metas   []Meta
	pending map[uint64]bool
}

func (r *replayer) apply(op byte, p []byte) error {
	switch op {
	case opAdd:
		id, vec, meta, err := decodeAdd(p)
		if err != nil {
			return err
		}
		if r.pending[id] {
			if err := r.flush(); err != nil {
				return err
			}
		}
		if r.h.Has(id) {
			return nil // already in the snapshot
		}
		if _, err := r.h.checkVec(vec); err != nil {
			return fmt.Errorf("add id %d: %w", id, err)
		}
		if r.pending == nil {
			r.pending = map[uint64]bool{}
		}
		r.pending[id] = true
		r.ids, r.vecs, r.metas = append(r.ids, id), append(r.vecs, vec), append(r.metas, meta)
		if len(r.ids) >= 4096 {
			return r.flush()
		}
		return nil
	case opDelete:
		id := binary.LittleEndian.Uint64(p)
		if r.pending[id] {
			if err := r.flush(); err != nil {
				return err
			}
		}
		r.h.Delete(id)
		return nil
	}
	return fmt.Errorf("unknown op %d", op)
}

func (r *replayer) flush() error {
	if len(r.ids) == 0 {
		return nil
	}
	err := r.h.AddBatch(r.ids, r.vecs, r.metas, 0)
	r.ids, r.vecs, r.metas = r.ids[:0], r.vecs[:0], r.metas[:0]
	clear(r.pending)
	return err
}

// rotate writes snapshot g of the index and starts log g (steps 1-4 on
// Store). Before the rename a failure leaves everything as it was; after
// it the store has switched to log g, and a failure to sync the directory
// makes the store refuse writes.
func (s *Store) rotate(g uint64) error {
	sp, lp := s.snapPath(g), s.logPath(g)
	tmp := sp + ".tmp"
	undo := func(lf *os.File, err error) error {
		if lf != nil {
			lf.Close()
			os.Remove(lp)
		}
		os.Remove(tmp)
		return fmt.Errorf("index: snapshot %s: %w", sp, err)
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return undo(nil, err)
	}
	_, err = s.h.WriteTo(f)
	if err == nil {
		err = s.sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return undo(nil, err)
	}
	lf, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return undo(nil, fmt.Errorf("create %s: %w", lp, err))
	}
	if _, err := lf.WriteAt(walHeader(g), 0); err != nil {
		return undo(lf, fmt.Errorf("%s: %w", lp, err))
	}
	if err := s.sync(lf); err != nil {
		return undo(lf, fmt.Errorf("%s: %w", lp, err))
	}
	if err := os.Rename(tmp, sp); err != nil {
		return undo(lf, err)
	}
	if s.log != nil {
		s.log.Close()
	}
	s.log, s.logEnd, s.gen, s.snapGen, s.since = lf, walHeaderSize, g, g, 0
	if err := s.syncDir(); err != nil {
		s.failed = fmt.Errorf("index: sync %s after writing snapshot %d: %w", s.dir, g, err)
		return s.failed
	}
	s.prune()
	return nil
}

// prune removes the generations older than the previous snapshot (best
// effort: leftovers are pruned again by the next rotation or Open).
func (s *Store) prune() {
	snaps, err := listGens(s.dir, snapPrefix, snapSuffix)
	if err != nil || len(snaps) == 0 {
		return
	}
	keep := snaps[len(snaps)-1]
	if len(snaps) >= 2 {
		keep = snaps[len(snaps)-2]
	}
	keep = min(keep, s.snapGen)
	for _, g := range snaps {
		if g < keep {
			os.Remove(s.snapPath(g))
		}
	}
	logs, _ := listGens(s.dir, logPrefix, logSuffix)
	for _, g := range logs {
		if g < keep {
			os.Remove(s.logPath(g))
		}
	}
}

// writable reports why writes are refused, if they are.
func (s *Store) writable() error {
	if s.closed {
		return ErrClosed
	}
	if s.failed != nil {
		return fmt.Errorf("index: store %s refuses writes after an earlier failure (reopen it): %w", s.dir, s.failed)
	}
	return nil
}

// write appends records to the log and fsyncs them: they are durable when
// it returns nil. On a failed write the log is cut back; a failed fsync
// leaves the file's state unknown, so the store then refuses writes.
func (s *Store) write(b []byte) error {
	off := s.logEnd
	if _, err := s.log.WriteAt(b, off); err != nil {
		if terr := s.log.Truncate(off); terr != nil {
			s.failed = fmt.Errorf("index: %s: cut back a failed append at offset %d: %w", s.log.Name(), off, terr)
		}
		return fmt.Errorf("index: append to %s at offset %d: %w", s.log.Name(), off, err)
	}
	if err := s.sync(s.log); err != nil {
		s.log.Truncate(off)
		s.failed = fmt.Errorf("index: fsync %s after appending at offset %d: %w", s.log.Name(), off, err)
		return s.failed
	}
	s.logEnd += int64(len(b))
	return nil
}

// Add inserts a batch durably. Every item is checked first (width, finite
// values, non-zero under Cosine, ids unique in the batch and not live,
// metadata keys and values up to 65535 bytes), so a failed batch writes
// nothing; then all records are appended and fsynced, and only then do the
// items enter the graph. Add returns after the fsync: nil means durable.
// metas may be nil or as long as ids. ctx is checked before anything is
// written; once the write starts it runs to the end.
func (s *Store) Add(ctx context.Context, ids []uint64, vecs [][]float32, metas []Meta) error {
	if len(vecs) != len(ids) || (metas != nil && len(metas) != len(ids)) {
		return fmt.Errorf("index: store add: %d ids, %d vectors, %d metas", len(ids), len(vecs), len(metas))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	seen := make(map[uint64]int, len(ids))
	size := 0
	for i, id := range ids {
		if _, err := s.h.checkVec(vecs[i]); err != nil {
			return fmt.Errorf("index: store add: item %d (id %d): %w", i, id, err)
		}
		if j, dup := seen[id]; dup {
			return fmt.Errorf("index: store add: items %d and %d: id %d: %w", j, i, id, ErrDuplicate)
		}
		seen[id] = i
		if s.h.Has(id) {
			return fmt.Errorf("index: store add: item %d: id %d: %w", i, id, ErrDuplicate)
		}
		var m Meta
		if metas != nil {
			m = metas[i]
		}
		ms, err := metaRecordSize(m)
		if err != nil {
			return fmt.Errorf("index: store add: item %d (id %d): %w", i, id, err)
		}
		size += recordOverhead + 12 + 4*len(vecs[i]) + ms
	}
	b := make([]byte, 0, size)
	var payload []byte
	for i, id := range ids {
		var m Meta
		if metas != nil {
			m = metas[i]
		}
		payload = appendAddPayload(payload[:0], id, vecs[i], m)
		b = appendRecord(b, opAdd, payload)
	}
	if err := s.write(b); err != nil {
		return err
	}
	if err := s.h.AddBatch(ids, vecs, metas, 0); err != nil {
		// Logged but not all in memory: the next Open has them all.
		s.failed = fmt.Errorf("index: insert after logging: %w", err)
		return s.failed
	}
	s.since += len(ids)
	s.maybeSnapshot()
	return nil
}

// Delete removes ids durably. Ids that are not live (or repeated) are
// ignored and not logged. It returns after the fsync.
func (s *Store) Delete(ctx context.Context, ids []uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	var b []byte
	var live []uint64
	seen := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		if seen[id] || !s.h.Has(id) {
			continue
		}
		seen[id] = true
		live = append(live, id)
		b = appendRecord(b, opDelete, binary.LittleEndian.AppendUint64(nil, id))
	}
	if len(live) == 0 {
		return nil
	}
	if err := s.write(b); err != nil {
		return err
	}
	for _, id := range live {
		s.h.Delete(id)
	}
	s.since += len(live)
	s.maybeSnapshot()
	return nil
}

// maybeSnapshot rotates after SnapshotEvery operations. A failure does not
// fail the operation that triggered it (that is durable already): it is
// kept for Health, and the next attempt waits another SnapshotEvery.
func (s *Store) maybeSnapshot() {
	if s.opt.SnapshotEvery <= 0 || s.since < s.opt.SnapshotEvery {
		return
	}
	if err := s.rotate(s.gen + 1); err != nil {
		s.snapErr = err
		s.since = 0
		return
	}
	s.snapErr = nil
}

// Snapshot writes a snapshot of the index, starts a new log generation and
// removes the generations before the previous one. It does nothing when
// nothing changed since the last snapshot.
func (s *Store) Snapshot() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	if s.since == 0 && s.gen == s.snapGen {
		return nil
	}
	err := s.rotate(s.gen + 1)
	if err == nil {
		s.snapErr = nil
	}
	return err
}

// Compact rebuilds the graph from the live items alone, dropping the
// tombstones that deletes leave (their vectors stay in memory and in every
// snapshot until then), and rotates to a snapshot of it. Searches that
// started on the old graph finish on it.
func (s *Store) Compact() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	h, err := s.h.compacted()
	if err != nil {
		return fmt.Errorf("index: compact %s: %w", s.dir, err)
	}
	old := s.h
	s.h = h
	if err := s.rotate(s.gen + 1); err != nil && s.failed == nil {
		s.h = old // nothing switched: the old graph stays
		h.Close()
		return err
	} else if err != nil {
		s.hp.Store(h)
		return err
	}
	s.hp.Store(h)
	s.snapErr = nil
	// old is left to the garbage collector: searches may still hold it.
	return nil
}

// Health is nil, or why the store refuses writes (reopen it), or why the
// last automatic snapshot failed (writes still work; the log grows).
func (s *Store) Health() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	return s.snapErr
}

// Close syncs the log and releases the directory; the log since the last
// snapshot is replayed by the next Open. It is safe after errors and more
// than once.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.hp.Store(nil)
	var err error
	if s.log != nil && s.failed == nil {
		if err = s.sync(s.log); err != nil {
			err = fmt.Errorf("index: close %s: %w", s.log.Name(), err)
		}
	}
	s.release()
	return err
}

// Search searches the index (see HNSW.Search). It never waits for writers.
func (s *Store) Search(q []float32, k int, opt SearchOptions) ([]Result, error) {
	h := s.Index()
	if h == nil {
		return nil, ErrClosed
	}
	return h.Search(q, k, opt)
}

// Has reports whether id is live.
func (s *Store) Has(id uint64) bool {
	h := s.Index()
	return h != nil && h.Has(id)
}

// Get returns a copy of a live item's vector (unit length under Cosine)
// and metadata.
func (s *Store) Get(id uint64) ([]float32, Meta, bool) {
	h := s.Index()
	if h == nil {
		return nil, nil, false
	}
	return h.Get(id)
}

// Len is the number of live items.
func (s *Store) Len() int {
	if h := s.Index(); h != nil {
		return h.Len()
	}
	return 0
}

// MemoryBytes is the in-memory index's estimated heap (see HNSW.MemoryBytes).
func (s *Store) MemoryBytes() int64 {
	if h := s.Index(); h != nil {
		return h.MemoryBytes()
	}
	return 0
}

// Index is the in-memory index, nil after Close. Read from it freely;
// changing it directly bypasses the log and is lost on the next Open.
func (s *Store) Index() *HNSW { return s.hp.Load() }
