package index

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
)

// Snapshot format (little endian), version 1:
//
//	magic "LLMRTHNS", version u32
//	options: dim u32, metric u8, M u32, efConstruction u32, efSearch u32,
//	         quantize u8, seed i64, exactBelow i64
//	nodes u32, entry point u32 (0xFFFFFFFF if empty), max level u32 (same)
//	per node: external id u64, flags u8 (bit 0: deleted), level u8,
//	          dim × f32 vector (normalised under Cosine),
//	          for layers 0..level: count u32, count × u32 neighbour,
//	          metadata: pairs u32, then per pair key and value as u32 length + bytes
//	trailer: CRC-32C (Castagnoli) of everything before it, u32
//
// int8 codes are not stored: they are a pure function of the vectors and are
// recomputed by Read.

const (
	snapMagic   = "LLMRTHNS"
	snapVersion = 1
	maxMetaKV   = 1 << 20 // metadata pairs per node
	maxMetaStr  = 1 << 24 // bytes per metadata key or value
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encoder buffers writes, hashing them for the trailer.
type encoder struct {
	w   io.Writer
	crc hash.Hash32
	buf []byte
	n   int64
	err error
}

func (e *encoder) flush() {
	if e.err != nil || len(e.buf) == 0 {
		e.buf = e.buf[:0]
		return
	}
	e.crc.Write(e.buf)
	n, err := e.w.Write(e.buf)
	e.n += int64(n)
	if err == nil && n < len(e.buf) {
		err = io.ErrShortWrite
	}
	e.err = err
	e.buf = e.buf[:0]
}

func (e *encoder) grow() {
	if len(e.buf) >= 1<<16 {
		e.flush()
	}
}

func (e *encoder) u8(v uint8)   { e.buf = append(e.buf, v); e.grow() }
func (e *encoder) u32(v uint32) { e.buf = binary.LittleEndian.AppendUint32(e.buf, v); e.grow() }
func (e *encoder) u64(v uint64) { e.buf = binary.LittleEndian.AppendUint64(e.buf, v); e.grow() }
func (e *encoder) str(s string) {
	e.u32(uint32(len(s)))
	e.buf = append(e.buf, s...)
	e.grow()
}
func (e *encoder) f32s(v []float32) {
	for _, x := range v {
		e.buf = binary.LittleEndian.AppendUint32(e.buf, math.Float32bits(x))
	}
	e.grow()
}

// WriteTo writes a complete snapshot of the index (options, vectors,
// graph, tombstones and metadata) to w and returns the bytes written.
// Searches continue meanwhile; Add and Delete wait for it to finish.
func (h *HNSW) WriteTo(w io.Writer) (int64, error) {
	h.mutMu.Lock()
	defer h.mutMu.Unlock()
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed.Load() {
		return 0, ErrClosed
	}
	e := &encoder{w: w, crc: crc32.New(castagnoli), buf: make([]byte, 0, 1<<16+4096)}
	e.buf = append(e.buf, snapMagic...)
	e.u32(snapVersion)
	o := h.opt
	e.u32(uint32(o.Dim))
	e.u8(uint8(o.Metric))
	e.u32(uint32(o.M))
	e.u32(uint32(o.EfConstruction))
	e.u32(uint32(o.EfSearch))
	q := uint8(0)
	if o.Quantize {
		q = 1
	}
	e.u8(q)
	e.u64(uint64(o.Seed))
	e.u64(uint64(int64(o.ExactBelow)))

	n := h.count.Load()
	ep, maxL := h.entry()
	e.u32(n)
	e.u32(ep)
	e.u32(uint32(int32(maxL)))
	for id := uint32(0); id < n; id++ {
		e.u64(h.ext[id])
		var flags uint8
		if h.isDead(id) {
			flags |= 1
		}
		e.u8(flags)
		level := int(h.levels[id])
		e.u8(uint8(level))
		e.f32s(h.vec(id))
		for l := 0; l <= level; l++ {
			lst := h.linkList(id, l)
			c := int(lst[0])
			e.u32(uint32(c))
			for _, nb := range lst[1 : 1+c] {
				e.u32(nb)
			}
		}
		m := h.metas[id]
		e.u32(uint32(len(m)))
		for k, v := range m {
			e.str(k)
			e.str(v)
		}
		if e.err != nil {
			break
		}
	}
	e.flush()
	if e.err != nil {
		return e.n, fmt.Errorf("index: write snapshot: %w", e.err)
	}
	var tr [4]byte
	binary.LittleEndian.PutUint32(tr[:], e.crc.Sum32())
	k, err := w.Write(tr[:])
	e.n += int64(k)
	if err != nil {
		return e.n, fmt.Errorf("index: write snapshot trailer: %w", err)
	}
	return e.n, nil
}

// decoder reads hashed fields; the first error sticks.
type decoder struct {
	r   *bufio.Reader
	crc hash.Hash32
	b   [8]byte
	buf []byte
	err error
}

func (d *decoder) read(p []byte) {
	if d.err != nil {
		clear(p)
		return
	}
	if _, err := io.ReadFull(d.r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		d.err = err
		clear(p)
		return
	}
	d.crc.Write(p)
}

func (d *decoder) u8() uint8   { d.read(d.b[:1]); return d.b[0] }
func (d *decoder) u32() uint32 { d.read(d.b[:4]); return binary.LittleEndian.Uint32(d.b[:4]) }
func (d *decoder) u64() uint64 { d.read(d.b[:8]); return binary.LittleEndian.Uint64(d.b[:8]) }

// bytes reads n bytes, allocating as the data arrives so a corrupt length
// cannot make it reserve more than the input holds.
func (d *decoder) bytes(n int) []byte {
	out := make([]byte, 0, min(n, 4096))
	for len(out) < n && d.err == nil {
		c := min(n-len(out), 1<<16)
		if cap(d.buf) < c {
			d.buf = make([]byte, c)
		}
		d.read(d.buf[:c])
		out = append(out, d.buf[:c]...)
	}
	return out
}

func (d *decoder) f32s(dst []float32) {
	b := d.bytes(4 * len(dst))
	if d.err != nil {
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}

// Read loads a snapshot written by WriteTo. A truncated, corrupt or
// foreign input yields an error wrapping ErrCorrupt (or the reader's own
// error), never a panic. Read may consume bytes past the snapshot's end.
func Read(r io.Reader) (*HNSW, error) {
	d := &decoder{r: bufio.NewReaderSize(r, 1<<16), crc: crc32.New(castagnoli)}
	h, err := readSnapshot(d)
	if err != nil {
		if d.err != nil && !errors.Is(d.err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("index: read snapshot: %w", d.err)
		}
		return nil, err
	}
	return h, nil
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

func readSnapshot(d *decoder) (*HNSW, error) {
	var magic [8]byte
	d.read(magic[:])
	if d.err != nil {
		return nil, corrupt("header: %v", d.err)
	}
	if string(magic[:]) != snapMagic {
		return nil, corrupt("bad magic %q", magic[:])
	}
	if v := d.u32(); v != snapVersion && d.err == nil {
		return nil, corrupt("unsupported version %d (want %d)", v, snapVersion)
	}
	var opt Options
	opt.Dim = int(d.u32())
	opt.Metric = Metric(d.u8())
	opt.M = int(d.u32())
	opt.EfConstruction = int(int32(d.u32()))
	opt.EfSearch = int(int32(d.u32()))
	q := d.u8()
	opt.Quantize = q == 1
	opt.Seed = int64(d.u64())
	opt.ExactBelow = int(int64(d.u64()))
	n := d.u32()
	ep := d.u32()
	maxL := int(int32(d.u32()))
	if d.err != nil {
		return nil, corrupt("header: %v", d.err)
	}
	if q > 1 || opt.M == 0 || opt.EfConstruction <= 0 || opt.EfSearch <= 0 || opt.ExactBelow == 0 {
		return nil, corrupt("bad options %+v", opt)
	}
	h, err := New(opt)
	if err != nil {
		return nil, corrupt("options: %v", err)
	}
	if n > maxNodes {
		return nil, corrupt("%d nodes", n)
	}
	if n == 0 {
		if ep != noNode || maxL != -1 {
			return nil, corrupt("empty index with entry point %d level %d", ep, maxL)
		}
	} else if ep >= n || maxL < 0 || maxL >= maxLevels {
		return nil, corrupt("entry point %d level %d with %d nodes", ep, maxL, n)
	}
	h.rng = rand.New(rand.NewPCG(uint64(opt.Seed), uint64(n)^0x9e3779b97f4a7c15))
	// Grow with the data actually read, not the node count claimed.
	h.growTo(min(int(n), max(1, (1<<20)/h.nodeBytes())))
	for id := uint32(0); id < n; id++ {
		if int(id) >= h.capacity {
			h.growTo(min(int(n), 2*h.capacity))
		}
		ext := d.u64()
		flags := d.u8()
		level := int(d.u8())
		if d.err != nil {
			return nil, corrupt("node %d: %v", id, d.err)
		}
		if flags > 1 || level >= maxLevels {
			return nil, corrupt("node %d: flags %#x level %d", id, flags, level)
		}
		h.ext[id] = ext
		h.levels[id] = uint8(level)
		v := h.vec(id)
		d.f32s(v)
		if d.err != nil {
			return nil, corrupt("node %d vector: %v", id, d.err)
		}
		for i, x := range v {
			if f := float64(x); math.IsNaN(f) || math.IsInf(f, 0) {
				return nil, corrupt("node %d: vector element %d is %v", id, i, x)
			}
		}
		if level > 0 {
			h.upper[id] = make([]uint32, level*(h.m+1))
		}
		for l := 0; l <= level; l++ {
			lst := h.linkList(id, l)
			c := d.u32()
			if d.err != nil {
				return nil, corrupt("node %d layer %d: %v", id, l, d.err)
			}
			if int(c) > len(lst)-1 {
				return nil, corrupt("node %d layer %d: %d links (max %d)", id, l, c, len(lst)-1)
			}
			lst[0] = c
			for i := 1; i <= int(c); i++ {
				nb := d.u32()
				if d.err == nil && nb >= n {
					return nil, corrupt("node %d layer %d: link to node %d of %d", id, l, nb, n)
				}
				lst[i] = nb
			}
		}
		pairs := d.u32()
		if d.err != nil {
			return nil, corrupt("node %d metadata: %v", id, d.err)
		}
		if pairs > maxMetaKV {
			return nil, corrupt("node %d: %d metadata pairs", id, pairs)
		}
		if pairs > 0 {
			m := make(Meta, min(pairs, 64))
			var mb int64
			for p := uint32(0); p < pairs; p++ {
				k, err := readStr(d)
				if err != nil {
					return nil, corrupt("node %d metadata key %d: %v", id, p, err)
				}
				v, err := readStr(d)
				if err != nil {
					return nil, corrupt("node %d metadata value %d: %v", id, p, err)
				}
				m[k] = v
				mb += int64(len(k) + len(v) + 32)
			}
			h.metas[id] = m
			h.metaBytes.Add(mb)
		}
		if h.opt.Quantize {
			o := int(id) * h.dim
			h.scales[id], h.qnorms[id] = quantize(h.codes[o:o+h.dim], v)
		}
		if flags&1 != 0 {
			h.setDead(id)
		} else {
			if _, dup := h.idmap[ext]; dup {
				return nil, corrupt("node %d: id %d is live twice", id, ext)
			}
			h.idmap[ext] = id
			h.live.Add(1)
		}
	}
	sum := d.crc.Sum32()
	var tr [4]byte
	if _, err := io.ReadFull(d.r, tr[:]); err != nil {
		return nil, corrupt("trailer: %v", io.ErrUnexpectedEOF)
	}
	if got := binary.LittleEndian.Uint32(tr[:]); got != sum {
		return nil, corrupt("checksum %08x, computed %08x", got, sum)
	}
	if n > 0 {
		if int(h.levels[ep]) != maxL {
			return nil, corrupt("entry point %d has level %d, header says %d", ep, h.levels[ep], maxL)
		}
		for id := uint32(0); id < n; id++ {
			lst := h.linkList(id, 0)
			for _, nb := range lst[1 : 1+lst[0]] {
				h.indeg[nb]++
			}
			for l := 1; l <= int(h.levels[id]); l++ {
				lst := h.linkList(id, l)
				for _, nb := range lst[1 : 1+lst[0]] {
					if int(h.levels[nb]) < l {
						return nil, corrupt("node %d layer %d: link to node %d of level %d", id, l, nb, h.levels[nb])
					}
				}
			}
		}
	}
	h.count.Store(n)
	h.ep, h.maxLevel = ep, maxL
	return h, nil
}

func readStr(d *decoder) (string, error) {
	n := d.u32()
	if d.err != nil {
		return "", d.err
	}
	if n > maxMetaStr {
		return "", fmt.Errorf("length %d", n)
	}
	b := d.bytes(int(n))
	if d.err != nil {
		return "", d.err
	}
	return string(b), nil
}
