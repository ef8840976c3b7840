package testmodel

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/llmrt/llmrt/models/gguf"
)

// AdapterSpec describes a random LoRA adapter to generate for a base model.
type AdapterSpec struct {
	// Targets are substrings of the base's 2-D weight names to adapt
	// ("attn_q", "ffn_down", ...).
	Targets []string
	Rank    int
	Alpha   float32
	Std     float64   // standard deviation of A and B
	Type    gguf.Type // F32 (the zero value) or F16
	Seed    uint64
}

// WriteAdapter writes a random LoRA adapter for the model at base into
// path (atomically), in the format llama.cpp loads: general.type
// "adapter", adapter.type "lora", adapter.lora.alpha, and for each adapted
// weight "<name>.lora_a" [n_in, rank] and "<name>.lora_b" [rank, n_out].
func WriteAdapter(path, base string, s AdapterSpec) error {
	if s.Rank <= 0 || len(s.Targets) == 0 {
		return fmt.Errorf("testmodel: adapter of rank %d over %v", s.Rank, s.Targets)
	}
	typ := s.Type // the zero Type is F32
	switch typ {
	case gguf.TypeF32, gguf.TypeF16:
	default:
		return fmt.Errorf("testmodel: adapter type %s is not supported (F32, F16)", typ)
	}
	f, err := gguf.Open(base)
	if err != nil {
		return fmt.Errorf("testmodel: adapter base: %w", err)
	}
	r := rand.New(rand.NewPCG(s.Seed, 2))
	values := func(n int) []byte {
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = float32(r.NormFloat64() * s.Std)
		}
		if typ == gguf.TypeF16 {
			b := make([]byte, 2*n)
			for i, v := range vals {
				binary.LittleEndian.PutUint16(b[2*i:], F16(v))
			}
			return b
		}
		b := make([]byte, 4*n)
		for i, v := range vals {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return b
	}
	return gguf.WriteFileAtomic(path, func(w *gguf.Writer) error {
		w.AddKV("general.type", "adapter")
		w.AddKV("general.architecture", f.Architecture())
		w.AddKV("adapter.type", "lora")
		w.AddKV("adapter.lora.alpha", s.Alpha)
		n := 0
		for _, t := range f.Tensors {
			if len(t.Dims) != 2 || !strings.HasSuffix(t.Name, ".weight") || !hasAny(t.Name, s.Targets) {
				continue
			}
			nIn, nOut := t.Dims[0], t.Dims[1]
			w.AddTensor(t.Name+".lora_a", typ, []uint64{nIn, uint64(s.Rank)}, values(int(nIn)*s.Rank))
			w.AddTensor(t.Name+".lora_b", typ, []uint64{uint64(s.Rank), nOut}, values(s.Rank*int(nOut)))
			n++
		}
		if n == 0 {
			return fmt.Errorf("testmodel: no weight of %s matches %v", base, s.Targets)
		}
		return nil
	})
}

func hasAny(name string, subs []string) bool {
	for _, s := range subs {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}
