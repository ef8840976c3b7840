package rag

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"slices"
)

// vecFile is an append-only file of fixed-size vector records:
//
//	header  "LLMRTVEC" | u32 version (1) | u32 dim
//	record  u64 id | dim × f32 | u32 CRC-32C of the id and floats
//
// all little-endian. Records are appended in increasing id order. A torn
// tail (a crash during an append that was never committed) is cut off on
// open.
type vecFile struct {
	path string
	f    *os.File
	dim  int
	rec  int64
	size int64
	offs map[uint64]int64
}

const (
	vecMagic  = "LLMRTVEC"
	vecHeader = 16
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func openVecFile(path string, dim int) (*vecFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	v := &vecFile{path: path, f: f, dim: dim, rec: int64(12 + 4*dim), offs: map[uint64]int64{}}
	if err := v.load(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

func (v *vecFile) load() error {
	st, err := v.f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < vecHeader {
		// New (or torn before its header was synced): start over.
		var h [vecHeader]byte
		copy(h[:], vecMagic)
		binary.LittleEndian.PutUint32(h[8:], 1)
		binary.LittleEndian.PutUint32(h[12:], uint32(v.dim))
		if err := v.f.Truncate(0); err != nil {
			return err
		}
		if _, err := v.f.WriteAt(h[:], 0); err != nil {
			return err
		}
		v.size = vecHeader
		return v.f.Sync()
	}
	var h [vecHeader]byte
	if _, err := v.f.ReadAt(h[:], 0); err != nil {
		return err
	}
	if string(h[:8]) != vecMagic || binary.LittleEndian.Uint32(h[8:]) != 1 {
		return errors.New("not a vector file")
	}
	if d := int(binary.LittleEndian.Uint32(h[12:])); d != v.dim {
		return fmt.Errorf("vectors have dimension %d, the collection %d", d, v.dim)
	}
	r := bufio.NewReaderSize(io.NewSectionReader(v.f, vecHeader, st.Size()-vecHeader), 1<<20)
	buf := make([]byte, v.rec)
	off := int64(vecHeader)
	var last uint64
	for {
		if _, err := io.ReadFull(r, buf); err != nil {
			break // end, or a torn record
		}
		if crc32.Checksum(buf[:v.rec-4], crcTable) != binary.LittleEndian.Uint32(buf[v.rec-4:]) {
			break
		}
		id := binary.LittleEndian.Uint64(buf)
		if len(v.offs) > 0 && id <= last {
			break
		}
		v.offs[id] = off
		last = id
		off += v.rec
	}
	v.size = off
	if off < st.Size() {
		// Records past the first bad one were never committed (commits
		// follow a sync of every record before them); drop them.
		if err := v.f.Truncate(off); err != nil {
			return err
		}
	}
	return nil
}

// maxID is the largest id stored (0 when empty).
func (v *vecFile) maxID() uint64 {
	var m uint64
	for id := range v.offs {
		m = max(m, id)
	}
	return m
}

// append writes records (ids increasing, above every stored id) and syncs.
func (v *vecFile) append(ids []uint64, vecs [][]float32) error {
	buf := make([]byte, 0, int64(len(ids))*v.rec)
	for i, id := range ids {
		if len(vecs[i]) != v.dim {
			return fmt.Errorf("vector %d has dimension %d, want %d", i, len(vecs[i]), v.dim)
		}
		start := len(buf)
		buf = binary.LittleEndian.AppendUint64(buf, id)
		for _, x := range vecs[i] {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
		}
		buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(buf[start:], crcTable))
	}
	if _, err := v.f.WriteAt(buf, v.size); err != nil {
		return fmt.Errorf("write %s: %w", v.path, err)
	}
	if err := v.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", v.path, err)
	}
	for i, id := range ids {
		v.offs[id] = v.size + int64(i)*v.rec
	}
	v.size += int64(len(buf))
	return nil
}

// get reads the vector of id. It is safe to call concurrently with other
// gets.
func (v *vecFile) get(id uint64) ([]float32, error) {
	off, ok := v.offs[id]
	if !ok {
		return nil, fmt.Errorf("no vector for chunk %d", id)
	}
	buf := make([]byte, v.rec)
	if _, err := v.f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("read %s: %w", v.path, err)
	}
	if crc32.Checksum(buf[:v.rec-4], crcTable) != binary.LittleEndian.Uint32(buf[v.rec-4:]) {
		return nil, fmt.Errorf("%s: vector of chunk %d is corrupt", v.path, id)
	}
	out := make([]float32, v.dim)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[8+4*i:]))
	}
	return out, nil
}

// forget drops ids from the lookup table (their records stay until
// compaction).
func (v *vecFile) forget(ids []uint64) {
	for _, id := range ids {
		delete(v.offs, id)
	}
}

// dead is the number of records no longer looked up.
func (v *vecFile) dead() int64 {
	return (v.size-vecHeader)/v.rec - int64(len(v.offs))
}

// compact rewrites the file with only the records of keep, atomically.
func (v *vecFile) compact(keep map[uint64]bool) error {
	ids := make([]uint64, 0, len(keep))
	for id := range v.offs {
		if keep[id] {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	tmp := v.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	w := bufio.NewWriterSize(f, 1<<20)
	var h [vecHeader]byte
	copy(h[:], vecMagic)
	binary.LittleEndian.PutUint32(h[8:], 1)
	binary.LittleEndian.PutUint32(h[12:], uint32(v.dim))
	w.Write(h[:])
	buf := make([]byte, v.rec)
	offs := make(map[uint64]int64, len(ids))
	off := int64(vecHeader)
	for _, id := range ids {
		if _, err := v.f.ReadAt(buf, v.offs[id]); err != nil {
			f.Close()
			return err
		}
		if _, err := w.Write(buf); err != nil {
			f.Close()
			return err
		}
		offs[id] = off
		off += v.rec
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := os.Rename(tmp, v.path); err != nil {
		f.Close()
		return err
	}
	if err := syncDir(v.path); err != nil {
		f.Close()
		return err
	}
	v.f.Close()
	v.f, v.offs, v.size = f, offs, off
	return nil
}

func (v *vecFile) close() error { return v.f.Close() }
