// Package gguf reads and writes GGUF files (the llama.cpp model format)
// without loading the weights: the header, metadata and tensor table are
// parsed and validated, so a model can be inspected, and adapters and test
// models can be written, in pure Go.
//
// The reader never trusts a count or a length in the file: every one is
// bounded by what is left of the file before anything is allocated, and a
// damaged file gives an error that names what is wrong and where.
package gguf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// KV is one metadata entry. Value holds uint8..float64, bool or string, or
// for arrays a typed slice ([]string, []int32, []uint32, []float32, ...).
type KV struct {
	Key   string
	Type  ValueType // for arrays: TypeArray
	Value any
}

// TensorInfo describes a tensor; Offset is relative to the data section.
type TensorInfo struct {
	Name   string
	Dims   []uint64
	Type   Type
	Offset uint64
}

// NElements is the product of the dimensions.
func (t TensorInfo) NElements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= int64(d)
	}
	return n
}

// Size is the tensor's data size in bytes.
func (t TensorInfo) Size() int64 { return t.Type.RowSize(t.NElements()) }

// File is a parsed GGUF header.
type File struct {
	Version    uint32
	KV         []KV
	Tensors    []TensorInfo
	Alignment  int
	DataOffset int64 // absolute offset of the data section
	Size       int64 // file size (0 when parsed from a stream)

	kvIndex     map[string]int
	tensorIndex map[string]int
}

const magic = "GGUF"

// Open parses the header of a GGUF file and checks that every tensor's
// data lies within the file.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf %s: %w", path, err)
	}
	g, err := parse(bufio.NewReaderSize(f, 1<<16), st.Size())
	if err != nil {
		return nil, fmt.Errorf("gguf %s: %w", path, err)
	}
	return g, nil
}

// Parse reads a GGUF header from r (the file size unknown: lengths are
// bounded by a 64 GiB sanity limit instead).
func Parse(r io.Reader) (*File, error) {
	return parse(bufio.NewReader(r), 0)
}

type reader struct {
	r     *bufio.Reader
	off   int64
	limit int64 // bytes the file has; 0: unknown
}

func (r *reader) remaining() int64 {
	if r.limit > 0 {
		return r.limit - r.off
	}
	return 64 << 30
}

func (r *reader) read(n int64, what string) ([]byte, error) {
	if n < 0 || n > r.remaining() {
		return nil, fmt.Errorf("%s at offset %d: needs %d bytes, the file has %d left (truncated or corrupt)", what, r.off, n, r.remaining())
	}
	if r.limit == 0 && n > 1<<20 {
		// Unknown file size: grow with the data that really arrives
		// instead of trusting the length.
		var bb bytes.Buffer
		got, err := io.CopyN(&bb, r.r, n)
		r.off += got
		if err != nil {
			return nil, fmt.Errorf("%s at offset %d: file is truncated", what, r.off)
		}
		return bb.Bytes(), nil
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r.r, buf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s at offset %d: file is truncated", what, r.off)
		}
		return nil, fmt.Errorf("%s at offset %d: %w", what, r.off, err)
	}
	r.off += n
	return buf, nil
}

