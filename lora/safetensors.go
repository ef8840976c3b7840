package lora

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"

	"github.com/llmrt/llmrt/internal/atomicfile"
)

// safetensors: an 8-byte little-endian header length, a JSON header
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
// {...}}, then the tensor bytes (offsets relative to the end of the header).

type stTensor struct {
	Shape []int64
	Data  []float32
}

type stEntry struct {
	DType   string   `json:"dtype"`
	Shape   []int64  `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

// writeSafetensors writes F32 tensors (sorted by name) atomically.
func writeSafetensors(path string, tensors map[string]stTensor, meta map[string]string) error {
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	header := map[string]any{}
	if len(meta) > 0 {
		header["__metadata__"] = meta
	}
	var off int64
	for _, n := range names {
		t := tensors[n]
		size := int64(4 * len(t.Data))
		header[n] = stEntry{DType: "F32", Shape: t.Shape, Offsets: [2]int64{off, off + size}}
		off += size
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return err
	}
	for len(hb)%8 != 0 { // keep the data aligned, as the reference writer does
		hb = append(hb, ' ')
	}
	return atomicfile.Write(path, func(f *os.File) error {
		var l [8]byte
		binary.LittleEndian.PutUint64(l[:], uint64(len(hb)))
		if _, err := f.Write(l[:]); err != nil {
			return err
		}
		if _, err := f.Write(hb); err != nil {
			return err
		}
		for _, n := range names {
			if _, err := f.Write(f32bytes(tensors[n].Data)); err != nil {
				return err
			}
		}
		return nil
	})
}

// readSafetensors reads F32, F16 and BF16 tensors as float32.
func readSafetensors(path string) (map[string]stTensor, map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	var l [8]byte
	if _, err := io.ReadFull(f, l[:]); err != nil {
		return nil, nil, fmt.Errorf("%s: not a safetensors file: %w", path, err)
	}
	hl := int64(binary.LittleEndian.Uint64(l[:]))
	if hl <= 0 || hl > 100<<20 || 8+hl > st.Size() {
		return nil, nil, fmt.Errorf("%s: header length %d does not fit the file", path, hl)
	}
	hb := make([]byte, hl)
	if _, err := io.ReadFull(f, hb); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hb, &raw); err != nil {
		return nil, nil, fmt.Errorf("%s: header: %w", path, err)
	}
	meta := map[string]string{}
	out := map[string]stTensor{}
	dataLen := st.Size() - 8 - hl
	for name, r := range raw {
		if name == "__metadata__" {
			json.Unmarshal(r, &meta)
			continue
		}
		var e stEntry
		if err := json.Unmarshal(r, &e); err != nil {
			return nil, nil, fmt.Errorf("%s: tensor %s: %w", path, name, err)
		}
		n := int64(1)
		for _, d := range e.Shape {
			if d < 0 {
				return nil, nil, fmt.Errorf("%s: tensor %s has shape %v", path, name, e.Shape)
			}
			n *= d
		}
		var width int64
		switch e.DType {
		case "F32":
			width = 4
		case "F16", "BF16":
			width = 2
		default:
			return nil, nil, fmt.Errorf("%s: tensor %s has dtype %s (want F32, F16 or BF16)", path, name, e.DType)
		}
		if e.Offsets[0] < 0 || e.Offsets[1]-e.Offsets[0] != n*width || e.Offsets[1] > dataLen {
			return nil, nil, fmt.Errorf("%s: tensor %s: offsets %v do not match shape %v of %s", path, name, e.Offsets, e.Shape, e.DType)
		}
		b := make([]byte, n*width)
		if _, err := f.ReadAt(b, 8+hl+e.Offsets[0]); err != nil {
			return nil, nil, fmt.Errorf("%s: tensor %s: %w", path, name, err)
		}
		v := make([]float32, n)
		for i := range v {
			switch e.DType {
			case "F32":
				v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			case "F16":
				v[i] = f16to32(binary.LittleEndian.Uint16(b[2*i:]))
			case "BF16":
				v[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
			}
		}
		out[name] = stTensor{Shape: e.Shape, Data: v}
	}
	if len(out) == 0 {
		return nil, nil, errors.New(path + ": no tensors")
	}
	return out, meta, nil
}

// f16to32 converts an IEEE half to float32.
func f16to32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		for mant&0x400 == 0 {
			mant <<= 1
			exp--
		}
		exp++
		mant &= 0x3ff
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}
