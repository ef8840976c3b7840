package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
)

// Writer builds a GGUF file: metadata and tensor infos first, then the
// tensor data in the order added, each aligned. Tensor data may be streamed
// so a large model never sits in memory whole.
type Writer struct {
	kvs       []KV
	keys      map[string]bool
	tensors   []pendingTensor
	names     map[string]bool
	alignment int
	err       error
}

type pendingTensor struct {
	info  TensorInfo
	write func(io.Writer) error
}

// NewWriter returns an empty writer (alignment 32).
func NewWriter() *Writer {
	return &Writer{keys: map[string]bool{}, names: map[string]bool{}, alignment: 32}
}

// AddKV adds a metadata entry; the GGUF type follows the Go type (uint8 ..
// float64, bool, string, and slices of those). Keys keep insertion order.
func (w *Writer) AddKV(key string, v any) {
	if w.err != nil {
		return
	}
	if w.keys[key] {
		w.err = fmt.Errorf("gguf writer: duplicate key %q", key)
		return
	}
	t, err := valueTypeOf(v)
	if err != nil {
		w.err = fmt.Errorf("gguf writer: key %q: %w", key, err)
		return
	}
	if key == "general.alignment" {
		if a, ok := v.(uint32); ok && a > 0 && a&(a-1) == 0 {
			w.alignment = int(a)
		} else {
			w.err = fmt.Errorf("gguf writer: general.alignment must be a uint32 power of two")
			return
		}
	}
	w.keys[key] = true
	w.kvs = append(w.kvs, KV{Key: key, Type: t, Value: v})
}

// AddKVs copies entries (e.g. from a File), keeping their exact types.
func (w *Writer) AddKVs(kvs ...KV) {
	for _, kv := range kvs {
		if w.err != nil {
			return
		}
		if w.keys[kv.Key] {
			w.err = fmt.Errorf("gguf writer: duplicate key %q", kv.Key)
			return
		}
		w.keys[kv.Key] = true
		w.kvs = append(w.kvs, kv)
	}
}

// AddTensor adds a tensor whose data is in memory.
func (w *Writer) AddTensor(name string, typ Type, dims []uint64, data []byte) {
	w.AddTensorFunc(name, typ, dims, func(out io.Writer) error { _, err := out.Write(data); return err })
	if w.err == nil {
		if want := w.tensors[len(w.tensors)-1].info.Size(); int64(len(data)) != want {
			w.err = fmt.Errorf("gguf writer: tensor %q has %d bytes of data, its shape needs %d", name, len(data), want)
		}
	}
}

// AddTensorFunc adds a tensor whose data write produces when the file is
// written; it must write exactly the tensor's size.
func (w *Writer) AddTensorFunc(name string, typ Type, dims []uint64, write func(io.Writer) error) {
	if w.err != nil {
		return
	}
	if w.names[name] {
		w.err = fmt.Errorf("gguf writer: duplicate tensor %q", name)
		return
	}
	if !typ.Known() || len(dims) == 0 || len(dims) > 4 || dims[0]%uint64(typ.BlockSize()) != 0 {
		w.err = fmt.Errorf("gguf writer: tensor %q: bad type %s or shape %v", name, typ, dims)
		return
	}
	w.names[name] = true
	w.tensors = append(w.tensors, pendingTensor{info: TensorInfo{Name: name, Dims: append([]uint64(nil), dims...), Type: typ}, write: write})
}

// WriteTo writes the file.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	cw := &countWriter{w: bufio.NewWriterSize(out, 1<<20)}
	le := binary.LittleEndian
	put := func(v any) { binary.Write(cw, le, v) }
	putStr := func(s string) { put(uint64(len(s))); io.WriteString(cw, s) }
	cw.Write([]byte(magic))
	put(uint32(3))
	put(uint64(len(w.tensors)))
	put(uint64(len(w.kvs)))
	for _, kv := range w.kvs {
		putStr(kv.Key)
		put(uint32(kv.Type))
		if err := writeValue(cw, kv.Type, kv.Value); err != nil {
			return cw.n, fmt.Errorf("gguf writer: key %q: %w", kv.Key, err)
		}
	}
	al := uint64(w.alignment)
	var off uint64
	for i := range w.tensors {
		t := &w.tensors[i].info
		t.Offset = off
		putStr(t.Name)
		put(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			put(d)
		}
		put(uint32(t.Type))
		put(t.Offset)
		off += (uint64(t.Size()) + al - 1) / al * al
	}
	pad := func() {
		if r := cw.n % int64(al); r != 0 {
			cw.Write(make([]byte, int64(al)-r))
		}
	}
	pad()
	for _, pt := range w.tensors {
		start := cw.n
		if err := pt.write(cw); err != nil {
			return cw.n, fmt.Errorf("gguf writer: tensor %q: %w", pt.info.Name, err)
		}
		if got := cw.n - start; got != pt.info.Size() {
			return cw.n, fmt.Errorf("gguf writer: tensor %q: wrote %d bytes, its shape needs %d", pt.info.Name, got, pt.info.Size())
		}
		pad()
	}
	if cw.err != nil {
		return cw.n, cw.err
	}
	return cw.n, cw.w.(*bufio.Writer).Flush()
}

