package sched

import (
	"fmt"
	"strings"
)

// ModelFacts are the facts about a model that memory estimates need: the
// bytes of its weights by layer and its attention shape. FactsFromGGUF fills
// them from a GGUF file; FactsFromShape builds them from a shape alone.
type ModelFacts struct {
	Name         string `json:"name"`
	Architecture string `json:"architecture,omitempty"`
	NLayer       int    `json:"n_layer"`
	// LayerBytes holds the weights of each repeating block (tensors named
	// blk.N.*), len NLayer.
	LayerBytes []int64 `json:"layer_bytes"`
	// OutputBytes is the output head and output norm: what llama.cpp puts
	// on the output device. With tied embeddings the head is a copy of the
	// token embeddings (TiedOutput).
	OutputBytes int64 `json:"output_bytes"`
	TiedOutput  bool  `json:"tied_output,omitempty"`
	// TokenEmbdBytes are the token embeddings, which llama.cpp always keeps
	// on the CPU.
	TokenEmbdBytes int64 `json:"token_embd_bytes"`
	// OtherBytes are tensors of no layer (rope frequencies and the like),
	// kept on the CPU.
	OtherBytes int64 `json:"other_bytes,omitempty"`

	NEmbd     int `json:"n_embd"`
	NHead     int `json:"n_head"`
	NHeadKV   int `json:"n_head_kv"`
	HeadDimK  int `json:"head_dim_k"`
	HeadDimV  int `json:"head_dim_v"`
	NFF       int `json:"n_ff"`
	NVocab    int `json:"n_vocab"`
	NCtxTrain int `json:"n_ctx_train"`
}

// WeightBytes is the size of all weights.
func (f ModelFacts) WeightBytes() int64 {
	n := f.TokenEmbdBytes + f.OtherBytes
	if !f.TiedOutput {
		n += f.OutputBytes
	}
	for _, b := range f.LayerBytes {
		n += b
	}
	return n
}

// Validate reports facts that cannot be estimated from.
func (f ModelFacts) Validate() error {
	switch {
	case f.NLayer <= 0:
		return fmt.Errorf("model %q: n_layer %d", f.Name, f.NLayer)
	case len(f.LayerBytes) != f.NLayer:
		return fmt.Errorf("model %q: %d layer sizes for %d layers", f.Name, len(f.LayerBytes), f.NLayer)
	case f.NEmbd <= 0 || f.NHead <= 0 || f.NHeadKV <= 0 || f.HeadDimK <= 0 || f.HeadDimV <= 0:
		return fmt.Errorf("model %q: incomplete attention shape (n_embd %d, n_head %d, n_head_kv %d, head dims %d/%d)",
			f.Name, f.NEmbd, f.NHead, f.NHeadKV, f.HeadDimK, f.HeadDimV)
	case f.NVocab <= 0:
		return fmt.Errorf("model %q: n_vocab %d", f.Name, f.NVocab)
	}
	return nil
}

// Shape describes a llama-family model by its hyper-parameters, for
// FactsFromShape.
type Shape struct {
	Name         string
	Architecture string // "llama", "qwen2", ...
	NLayer       int
	NEmbd        int
	NHead        int
	NHeadKV      int
	NFF          int
	NVocab       int
	NCtxTrain    int
	QKVBias      bool // qwen2 has q/k/v biases
	TiedEmbd     bool // output head shares the token embeddings
}

// FactsFromShape computes ModelFacts for a llama-family shape whose matrices
// take bytesPerWeight bytes per weight (Q8_0: 34/32, Q4_K_M: about 0.6, F16:
// 2); norms and biases are F32, as in real GGUF files.
func FactsFromShape(s Shape, bytesPerWeight float64) ModelFacts {
	hd := s.NEmbd / s.NHead
	q := int64(s.NEmbd) * int64(s.NHead*hd)
	kv := int64(s.NEmbd) * int64(s.NHeadKV*hd)
	o := int64(s.NHead*hd) * int64(s.NEmbd)
	ffn := 3 * int64(s.NEmbd) * int64(s.NFF)
	mat := func(n int64) int64 { return int64(float64(n) * bytesPerWeight) }
	layer := mat(q) + 2*mat(kv) + mat(o) + mat(ffn) + 2*4*int64(s.NEmbd) // + attn_norm, ffn_norm
	if s.QKVBias {
		layer += 4 * int64(s.NHead*hd+2*s.NHeadKV*hd)
	}
	f := ModelFacts{
		Name: s.Name, Architecture: s.Architecture, NLayer: s.NLayer,
		TokenEmbdBytes: mat(int64(s.NVocab) * int64(s.NEmbd)),
		OutputBytes:    mat(int64(s.NVocab)*int64(s.NEmbd)) + 4*int64(s.NEmbd),
		TiedOutput:     s.TiedEmbd,
		NEmbd:          s.NEmbd, NHead: s.NHead, NHeadKV: s.NHeadKV, HeadDimK: hd, HeadDimV: hd,
		NFF: s.NFF, NVocab: s.NVocab, NCtxTrain: s.NCtxTrain,
	}
	f.LayerBytes = make([]int64, s.NLayer)
	for i := range f.LayerBytes {
		f.LayerBytes[i] = layer
	}
	return f
}

