package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/llmrt/llmrt/kernels"
)

// slot is one sequence: of llama.cpp's context, or of the decoder (dec).
type slot struct {
	id     int
	dec    bool
	s      *Stream // nil when idle
	cached []int32 // tokens whose KV cells the sequence holds
	key    string  // adapter set the cells were computed under

	// While running:
	prompt  []int32 // full prompt
	nPast   int     // tokens of prompt+generation in the KV cache
	pending int32   // last sampled token, not yet in the cache (-1: none)
	outIdx  int     // this slot's output in the current step (batch index, or decoder output)
	reused  int     // prompt tokens taken from the cache
	nGen    int
	prefill bool
}

// admitPatience is how many admission rounds a request for another adapter
// set waits before the current set stops taking new requests.
const admitPatience = 8

func (e *Engine) loop() {
	defer close(e.done)
	slots := make([]*slot, e.opt.NParallel)
	for i := range slots {
		slots[i] = &slot{id: i, pending: -1}
	}
	dslots := e.ds.slots
	var waiting []*Stream
	curKey := ""

	failAll := func(err error) {
		for _, s := range waiting {
			s.finish(Result{}, err)
		}
		waiting = nil
		for _, pool := range [][]*slot{slots, dslots} {
			for _, sl := range pool {
				if sl.s != nil {
					e.endSlot(sl, Result{}, err, true)
				}
			}
		}
	}
	// take handles one event; it reports false when the engine stops.
	take := func(block bool, timeout time.Duration) bool {
		var timer <-chan time.Time
		if block && timeout > 0 {
			t := time.NewTimer(timeout)
			defer t.Stop()
			timer = t.C
		}
		if !block {
			select {
			case s := <-e.submit:
				waiting = append(waiting, s)
			case r := <-e.loaded:
				waiting = e.onLoaded(r, waiting)
			case <-e.stop:
				return false
			default:
			}
			return true
		}
		select {
		case s := <-e.submit:
			waiting = append(waiting, s)
		case r := <-e.loaded:
			waiting = e.onLoaded(r, waiting)
		case <-e.kick:
		case <-timer:
		case <-e.stop:
			return false
		}
		return true
	}
	stop := func() {
		failAll(ErrClosed)
		for {
			select {
			case s := <-e.submit:
				s.finish(Result{}, ErrClosed)
			default:
				return
			}
		}
	}

	for {
		// Wait for work when idle; otherwise take what has arrived.
		if countStarted(slots)+countStarted(dslots) == 0 && len(waiting) == 0 {
			if !take(true, 0) {
				stop()
				return
			}
		}
		for n := len(e.submit) + len(e.loaded); n > 0; n-- {
			if !take(false, 0) {
				stop()
				return
			}
		}
		select {
		case <-e.stop:
			stop()
			return
		default:
		}

		// Drop requests whose clients went away while waiting.
		kept := waiting[:0]
		for _, s := range waiting {
			if s.ctx.Err() != nil {
				e.stats.queued.Add(-1)
				s.finish(Result{}, s.ctx.Err())
				continue
			}
			kept = append(kept, s)
		}
		waiting = kept

		// Free sequences whose clients went away.
		for _, pool := range [][]*slot{slots, dslots} {
			for _, sl := range pool {
				if sl.s != nil && sl.s.ctx.Err() != nil {
					e.endSlot(sl, Result{}, sl.s.ctx.Err(), true)
				}
			}
		}
		e.reapAdapterSlots()

		waiting = e.admit(slots, waiting, &curKey)
		e.stats.active.Store(int64(countStarted(slots) + countStarted(dslots)))

		ran := e.stepLlama(slots)
		if e.stepDecoder() {
			ran = true
		}
		e.updateKV(slots)
		e.bookMemory()
		if !ran && len(waiting) > 0 {
			// Every request waits (for another adapter set's sequences to
			// end, an adapter's weights or a free sequence): sleep until
			// something happens, without spinning.
			if !take(true, 5*time.Millisecond) {
				stop()
				return
			}
		}
	}
}

