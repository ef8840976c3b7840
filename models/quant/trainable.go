package quant

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/gguf"
)

// Half lists a model's F16/BF16 matrices (ggml has no matmul backward for
// them on the CPU) and the type TrainableCopy would give them: Q8_0 when
// every one of their rows splits into Q8_0's blocks of 32, else F32.
func Half(f *gguf.File) (from string, names []string, to gguf.Type) {
	to = gguf.TypeQ8_0
	for _, t := range f.Tensors {
		if len(t.Dims) < 2 || (t.Type != gguf.TypeF16 && t.Type != gguf.TypeBF16) {
			continue
		}
		from = t.Type.String()
		names = append(names, t.Name)
		if !fits(t, gguf.TypeQ8_0) {
			to = gguf.TypeF32
		}
	}
	return from, names, to
}

// TrainableCopy writes to out a copy of the model at in whose F16/BF16
// matrices are converted to the type Half names; every other tensor
// (F32, and quantized ones of any type) is copied byte for byte, so a
// base that `llmrt quantize` left with a mix of Q5_0, Q8_0 and F16 trains
// without requantizing anything. The file is written atomically.
func TrainableCopy(ctx context.Context, in, out string) error {
	f, err := gguf.Open(in)
	if err != nil {
		return err
	}
	_, _, to := Half(f)
	src, err := os.Open(in)
	if err != nil {
		return err
	}
	defer src.Close()
	return gguf.WriteFileAtomic(out, func(w *gguf.Writer) error {
		for _, kv := range f.KV {
			if kv.Key == "general.alignment" {
				w.AddKV(kv.Key, uint32(f.Alignment))
				continue
			}
			w.AddKVs(kv)
		}
		for _, t := range f.Tensors {
			t := t
			data := io.NewSectionReader(src, f.TensorDataOffset(t), t.Size())
			if len(t.Dims) < 2 || (t.Type != gguf.TypeF16 && t.Type != gguf.TypeBF16) {
				w.AddTensorFunc(t.Name, t.Type, t.Dims, func(dst io.Writer) error {
					_, err := io.Copy(dst, data)
					return err
				})
				continue
			}
			w.AddTensorFunc(t.Name, to, t.Dims, func(dst io.Writer) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				b, err := convert(t, data, to)
				if err != nil {
					return fmt.Errorf("convert %s from %s to %s: %w", t.Name, t.Type, to, err)
				}
				_, err = dst.Write(b)
				return err
			})
		}
		return nil
	})
}

// convert reads a half-precision tensor and returns its data as type to.
func convert(t gguf.TensorInfo, r io.Reader, to gguf.Type) ([]byte, error) {
	raw := make([]byte, t.Size())
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, err
	}
	n := int(t.NElements())
	vals, err := kernels.Dequantize(uint32(t.Type), raw, n)
	if err != nil {
		return nil, err
	}
	if to == gguf.TypeF32 {
		b := make([]byte, 4*n)
		for i, v := range vals {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return b, nil
	}
	cols := int(t.Dims[0])
	return kernels.QuantizeRows(uint32(to), vals, n/cols, cols)
}