// ContextParams are the llama.cpp context settings that decide the KV cache
// and compute buffers. Zero values take llmrt's engine defaults.
type ContextParams struct {
	NCtx       int    `json:"n_ctx"`                // total KV cells (0: the model's training context)
	NBatch     int    `json:"n_batch"`              // logical batch (default 512)
	NUBatch    int    `json:"n_ubatch"`             // physical batch (default NBatch)
	NSeq       int    `json:"n_seq"`                // parallel sequences (default 1)
	TypeK      string `json:"type_k"`               // KV cache type: f16 (default), f32, bf16, q8_0, q4_0, ...
	TypeV      string `json:"type_v"`               // as TypeK
	FlashAttn  bool   `json:"flash_attn"`           // flash attention
	KVPerSeq   bool   `json:"kv_per_seq"`           // one KV stream per sequence (llama.cpp kv_unified = false)
	Embeddings bool   `json:"embeddings"`           // the context also outputs embeddings
	NoOffload  bool   `json:"no_offload,omitempty"` // keep everything on the CPU
}

// normalize applies llama.cpp's own rules: n_ctx padded to 256, the batch
// bounded by the context, per-sequence contexts padded too.
func (c ContextParams) normalize(f ModelFacts) ContextParams {
	if c.NCtx <= 0 {
		c.NCtx = f.NCtxTrain
		if c.NCtx <= 0 {
			c.NCtx = 4096
		}
	}
	if c.NSeq <= 0 {
		c.NSeq = 1
	}
	c.NCtx = pad(c.NCtx, 256)
	if c.KVPerSeq {
		seq := pad(c.NCtx/c.NSeq, 256)
		c.NCtx = seq * c.NSeq
	}
	if c.NBatch <= 0 {
		c.NBatch = 512
	}
	c.NBatch = min(c.NBatch, c.NCtx)
	if c.NUBatch <= 0 || c.NUBatch > c.NBatch {
		c.NUBatch = c.NBatch
	}
	if c.TypeK == "" {
		c.TypeK = "f16"
	}
	if c.TypeV == "" {
		c.TypeV = "f16"
	}
	c.TypeK = strings.ToLower(c.TypeK)
	c.TypeV = strings.ToLower(c.TypeV)
	return c
}

// nCtxSeq is the number of cells one attention pass sees.
func (c ContextParams) nCtxSeq() int {
	if c.KVPerSeq {
		return c.NCtx / c.NSeq
	}
	return c.NCtx
}

func pad(n, to int) int { return (n + to - 1) / to * to }

// cacheTypes maps a ggml type name to (block size, bytes per block).
var cacheTypes = map[string][2]int{
	"f32": {1, 4}, "f16": {1, 2}, "bf16": {1, 2},
	"q8_0": {32, 34}, "q4_0": {32, 18}, "q4_1": {32, 20},
	"q5_0": {32, 22}, "q5_1": {32, 24}, "iq4_nl": {32, 18},
}

// rowBytes is ggml_row_size(type, n).
func rowBytes(typ string, n int) (int64, error) {
	t, ok := cacheTypes[typ]
	if !ok {
		return 0, fmt.Errorf("unknown KV cache type %q", typ)
	}
	return int64(n) / int64(t[0]) * int64(t[1]), nil
}