// admit starts waiting requests in free sequences, first come first
// served. The decoder takes requests with one adapter it can serve, and
// requests without adapters while it runs or has requests waiting;
// llama.cpp's context takes the others, grouped by adapter set.
func (e *Engine) admit(slots []*slot, waiting []*Stream, curKey *string) []*Stream {
	dslots := e.ds.slots
	free := e.opt.NParallel - countStarted(slots) - countStarted(dslots)
	decBusy := countStarted(dslots) > 0
	for _, s := range waiting {
		decBusy = decBusy || s.path == pathDecoder
	}
	route := func(s *Stream) streamPath {
		if s.path == pathEither {
			if decBusy {
				return pathDecoder
			}
			return pathLlama
		}
		return s.path
	}
	e.ds.refit = false

	// llama.cpp's adapter set: switch to the first waiting request's when
	// none of the current set runs.
	var first *Stream
	for _, s := range waiting {
		if route(s) == pathLlama {
			first = s
			break
		}
	}
	if countStarted(slots) == 0 && first != nil && first.key != *curKey {
		if err := e.lctx.SetAdapters(first.set); err != nil {
			e.stats.queued.Add(-1)
			first.finish(Result{}, fmt.Errorf("apply adapters: %w", err))
			kept := waiting[:0]
			for _, s := range waiting {
				if s != first {
					kept = append(kept, s)
				}
			}
			return kept
		}
		*curKey = first.key
		e.stats.switches.Add(1)
	}
	starving := false
	for _, s := range waiting {
		if route(s) == pathLlama && s.key != *curKey {
			s.waited++
			if s.waited > admitPatience {
				starving = true
			}
		}
	}
	// Starving requests stop admissions to the current set so that it
	// drains; once none of it runs, the set just switched to (the longest
	// waiting request's) is admitted, or nothing would ever run again.
	starving = starving && countStarted(slots) > 0

	kept := waiting[:0]
	for _, s := range waiting {
		started := false
		if free > 0 {
			if route(s) == pathLlama {
				if !starving && s.key == *curKey {
					if sl := e.pickSlot(slots, s); sl != nil {
						e.startSlot(sl, s)
						started = true
					}
				}
			} else {
				ok, err := e.admitDecoder(s)
				if err != nil {
					e.stats.queued.Add(-1)
					s.finish(Result{}, err)
					continue
				}
				started = ok
			}
		}
		if started {
			e.stats.queued.Add(-1)
			free--
			continue
		}
		kept = append(kept, s)
	}
	return kept
}

// stepLlama runs one llama.cpp decode over its sequences. It reports
// whether a decode ran.
func (e *Engine) stepLlama(slots []*slot) bool {
	e.pack(slots)

	// Build the step's batch: one token per generating sequence, and
	// prompt chunks in the room left (at most PrefillChunk tokens while
	// others generate, so they do not stall). Tokens go in sequence-id
	// order: with one KV stream per sequence, llama.cpp puts a run of
	// consecutive ids in one ubatch and starts a new ubatch (another
	// pass over the weights) at every break in the order.
	e.batch.Clear()
	budget := e.batch.Cap()
	generating := 0
	for _, sl := range slots {
		if sl.s != nil && !sl.prefill {
			generating++
		}
	}
	budget -= generating
	if generating > 0 {
		budget = min(budget, e.opt.PrefillChunk)
	}
	var stepSlots []*slot
	for _, sl := range slots {
		switch {
		case sl.s == nil:
			continue
		case !sl.prefill:
			idx, _ := e.batch.Add(sl.pending, sl.nPast, sl.id, true)
			sl.outIdx = idx
		case budget > 0:
			rest := sl.prompt[sl.nPast:]
			n := min(len(rest), budget)
			last := n == len(rest)
			idx, _ := e.batch.AddTokens(rest[:n], sl.nPast, sl.id, last)
			sl.outIdx = -1
			if last {
				sl.outIdx = idx
			}
			sl.nPast += n
			budget -= n
		default:
			continue
		}
		stepSlots = append(stepSlots, sl)
	}
	if e.batch.Len() == 0 {
		return false
	}

	adapters := 0
	if len(e.lctx.Adapters()) > 0 {
		adapters = 1
	}
	e.stats.countStep(adapters)
	t0 := time.Now()
	err := e.lctx.Decode(context.Background(), e.batch)
	e.stats.decodeNanos.Add(int64(time.Since(t0)))
	e.stats.steps.Add(1)
	if errors.Is(err, kernels.ErrKVFull) {
		// Idle sequences' cached cells are the first to go.
		if e.evictIdle(slots) {
			e.rollback(stepSlots)
			return true
		}
	}
	if err != nil {
		e.log.Error("decode failed", "err", err, "tokens", e.batch.Len())
		for _, sl := range stepSlots {
			e.endSlot(sl, Result{}, fmt.Errorf("decode: %w", err), true)
		}
		return true
	}

	// Sample every sequence that produced an output.
	for _, sl := range stepSlots {
		if sl.outIdx < 0 {
			continue // more prompt to prefill
		}
		if sl.prefill {
			sl.prefill = false
			e.stats.prompt.Add(int64(len(sl.prompt)))
			e.stats.cached.Add(int64(sl.reused))
		} else {
			sl.nPast++ // the pending token is now in the cache
		}
		e.sampleSlot(sl)
	}
	return true
}