// WriteFileAtomic writes a GGUF file through a temporary file in the same
// directory, syncs it and renames it into place: on any error nothing is
// left behind and an existing file at path is untouched.
func WriteFileAtomic(path string, fill func(*Writer) error) error {
	w := NewWriter()
	if err := fill(w); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := w.WriteTo(f); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

func valueTypeOf(v any) (ValueType, error) {
	switch v.(type) {
	case uint8:
		return TypeUint8, nil
	case int8:
		return TypeInt8, nil
	case uint16:
		return TypeUint16, nil
	case int16:
		return TypeInt16, nil
	case uint32:
		return TypeUint32, nil
	case int32:
		return TypeInt32, nil
	case float32:
		return TypeFloat32, nil
	case bool:
		return TypeBool, nil
	case string:
		return TypeString, nil
	case uint64:
		return TypeUint64, nil
	case int64:
		return TypeInt64, nil
	case float64:
		return TypeFloat64, nil
	case []uint8, []int8, []uint16, []int16, []uint32, []int32, []float32, []bool, []string, []uint64, []int64, []float64:
		return TypeArray, nil
	}
	return 0, fmt.Errorf("unsupported value type %T", v)
}

func elemType(v any) ValueType {
	switch v.(type) {
	case []uint8:
		return TypeUint8
	case []int8:
		return TypeInt8
	case []uint16:
		return TypeUint16
	case []int16:
		return TypeInt16
	case []uint32:
		return TypeUint32
	case []int32:
		return TypeInt32
	case []float32:
		return TypeFloat32
	case []bool:
		return TypeBool
	case []string:
		return TypeString
	case []uint64:
		return TypeUint64
	case []int64:
		return TypeInt64
	}
	return TypeFloat64
}

func writeValue(w io.Writer, t ValueType, v any) error {
	le := binary.LittleEndian
	switch t {
	case TypeString:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("value %T is not a string", v)
		}
		binary.Write(w, le, uint64(len(s)))
		_, err := io.WriteString(w, s)
		return err
	case TypeArray:
		et := elemType(v)
		binary.Write(w, le, uint32(et))
		switch a := v.(type) {
		case []string:
			binary.Write(w, le, uint64(len(a)))
			for _, s := range a {
				binary.Write(w, le, uint64(len(s)))
				io.WriteString(w, s)
			}
			return nil
		case []bool:
			binary.Write(w, le, uint64(len(a)))
			for _, b := range a {
				var x uint8
				if b {
					x = 1
				}
				binary.Write(w, le, x)
			}
			return nil
		}
		n := reflectLen(v)
		binary.Write(w, le, uint64(n))
		return binary.Write(w, le, v)
	case TypeBool:
		b, _ := v.(bool)
		var x uint8
		if b {
			x = 1
		}
		return binary.Write(w, le, x)
	case TypeFloat32:
		f, _ := v.(float32)
		return binary.Write(w, le, math.Float32bits(f))
	default:
		return binary.Write(w, le, v)
	}
}

func reflectLen(v any) int {
	switch a := v.(type) {
	case []uint8:
		return len(a)
	case []int8:
		return len(a)
	case []uint16:
		return len(a)
	case []int16:
		return len(a)
	case []uint32:
		return len(a)
	case []int32:
		return len(a)
	case []float32:
		return len(a)
	case []uint64:
		return len(a)
	case []int64:
		return len(a)
	case []float64:
		return len(a)
	}
	return 0
}