// Breakdown is memory by kind of consumer, in bytes.
type Breakdown struct {
	Weights     int64 `json:"weights,omitempty"`
	KV          int64 `json:"kv_cache,omitempty"`
	Compute     int64 `json:"compute,omitempty"`
	Output      int64 `json:"output,omitempty"` // logits/embeddings host buffer
	Adapter     int64 `json:"lora_adapter,omitempty"`
	Gradients   int64 `json:"lora_gradients,omitempty"`
	Optimizer   int64 `json:"lora_optimizer,omitempty"` // AdamW moments
	Activations int64 `json:"lora_activations,omitempty"`
	Index       int64 `json:"index_vectors,omitempty"`
}

// Total is the sum of all kinds.
func (b Breakdown) Total() int64 {
	return b.Weights + b.KV + b.Compute + b.Output + b.Adapter + b.Gradients + b.Optimizer + b.Activations + b.Index
}

// Add returns b + o.
func (b Breakdown) Add(o Breakdown) Breakdown {
	return Breakdown{
		Weights: b.Weights + o.Weights, KV: b.KV + o.KV, Compute: b.Compute + o.Compute, Output: b.Output + o.Output,
		Adapter: b.Adapter + o.Adapter, Gradients: b.Gradients + o.Gradients, Optimizer: b.Optimizer + o.Optimizer,
		Activations: b.Activations + o.Activations, Index: b.Index + o.Index,
	}
}

// String lists the non-zero kinds.
func (b Breakdown) String() string {
	var parts []string
	add := func(name string, n int64) {
		if n != 0 {
			parts = append(parts, name+" "+FormatBytes(n))
		}
	}
	add("weights", b.Weights)
	add("KV", b.KV)
	add("compute", b.Compute)
	add("output", b.Output)
	add("adapter", b.Adapter)
	add("gradients", b.Gradients)
	add("AdamW", b.Optimizer)
	add("activations", b.Activations)
	add("index", b.Index)
	if len(parts) == 0 {
		return "0 B"
	}
	return strings.Join(parts, ", ")
}

// Estimate is what a model with a context needs, before placement.
type Estimate struct {
	Context ContextParams `json:"context"` // normalized
	// LayerKV is the KV cache of one layer.
	LayerKV int64 `json:"layer_kv"`
	// Compute is the compute buffer of a device that runs layers and the
	// output head; ComputeLayers of one that runs layers only; ComputeHost
	// of the CPU when every layer is offloaded (embedding lookup, inputs).
	Compute       int64 `json:"compute"`
	ComputeLayers int64 `json:"compute_layers"`
	ComputeHost   int64 `json:"compute_host"`
	// Output is the host buffer for logits (and embeddings).
	Output int64 `json:"output"`
	// Total is everything on one device (the CPU-only case).
	Total Breakdown `json:"total"`
	// Factors are the learned corrections applied (1 = none).
	Factors Factors `json:"factors"`
}

// Factors scale estimates by what llama.cpp really allocated (RecordActual).
type Factors struct {
	Weights float64 `json:"weights"`
	KV      float64 `json:"kv_cache"`
	Compute float64 `json:"compute"`
}

func unitFactors() Factors { return Factors{1, 1, 1} }

// EstimateModel estimates the memory of model f with context c, as llama.cpp
// at the pinned commit allocates it: weights from the tensor sizes, KV cache
// = cells x layers x (K row + V row), compute buffer from a replay of the
// worst-case graph that llama_context reserves (see graph.go).
func EstimateModel(f ModelFacts, c ContextParams) (Estimate, error) {
	if err := f.Validate(); err != nil {
		return Estimate{}, err
	}
	c = c.normalize(f)
	kr, err := rowBytes(c.TypeK, f.NHeadKV*f.HeadDimK)
	if err != nil {
		return Estimate{}, err
	}
	vr, err := rowBytes(c.TypeV, f.NHeadKV*f.HeadDimV)
	if err != nil {
		return Estimate{}, err
	}
	e := Estimate{Context: c, LayerKV: int64(c.NCtx) * (kr + vr), Factors: unitFactors()}
	g := simulateGraph(f, c)
	e.Compute, e.ComputeLayers, e.ComputeHost = g.full, g.layers, g.host
	outputs := int64(c.NSeq) * int64(f.NVocab) * 4
	if c.Embeddings {
		outputs += int64(c.NSeq) * int64(f.NEmbd) * 4
	}
	e.Output = outputs
	e.Total = Breakdown{
		Weights: f.WeightBytes(),
		KV:      e.LayerKV * int64(f.NLayer),
		Compute: e.Compute,
		Output:  e.Output,
	}
	return e, nil
}