// pack keeps the running sequences on the lowest sequence ids. With one KV
// stream per sequence, llama.cpp splits a batch into one ubatch per run of
// consecutive ids, and every ubatch reads all the weights again: running
// sequences {0, 2, 3} cost two passes a step where {0, 1, 2} cost one. So a
// running sequence above a free one moves down: its KV stream is copied
// (llama.cpp copies the stream's buffers before the next decode) and the
// two slots trade ids. The free slot's own prefix cache is lost.
func (e *Engine) pack(slots []*slot) {
	for {
		free, run := -1, -1
		for i, sl := range slots {
			if sl.s == nil {
				free = i
				break
			}
		}
		for i := len(slots) - 1; i >= 0; i-- {
			if slots[i].s != nil {
				run = i
				break
			}
		}
		if free < 0 || run < 0 || free > run {
			return
		}
		e.lctx.SeqCopy(run, free, -1, -1)
		// The cells left behind duplicate the moved sequence's: drop them
		// (the buffer copy does not depend on them).
		e.lctx.SeqRemove(run, -1, -1)
		r, f := slots[run], slots[free]
		f.cached = f.cached[:0]
		r.id, f.id = free, run
		slots[free], slots[run] = r, f
		e.stats.moves.Add(1)
	}
}

func countStarted(slots []*slot) int {
	n := 0
	for _, sl := range slots {
		if sl.s != nil {
			n++
		}
	}
	return n
}

// pickSlot chooses the free sequence whose cache shares the longest prefix
// with the request's prompt under the same adapter set; among equals, the
// lowest id (pack would move a higher one down).
func (e *Engine) pickSlot(slots []*slot, s *Stream) *slot {
	var best *slot
	bestN := -1
	for _, sl := range slots {
		if sl.s != nil {
			continue
		}
		n := 0
		if sl.key == s.key {
			n = commonPrefix(sl.cached, s.req.Prompt)
		}
		if n > bestN {
			best, bestN = sl, n
		}
	}
	return best
}

func commonPrefix(a, b []int32) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

func (e *Engine) startSlot(sl *slot, s *Stream) {
	reuse := 0
	if sl.key == s.key {
		reuse = commonPrefix(sl.cached, s.req.Prompt)
	}
	if reuse == len(s.req.Prompt) {
		reuse-- // the last prompt token must be decoded to get its logits
	}
	if sl.dec {
		// The decoder's cells are positions: those from reuse on are
		// overwritten as the prompt is decoded.
		if s.ad != nil {
			s.ad.running++
		}
	} else if !e.lctx.SeqRemove(sl.id, reuse, -1) {
		e.lctx.SeqRemove(sl.id, -1, -1)
		reuse = 0
	}
	sl.s = s
	sl.key = s.key
	sl.prompt = s.req.Prompt
	sl.cached = append(sl.cached[:min(reuse, len(sl.cached))], s.req.Prompt[reuse:]...)
	sl.nPast = reuse
	sl.reused = reuse
	sl.pending = -1
	sl.nGen = 0
	sl.prefill = true
	e.stats.requests.Add(1)
	// Penalties look at the prompt too, as llama.cpp's server does. A
	// grammar must not see the prompt (llama.cpp would reject it), and the
	// chain cannot accept for one sampler only, so with a grammar the
	// penalties see generated tokens only.
	if s.req.Sampling.Grammar == "" {
		for _, t := range s.req.Prompt {
			if err := s.smp.Accept(t); err != nil {
				e.endSlot(sl, Result{}, err, true)
				return
			}
		}
	}
}

// rollback undoes the bookkeeping of a step whose decode did not happen.
func (e *Engine) rollback(stepSlots []*slot) {
	for _, sl := range stepSlots {
		if sl.prefill {
			// Recompute prompt position from what the cache really holds.
			sl.nPast = e.lctx.SeqPosMax(sl.id) + 1
		}
	}
}

// evictIdle drops the cached cells of idle sequences; it reports whether
// anything was freed.
func (e *Engine) evictIdle(slots []*slot) bool {
	freed := false
	for _, sl := range slots {
		if sl.s == nil && len(sl.cached) > 0 {
			e.lctx.SeqRemove(sl.id, -1, -1)
			sl.cached = sl.cached[:0]
			freed = true
		}
	}
	return freed
}

func (e *Engine) updateKV(slots []*slot) {
	used := 0
	for _, pool := range [][]*slot{slots, e.ds.slots} {
		for _, sl := range pool {
			if sl.s != nil {
				used += sl.nPast
			} else {
				used += len(sl.cached)
			}
		}
	}
	e.stats.kvUsed.Store(int64(used))
	e.stats.active.Store(int64(countStarted(slots) + countStarted(e.ds.slots)))
}

