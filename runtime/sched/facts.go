package sched

import (
	"fmt"
	"strconv"
	"strings"
)

// TensorSize is one entry of a GGUF tensor table: name, shape (ggml order,
// innermost first) and data size in bytes.
type TensorSize struct {
	Name  string
	Dims  []uint64
	Bytes int64
}

// FactsFromMetadata builds ModelFacts from what a GGUF file says: the
// architecture, its integer metadata (meta looks a key up, e.g.
// "llama.block_count") and its tensor table. Tensors named blk.N.* belong to
// layer N; token_embd stays on the CPU; output and output_norm are the head
// (a model without output.weight reuses token_embd: tied embeddings).
func FactsFromMetadata(name, arch string, meta func(key string) (uint64, bool), tensors []TensorSize) (ModelFacts, error) {
	get := func(key string) int {
		v, _ := meta(arch + "." + key)
		return int(v)
	}
	f := ModelFacts{
		Name: name, Architecture: arch,
		NLayer:    get("block_count"),
		NEmbd:     get("embedding_length"),
		NHead:     get("attention.head_count"),
		NHeadKV:   get("attention.head_count_kv"),
		HeadDimK:  get("attention.key_length"),
		HeadDimV:  get("attention.value_length"),
		NFF:       get("feed_forward_length"),
		NCtxTrain: get("context_length"),
		NVocab:    get("vocab_size"),
	}
	if f.NLayer <= 0 {
		return ModelFacts{}, fmt.Errorf("model %q (%s): no %s.block_count", name, arch, arch)
	}
	if f.NHeadKV == 0 {
		f.NHeadKV = f.NHead
	}
	if f.HeadDimK == 0 && f.NHead > 0 {
		f.HeadDimK = f.NEmbd / f.NHead
	}
	if f.HeadDimV == 0 {
		f.HeadDimV = f.HeadDimK
	}
	f.LayerBytes = make([]int64, f.NLayer)
	var tokEmbd, output, outputNorm int64
	hasOutput := false
	for _, t := range tensors {
		if rest, ok := strings.CutPrefix(t.Name, "blk."); ok {
			num, _, _ := strings.Cut(rest, ".")
			i, err := strconv.Atoi(num)
			if err != nil || i < 0 || i >= f.NLayer {
				return ModelFacts{}, fmt.Errorf("model %q: tensor %s outside the %d layers", name, t.Name, f.NLayer)
			}
			f.LayerBytes[i] += t.Bytes
			continue
		}
		switch t.Name {
		case "token_embd.weight":
			tokEmbd += t.Bytes
			if f.NVocab == 0 && len(t.Dims) == 2 {
				f.NVocab = int(t.Dims[1])
			}
		case "output.weight":
			output += t.Bytes
			hasOutput = true
		case "output_norm.weight", "output_norm.bias", "output.bias":
			outputNorm += t.Bytes
		default:
			if strings.HasPrefix(t.Name, "token_embd") {
				tokEmbd += t.Bytes
			} else {
				f.OtherBytes += t.Bytes
			}
		}
	}
	f.TokenEmbdBytes = tokEmbd
	f.OutputBytes = output + outputNorm
	if !hasOutput {
		f.TiedOutput = true
		f.OutputBytes = tokEmbd + outputNorm
		// The norm still has to be counted once on the CPU when the
		// head stays there: keep it with the other tensors.
		f.OtherBytes += outputNorm
	}
	return f, f.Validate()
}
