package sched

// The compute buffer estimate replays what llama.cpp does when it creates a
// context (llama-context.cpp, graph_reserve): it builds the worst-case graph
// for one physical batch (n_tokens = min(n_ctx, n_ubatch), one output per
// token), and ggml-alloc (ggml_gallocr) lays the graph's intermediate
// tensors out in one buffer, freeing each tensor after its last consumer,
// running some ops in place over their input, and placing each new tensor
// in the best-fitting free block. The buffer's size is the high-water mark.
//
// simulateGraph rebuilds the llama-family graph (models/llama.cpp with
// build_attn / build_attn_mha / build_ffn from llama-graph.cpp) as a list of
// tensor sizes in ggml's evaluation order and runs the same allocation
// rules. Weights and the KV cache live in their own buffers and are left
// out. Architectures with other graphs (MoE, SWA, recurrent) are estimated
// as if they were llama; RecordActual corrects the rest.

// gtensor is one tensor of the simulated graph.
type gtensor struct {
	size    int64
	srcs    []*gtensor
	view    *gtensor // root tensor this one views (nil: owns its data)
	inplace bool     // the op may reuse its input's memory (ggml_op_can_inplace)
	// allocation state
	children, views int
	allocated       bool
	off             int64
}

// ggraph collects inputs (leaves) and nodes in evaluation order.
type ggraph struct {
	inputs, nodes []*gtensor
}

func (g *ggraph) input(size int64) *gtensor {
	t := &gtensor{size: size}
	g.inputs = append(g.inputs, t)
	return t
}

// op adds a node computing a new tensor from srcs (nil srcs are weights or
// KV cache views: external memory, not tracked).
func (g *ggraph) op(size int64, inplace bool, srcs ...*gtensor) *gtensor {
	t := &gtensor{size: size, inplace: inplace}
	for _, s := range srcs {
		if s != nil {
			t.srcs = append(t.srcs, s)
		}
	}
	g.nodes = append(g.nodes, t)
	return t
}

// viewOf adds a view node (reshape, permute, view): no memory of its own.
func (g *ggraph) viewOf(src *gtensor) *gtensor {
	root := src
	if src.view != nil {
		root = src.view
	}
	t := &gtensor{size: src.size, srcs: []*gtensor{src}, view: root}
	g.nodes = append(g.nodes, t)
	return t
}

// setRows adds a set_rows into the KV cache: a view of external memory.
func (g *ggraph) setRows(srcs ...*gtensor) {
	t := &gtensor{srcs: srcs, view: &gtensor{}}
	g.nodes = append(g.nodes, t)
}

// peak runs ggml-alloc's rules over the graph and returns the buffer size.
func (g *ggraph) peak(align int64) int64 {
	a := &dynAlloc{align: align, free: []block{{0, 1 << 62}}}
	for _, t := range g.inputs {
		t.off = a.alloc(t.size)
		t.allocated = true
	}
	for _, n := range g.nodes {
		if n.view != nil {
			n.view.views++
		}
		for _, s := range n.srcs {
			s.children++
		}
	}
	for _, n := range g.nodes {
		g.allocate(a, n)
		for _, p := range n.srcs {
			p.children--
			if p.children != 0 || p.views != 0 {
				continue
			}
			if p.view != nil {
				r := p.view
				r.views--
				if r.views == 0 && r.children == 0 && r.allocated {
					a.release(r.off, r.size)
					r.allocated = false
				}
			} else if p.allocated {
				a.release(p.off, p.size)
				p.allocated = false
			}
		}
	}
	return a.max
}

func (g *ggraph) allocate(a *dynAlloc, n *gtensor) {
	if n.view != nil || n.allocated {
		return
	}
	n.allocated = true
	if n.inplace {
		// Reuse a parent at its last use with the same layout. Views are
		// never "own" tensors of the allocator, so only direct parents
		// qualify (ggml_gallocr_allocate_node).
		for _, p := range n.srcs {
			if p.view == nil && p.allocated && p.size == n.size && p.children == 1 && p.views == 0 {
				n.off = p.off
				p.allocated = false
				return
			}
		}
	}
	n.off = a.alloc(n.size)
}

// dynAlloc is ggml_dyn_tallocr for one chunk: free blocks sorted by offset,
// the last one open-ended; best fit among the others, else the last.
type dynAlloc struct {
	align int64
	free  []block
	max   int64
}

type block struct{ off, size int64 }

func (a *dynAlloc) alloc(size int64) int64 {
	size = (size + a.align - 1) / a.align * a.align
	best := -1
	for i := 0; i < len(a.free)-1; i++ {
		if a.free[i].size >= size && (best < 0 || a.free[i].size <= a.free[best].size) {
			best = i
		}
	}
	if best < 0 {
		best = len(a.free) - 1
	}
	b := &a.free[best]
	off := b.off
	b.off += size
	b.size -= size
	if b.size == 0 {
		a.free = append(a.free[:best], a.free[best+1:]...)
	}
	a.max = max(a.max, off+size)
	return off
}

func (a *dynAlloc) release(off, size int64) {
	size = (size + a.align - 1) / a.align * a.align
	for i := range a.free {
		b := &a.free[i]
		if b.off+b.size == off {
			b.size += size
			if i+1 < len(a.free) && b.off+b.size == a.free[i+1].off {
				b.size += a.free[i+1].size
				a.free = append(a.free[:i+1], a.free[i+2:]...)
			}
			return
		}
		if off+size == b.off {
			b.off = off
			b.size += size
			if i > 0 && a.free[i-1].off+a.free[i-1].size == b.off {
				a.free[i-1].size += b.size
				a.free = append(a.free[:i], a.free[i+1:]...)
			}
			return
		}
	}
	i := 0
	for i < len(a.free) && a.free[i].off < off {
		i++
	}
	a.free = append(a.free, block{})
	copy(a.free[i+1:], a.free[i:])
	a.free[i] = block{off, size}
}

