package lora

import (
	"fmt"
	"strings"

	"github.com/llmrt/llmrt/kernels"
)

// NetBackend trains LoRA pairs with kernels.Net, llmrt's ggml training
// graph over the weights llama.cpp loaded. It satisfies Backend.
type NetBackend struct {
	net   *kernels.Net
	arch  string
	alpha float32
	adam  kernels.AdamConfig
	rows  int // rows accumulated since the last step
	t     int // AdamW steps taken
	index map[string][2]int
}

var _ Backend = (*NetBackend)(nil)

// NewNetBackend wraps a net built with LoRA pairs; arch is the base
// model's architecture (recorded in the adapter) and alpha its LoRA alpha.
func NewNetBackend(net *kernels.Net, arch string, alpha float32, adam kernels.AdamConfig) (*NetBackend, error) {
	if len(net.Params()) == 0 {
		return nil, fmt.Errorf("lora: the net has no LoRA tensors")
	}
	b := &NetBackend{net: net, arch: arch, alpha: alpha, adam: adam, index: map[string][2]int{}}
	for i, p := range net.Params() {
		b.index[p.Name] = [2]int{i, kernels.ParamValue}
		b.index[p.Name+".adam_m"] = [2]int{i, kernels.ParamAdamM}
		b.index[p.Name+".adam_v"] = [2]int{i, kernels.ParamAdamV}
	}
	return b, nil
}

// Accumulate adds the gradients of the row's mean loss.
func (b *NetBackend) Accumulate(tokens, pos, seg, labels []int32) (float32, int, error) {
	loss, n, err := b.net.Loss(tokens, pos, seg, labels, true)
	if err == nil && n > 0 {
		b.rows++
	}
	return loss, n, err
}

// Eval is the row's mean loss without gradients.
func (b *NetBackend) Eval(tokens, pos, seg, labels []int32) (float32, int, error) {
	return b.net.Loss(tokens, pos, seg, labels, false)
}

// Step applies AdamW with the mean of the accumulated row gradients.
func (b *NetBackend) Step(lr float32) error {
	if b.rows == 0 {
		return nil // nothing labelled in this step's rows
	}
	if err := b.net.AdamW(lr, b.adam, 1/float32(b.rows), b.t+1); err != nil {
		return err
	}
	b.t++
	b.rows = 0
	return nil
}

// OptStep is AdamW's step count.
func (b *NetBackend) OptStep() int { return b.t }

// SetOptStep restores the step count on resume.
func (b *NetBackend) SetOptStep(t int) { b.t = t }

// Tensors lists the LoRA matrices and their AdamW moments.
func (b *NetBackend) Tensors() []TensorInfo {
	var out []TensorInfo
	for _, p := range b.net.Params() {
		shape := []int64{p.Shape[0], p.Shape[1]}
		out = append(out, TensorInfo{p.Name, shape}, TensorInfo{p.Name + ".adam_m", shape}, TensorInfo{p.Name + ".adam_v", shape})
	}
	return out
}

// Get copies a tensor named by Tensors.
func (b *NetBackend) Get(name string) ([]float32, error) {
	ix, ok := b.index[name]
	if !ok {
		return nil, fmt.Errorf("lora: no trained tensor %q", name)
	}
	return b.net.Get(ix[0], ix[1])
}

// Set overwrites a tensor named by Tensors.
func (b *NetBackend) Set(name string, data []float32) error {
	ix, ok := b.index[name]
	if !ok {
		return fmt.Errorf("lora: no trained tensor %q", name)
	}
	return b.net.Set(ix[0], ix[1], data)
}

// Pairs returns the trained LoRA pairs keyed by base tensor name.
func (b *NetBackend) Pairs() (map[string]Pair, error) {
	pairs := map[string]Pair{}
	ps := b.net.Params()
	for i := 0; i+1 < len(ps); i += 2 {
		a, bb := ps[i], ps[i+1]
		base := strings.TrimSuffix(a.Name, ".lora_a")
		if base == a.Name || bb.Name != base+".lora_b" {
			return nil, fmt.Errorf("lora: tensors %s and %s are not a pair", a.Name, bb.Name)
		}
		av, err := b.net.Get(i, kernels.ParamValue)
		if err != nil {
			return nil, err
		}
		bv, err := b.net.Get(i+1, kernels.ParamValue)
		if err != nil {
			return nil, err
		}
		pairs[base] = Pair{NIn: int(a.Shape[0]), Rank: int(a.Shape[1]), NOut: int(bb.Shape[1]), A: av, B: bv}
	}
	return pairs, nil
}

// SaveAdapter writes the llama.cpp LoRA adapter atomically.
func (b *NetBackend) SaveAdapter(path string, meta map[string]string) error {
	pairs, err := b.Pairs()
	if err != nil {
		return err
	}
	return WriteAdapter(path, b.arch, b.alpha, pairs, meta)
}
