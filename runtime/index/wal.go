package index

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"sort"
)

// Write-ahead log format (little-endian), version 1.
//
// A log file log-<gen>.wal starts with a 20-byte header:
//
//	magic "LLMRTWAL" | u32 version (1) | u64 generation
//
// followed by records:
//
//	u32 n (payload length) | u8 op | n bytes payload | u32 CRC-32C(op, payload)
//
// op 1 (add):    u64 id | u32 dim | dim × f32 | u32 npairs |
//
//	npairs × (u16 klen | key | u16 vlen | value)   (keys sorted)
//
// op 2 (delete): u64 id
//
// A record is never split across files and one Store.Add or Store.Delete
// call appends all its records with a single write followed by fsync.
//
// Reading a log classifies the end of the valid records:
//   - torn: the file ends inside a record (not enough bytes for the length,
//     the body or the CRC), the last record's CRC fails with no byte after
//     it, or everything from the record on is zero bytes (a file system's
//     zero-filled tail after a power cut). This is what a write interrupted
//     by kill -9 or a crash leaves; the bytes are cut off.
//   - corrupt: a record that cannot have been written by this code (unknown
//     op, impossible length for its op, a dimension other than the index's)
//     or a record whose CRC fails while more data follows it. Nothing from
//     that record on is loaded.

const (
	walMagic      = "LLMRTWAL"
	walVersion    = 1
	walHeaderSize = 20
	opAdd         = 1
	opDelete      = 2
	// recordOverhead is the length, op and CRC around a payload.
	recordOverhead = 4 + 1 + 4
	// maxRecord bounds one record's payload: the widest vector plus 1 MiB
	// of metadata.
	maxRecord = 8 + 4 + 4*MaxDim + 4 + maxRecordMeta
	// maxRecordMeta bounds one item's encoded metadata in the log.
	maxRecordMeta = 1 << 20
)

var walCRC = crc32.MakeTable(crc32.Castagnoli)

func walHeader(gen uint64) []byte {
	b := make([]byte, 0, walHeaderSize)
	b = append(b, walMagic...)
	b = binary.LittleEndian.AppendUint32(b, walVersion)
	return binary.LittleEndian.AppendUint64(b, gen)
}

// checkWALHeader verifies a log header for generation gen.
func checkWALHeader(hdr []byte, gen uint64) error {
	if len(hdr) < walHeaderSize || string(hdr[:8]) != walMagic {
		return errors.New("not an llmrt index log (bad magic)")
	}
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != walVersion {
		return fmt.Errorf("log version %d, want %d", v, walVersion)
	}
	if g := binary.LittleEndian.Uint64(hdr[12:]); g != gen {
		return fmt.Errorf("header says generation %d, file name says %d", g, gen)
	}
	return nil
}

// appendRecord appends one framed record to b.
func appendRecord(b []byte, op byte, payload []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	start := len(b)
	b = append(b, op)
	b = append(b, payload...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], walCRC))
}

// metaRecordSize is the encoded size of meta in an add record, or an error
// when a key or value does not fit a u16 length or the total is too large.
func metaRecordSize(meta Meta) (int, error) {
	n := 4
	for k, v := range meta {
		if len(k) > math.MaxUint16 || len(v) > math.MaxUint16 {
			return 0, fmt.Errorf("metadata %q: key or value longer than %d bytes", trunc(k), math.MaxUint16)
		}
		n += 4 + len(k) + len(v)
	}
	if n > maxRecordMeta {
		return 0, fmt.Errorf("metadata of %d bytes (max %d)", n, maxRecordMeta)
	}
	return n, nil
}