func (e *Engine) sampleSlot(sl *slot) {
	s := sl.s
	var logits []float32
	var tok int32
	var err error
	if sl.dec {
		var l []float32
		if l, err = e.ds.d.Logits(sl.outIdx); err == nil {
			if s.req.Logprobs || s.req.TopLogprobs > 0 {
				logits = append([]float32(nil), l...)
			}
			tok, err = s.smp.SampleLogits(l)
		}
	} else {
		if s.req.Logprobs || s.req.TopLogprobs > 0 {
			l, err := e.lctx.Logits(sl.outIdx)
			if err == nil {
				logits = append([]float32(nil), l...)
			}
		}
		tok, err = s.smp.Sample(e.lctx, sl.outIdx)
	}
	if err != nil {
		e.endSlot(sl, Result{}, err, true)
		return
	}
	sl.nGen++
	e.stats.generated.Add(1)
	if !s.req.IgnoreEOS && e.model.IsEOG(tok) {
		reason := FinishStop
		if s.smp.Closed() { // the grammar's ending was written for want of tokens
			reason = FinishLength
		}
		e.endSlot(sl, e.result(sl, reason), nil, false)
		return
	}
	t := Token{ID: tok, Text: string(e.model.TokenPiece(tok, false))}
	if logits != nil {
		t.Logprob, t.Top = e.logprobs(logits, tok, s.req.TopLogprobs)
	}
	sl.pending = tok
	sl.cached = append(sl.cached, tok)
	if s.addToken(t) {
		// The token that completed the stop string is not kept in the
		// cache bookkeeping beyond what was decoded.
		sl.cached = sl.cached[:len(sl.cached)-1]
		e.endSlot(sl, e.result(sl, FinishStop), nil, false)
		return
	}
	if s.req.MaxTokens > 0 && sl.nGen >= s.req.MaxTokens {
		sl.cached = sl.cached[:len(sl.cached)-1]
		s.flush()
		e.endSlot(sl, e.result(sl, FinishLength), nil, false)
		return
	}
	if sl.nPast+1 >= e.opt.CtxPerSeq {
		sl.cached = sl.cached[:len(sl.cached)-1]
		s.flush()
		e.endSlot(sl, e.result(sl, FinishLength), nil, false)
	}
}

func (e *Engine) result(sl *slot, reason string) Result {
	s := sl.s
	if reason == FinishStop {
		s.flushIfNoStop()
	}
	now := time.Now()
	r := Result{
		Text:             s.text.String(),
		Tokens:           s.generated,
		FinishReason:     reason,
		PromptTokens:     len(sl.prompt),
		CachedTokens:     sl.reused,
		CompletionTokens: sl.nGen,
		Duration:         now.Sub(s.start),
	}
	if !s.firstTok.IsZero() {
		r.TimeToFirstToken = s.firstTok.Sub(s.start)
	}
	return r
}

// endSlot finishes the slot's stream. A dropped sequence (client gone or
// error) loses its cells; a finished one keeps them for prefix reuse.
func (e *Engine) endSlot(sl *slot, res Result, err error, drop bool) {
	if sl.dec && sl.s.ad != nil {
		sl.s.ad.running--
	}
	if drop {
		if !sl.dec {
			e.lctx.SeqRemove(sl.id, -1, -1)
		}
		sl.cached = sl.cached[:0]
	} else {
		// Keep exactly the cells that were decoded.
		sl.cached = sl.cached[:min(len(sl.cached), sl.nPast)]
	}
	sl.s.finish(res, err)
	sl.s = nil
	sl.prompt = nil
	sl.pending = -1
}

// logprobs computes the chosen token's log-probability and the top n
// alternatives from raw logits.
func (e *Engine) logprobs(logits []float32, tok int32, n int) (float32, []TopLogprob) {
	maxL := float32(math.Inf(-1))
	for _, l := range logits {
		if l > maxL {
			maxL = l
		}
	}
	var sum float64
	for _, l := range logits {
		sum += math.Exp(float64(l - maxL))
	}
	lse := float64(maxL) + math.Log(sum)
	lp := float32(float64(logits[tok]) - lse)
	if n <= 0 {
		return lp, nil
	}
	n = min(n, 20, len(logits))
	idx := make([]int32, 0, n+1)
	for i := range logits {
		if len(idx) < n || logits[i] > logits[idx[len(idx)-1]] {
			idx = append(idx, int32(i))
			sort.Slice(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
			if len(idx) > n {
				idx = idx[:n]
			}
		}
	}
	top := make([]TopLogprob, len(idx))
	for i, id := range idx {
		top[i] = TopLogprob{ID: id, Text: string(e.model.TokenPiece(id, false)), Logprob: float32(float64(logits[id]) - lse)}
	}
	return lp, top
}
