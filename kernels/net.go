package kernels

/*
#include <stdlib.h>
#include "net.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"unsafe"
)

// LoRA target names: the GGUF names of the projections a LoRA pair can
// adapt.
var loraTargetBits = map[string]uint32{
	"attn_q":      C.LLMRT_LORA_Q,
	"attn_k":      C.LLMRT_LORA_K,
	"attn_v":      C.LLMRT_LORA_V,
	"attn_output": C.LLMRT_LORA_O,
	"ffn_gate":    C.LLMRT_LORA_GATE,
	"ffn_up":      C.LLMRT_LORA_UP,
	"ffn_down":    C.LLMRT_LORA_DOWN,
}

// LoRATargets lists the projection names NetParams.Targets accepts.
func LoRATargets() []string {
	out := make([]string, 0, len(loraTargetBits))
	for k := range loraTargetBits {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// NetParams configures a Net.
type NetParams struct {
	// Threads for the CPU backend (0: all cores).
	Threads int
	// Rank of the LoRA pairs; 0 builds a net without trained tensors
	// (embeddings, parity checks).
	Rank int
	// Alpha scales the LoRA term by Alpha/Rank.
	Alpha float32
	// Targets names the adapted projections (see LoRATargets).
	Targets []string
	// Seed initialises the A matrices.
	Seed uint64
	// Tiles lets the net run on AMX where the CPU has it: its Q8_0
	// matmuls in whole 16x16 tiles on AMX-INT8 (Q8AMXAvailable; the same
	// int8 products, but a token's result then depends on how many tokens
	// share its call, as the tiles round block sums differently) and its
	// input gradients through Q8_0 weights on AMX-BF16 (OutProdAMXAvailable;
	// bf16 factors, fp32 sums). Training sets it; embeddings, which must
	// not depend on their batch, do not.
	Tiles bool
}

// Net is llmrt's own ggml graph over a loaded llama-family model: the
// forward pass without a KV cache, its cross-entropy loss, LoRA pairs
// with their gradients and AdamW moments, and mean-pooled embeddings that
// skip the output head. A Net is safe for concurrent use; calls are
// serialised.
type Net struct {
	mu     sync.Mutex
	c      *C.llmrt_net
	model  *Model
	embd   int
	vocab  int
	params []ParamInfo
}

// ParamInfo names a trained tensor and its ggml shape [ne0, ne1].
type ParamInfo struct {
	Name  string
	Shape [2]int64
}

// Kinds of tensor a trained parameter has.
const (
	ParamValue = 0 // the LoRA A or B matrix
	ParamGrad  = 1 // its gradient accumulator
	ParamAdamM = 2 // AdamW's first moment
	ParamAdamV = 3 // AdamW's second moment
)

const errLen = 512

func cErr(buf []C.char) string { return C.GoString(&buf[0]) }

// NewNet builds a net over m. Architectures other than the llama family
// (llama, mistral, qwen2, qwen3) are refused with an error.
func NewNet(m *Model, p NetParams) (*Net, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == nil {
		return nil, errors.New("net: model is closed")
	}
	if p.Rank < 0 {
		return nil, fmt.Errorf("net: LoRA rank %d must not be negative", p.Rank)
	}
	var bits uint32
	for _, t := range p.Targets {
		b, ok := loraTargetBits[t]
		if !ok {
			return nil, fmt.Errorf("net: unknown LoRA target %q (want one of %s)", t, strings.Join(LoRATargets(), ", "))
		}
		bits |= b
	}
	if p.Rank > 0 && bits == 0 {
		return nil, errors.New("net: LoRA rank set but no targets")
	}
	threads := p.Threads
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	cp := C.struct_llmrt_net_params{
		n_threads:    C.int32_t(threads),
		lora_rank:    C.int32_t(p.Rank),
		lora_alpha:   C.float(p.Alpha),
		lora_targets: C.uint32_t(bits),
		seed:         C.uint64_t(p.Seed),
		tiles:        C.int32_t(cBool(p.Tiles)),
	}
	var eb [errLen]C.char
	c := C.llmrt_net_new(m.c, &cp, &eb[0], errLen)
	if c == nil {
		return nil, fmt.Errorf("net over %s: %s", m.path, cErr(eb[:]))
	}
	n := &Net{c: c, model: m, embd: m.info.Embd, vocab: m.info.Vocab}
	np := int(C.llmrt_net_n_params(c))
	for i := 0; i < np; i++ {
		var ne0, ne1 C.int64_t
		C.llmrt_net_param_shape(c, C.int32_t(i), &ne0, &ne1)
		n.params = append(n.params, ParamInfo{
			Name:  C.GoString(C.llmrt_net_param_name(c, C.int32_t(i))),
			Shape: [2]int64{int64(ne0), int64(ne1)},
		})
	}
	if m.nets == nil {
		m.nets = map[*Net]struct{}{}
	}
	m.nets[n] = struct{}{}
	return n, nil
}

// free releases the C side; the caller holds the model's lock.
func (n *Net) free() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.c != nil {
		C.llmrt_net_free(n.c)
		n.c = nil
	}
}

// Close frees the net. It is safe to call twice.
func (n *Net) Close() error {
	if n == nil {
		return nil
	}
	n.model.mu.Lock()
	delete(n.model.nets, n)
	n.model.mu.Unlock()
	n.free()
	return nil
}

var errNetClosed = errors.New("net is closed")

// Params lists the trained tensors (A then B for each adapted weight).
func (n *Net) Params() []ParamInfo { return n.params }

// ParamBytes is the memory held by the trained tensors, their gradients
// and moments.
func (n *Net) ParamBytes() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.c == nil {
		return 0
	}
	return int64(C.llmrt_net_param_bytes(n.c))
}

// Embed returns the mean-pooled final hidden state of each sequence,
// computed without the output head. Sequences are grouped by length into
// batches of at most maxTokens padded tokens (0: 4096).
func (n *Net) Embed(ctx context.Context, seqs [][]int32, maxTokens int) ([][]float32, error) {
	if maxTokens <= 0 {
		maxTokens = 4096
	}
	out := make([][]float32, len(seqs))
	order := make([]int, len(seqs))
	for i := range order {
		order[i] = i
		if len(seqs[i]) == 0 {
			return nil, fmt.Errorf("embed: input %d is empty", i)
		}
	}
	// Longest first, so each batch pads to its first sequence.
	sort.SliceStable(order, func(a, b int) bool { return len(seqs[order[a]]) > len(seqs[order[b]]) })
	for start := 0; start < len(order); {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		L := len(seqs[order[start]])
		end := start + 1
		for end < len(order) && (end-start+1)*L <= maxTokens {
			end++
		}
		var toks []int32
		lens := make([]int32, 0, end-start)
		for _, i := range order[start:end] {
			toks = append(toks, seqs[i]...)
			lens = append(lens, int32(len(seqs[i])))
		}
		res := make([]float32, len(lens)*n.embd)
		if err := n.call(func(c *C.llmrt_net, eb *C.char) C.int {
			return C.llmrt_net_embed(c, (*C.int32_t)(unsafe.Pointer(&toks[0])), (*C.int32_t)(unsafe.Pointer(&lens[0])),
				C.int32_t(len(lens)), (*C.float)(unsafe.Pointer(&res[0])), eb, errLen)
		}); err != nil {
			return nil, fmt.Errorf("embed: %w", err)
		}
		for k, i := range order[start:end] {
			out[i] = res[k*n.embd : (k+1)*n.embd : (k+1)*n.embd]
		}
		start = end
	}
	return out, nil
}

// call runs f under the lock with an error buffer.
func (n *Net) call(f func(c *C.llmrt_net, eb *C.char) C.int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.c == nil {
		return errNetClosed
	}
	var eb [errLen]C.char
	if f(n.c, &eb[0]) != 0 {
		return errors.New(cErr(eb[:]))
	}
	return nil
}

func checkRow(tokens, pos, seg []int32, labels []int32) error {
	if len(tokens) == 0 {
		return errors.New("empty row")
	}
	if len(pos) != len(tokens) || len(seg) != len(tokens) || (labels != nil && len(labels) != len(tokens)) {
		return fmt.Errorf("row of %d tokens has %d positions, %d segment ids and %d labels", len(tokens), len(pos), len(seg), len(labels))
	}
	return nil
}

func i32p(s []int32) *C.int32_t { return (*C.int32_t)(unsafe.Pointer(&s[0])) }

// Logits runs the forward pass over one row and returns len(tokens) rows
// of vocabulary logits. pos are RoPE positions; seg the segment (packed
// example) of each token: attention stays inside a segment.
func (n *Net) Logits(tokens, pos, seg []int32) ([]float32, error) {
	if err := checkRow(tokens, pos, seg, nil); err != nil {
		return nil, fmt.Errorf("logits: %w", err)
	}
	out := make([]float32, len(tokens)*n.vocab)
	err := n.call(func(c *C.llmrt_net, eb *C.char) C.int {
		return C.llmrt_net_logits(c, i32p(tokens), i32p(pos), i32p(seg), C.int32_t(len(tokens)), (*C.float)(unsafe.Pointer(&out[0])), eb, errLen)
	})
	if err != nil {
		return nil, fmt.Errorf("logits: %w", err)
	}
	return out, nil
}

// Loss returns the mean cross-entropy over the row's labelled positions
// (labels[i] is the token to predict at i, or -1) and their count. With
// backward, the gradients of that mean are added to the accumulators.
func (n *Net) Loss(tokens, pos, seg, labels []int32, backward bool) (float32, int, error) {
	if err := checkRow(tokens, pos, seg, labels); err != nil {
		return 0, 0, fmt.Errorf("loss: %w", err)
	}
	var loss C.float
	var nl C.int32_t
	bw := C.int32_t(0)
	if backward {
		bw = 1
	}
	err := n.call(func(c *C.llmrt_net, eb *C.char) C.int {
		return C.llmrt_net_loss(c, i32p(tokens), i32p(pos), i32p(seg), i32p(labels), C.int32_t(len(tokens)), bw, &loss, &nl, eb, errLen)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("loss: %w", err)
	}
	return float32(loss), int(nl), nil
}

// nSegments is one more than the largest segment id of the row.
func nSegments(seg []int32) (int, error) {
	n := int32(0)
	for i, s := range seg {
		if s < 0 {
			return 0, fmt.Errorf("segment id %d at position %d is negative", s, i)
		}
		n = max(n, s+1)
	}
	return int(n), nil
}

// SeqLogProbs returns, for each segment s of the row (0 up to its largest
// id), the summed log-probability of its labelled tokens. withLoRA false
// leaves the LoRA terms out: the base model alone, computed on the same
// weights (DPO's reference model).
func (n *Net) SeqLogProbs(tokens, pos, seg, labels []int32, withLoRA bool) ([]float32, error) {
	if err := checkRow(tokens, pos, seg, labels); err != nil {
		return nil, fmt.Errorf("log-probabilities: %w", err)
	}
	ns, err := nSegments(seg)
	if err != nil {
		return nil, fmt.Errorf("log-probabilities: %w", err)
	}
	out := make([]float32, ns)
	use := C.int32_t(0)
	if withLoRA {
		use = 1
	}
	err = n.call(func(c *C.llmrt_net, eb *C.char) C.int {
		return C.llmrt_net_seq_logprobs(c, i32p(tokens), i32p(pos), i32p(seg), i32p(labels), C.int32_t(len(tokens)), C.int32_t(ns), use,
			(*C.float)(unsafe.Pointer(&out[0])), eb, errLen)
	})
	if err != nil {
		return nil, fmt.Errorf("log-probabilities: %w", err)
	}
	return out, nil
}

// DPO computes the DPO loss of a row of preference pairs: segment 2k is
// pair k's prompt with its chosen answer, 2k+1 the same prompt with the
// rejected answer, answers labelled. ref holds each segment's
// log-probability under the reference model (SeqLogProbs without LoRA).
// It returns the loss summed over the pairs,
// -log σ(β((πc−rc)−(πr−rr))) + sft·(the chosen answer's mean negative
// log-likelihood) (sft 0: plain DPO; > 0: RPO), and each segment's policy
// log-probability π; with backward, the gradients of that sum are added
// to the accumulators.
func (n *Net) DPO(tokens, pos, seg, labels []int32, ref []float32, beta, sft float32, backward bool) (float32, []float32, error) {
	if err := checkRow(tokens, pos, seg, labels); err != nil {
		return 0, nil, fmt.Errorf("dpo: %w", err)
	}
	ns, err := nSegments(seg)
	if err != nil {
		return 0, nil, fmt.Errorf("dpo: %w", err)
	}
	if len(ref) != ns {
		return 0, nil, fmt.Errorf("dpo: %d reference log-probabilities for %d segments", len(ref), ns)
	}
	policy := make([]float32, ns)
	var loss C.float
	bw := C.int32_t(0)
	if backward {
		bw = 1
	}
	err = n.call(func(c *C.llmrt_net, eb *C.char) C.int {
		return C.llmrt_net_dpo(c, i32p(tokens), i32p(pos), i32p(seg), i32p(labels), C.int32_t(len(tokens)), C.int32_t(ns),
			(*C.float)(unsafe.Pointer(&ref[0])), C.float(beta), C.float(sft), bw, &loss, (*C.float)(unsafe.Pointer(&policy[0])), eb, errLen)
	})
	if err != nil {
		return 0, nil, fmt.Errorf("dpo: %w", err)
	}
	return float32(loss), policy, nil
}

// AdamConfig holds AdamW's constants.
type AdamConfig struct {
	Beta1, Beta2, Eps, WeightDecay float32
}

// DefaultAdam is PyTorch's AdamW default without weight decay, as PEFT
// recipes use for LoRA.
var DefaultAdam = AdamConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}

// AdamW applies one optimizer step with the accumulated gradients scaled
// by gradScale (1/rows for a mean over rows), then clears them. t is the
// step number after this step (1 for the first).
func (n *Net) AdamW(lr float32, cfg AdamConfig, gradScale float32, t int) error {
	err := n.call(func(c *C.llmrt_net, eb *C.char) C.int {
		return C.llmrt_net_adamw(c, C.float(lr), C.float(cfg.Beta1), C.float(cfg.Beta2), C.float(cfg.Eps), C.float(cfg.WeightDecay),
			C.float(gradScale), C.int32_t(t), eb, errLen)
	})
	if err != nil {
		return fmt.Errorf("adamw step %d: %w", t, err)
	}
	return nil
}

func (n *Net) paramIndex(i, kind int) (int, error) {
	if i < 0 || i >= len(n.params) {
		return 0, fmt.Errorf("no trained tensor %d (have %d)", i, len(n.params))
	}
	if kind < ParamValue || kind > ParamAdamV {
		return 0, fmt.Errorf("unknown tensor kind %d", kind)
	}
	s := n.params[i].Shape
	return int(s[0] * s[1]), nil
}

// Get copies trained tensor i's value, gradient or moment (kind).
func (n *Net) Get(i, kind int) ([]float32, error) {
	size, err := n.paramIndex(i, kind)
	if err != nil {
		return nil, err
	}
	out := make([]float32, size)
	err = n.call(func(c *C.llmrt_net, eb *C.char) C.int {
		return C.llmrt_net_param_get(c, C.int32_t(i), C.int32_t(kind), (*C.float)(unsafe.Pointer(&out[0])), eb, errLen)
	})
	return out, err
}

// Set overwrites trained tensor i's value, gradient or moment (kind).
func (n *Net) Set(i, kind int, data []float32) error {
	size, err := n.paramIndex(i, kind)
	if err != nil {
		return err
	}
	if len(data) != size {
		return fmt.Errorf("set %s: %d values, want %d", n.params[i].Name, len(data), size)
	}
	return n.call(func(c *C.llmrt_net, eb *C.char) C.int {
		return C.llmrt_net_param_set(c, C.int32_t(i), C.int32_t(kind), (*C.float)(unsafe.Pointer(&data[0])), eb, errLen)
	})
}

// ReferenceResult is the timing of ReferenceFinetune.
type ReferenceResult struct {
	Seconds   float64 // the rows after the first (warm-up) one
	FirstLoss float32 // the first row's loss before training
	LastLoss  float32 // the same row's loss after training
}

// ReferenceFinetune fully fine-tunes the model with ggml-opt, the
// optimizer and backward pass that llama.cpp's llama_opt_epoch (and its
// llama-finetune example) run, over this net's graph: every weight but
// the token embedding, AdamW, one step per row of nCtx tokens. It is the
// benchmarks' reference for the LoRA trainer. The net must have no LoRA
// (rank 0) and its model must be loaded with NoMmap: the weights are
// trained in place, so the model and the net are spent afterwards.
func (n *Net) ReferenceFinetune(tokens, labels []int32, nCtx int) (ReferenceResult, error) {
	if nCtx < 1 || len(tokens) != len(labels) || len(tokens)%nCtx != 0 || len(tokens)/nCtx < 2 {
		return ReferenceResult{}, fmt.Errorf("reference fine-tuning: %d tokens and %d labels are not 2 or more rows of %d", len(tokens), len(labels), nCtx)
	}
	var secs C.double
	var first, last C.float
	err := n.call(func(c *C.llmrt_net, eb *C.char) C.int {
		return C.llmrt_net_reference_finetune(c, i32p(tokens), i32p(labels), C.int32_t(len(tokens)/nCtx), C.int32_t(nCtx), &secs, &first, &last, eb, errLen)
	})
	if err != nil {
		return ReferenceResult{}, fmt.Errorf("reference fine-tuning: %w", err)
	}
	return ReferenceResult{Seconds: float64(secs), FirstLoss: float32(first), LastLoss: float32(last)}, nil
}