func (r *reader) u32(what string) (uint32, error) {
	b, err := r.read(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *reader) u64(what string) (uint64, error) {
	b, err := r.read(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (r *reader) str(what string) (string, error) {
	n, err := r.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(r.remaining()) {
		return "", fmt.Errorf("%s at offset %d: length %d exceeds the %d bytes left (corrupt)", what, r.off, n, r.remaining())
	}
	b, err := r.read(int64(n), what)
	return string(b), err
}

func parse(br *bufio.Reader, size int64) (*File, error) {
	r := &reader{r: br, limit: size}
	m, err := r.read(4, "magic")
	if err != nil {
		return nil, err
	}
	if string(m) != magic {
		return nil, fmt.Errorf("not a GGUF file (it does not start with the %s magic)", magic)
	}
	g := &File{Size: size, Alignment: 32, kvIndex: map[string]int{}, tensorIndex: map[string]int{}}
	if g.Version, err = r.u32("version"); err != nil {
		return nil, err
	}
	if g.Version != 2 && g.Version != 3 {
		return nil, fmt.Errorf("unsupported GGUF version %d (2 and 3 are supported)", g.Version)
	}
	nt, err := r.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nkv, err := r.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// Each KV needs at least 12 bytes, each tensor info at least 24.
	if nkv > uint64(r.remaining()/12) || nt > uint64(r.remaining()/24) || (size == 0 && (nkv > 1<<20 || nt > 1<<20)) {
		return nil, fmt.Errorf("header claims %d metadata entries and %d tensors, more than the file can hold (corrupt)", nkv, nt)
	}
	g.KV = make([]KV, 0, nkv)
	for i := uint64(0); i < nkv; i++ {
		key, err := r.str(fmt.Sprintf("metadata key %d", i))
		if err != nil {
			return nil, err
		}
		if _, dup := g.kvIndex[key]; dup {
			return nil, fmt.Errorf("duplicate metadata key %q", key)
		}
		vt, err := r.u32("type of " + key)
		if err != nil {
			return nil, err
		}
		v, err := r.value(ValueType(vt), key)
		if err != nil {
			return nil, err
		}
		g.kvIndex[key] = len(g.KV)
		g.KV = append(g.KV, KV{Key: key, Type: ValueType(vt), Value: v})
	}
	if a, ok := g.Uint("general.alignment"); ok {
		if a == 0 || a&(a-1) != 0 || a > 1<<20 {
			return nil, fmt.Errorf("general.alignment %d is not a power of two", a)
		}
		g.Alignment = int(a)
	}
	g.Tensors = make([]TensorInfo, 0, nt)
	for i := uint64(0); i < nt; i++ {
		var t TensorInfo
		if t.Name, err = r.str(fmt.Sprintf("tensor %d name", i)); err != nil {
			return nil, err
		}
		if _, dup := g.tensorIndex[t.Name]; dup {
			return nil, fmt.Errorf("duplicate tensor %q", t.Name)
		}
		nd, err := r.u32("dimensions of " + t.Name)
		if err != nil {
			return nil, err
		}
		if nd == 0 || nd > 4 {
			return nil, fmt.Errorf("tensor %q has %d dimensions (1 to 4 allowed)", t.Name, nd)
		}
		n := uint64(1)
		for d := uint32(0); d < nd; d++ {
			v, err := r.u64("shape of " + t.Name)
			if err != nil {
				return nil, err
			}
			if v == 0 || v > math.MaxInt64/n {
				return nil, fmt.Errorf("tensor %q has an invalid shape", t.Name)
			}
			n *= v
			t.Dims = append(t.Dims, v)
		}
		ty, err := r.u32("type of " + t.Name)
		if err != nil {
			return nil, err
		}
		t.Type = Type(ty)
		if !t.Type.Known() {
			return nil, fmt.Errorf("tensor %q has unknown type %d", t.Name, ty)
		}
		if t.Dims[0]%uint64(t.Type.BlockSize()) != 0 {
			return nil, fmt.Errorf("tensor %q: row of %d elements is not a multiple of %s's block of %d", t.Name, t.Dims[0], t.Type, t.Type.BlockSize())
		}
		if t.Offset, err = r.u64("offset of " + t.Name); err != nil {
			return nil, err
		}
		if t.Offset%uint64(g.Alignment) != 0 {
			return nil, fmt.Errorf("tensor %q: offset %d is not aligned to %d", t.Name, t.Offset, g.Alignment)
		}
		g.tensorIndex[t.Name] = len(g.Tensors)
		g.Tensors = append(g.Tensors, t)
	}
	al := int64(g.Alignment)
	g.DataOffset = (r.off + al - 1) / al * al
	if size > 0 {
		for _, t := range g.Tensors {
			end := g.DataOffset + int64(t.Offset) + t.Size()
			if end > size {
				return nil, fmt.Errorf("tensor %q: data ends at byte %d, past the end of the %d-byte file (truncated)", t.Name, end, size)
			}
		}
	}
	return g, nil
}

func (r *reader) scalar(t ValueType, key string) (any, error) {
	n, ok := valueSizes[t]
	if !ok {
		return nil, fmt.Errorf("metadata %q: unknown value type %d", key, uint32(t))
	}
	b, err := r.read(int64(n), "value of "+key)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return b[0], nil
	case TypeInt8:
		return int8(b[0]), nil
	case TypeUint16:
		return le.Uint16(b), nil
	case TypeInt16:
		return int16(le.Uint16(b)), nil
	case TypeUint32:
		return le.Uint32(b), nil
	case TypeInt32:
		return int32(le.Uint32(b)), nil
	case TypeFloat32:
		return math.Float32frombits(le.Uint32(b)), nil
	case TypeBool:
		if b[0] > 1 {
			return nil, fmt.Errorf("metadata %q: bool value %d", key, b[0])
		}
		return b[0] == 1, nil
	case TypeUint64:
		return le.Uint64(b), nil
	case TypeInt64:
		return int64(le.Uint64(b)), nil
	default:
		return math.Float64frombits(le.Uint64(b)), nil
	}
}

func (r *reader) value(t ValueType, key string) (any, error) {
	switch t {
	case TypeString:
		return r.str("value of " + key)
	case TypeArray:
		et, err := r.u32("array type of " + key)
		if err != nil {
			return nil, err
		}
		n, err := r.u64("array length of " + key)
		if err != nil {
			return nil, err
		}
		elem := ValueType(et)
		minSize := int64(8) // a string needs at least its length
		if s, ok := valueSizes[elem]; ok {
			minSize = int64(s)
		} else if elem != TypeString {
			return nil, fmt.Errorf("metadata %q: unsupported array element type %d", key, et)
		}
		if n > uint64(r.remaining()/minSize) || (r.limit == 0 && n > 1<<24) {
			return nil, fmt.Errorf("metadata %q: array of %d elements exceeds the %d bytes left (corrupt)", key, n, r.remaining())
		}
		return r.array(elem, int(n), key)
	default:
		return r.scalar(t, key)
	}
}

func (r *reader) array(elem ValueType, n int, key string) (any, error) {
	switch elem {
	case TypeString:
		out := make([]string, n)
		for i := range out {
			s, err := r.str(fmt.Sprintf("%s[%d]", key, i))
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	}
	b, err := r.read(int64(n*valueSizes[elem]), "array "+key)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	switch elem {
	case TypeUint8:
		return b, nil
	case TypeInt8:
		out := make([]int8, n)
		for i := range out {
			out[i] = int8(b[i])
		}
		return out, nil
	case TypeUint16:
		out := make([]uint16, n)
		for i := range out {
			out[i] = le.Uint16(b[2*i:])
		}
		return out, nil
	case TypeInt16:
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(le.Uint16(b[2*i:]))
		}
		return out, nil
	case TypeUint32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = le.Uint32(b[4*i:])
		}
		return out, nil
	case TypeInt32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(b[4*i:]))
		}
		return out, nil
	case TypeFloat32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
		return out, nil
	case TypeBool:
		out := make([]bool, n)
		for i := range out {
			out[i] = b[i] != 0
		}
		return out, nil
	case TypeUint64:
		out := make([]uint64, n)
		for i := range out {
			out[i] = le.Uint64(b[8*i:])
		}
		return out, nil
	case TypeInt64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(b[8*i:]))
		}
		return out, nil
	default:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(b[8*i:]))
		}
		return out, nil
	}
}