// scaled applies correction factors.
func (e Estimate) scaled(f ModelFacts, k Factors) (Estimate, ModelFacts) {
	if k == unitFactors() || k == (Factors{}) {
		return e, f
	}
	mul := func(n int64, x float64) int64 { return int64(float64(n)*x + 0.5) }
	f.LayerBytes = append([]int64(nil), f.LayerBytes...)
	for i := range f.LayerBytes {
		f.LayerBytes[i] = mul(f.LayerBytes[i], k.Weights)
	}
	f.OutputBytes = mul(f.OutputBytes, k.Weights)
	f.TokenEmbdBytes = mul(f.TokenEmbdBytes, k.Weights)
	f.OtherBytes = mul(f.OtherBytes, k.Weights)
	e.LayerKV = mul(e.LayerKV, k.KV)
	e.Compute = mul(e.Compute, k.Compute)
	e.ComputeLayers = mul(e.ComputeLayers, k.Compute)
	e.ComputeHost = mul(e.ComputeHost, k.Compute)
	e.Total = Breakdown{Weights: f.WeightBytes(), KV: e.LayerKV * int64(f.NLayer), Compute: e.Compute, Output: e.Output}
	e.Factors = k
	return e, f
}

// TrainingParams describe a LoRA fine-tuning job for EstimateTraining.
type TrainingParams struct {
	Rank int // LoRA rank r
	// Targets are the adapted matrices: attn_q, attn_k, attn_v,
	// attn_output, ffn_gate, ffn_up, ffn_down (default the four attention
	// projections).
	Targets []string
	SeqLen  int // tokens per sequence (default 512)
	Batch   int // sequences per micro-batch (default 1)
}

// EstimateTraining estimates a LoRA job's own memory: the adapter (f32 A and
// B), its gradients, AdamW's two moments, and the activations kept for the
// backward pass (every layer's intermediates over the whole sequence, the
// attention scores and the logits). The frozen base weights are the loaded
// model's and are reserved by the model itself.
func EstimateTraining(f ModelFacts, p TrainingParams) (Breakdown, error) {
	if err := f.Validate(); err != nil {
		return Breakdown{}, err
	}
	if p.Rank <= 0 {
		return Breakdown{}, fmt.Errorf("training estimate for %q: rank %d", f.Name, p.Rank)
	}
	if p.SeqLen <= 0 {
		p.SeqLen = 512
	}
	if p.Batch <= 0 {
		p.Batch = 1
	}
	if len(p.Targets) == 0 {
		p.Targets = []string{"attn_q", "attn_k", "attn_v", "attn_output"}
	}
	e, hq, hk, hv, ff := int64(f.NEmbd), int64(f.NHead*f.HeadDimK), int64(f.NHeadKV*f.HeadDimK), int64(f.NHeadKV*f.HeadDimV), int64(f.NFF)
	if ff == 0 {
		ff = 4 * e
	}
	var perLayer int64 // adapter parameters per layer: r x (in + out)
	for _, t := range p.Targets {
		var in, out int64
		switch t {
		case "attn_q":
			in, out = e, hq
		case "attn_k":
			in, out = e, hk
		case "attn_v":
			in, out = e, hv
		case "attn_output":
			in, out = int64(f.NHead*f.HeadDimV), e
		case "ffn_gate", "ffn_up":
			in, out = e, ff
		case "ffn_down":
			in, out = ff, e
		default:
			return Breakdown{}, fmt.Errorf("training estimate for %q: unknown target %q", f.Name, t)
		}
		perLayer += int64(p.Rank) * (in + out)
	}
	params := perLayer * int64(f.NLayer)
	tok := int64(p.SeqLen) * int64(p.Batch)
	// Per layer the tape keeps about eight hidden-sized tensors (norms, Q,
	// K, V, attention output, residuals), four FFN-sized ones (gate, up,
	// their product, its gradient) and two attention score matrices.
	act := int64(f.NLayer) * tok * 4 * (8*e + 4*ff + 2*int64(f.NHead)*int64(p.SeqLen))
	act += 2 * tok * int64(f.NVocab) * 4 // logits and their gradient
	return Breakdown{
		Adapter:     params * 4,
		Gradients:   params * 4,
		Optimizer:   2 * params * 4,
		Activations: act,
	}, nil
}