func trunc(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// appendAddPayload appends an add payload. The caller has checked the
// metadata with metaRecordSize.
func appendAddPayload(b []byte, id uint64, vec []float32, meta Meta) []byte {
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

var errMalformed = errors.New("malformed add record")

// decodeAdd parses an add payload whose CRC has been checked.
func decodeAdd(p []byte) (uint64, []float32, Meta, error) {
	if len(p) < 16 {
		return 0, nil, nil, errMalformed
	}
	id := binary.LittleEndian.Uint64(p)
	dim := int(binary.LittleEndian.Uint32(p[8:]))
	p = p[12:]
	if dim > MaxDim || len(p) < 4*dim+4 {
		return 0, nil, nil, errMalformed
	}
	vec := make([]float32, dim)
	for i := range vec {
		vec[i] = math.Float32frombits(binary.LittleEndian.Uint32(p[4*i:]))
	}
	p = p[4*dim:]
	n := int(binary.LittleEndian.Uint32(p))
	p = p[4:]
	if n > len(p)/4 {
		return 0, nil, nil, errMalformed
	}
	var meta Meta
	if n > 0 {
		meta = make(Meta, n)
	}
	for i := 0; i < n; i++ {
		var kv [2]string
		for j := range kv {
			if len(p) < 2 {
				return 0, nil, nil, errMalformed
			}
			l := int(binary.LittleEndian.Uint16(p))
			if len(p) < 2+l {
				return 0, nil, nil, errMalformed
			}
			kv[j] = string(p[2 : 2+l])
			p = p[2+l:]
		}
		meta[kv[0]] = kv[1]
	}
	if len(p) != 0 {
		return 0, nil, nil, errMalformed
	}
	return id, vec, meta, nil
}

// logScan is what scanning a log found after its valid records.
type logScan struct {
	end     int64 // offset just past the last valid record
	size    int64 // file size
	torn    bool  // the bytes from end on are a torn write
	corrupt error // the record at end is corrupt (more data follows)
}

// scanLog reads the records of log file f (of size bytes, header already
// checked) from offset walHeaderSize, calling fn for each valid record in
// order. dim is the index width every add record must have. An error from
// fn stops the scan and is returned with the record's offset.
func scanLog(f *os.File, size int64, dim int, fn func(off int64, op byte, payload []byte) error) (logScan, error) {
	sc := logScan{end: walHeaderSize, size: size}
	r := bufio.NewReaderSize(io.NewSectionReader(f, walHeaderSize, size-walHeaderSize), 1<<20)
	var body []byte
	for sc.end < size {
		off, left := sc.end, size-sc.end
		bad := func(format string, args ...any) (logScan, error) {
			zero, err := zeroFrom(f, off, size)
			if err != nil {
				return sc, err
			}
			if zero {
				sc.torn = true
			} else {
				sc.corrupt = fmt.Errorf("offset %d: "+format, append([]any{off}, args...)...)
			}
			return sc, nil
		}
		if left < 5 {
			sc.torn = true // not even the length and op
			break
		}
		var hd [5]byte
		if _, err := io.ReadFull(r, hd[:]); err != nil {
			return sc, fmt.Errorf("offset %d: %w", off, err)
		}
		n := int64(binary.LittleEndian.Uint32(hd[:]))
		op := hd[4]
		// Structural checks need only the bytes present, so a record whose
		// length was damaged is not mistaken for a torn tail.
		switch {
		case op != opAdd && op != opDelete:
			return bad("unknown op %d", op)
		case op == opDelete && n != 8:
			return bad("delete record of %d bytes", n)
		case op == opAdd && (n < int64(16+4*dim) || n > maxRecord):
			return bad("add record of %d bytes for dimension %d", n, dim)
		}
		if op == opAdd && left >= 5+12 {
			d, err := r.Peek(12)
			if err != nil {
				return sc, fmt.Errorf("offset %d: %w", off, err)
			}
			if got := int(binary.LittleEndian.Uint32(d[8:])); got != dim {
				return bad("add record of dimension %d in an index of dimension %d", got, dim)
			}
		}
		if recordOverhead+n > left {
			// The file ends inside this record. A torn write leaves a true
			// prefix of it, so the bytes present must agree with n.
			if op == opAdd {
				avail := min(left-5, n, int64(r.Size()))
				pre, err := r.Peek(int(avail))
				if err != nil {
					return sc, fmt.Errorf("offset %d: %w", off, err)
				}
				if got, known := addPayloadLen(pre, dim); known && got != n {
					return bad("add record says %d bytes, its fields make %d", n, got)
				}
			}
			sc.torn = true
			break
		}
		if int64(cap(body)) < n+4 {
			body = make([]byte, n+4)
		}
		body = body[:n+4]
		if _, err := io.ReadFull(r, body); err != nil {
			return sc, fmt.Errorf("offset %d: %w", off, err)
		}
		crc := crc32.Update(crc32.Update(0, walCRC, hd[4:5]), walCRC, body[:n])
		if crc != binary.LittleEndian.Uint32(body[n:]) {
			if recordOverhead+n == left {
				sc.torn = true // the last record, not all of it on disk
				break
			}
			return bad("checksum mismatch in a %d-byte record", recordOverhead+n)
		}
		if err := fn(off, op, body[:n]); err != nil {
			return sc, fmt.Errorf("offset %d: %w", off, err)
		}
		sc.end += recordOverhead + n
	}
	return sc, nil
}

// addPayloadLen computes an add payload's length from a prefix p of it:
// known is false when p ends before the last metadata length. A value over
// maxRecord is returned as soon as the prefix shows it.
func addPayloadLen(p []byte, dim int) (n int64, known bool) {
	pos := int64(16 + 4*dim)
	if int64(len(p)) < pos {
		return 0, false
	}
	pairs := int64(binary.LittleEndian.Uint32(p[pos-4:]))
	for i := int64(0); i < 2*pairs; i++ {
		if pos > maxRecord {
			return pos, true
		}
		if int64(len(p)) < pos+2 {
			return 0, false
		}
		pos += 2 + int64(binary.LittleEndian.Uint16(p[pos:]))
	}
	return pos, true
}

// zeroFrom reports whether f holds only zero bytes from off to size.
func zeroFrom(f *os.File, off, size int64) (bool, error) {
	buf := make([]byte, 64<<10)
	for off < size {
		n := min(int64(len(buf)), size-off)
		if _, err := f.ReadAt(buf[:n], off); err != nil {
			return false, err
		}
		for _, c := range buf[:n] {
			if c != 0 {
				return false, nil
			}
		}
		off += n
	}
	return true, nil
}
