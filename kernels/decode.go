package kernels

/*
#include <stdlib.h>
#include "ggml.h"
#include "decode.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"
)

// DecoderParams configures a Decoder.
type DecoderParams struct {
	// Threads for the CPU backend (0: all cores).
	Threads int
	// Seqs is the number of sequences (KV slots), CtxPerSeq the cells of
	// each.
	Seqs, CtxPerSeq int
	// Adapters is the number of resident adapter slots (0: no LoRA).
	Adapters int
	// Rank is the largest rank a resident adapter may have; smaller ranks
	// are zero-padded to it.
	Rank int
	// Targets names the projections the adapter stacks cover (see
	// LoRATargets; nil: all of them).
	Targets []string
	// Type is the stacks' number format: "f32" (default), "f16" or
	// "bf16". Adapters of that type compute as llama.cpp computes them;
	// others are converted. F16 halves the bytes a step reads.
	Type string
}

// loraTypes maps a stack type's name to ggml's.
var loraTypes = map[string]C.int32_t{"": C.GGML_TYPE_F32, "f32": C.GGML_TYPE_F32, "f16": C.GGML_TYPE_F16, "bf16": C.GGML_TYPE_BF16}

// Decoder is llmrt's own inference graph for llama-family models: a KV
// cache with one slot per sequence and a LoRA adapter per sequence, so one
// step decodes sequences of different adapters together (llama.cpp applies
// one adapter set to a whole decode). Adapters are copied into a fixed
// number of resident slots (SetAdapter); each sequence of a step names the
// slot it uses. A Decoder is safe for concurrent use; calls are serialised.
type Decoder struct {
	mu    sync.Mutex
	c     *C.llmrt_dec
	model *Model
	p     DecoderParams
	vocab int
	nOut  int
	cseqs []C.struct_llmrt_dec_seq
	toks  []int32
}

// NewDecoder builds a decoder over m. Architectures other than the llama
// family are refused with an error.
func NewDecoder(m *Model, p DecoderParams) (*Decoder, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == nil {
		return nil, errors.New("decoder: model is closed")
	}
	if p.Seqs <= 0 || p.CtxPerSeq <= 0 || p.Adapters < 0 {
		return nil, fmt.Errorf("decoder: %d sequences of %d cells and %d adapter slots", p.Seqs, p.CtxPerSeq, p.Adapters)
	}
	if p.Adapters > 0 && p.Rank <= 0 {
		return nil, fmt.Errorf("decoder: adapter rank %d must be positive", p.Rank)
	}
	targets := p.Targets
	if targets == nil {
		targets = LoRATargets()
	}
	bits, err := targetBits(targets)
	if err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	typ, ok := loraTypes[p.Type]
	if !ok {
		return nil, fmt.Errorf("decoder: adapter type %q (want f32, f16 or bf16)", p.Type)
	}
	threads := p.Threads
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	cp := C.struct_llmrt_dec_params{
		lora_type:    typ,
		n_threads:    C.int32_t(threads),
		n_seq:        C.int32_t(p.Seqs),
		n_ctx:        C.int32_t(p.CtxPerSeq),
		n_adapters:   C.int32_t(p.Adapters),
		lora_rank:    C.int32_t(p.Rank),
		lora_targets: C.uint32_t(bits),
	}
	var eb [errLen]C.char
	c := C.llmrt_dec_new(m.c, &cp, &eb[0], errLen)
	if c == nil {
		return nil, fmt.Errorf("decoder over %s: %s", m.path, cErr(eb[:]))
	}
	p.Targets = targets
	d := &Decoder{c: c, model: m, p: p, vocab: m.info.Vocab}
	if m.decoders == nil {
		m.decoders = map[*Decoder]struct{}{}
	}
	m.decoders[d] = struct{}{}
	return d, nil
}

// DecoderSupport returns nil when a Decoder can be built over m, else
// the reason it cannot (architecture, layout).
func DecoderSupport(m *Model) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == nil {
		return errors.New("decoder: model is closed")
	}
	var eb [errLen]C.char
	if C.llmrt_dec_check(m.c, &eb[0], errLen) != 0 {
		return errors.New(cErr(eb[:]))
	}
	return nil
}

func targetBits(targets []string) (uint32, error) {
	var bits uint32
	for _, t := range targets {
		b, ok := loraTargetBits[t]
		if !ok {
			return 0, fmt.Errorf("unknown LoRA target %q (want one of %s)", t, strings.Join(LoRATargets(), ", "))
		}
		bits |= b
	}
	return bits, nil
}

func targetNames(bits uint32) []string {
	var out []string
	for _, t := range LoRATargets() {
		if bits&loraTargetBits[t] != 0 {
			out = append(out, t)
		}
	}
	return out
}

// free releases the C side; the caller holds the model's lock.
func (d *Decoder) free() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c != nil {
		C.llmrt_dec_free(d.c)
		d.c = nil
	}
}

// Close frees the decoder. It is safe to call twice.
func (d *Decoder) Close() error {
	if d == nil {
		return nil
	}
	d.model.mu.Lock()
	delete(d.model.decoders, d)
	d.model.mu.Unlock()
	d.free()
	return nil
}

// Params returns the decoder's parameters (Targets filled in).
func (d *Decoder) Params() DecoderParams { return d.p }

// DecoderMemory is what a decoder holds, in bytes.
type DecoderMemory struct {
	KV      int64 `json:"kv_cache"`
	LoRA    int64 `json:"adapter_stacks"`
	Compute int64 `json:"compute"` // the largest step's compute buffers so far
}

// Total is the sum of the parts.
func (m DecoderMemory) Total() int64 { return m.KV + m.LoRA + m.Compute }

// Memory reports the decoder's buffers.
func (d *Decoder) Memory() DecoderMemory {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c == nil {
		return DecoderMemory{}
	}
	var kv, lora, comp C.size_t
	C.llmrt_dec_memory(d.c, &kv, &lora, &comp)
	return DecoderMemory{KV: int64(kv), LoRA: int64(lora), Compute: int64(comp)}
}

// DecodeSeq is one sequence's part of a step.
type DecodeSeq struct {
	// Seq is the KV slot; Pos the position of Tokens[0]. The slot's cells
	// before Pos are the sequence's history; the ones after are replaced.
	Seq, Pos int
	Tokens   []int32
	// Adapter is the resident slot whose adapter applies (-1: none), with
	// the user's Scale (1 = as trained).
	Adapter int
	Scale   float32
	// Logits keeps the logits of the last token (see Decoder.Logits).
	Logits bool
}

// Step decodes every sequence's tokens in one graph. The i-th sequence
// with Logits set has its logits at Logits(i') where i' counts only those.
func (d *Decoder) Step(seqs []DecodeSeq) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c == nil {
		return errors.New("decoder is closed")
	}
	d.nOut = 0
	if len(seqs) == 0 {
		return nil
	}
	d.cseqs = d.cseqs[:0]
	d.toks = d.toks[:0]
	for i, s := range seqs {
		if len(s.Tokens) == 0 {
			return fmt.Errorf("decode step: sequence %d has no tokens", i)
		}
		lg := C.int32_t(0)
		if s.Logits {
			lg = 1
			d.nOut++
		}
		d.cseqs = append(d.cseqs, C.struct_llmrt_dec_seq{
			seq: C.int32_t(s.Seq), pos: C.int32_t(s.Pos), n_tok: C.int32_t(len(s.Tokens)),
			adapter: C.int32_t(s.Adapter), scale: C.float(s.Scale), logits: lg,
		})
		d.toks = append(d.toks, s.Tokens...)
	}
	var eb [errLen]C.char
	// The C side reads both slices during the call only; they hold no Go
	// pointers.
	if C.llmrt_dec_step(d.c, (*C.int32_t)(unsafe.Pointer(&d.toks[0])), &d.cseqs[0], C.int32_t(len(d.cseqs)), &eb[0], errLen) != 0 {
		d.nOut = 0
		return fmt.Errorf("decode step of %d sequences: %s", len(seqs), cErr(eb[:]))
	}
	return nil
}

// Logits returns the logits of the i-th sequence that asked for them in
// the last Step. The slice aliases the decoder's buffer and is valid until
// the next Step.
func (d *Decoder) Logits(i int) ([]float32, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c == nil {
		return nil, errors.New("decoder is closed")
	}
	if i < 0 || i >= d.nOut {
		return nil, fmt.Errorf("logits: output %d of %d", i, d.nOut)
	}
	p := C.llmrt_dec_logits(d.c, C.int32_t(i))
	if p == nil {
		return nil, fmt.Errorf("logits: output %d has none", i)
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(p)), d.vocab), nil
}

// SetAdapter copies l into resident slot (replacing what it held). Steps
// that name the slot use l from then on.
func (d *Decoder) SetAdapter(slot int, l *LoRA) error {
	if l == nil || l.c == nil {
		return errors.New("set adapter: adapter is closed")
	}
	if l.model != d.model {
		return fmt.Errorf("set adapter: %s was read for another model", l.path)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c == nil {
		return errors.New("decoder is closed")
	}
	var eb [errLen]C.char
	if C.llmrt_dec_set_adapter(d.c, C.int32_t(slot), l.c, &eb[0], errLen) != 0 {
		return fmt.Errorf("set adapter %s in slot %d: %s", l.path, slot, cErr(eb[:]))
	}
	return nil
}

// LoRA is a LoRA adapter file read against a model into host memory (F32),
// validated as llama.cpp validates it, ready to be copied into a
// decoder's resident slot.
type LoRA struct {
	c           *C.llmrt_lora
	model       *Model
	path        string
	rank        int
	targets     []string
	bytes       int64
	typ         string
	unsupported string
}

// ReadLoRA reads the adapter at path for m. Without data only its
// description is read (rank, targets, whether a decoder can serve it),
// which is cheap; SetAdapter needs the data.
func ReadLoRA(m *Model, path string, withData bool) (*LoRA, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == nil {
		return nil, errors.New("read adapter: model is closed")
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	wd := C.int32_t(0)
	if withData {
		wd = 1
	}
	var eb [errLen]C.char
	c := C.llmrt_lora_read(m.c, cpath, wd, &eb[0], errLen)
	if c == nil {
		return nil, fmt.Errorf("read adapter %s: %s", path, cErr(eb[:]))
	}
	l := &LoRA{c: c, model: m, path: path, rank: int(C.llmrt_lora_rank(c)), targets: targetNames(uint32(C.llmrt_lora_targets(c))),
		bytes: int64(C.llmrt_lora_bytes(c)), unsupported: C.GoString(C.llmrt_lora_unsupported(c)), typ: "f32"}
	switch C.llmrt_lora_type(c) {
	case C.GGML_TYPE_F16:
		l.typ = "f16"
	case C.GGML_TYPE_BF16:
		l.typ = "bf16"
	}
	return l, nil
}

// Path is the adapter's file.
func (l *LoRA) Path() string { return l.path }

// Rank is the largest rank of its pairs.
func (l *LoRA) Rank() int { return l.rank }

// Targets names the projections it adapts.
func (l *LoRA) Targets() []string { return l.targets }

// Type is its tensors' number format: "f16" or "bf16" when all are, else
// "f32" (what a decoder's stacks should be for it, see DecoderParams.Type).
func (l *LoRA) Type() string { return l.typ }

// Bytes is the host memory its tensors take (0 when read without data).
func (l *LoRA) Bytes() int64 { return l.bytes }

// Unsupported says why a decoder cannot serve the adapter ("" when it can).
func (l *LoRA) Unsupported() string { return l.unsupported }

// Close frees the host copy. It is safe to call twice.
func (l *LoRA) Close() error {
	if l != nil && l.c != nil {
		C.llmrt_lora_free(l.c)
		l.c = nil
	}
	return nil
}

// SampleLogits picks the next token from raw logits (a Decoder's) and
// accepts it into the chain's state, as Sample does for a Context.
func (s *Sampler) SampleLogits(logits []float32) (int32, error) {
	if len(logits) != s.vocab {
		return -1, fmt.Errorf("sample: %d logits for a vocabulary of %d", len(logits), s.vocab)
	}
	var tok C.llama_token
	threw := C.llmrt_sampler_sample_logits(s.c, (*C.float)(unsafe.Pointer(&logits[0])), C.int32_t(len(logits)), &tok, s.ge.p()) != 0
	if s.deadEnd != nil && *s.deadEnd != 0 {
		*s.deadEnd = 0
		return -1, ErrGrammarDeadEnd
	}
	if threw {
		return -1, s.ge.err("sample")
	}
	return int32(tok), nil
}
