package lora

import (
	"fmt"
	"io"
	"os"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/gguf"
)

// Merge writes a copy of the base model with the adapter folded into its
// weights: W += scale · (alpha/r) · B·A, computed in float32 and stored
// back in each weight's own type. Every other tensor and all metadata are
// copied unchanged. The output is written atomically. progress, if set,
// is called with the merged tensors so far and their number.
func Merge(basePath string, a *Adapter, scale float32, outPath string, progress func(done, total int)) error {
	base, err := gguf.Open(basePath)
	if err != nil {
		return err
	}
	if base.Architecture() != a.Arch {
		return fmt.Errorf("merge: the adapter is for %s, the base is %s", a.Arch, base.Architecture())
	}
	for name, p := range a.Pairs {
		t, ok := base.Tensor(name)
		if !ok {
			return fmt.Errorf("merge: the base has no tensor %s", name)
		}
		if len(t.Dims) != 2 || int(t.Dims[0]) != p.NIn || int(t.Dims[1]) != p.NOut {
			return fmt.Errorf("merge: %s is %v in the base, the adapter's pair is %dx%d", name, t.Dims, p.NIn, p.NOut)
		}
	}
	src, err := os.Open(basePath)
	if err != nil {
		return err
	}
	defer src.Close()
	done := 0
	return gguf.WriteFileAtomic(outPath, func(w *gguf.Writer) error {
		w.AddKVs(base.KV...)
		for _, t := range base.Tensors {
			t := t
			raw := func() ([]byte, error) {
				b := make([]byte, t.Size())
				_, err := src.ReadAt(b, base.TensorDataOffset(t))
				return b, err
			}
			p, adapted := a.Pairs[t.Name]
			if !adapted {
				w.AddTensorFunc(t.Name, t.Type, t.Dims, func(out io.Writer) error {
					_, err := io.Copy(out, io.NewSectionReader(src, base.TensorDataOffset(t), t.Size()))
					return err
				})
				continue
			}
			w.AddTensorFunc(t.Name, t.Type, t.Dims, func(out io.Writer) error {
				b, err := raw()
				if err != nil {
					return err
				}
				wv, err := kernels.Dequantize(uint32(t.Type), b, p.NIn*p.NOut)
				if err != nil {
					return fmt.Errorf("merge %s: %w", t.Name, err)
				}
				s := scale * a.Alpha / float32(p.Rank)
				// W[o][i] += s · Σ_r B[o][r] · A[r][i]
				for o := 0; o < p.NOut; o++ {
					row := wv[o*p.NIn : (o+1)*p.NIn]
					for r := 0; r < p.Rank; r++ {
						c := s * p.B[o*p.Rank+r]
						if c == 0 {
							continue
						}
						ar := p.A[r*p.NIn : (r+1)*p.NIn]
						for i, x := range ar {
							row[i] += c * x
						}
					}
				}
				q, err := kernels.QuantizeRows(uint32(t.Type), wv, p.NOut, p.NIn)
				if err != nil {
					return fmt.Errorf("merge %s: %w", t.Name, err)
				}
				done++
				if progress != nil {
					progress(done, len(a.Pairs))
				}
				_, err = out.Write(q)
				return err
			})
		}
		return nil
	})
}