// Get returns a metadata entry.
func (f *File) Get(key string) (KV, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return KV{}, false
	}
	return f.KV[i], true
}

// String returns a string value.
func (f *File) String(key string) (string, bool) {
	kv, ok := f.Get(key)
	s, isStr := kv.Value.(string)
	return s, ok && isStr
}

// Uint returns an integer value (of any integer type, if not negative).
func (f *File) Uint(key string) (uint64, bool) {
	kv, ok := f.Get(key)
	if !ok {
		return 0, false
	}
	switch v := kv.Value.(type) {
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	case int8:
		return uint64(v), v >= 0
	case int16:
		return uint64(v), v >= 0
	case int32:
		return uint64(v), v >= 0
	case int64:
		return uint64(v), v >= 0
	}
	return 0, false
}

// Float returns a floating-point value.
func (f *File) Float(key string) (float64, bool) {
	kv, ok := f.Get(key)
	switch v := kv.Value.(type) {
	case float32:
		return float64(v), ok
	case float64:
		return v, ok
	}
	return 0, false
}

// Bool returns a boolean value.
func (f *File) Bool(key string) (bool, bool) {
	kv, ok := f.Get(key)
	b, isBool := kv.Value.(bool)
	return b, ok && isBool
}

// Strings returns a string-array value.
func (f *File) Strings(key string) ([]string, bool) {
	kv, ok := f.Get(key)
	s, isStrs := kv.Value.([]string)
	return s, ok && isStrs
}

// Architecture is general.architecture.
func (f *File) Architecture() string {
	s, _ := f.String("general.architecture")
	return s
}

// Tensor finds a tensor by name.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.tensorIndex[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Tensors[i], true
}

// TensorDataOffset is the absolute file offset of a tensor's data.
func (f *File) TensorDataOffset(t TensorInfo) int64 { return f.DataOffset + int64(t.Offset) }

// ParamCount is the total number of tensor elements.
func (f *File) ParamCount() int64 {
	var n int64
	for _, t := range f.Tensors {
		n += t.NElements()
	}
	return n
}

// TensorBytes is the total size of the tensor data.
func (f *File) TensorBytes() int64 {
	var n int64
	for _, t := range f.Tensors {
		n += t.Size()
	}
	return n
}
