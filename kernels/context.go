package kernels

/*
#include <stdlib.h>
#include "bridge.h"
#include "guard.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"
)

// Pooling selects how per-token hidden states become one embedding.
type Pooling int

// Pooling types (values as llama.cpp defines them).
const (
	PoolingUnspecified Pooling = -1
	PoolingNone        Pooling = 0
	PoolingMean        Pooling = 1
	PoolingCLS         Pooling = 2
	PoolingLast        Pooling = 3
)

// ContextParams configures a llama.cpp context.
type ContextParams struct {
	NCtx          int // total KV cells shared by all sequences (0: the model's training context)
	NBatch        int // most tokens per Decode (default 512)
	NUBatch       int // physical batch (default = NBatch)
	NSeqMax       int // parallel sequences (default 1)
	Threads       int // decode threads (default: all cores)
	ThreadsBatch  int // prompt-processing threads (default: Threads)
	Embeddings    bool
	Pooling       Pooling
	FlashAttn     bool
	NoKVUnified   bool // give each sequence its own KV slice instead of one shared buffer
	NoPerfCounter bool
}

// Context is one llama.cpp context: a KV cache and the compute buffers for
// decoding. It is NOT safe for concurrent use: one goroutine drives it.
type Context struct {
	model *Model
	c     *C.struct_llama_context
	abort *C.llmrt_abort_t
	pools C.llmrt_pools // worker threads kept across decodes (bridge.h)
	// retired pools replaced by SetThreads. The CPU backend keeps a
	// pointer to the last pool it ran on and pauses it when it switches
	// to another at the next compute, so a replaced pool must outlive the
	// context: freeing it at once made that pause lock freed memory.
	retired []C.llmrt_pools
	nVocab  int
	nEmbd   int
	params  ContextParams
	adapter []AdapterScale // currently applied set
	closed  atomic.Bool
	// outputs[i] is true when batch position i of the last Decode asked
	// for an output. llama.cpp's src is built without NDEBUG and aborts
	// the process on a bad index, so Logits and Embedding check here.
	outputs []bool
	nOut    int
	// rebuild forces llama.cpp to rebuild its graph at the next Decode.
	// At the pinned commit, graph reuse compares the *address* of the
	// context's adapter map, so a changed adapter set would silently reuse
	// the graph built for the old one. Decode flips the embeddings flag
	// (which llama.cpp does compare) for one call to force the rebuild.
	rebuild bool
	// lastEmb is the embeddings flag the previous Decode ran with.
	lastEmb bool
	// ge receives a C++ exception caught by a guard.h wrapper (kept here
	// so that a decode allocates nothing for it).
	ge guardErr
}

// NewContext creates a context on m, with worker pools of its own that
// stay across decodes (see Pooled).
func (m *Model) NewContext(p ContextParams) (*Context, error) {
	if m == nil || m.c == nil {
		return nil, errors.New("new context: model is closed")
	}
	cp := C.llama_context_default_params()
	if p.NCtx > 0 {
		cp.n_ctx = C.uint32_t(p.NCtx)
	}
	if p.NBatch <= 0 {
		p.NBatch = 512
	}
	if p.NUBatch <= 0 || p.NUBatch > p.NBatch {
		p.NUBatch = p.NBatch
	}
	if p.NSeqMax <= 0 {
		p.NSeqMax = 1
	}
	if p.NSeqMax > MaxParallelSequences() {
		return nil, fmt.Errorf("new context: %d parallel sequences exceed llama.cpp's limit of %d", p.NSeqMax, MaxParallelSequences())
	}
	cp.n_batch = C.uint32_t(p.NBatch)
	cp.n_ubatch = C.uint32_t(p.NUBatch)
	cp.n_seq_max = C.uint32_t(p.NSeqMax)
	if p.Threads > 0 {
		cp.n_threads = C.int32_t(p.Threads)
		cp.n_threads_batch = C.int32_t(p.Threads)
	}
	if p.ThreadsBatch > 0 {
		cp.n_threads_batch = C.int32_t(p.ThreadsBatch)
	}
	cp.embeddings = C.bool(p.Embeddings)
	cp.pooling_type = C.enum_llama_pooling_type(p.Pooling)
	if p.FlashAttn {
		cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_ENABLED
	} else {
		cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
	}
	cp.kv_unified = C.bool(!p.NoKVUnified)
	cp.no_perf = C.bool(p.NoPerfCounter)
	abort := (*C.llmrt_abort_t)(C.calloc(1, C.size_t(unsafe.Sizeof(C.llmrt_abort_t{}))))
	if abort == nil {
		return nil, errors.New("new context: out of memory")
	}
	C.llmrt_ctx_params_set_abort(&cp, abort)
	takeLastLog()
	var ge guardErr
	c := C.llmrt_init_from_model(m.c, cp, ge.p())
	if c == nil {
		C.free(unsafe.Pointer(abort))
		reason := takeLastLog()
		if ge.caught() {
			reason = ge.message()
		}
		if reason == "" {
			reason = "llama.cpp could not create the context"
		}
		return nil, fmt.Errorf("new context on %s (n_ctx %d, n_seq %d): %s", m.path, p.NCtx, p.NSeqMax, reason)
	}
	if p.NCtx <= 0 {
		p.NCtx = int(C.llama_n_ctx(c))
	}
	ctx := &Context{model: m, c: c, abort: abort, nVocab: m.info.Vocab, nEmbd: m.info.Embd, params: p, lastEmb: p.Embeddings}
	// Without pools llama.cpp still decodes, starting its workers anew
	// each time, so a failure here costs speed only.
	C.llmrt_pools_attach(c, C.llama_n_threads(c), C.llama_n_threads_batch(c), &ctx.pools)
	return ctx, nil
}

// Close frees the context.
func (c *Context) Close() error {
	if c == nil || !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	C.llama_free(c.c)
	C.llmrt_pools_free(nil, &c.pools)
	for i := range c.retired {
		C.llmrt_pools_free(nil, &c.retired[i])
	}
	c.retired = nil
	C.free(unsafe.Pointer(c.abort))
	c.c = nil
	return nil
}

// Model is the model this context decodes.
func (c *Context) Model() *Model { return c.model }

// NCtx is the number of KV cells.
func (c *Context) NCtx() int { return int(C.llama_n_ctx(c.c)) }

// NCtxSeq is the number of KV cells one sequence may use.
func (c *Context) NCtxSeq() int { return int(C.llama_n_ctx_seq(c.c)) }

// NBatch is the most tokens one Decode accepts.
func (c *Context) NBatch() int { return int(C.llama_n_batch(c.c)) }

// NSeqMax is the number of parallel sequences.
func (c *Context) NSeqMax() int { return int(C.llama_n_seq_max(c.c)) }

// Params returns the parameters the context was made with.
func (c *Context) Params() ContextParams { return c.params }

// SetThreads changes the thread counts for decode and batch processing
// (values below 1 count as 1); new worker pools are made to match, and the
// old ones, paused, are freed with the context.
func (c *Context) SetThreads(decode, batch int) {
	decode, batch = max(decode, 1), max(batch, 1)
	if c.pools.decode != nil {
		C.llama_detach_threadpool(c.c)
		c.retired = append(c.retired, c.pools)
		c.pools = C.llmrt_pools{}
	}
	C.llama_set_n_threads(c.c, C.int32_t(decode), C.int32_t(batch))
	C.llmrt_pools_attach(c.c, C.int(decode), C.int(batch), &c.pools)
}

// Pooled reports whether the context decodes on worker pools of its own
// (bridge.h) and their sizes in threads, for single tokens and for batches.
func (c *Context) Pooled() (decode, batch int, ok bool) {
	if c.pools.decode == nil {
		return 0, 0, false
	}
	return int(c.pools.n_decode), int(c.pools.n_batch), true
}

// ErrKVFull is returned by Decode when no KV slot is free for the batch.
var ErrKVFull = errors.New("decode: no KV cache slot for the batch (context full)")

// ErrAborted is returned by Decode when ctx was cancelled during compute.
var ErrAborted = errors.New("decode: aborted")

// Decode runs the model on a batch. Cancelling ctx aborts the computation
// between graph nodes (CPU backend) and returns ErrAborted wrapped with the
// context's error; the KV cells of an aborted batch are rolled back by
// llama.cpp.
func (c *Context) Decode(ctx context.Context, b *Batch) error {
	if b.c.n_tokens == 0 {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrAborted, ctx.Err())
	}
	if ctx.Done() != nil {
		// The flag lives in C memory that Close frees: wait for a running
		// callback before returning, or it could write after the free.
		flag := (*int32)(unsafe.Pointer(&c.abort.flag))
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			atomic.StoreInt32(flag, 1)
			close(fired)
		})
		defer func() {
			if !stop() {
				<-fired
			}
			atomic.StoreInt32(flag, 0)
		}()
	}
	c.outputs = c.outputs[:0]
	c.nOut = 0
	emb := c.params.Embeddings
	if c.rebuild && c.lastEmb == emb {
		// Differ from the previous graph so llama.cpp rebuilds it (if the
		// previous decode was itself flipped, the real value differs).
		emb = !emb
		C.llama_set_embeddings(c.c, C.bool(emb))
	}
	c.rebuild = false
	c.lastEmb = emb
	var rc C.int32_t
	threw := C.llmrt_decode(c.c, b.c, &rc, c.ge.p()) != 0
	if emb != c.params.Embeddings {
		C.llama_set_embeddings(c.c, C.bool(c.params.Embeddings))
	}
	switch {
	case threw:
		return c.ge.err(fmt.Sprintf("decode %d tokens", b.c.n_tokens))
	case rc == 0:
		flags := unsafe.Slice(b.c.logits, b.cap)[:b.c.n_tokens]
		for _, f := range flags {
			c.outputs = append(c.outputs, f != 0)
			if f != 0 {
				c.nOut++
			}
		}
		return nil
	case rc == 1:
		return ErrKVFull
	case rc == 2:
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %w", ErrAborted, err)
		}
		return ErrAborted
	default:
		reason := takeLastLog()
		return fmt.Errorf("decode %d tokens: llama_decode returned %d: %s", b.c.n_tokens, int(rc), reason)
	}
}

// Logits returns the logits of the i-th output of the last Decode (i indexes
// the batch position whose logits flag was set; -1 is the last output). The
// slice aliases llama.cpp's buffer and is valid until the next Decode.
func (c *Context) Logits(i int) ([]float32, error) {
	if err := c.checkOutput(i); err != nil {
		return nil, fmt.Errorf("logits: %w", err)
	}
	p := C.llama_get_logits_ith(c.c, C.int32_t(i))
	if p == nil {
		return nil, fmt.Errorf("logits: batch position %d has no output", i)
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(p)), c.nVocab), nil
}

// Embedding returns the embedding of batch position i (pooling none) as a
// fresh slice.
func (c *Context) Embedding(i int) ([]float32, error) {
	if err := c.checkOutput(i); err != nil {
		return nil, fmt.Errorf("embedding: %w", err)
	}
	p := C.llama_get_embeddings_ith(c.c, C.int32_t(i))
	if p == nil {
		return nil, fmt.Errorf("embedding: batch position %d has no output", i)
	}
	return append([]float32(nil), unsafe.Slice((*float32)(unsafe.Pointer(p)), c.nEmbd)...), nil
}

func (c *Context) checkOutput(i int) error {
	if i < 0 {
		if -i > c.nOut {
			return fmt.Errorf("output %d out of range: the last decode produced %d outputs", i, c.nOut)
		}
		return nil
	}
	if i >= len(c.outputs) || !c.outputs[i] {
		return fmt.Errorf("batch position %d has no output", i)
	}
	return nil
}

// SeqEmbedding returns the pooled embedding of sequence seq (pooling mean,
// cls or last) as a fresh slice.
func (c *Context) SeqEmbedding(seq int) ([]float32, error) {
	p := C.llama_get_embeddings_seq(c.c, C.llama_seq_id(seq))
	if p == nil {
		return nil, fmt.Errorf("embedding: sequence %d has no pooled output", seq)
	}
	return append([]float32(nil), unsafe.Slice((*float32)(unsafe.Pointer(p)), c.nEmbd)...), nil
}

// SetEmbeddings switches embedding output on or off.
func (c *Context) SetEmbeddings(on bool) {
	c.params.Embeddings = on
	C.llama_set_embeddings(c.c, C.bool(on))
}

// SetCausalAttention switches causal masking (off for encoder-style
// embedding of whole inputs).
func (c *Context) SetCausalAttention(on bool) { C.llama_set_causal_attn(c.c, C.bool(on)) }

// --- KV cache (memory) operations ---

// SeqRemove removes the cells of seq in positions [p0, p1) (p1 < 0: to the
// end; seq < 0: every sequence). It reports false when the cache cannot
// remove part of a sequence (recurrent models) or llama.cpp failed.
func (c *Context) SeqRemove(seq, p0, p1 int) bool {
	var ok C.bool
	if C.llmrt_memory_seq_rm(c.c, C.llama_seq_id(seq), C.llama_pos(p0), C.llama_pos(p1), &ok, c.ge.p()) != 0 {
		c.logCaught("remove KV cells")
		return false
	}
	return bool(ok)
}

// SeqCopy shares the cells of src in [p0, p1) with dst.
func (c *Context) SeqCopy(src, dst, p0, p1 int) {
	if C.llmrt_memory_seq_cp(c.c, C.llama_seq_id(src), C.llama_seq_id(dst), C.llama_pos(p0), C.llama_pos(p1), c.ge.p()) != 0 {
		c.logCaught("copy KV cells")
	}
}

// SeqKeep removes every sequence but seq.
func (c *Context) SeqKeep(seq int) {
	if C.llmrt_memory_seq_keep(c.c, C.llama_seq_id(seq), c.ge.p()) != 0 {
		c.logCaught("keep KV cells")
	}
}

// SeqShift adds delta to the positions of seq in [p0, p1).
func (c *Context) SeqShift(seq, p0, p1, delta int) {
	if C.llmrt_memory_seq_add(c.c, C.llama_seq_id(seq), C.llama_pos(p0), C.llama_pos(p1), C.llama_pos(delta), c.ge.p()) != 0 {
		c.logCaught("shift KV cells")
	}
}

// SeqPosMax is the largest position held for seq, or -1 when it is empty.
func (c *Context) SeqPosMax(seq int) int {
	return int(C.llama_memory_seq_pos_max(C.llama_get_memory(c.c), C.llama_seq_id(seq)))
}

// SeqPosMin is the smallest position held for seq, or -1 when it is empty.
func (c *Context) SeqPosMin(seq int) int {
	return int(C.llama_memory_seq_pos_min(C.llama_get_memory(c.c), C.llama_seq_id(seq)))
}

// ClearMemory empties the KV cache (data too when clearData).
func (c *Context) ClearMemory(clearData bool) {
	if C.llmrt_memory_clear(c.c, C.bool(clearData), c.ge.p()) != 0 {
		c.logCaught("clear the KV cache")
	}
}

// logCaught reports an exception caught during a KV-cache edit, which has
// no error to return; the next Decode fails if the cache is unusable.
func (c *Context) logCaught(what string) {
	if l := logger.Load(); l != nil {
		l.Error("llama.cpp failed", "op", what, "err", c.ge.message())
		return
	}
	fmt.Fprintf(os.Stderr, "llmrt: %s: llama.cpp failed: %s\n", what, c.ge.message())
}

// --- Batches ---

// Batch is a reusable llama_batch of token inputs.
type Batch struct {
	c     C.struct_llama_batch
	cap   int
	nSeq  int
	freed bool
}

// NewBatch allocates a batch for up to capacity tokens, each belonging to at
// most maxSeqPerToken sequences.
func NewBatch(capacity, maxSeqPerToken int) (*Batch, error) {
	Init()
	if capacity <= 0 || maxSeqPerToken <= 0 {
		return nil, fmt.Errorf("new batch: capacity %d and sequences per token %d must be positive", capacity, maxSeqPerToken)
	}
	b := &Batch{c: C.llama_batch_init(C.int32_t(capacity), 0, C.int32_t(maxSeqPerToken)), cap: capacity, nSeq: maxSeqPerToken}
	if b.c.token == nil {
		return nil, errors.New("new batch: out of memory")
	}
	return b, nil
}

// Len is the number of tokens in the batch.
func (b *Batch) Len() int { return int(b.c.n_tokens) }

// Cap is the batch capacity.
func (b *Batch) Cap() int { return b.cap }

// Clear empties the batch for reuse.
func (b *Batch) Clear() { b.c.n_tokens = 0 }

// Add appends token tok at position pos of sequence seq, asking for its
// logits (or embedding) when output is true. It returns the batch index.
func (b *Batch) Add(tok int32, pos, seq int, output bool) (int, error) {
	i := int(b.c.n_tokens)
	if i >= b.cap {
		return -1, fmt.Errorf("batch full (%d tokens)", b.cap)
	}
	unsafe.Slice(b.c.token, b.cap)[i] = C.llama_token(tok)
	unsafe.Slice(b.c.pos, b.cap)[i] = C.llama_pos(pos)
	unsafe.Slice(b.c.n_seq_id, b.cap)[i] = 1
	*unsafe.Slice(b.c.seq_id, b.cap)[i] = C.llama_seq_id(seq)
	var o C.int8_t
	if output {
		o = 1
	}
	unsafe.Slice(b.c.logits, b.cap)[i] = o
	b.c.n_tokens++
	return i, nil
}

// AddTokens appends toks at positions pos0.. of seq; only the last gets an
// output when lastOutput is set. It returns the index of the last token.
func (b *Batch) AddTokens(toks []int32, pos0, seq int, lastOutput bool) (int, error) {
	if int(b.c.n_tokens)+len(toks) > b.cap {
		return -1, fmt.Errorf("batch full: %d + %d tokens exceed %d", b.c.n_tokens, len(toks), b.cap)
	}
	last := -1
	for i, t := range toks {
		last, _ = b.Add(t, pos0+i, seq, lastOutput && i == len(toks)-1)
	}
	return last, nil
}

// SetOutput sets or clears the output flag of batch index i.
func (b *Batch) SetOutput(i int, on bool) {
	var o C.int8_t
	if on {
		o = 1
	}
	unsafe.Slice(b.c.logits, b.cap)[i] = o
}

// Close frees the batch.
func (b *Batch) Close() error {
	if b == nil || b.freed {
		return nil
	}
	b.freed = true
	C.llama_batch_free(b.c)
	return nil
}
