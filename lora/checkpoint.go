package lora

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"

	"github.com/llmrt/llmrt/internal/atomicfile"
)

// runState is where a run is: enough to continue it exactly.
type runState struct {
	Step          int     `json:"step"`  // optimizer steps done
	Epoch         int     `json:"epoch"` // 0-based epoch in progress
	Row           int     `json:"row"`   // next position in the epoch's row order
	OptStep       int     `json:"opt_step"`
	DeviceSeconds float64 `json:"device_seconds"`
}

// ckptHeader is the JSON header of a checkpoint file.
type ckptHeader struct {
	State   runState     `json:"state"`
	Rows    int          `json:"rows"`
	Seed    uint64       `json:"seed"`
	Batch   int          `json:"batch"`
	Accum   int          `json:"grad_accum"`
	Tensors []TensorInfo `json:"tensors"`
}

// Checkpoint file: "LLMRTCK1", u32 header length, JSON header, the tensors
// as little-endian float32 in header order, then a CRC-32C of everything
// before it. Written atomically; a torn or corrupt file is refused.
const ckptMagic = "LLMRTCK1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func saveCheckpoint(path string, b Backend, st runState, rows int, cfg Config) error {
	st.OptStep = b.OptStep()
	h := ckptHeader{State: st, Rows: rows, Seed: cfg.Seed, Batch: cfg.Batch, Accum: cfg.GradAccum, Tensors: b.Tensors()}
	hdr, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, func(f *os.File) error {
		crc := crc32.New(castagnoli)
		w := bufio.NewWriterSize(io.MultiWriter(f, crc), 1<<20)
		w.WriteString(ckptMagic)
		binary.Write(w, binary.LittleEndian, uint32(len(hdr)))
		w.Write(hdr)
		var buf [4]byte
		for _, t := range h.Tensors {
			data, err := b.Get(t.Name)
			if err != nil {
				return err
			}
			for _, x := range data {
				binary.LittleEndian.PutUint32(buf[:], math.Float32bits(x))
				w.Write(buf[:])
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
		return binary.Write(f, binary.LittleEndian, crc.Sum32())
	})
}

func loadCheckpoint(path string, b Backend, rows int, cfg Config) (runState, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return runState{}, fmt.Errorf("resume: no checkpoint at %s (run without --resume to start)", path)
	}
	if err != nil {
		return runState{}, fmt.Errorf("resume: %w", err)
	}
	if len(raw) < len(ckptMagic)+8 || string(raw[:len(ckptMagic)]) != ckptMagic {
		return runState{}, fmt.Errorf("resume: %s is not an llmrt checkpoint", path)
	}
	body, sum := raw[:len(raw)-4], binary.LittleEndian.Uint32(raw[len(raw)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return runState{}, fmt.Errorf("resume: checkpoint %s is corrupt (checksum mismatch)", path)
	}
	p := len(ckptMagic)
	n := int(binary.LittleEndian.Uint32(body[p:]))
	p += 4
	if n > len(body)-p {
		return runState{}, fmt.Errorf("resume: checkpoint %s: header runs past the file", path)
	}
	var h ckptHeader
	if err := json.Unmarshal(body[p:p+n], &h); err != nil {
		return runState{}, fmt.Errorf("resume: checkpoint %s: %w", path, err)
	}
	p += n
	if h.Rows != rows || h.Seed != cfg.Seed || h.Batch != cfg.Batch || h.Accum != cfg.GradAccum {
		return runState{}, fmt.Errorf("resume: checkpoint %s was made with %d rows, seed %d, batch %d, grad-accum %d; this run has %d, %d, %d, %d (same data and settings are needed)",
			path, h.Rows, h.Seed, h.Batch, h.Accum, rows, cfg.Seed, cfg.Batch, cfg.GradAccum)
	}
	have := map[string][]int64{}
	for _, t := range b.Tensors() {
		have[t.Name] = t.Shape
	}
	for _, t := range h.Tensors {
		shape, ok := have[t.Name]
		if !ok || fmt.Sprint(shape) != fmt.Sprint(t.Shape) {
			return runState{}, fmt.Errorf("resume: checkpoint tensor %s %v does not match this run (%v): different rank or targets?", t.Name, t.Shape, shape)
		}
		count := 1
		for _, d := range t.Shape {
			count *= int(d)
		}
		if p+4*count > len(body) {
			return runState{}, fmt.Errorf("resume: checkpoint %s is truncated at tensor %s", path, t.Name)
		}
		data := make([]float32, count)
		for i := range data {
			data[i] = math.Float32frombits(binary.LittleEndian.Uint32(body[p+4*i:]))
		}
		p += 4 * count
		if err := b.Set(t.Name, data); err != nil {
			return runState{}, fmt.Errorf("resume: %w", err)
		}
	}
	if len(h.Tensors) != len(have) {
		return runState{}, fmt.Errorf("resume: checkpoint holds %d tensors, this run has %d", len(h.Tensors), len(have))
	}
	b.SetOptStep(h.State.OptStep)
	return h.State, nil
}
