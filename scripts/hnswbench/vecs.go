package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// The TEXMEX formats: every row is a little-endian int32 width d followed
// by d values (float32 in .fvecs, int32 in .ivecs). All rows of a file
// must have the same width.

// maxRowWidth bounds the width a file may declare, so a corrupt header
// cannot make the reader allocate gigabytes.
const maxRowWidth = 1 << 16

// readFvecs reads every row of an .fvecs file. wantDim > 0 requires that
// width; 0 accepts the width of the first row. NaN and Inf are rejected.
func readFvecs(path string, wantDim int) ([][]float32, error) {
	rows, dim, err := readRows(path, wantDim)
	if err != nil {
		return nil, err
	}
	out := make([][]float32, len(rows))
	flat := make([]float32, len(rows)*dim)
	for i, r := range rows {
		v := flat[i*dim : (i+1)*dim : (i+1)*dim]
		for j, u := range r {
			f := math.Float32frombits(u)
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return nil, fmt.Errorf("%s: row %d component %d is %v", path, i, j, f)
			}
			v[j] = f
		}
		out[i] = v
	}
	return out, nil
}

// readIvecs reads every row of an .ivecs file. wantDim > 0 requires that
// width; 0 accepts the width of the first row. Every value must lie in
// [0, maxID) (only >= 0 when maxID is 0).
func readIvecs(path string, wantDim, maxID int) ([][]int32, error) {
	rows, _, err := readRows(path, wantDim)
	if err != nil {
		return nil, err
	}
	out := make([][]int32, len(rows))
	for i, r := range rows {
		v := make([]int32, len(r))
		for j, u := range r {
			v[j] = int32(u)
			if v[j] < 0 || (maxID > 0 && int(v[j]) >= maxID) {
				return nil, fmt.Errorf("%s: row %d entry %d: id %d outside [0, %d)", path, i, j, v[j], maxID)
			}
		}
		out[i] = v
	}
	return out, nil
}

// readRows reads the raw 32-bit rows of a TEXMEX file and checks its
// structure: a width in 1..maxRowWidth (and wantDim if > 0), the same width
// on every row, no truncated row, the size an exact multiple of the row.
func readRows(path string, wantDim int) ([][]uint32, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := st.Size()
	if size == 0 {
		return nil, 0, fmt.Errorf("%s: empty file", path)
	}
	br := bufio.NewReaderSize(f, 1<<20)
	var (
		hdr  [4]byte
		dim  int
		rows [][]uint32
		flat []uint32
		buf  []byte
	)
	for i := 0; ; i++ {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) && i > 0 {
				break
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, 0, fmt.Errorf("%s: row %d: truncated width header", path, i)
			}
			return nil, 0, fmt.Errorf("%s: row %d: %w", path, i, err)
		}
		d := int(int32(binary.LittleEndian.Uint32(hdr[:])))
		if i == 0 {
			if d <= 0 || d > maxRowWidth {
				return nil, 0, fmt.Errorf("%s: row 0 declares width %d (want 1..%d): not a TEXMEX .fvecs/.ivecs file?", path, d, maxRowWidth)
			}
			if wantDim > 0 && d != wantDim {
				return nil, 0, fmt.Errorf("%s: vectors are %d wide, want %d", path, d, wantDim)
			}
			rowBytes := int64(4 + 4*d)
			if size%rowBytes != 0 {
				return nil, 0, fmt.Errorf("%s: size %d is not a multiple of the row size %d (width %d): truncated or mixed widths", path, size, rowBytes, d)
			}
			dim = d
			n := int(size / rowBytes)
			rows = make([][]uint32, 0, n)
			flat = make([]uint32, n*d)
			buf = make([]byte, 4*d)
		} else if d != dim {
			return nil, 0, fmt.Errorf("%s: row %d declares width %d, row 0 declared %d", path, i, d, dim)
		}
		if (len(rows)+1)*dim > len(flat) {
			return nil, 0, fmt.Errorf("%s: more rows than the file size allows", path)
		}
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, 0, fmt.Errorf("%s: row %d: truncated (%v)", path, i, err)
		}
		r := flat[len(rows)*dim : (len(rows)+1)*dim : (len(rows)+1)*dim]
		for j := range r {
			r[j] = binary.LittleEndian.Uint32(buf[4*j:])
		}
		rows = append(rows, r)
	}
	return rows, dim, nil
}

// writeFvecs writes vecs as an .fvecs file.
func writeFvecs(path string, vecs [][]float32) error {
	return writeRows(path, len(vecs), func(i int) []uint32 {
		r := make([]uint32, len(vecs[i]))
		for j, f := range vecs[i] {
			r[j] = math.Float32bits(f)
		}
		return r
	})
}

// writeIvecs writes rows as an .ivecs file.
func writeIvecs(path string, rows [][]int32) error {
	return writeRows(path, len(rows), func(i int) []uint32 {
		r := make([]uint32, len(rows[i]))
		for j, v := range rows[i] {
			r[j] = uint32(v)
		}
		return r
	})
}

func writeRows(path string, n int, row func(int) []uint32) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	var b [4]byte
	for i := 0; i < n; i++ {
		r := row(i)
		binary.LittleEndian.PutUint32(b[:], uint32(len(r)))
		bw.Write(b[:])
		for _, u := range r {
			binary.LittleEndian.PutUint32(b[:], u)
			bw.Write(b[:])
		}
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