// graphSizes are the compute buffers of one context (see Estimate).
type graphSizes struct{ full, layers, host int64 }

// cpuAlign is the CPU buffer alignment (TENSOR_ALIGNMENT). GPU backends
// align to 128 or so; the difference is a few kilobytes.
const cpuAlign = 32

func simulateGraph(f ModelFacts, c ContextParams) graphSizes {
	full := buildLlamaGraph(f, c, true).peak(cpuAlign)
	layers := buildLlamaGraph(f, c, false).peak(cpuAlign)
	t := reserveTokens(c)
	// The host keeps the graph inputs (ggml-backend assigns inputs to the
	// CPU) and the token embedding lookup.
	var host int64
	for _, in := range buildLlamaGraph(f, c, false).inputs {
		host += in.size
	}
	host += int64(f.NEmbd) * t * 4
	// A device that runs layers but not the head also receives the hidden
	// state from the previous device.
	return graphSizes{full: full, layers: layers + int64(f.NEmbd)*t*4, host: host}
}

// reserveTokens is the token count of llama.cpp's worst-case ubatch.
func reserveTokens(c ContextParams) int64 {
	t := min(c.NCtx, c.NUBatch)
	if s := c.NSeq; t%s != 0 {
		t = (t + s - 1) / s * s
	}
	return int64(t)
}

// buildLlamaGraph builds the prompt-processing graph that graph_reserve
// allocates: n_tokens = n_outputs = reserveTokens, the full KV cache
// visible (n_kv = cells of one stream).
func buildLlamaGraph(f ModelFacts, c ContextParams, withOutput bool) *ggraph {
	const f32, i32, i64 = 4, 4, 8
	T := reserveTokens(c)
	nkv := int64(c.nCtxSeq())
	E, H := int64(f.NEmbd), int64(f.NHead)
	dk, dv := int64(f.HeadDimK), int64(f.HeadDimV)
	kvK, kvV := int64(f.NHeadKV)*dk, int64(f.NHeadKV)*dv
	F := int64(f.NFF)
	if F == 0 {
		F = 4 * E
	}
	g := &ggraph{}
	tokens := g.input(T * i32)
	pos := g.input(T * i32)
	kIdx := g.input(T * i64)
	vIdx := g.input(T * i64)
	if !c.FlashAttn {
		vIdx.size = T * kvV * i64 // one row per element of the transposed V cache
	}
	mask := g.input(nkv * T * f32)
	outIDs := g.input(T * i32)

	inpL := g.op(E*T*f32, false, tokens) // get_rows(tok_embd, tokens)
	var mask16 *gtensor
	for il := 0; il < f.NLayer; il++ {
		inpSA := inpL
		norm := g.op(E*T*f32, true, inpL) // rms_norm
		cur := g.op(E*T*f32, true, norm)  // * attn_norm
		q := g.op(H*dk*T*f32, false, cur) // wq (+ bias in place)
		qr := g.op(H*dk*T*f32, true, g.viewOf(q), pos)
		v := g.op(kvV*T*f32, false, cur)
		vr := g.viewOf(v)
		k := g.op(kvK*T*f32, false, cur)
		kr := g.op(kvK*T*f32, true, g.viewOf(k), pos)
		g.setRows(g.viewOf(kr), kIdx)
		if c.FlashAttn {
			g.setRows(g.viewOf(vr), vIdx)
		} else {
			g.setRows(g.viewOf(g.viewOf(vr)), vIdx)
		}
		qp := g.viewOf(g.viewOf(qr))
		var attn *gtensor
		if c.FlashAttn {
			if mask16 == nil {
				mask16 = g.op(nkv*T*2, false, mask) // cast to F16
			}
			attn = g.viewOf(g.op(H*dv*T*f32, false, qp, mask16))
		} else {
			kq := g.op(nkv*T*H*f32, false, qp)
			kq = g.op(kq.size, true, kq, mask) // soft_max_ext in place
			kqv := g.op(dv*T*H*f32, false, kq)
			attn = g.op(H*dv*T*f32, false, g.viewOf(kqv)) // cont_2d
		}
		cur = g.op(E*T*f32, false, attn) // wo
		if il == f.NLayer-1 {
			cur = g.op(E*T*f32, false, cur, outIDs)
			inpSA = g.op(E*T*f32, false, inpSA, outIDs)
		}
		ffnInp := g.op(E*T*f32, true, cur, inpSA)
		norm = g.op(E*T*f32, true, ffnInp)
		cur = g.op(E*T*f32, true, norm)
		gate := g.op(F*T*f32, false, cur)
		up := g.op(F*T*f32, false, cur)
		act := g.op(F*T*f32, false, gate, up) // swiglu
		down := g.op(E*T*f32, false, act)
		inpL = g.op(E*T*f32, true, down, ffnInp)
	}
	if withOutput {
		norm := g.op(E*T*f32, true, inpL)
		norm = g.op(E*T*f32, true, norm)
		g.op(int64(f.NVocab)*T*f32, false, norm) // logits
	}
	return g
}
