package kernels_test

import (
	"context"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/testmodel"
)

// llamaLogits decodes toks in a fresh llama.cpp context and returns the
// logits of every position.
func llamaLogits(t *testing.T, m *kernels.Model, toks []int32) [][]float32 {
	t.Helper()
	c, err := m.NewContext(kernels.ContextParams{NCtx: 256, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := kernels.NewBatch(len(toks), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i, tok := range toks {
		b.Add(tok, i, 0, true)
	}
	if err := c.Decode(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	out := make([][]float32, len(toks))
	for i := range toks {
		l, err := c.Logits(i)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = append([]float32(nil), l...)
	}
	return out
}

// setB gives every LoRA B of n normal values of standard deviation std
// from seed: a fresh adapter's B is zero, which leaves A's gradients zero.
func setB(t *testing.T, n *kernels.Net, seed uint64, std float64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed+1))
	for i, p := range n.Params() {
		if strings.HasSuffix(p.Name, ".lora_b") {
			v := make([]float32, p.Shape[0]*p.Shape[1])
			for k := range v {
				v[k] = float32(rng.NormFloat64() * std)
			}
			if err := n.Set(i, kernels.ParamValue, v); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func maxAbsDiff(a, b []float32) float64 {
	var m float64
	for i := range a {
		m = max(m, math.Abs(float64(a[i]-b[i])))
	}
	return m
}

func iota32(n, from int) []int32 {
	s := make([]int32, n)
	for i := range s {
		s[i] = int32(from + i)
	}
	return s
}

func TestNetLogitsMatchLlamaCpp(t *testing.T) {
	m := load(t, "stories260K.gguf")
	n, err := kernels.NewNet(m, kernels.NetParams{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	toks, _ := m.Tokenize("Once upon a time, there was a little girl named Lily.", true, false)
	want := llamaLogits(t, m, toks)
	got, err := n.Logits(toks, iota32(len(toks), 0), make([]int32, len(toks)))
	if err != nil {
		t.Fatal(err)
	}
	V := m.Info().Vocab
	for i := range toks {
		// llama.cpp keeps K and V in f16: agreement to ~1e-2 on logits of
		// magnitude ~10 is the f16 rounding, a wrong graph is off by units.
		if d := maxAbsDiff(got[i*V:(i+1)*V], want[i]); d > 2e-2 {
			t.Fatalf("position %d: logits differ from llama.cpp by %g", i, d)
		}
	}

	// Packing: two examples in one row, separated by segment ids and with
	// positions restarting, give the logits each has alone.
	a, _ := m.Tokenize("The cat sat on the mat.", true, false)
	b, _ := m.Tokenize("Tom had a big red ball.", true, false)
	row := append(append([]int32(nil), a...), b...)
	pos := append(iota32(len(a), 0), iota32(len(b), 0)...)
	seg := append(make([]int32, len(a)), make([]int32, len(b))...)
	for i := len(a); i < len(row); i++ {
		seg[i] = 1
	}
	packed, err := n.Logits(row, pos, seg)
	if err != nil {
		t.Fatal(err)
	}
	alone, err := n.Logits(b, iota32(len(b), 0), make([]int32, len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(packed[len(a)*V:], alone); d > 1e-4 {
		t.Fatalf("packed segment differs from the example alone by %g: attention leaks across segments", d)
	}

	if _, err := n.Logits([]int32{1, 9999}, []int32{0, 1}, []int32{0, 0}); err == nil || !strings.Contains(err.Error(), "vocabulary") {
		t.Fatalf("out-of-vocabulary token: %v", err)
	}
	if _, err := n.Logits([]int32{1, 2}, []int32{0}, []int32{0, 0}); err == nil {
		t.Fatal("mismatched row lengths accepted")
	}
}

func TestNetEmbedMatchesLlamaCpp(t *testing.T) {
	m := load(t, "stories260K.gguf")
	n, err := kernels.NewNet(m, kernels.NetParams{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	texts := []string{"Once upon a time", "The little dog ran to the park and played all day.", "Lily"}
	var seqs [][]int32
	for _, s := range texts {
		toks, _ := m.Tokenize(s, true, false)
		seqs = append(seqs, toks)
	}
	got, err := n.Embed(context.Background(), seqs, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.NewContext(kernels.ContextParams{NCtx: 256, NSeqMax: 1, Threads: 2, Embeddings: true, Pooling: kernels.PoolingMean})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, _ := kernels.NewBatch(256, 1)
	defer b.Close()
	for i, toks := range seqs {
		b.Clear()
		c.SeqRemove(0, -1, -1)
		b.AddTokens(toks, 0, 0, true)
		for k := range toks {
			b.SetOutput(k, true)
		}
		if err := c.Decode(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		want, err := c.SeqEmbedding(0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got[i]) != len(want) {
			t.Fatalf("embedding %d: width %d, want %d", i, len(got[i]), len(want))
		}
		if d := maxAbsDiff(got[i], want); d > 1e-2 {
			t.Fatalf("embedding %d differs from llama.cpp's mean pooling by %g", i, d)
		}
	}
	if _, err := n.Embed(context.Background(), [][]int32{{1}, {}}, 0); err == nil {
		t.Fatal("empty input accepted")
	}
}

// TestNetGradientCheck compares the LoRA gradients of the training graph
// with central finite differences of its own loss.
func TestNetGradientCheck(t *testing.T) {
	m := load(t, "stories260K.gguf")
	n, err := kernels.NewNet(m, kernels.NetParams{Threads: 2, Rank: 4, Alpha: 8, Seed: 7,
		Targets: []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if len(n.Params()) != 2*7*5 {
		t.Fatalf("%d trained tensors, want 70", len(n.Params()))
	}
	// B starts at zero (a fresh adapter is the identity); give it values
	// so that every gradient is non-trivial.
	setB(t, n, 1, 0.1)
	toks, _ := m.Tokenize("Once upon a time, there was a little girl named Lily. She loved to play", true, false)
	L := len(toks)
	pos, seg := iota32(L, 0), make([]int32, L)
	labels := make([]int32, L)
	for i := range labels {
		labels[i] = -1
		if i >= L/2 && i+1 < L { // prompt masked, answer trained
			labels[i] = toks[i+1]
		}
	}
	loss0, nl, err := n.Loss(toks, pos, seg, labels, true)
	if err != nil {
		t.Fatal(err)
	}
	if nl != L-1-L/2 || !(loss0 > 0) {
		t.Fatalf("loss %g over %d labelled tokens", loss0, nl)
	}
	const h = 1e-2
	checked := 0
	for _, pi := range []int{0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 68, 69} { // q/k/v/o A and B of layer 0, ffn_down of layer 0 and the last
		g, err := n.Get(pi, kernels.ParamGrad)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := n.Get(pi, kernels.ParamValue)
		idx := make([]int, len(g))
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool { return math.Abs(float64(g[idx[a]])) > math.Abs(float64(g[idx[b]])) })
		for _, k := range idx[:3] {
			orig := w[k]
			eval := func(x float32) float64 {
				w[k] = x
				if err := n.Set(pi, kernels.ParamValue, w); err != nil {
					t.Fatal(err)
				}
				l, _, err := n.Loss(toks, pos, seg, labels, false)
				if err != nil {
					t.Fatal(err)
				}
				return float64(l)
			}
			fd := (eval(orig+h) - eval(orig-h)) / (2 * h)
			eval(orig)
			rel := math.Abs(fd-float64(g[k])) / max(math.Abs(fd), math.Abs(float64(g[k])), 1e-4)
			if rel > 1e-2 {
				t.Errorf("%s[%d]: gradient %g, finite difference %g (relative error %.3g)", n.Params()[pi].Name, k, g[k], fd, rel)
			}
			checked++
		}
	}
	t.Logf("checked %d gradient entries; loss %.4f over %d tokens", checked, loss0, nl)

	// The masked prompt contributes nothing: changing a prompt-only label
	// set to -1 keeps the loss, and a row with no labels has loss 0.
	none := make([]int32, L)
	for i := range none {
		none[i] = -1
	}
	if l, k, err := n.Loss(toks, pos, seg, none, true); err != nil || l != 0 || k != 0 {
		t.Fatalf("row without labels: loss %g over %d (%v)", l, k, err)
	}
}

// TestNetAdamWLearns trains a rank-8 adapter on one sentence until its
// loss falls well below the base model's.
func TestNetAdamWLearns(t *testing.T) {
	m := load(t, "stories260K.gguf")
	n, err := kernels.NewNet(m, kernels.NetParams{Threads: 2, Rank: 8, Alpha: 16, Seed: 1, Targets: []string{"attn_q", "attn_v", "ffn_up", "ffn_down"}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	toks, _ := m.Tokenize("The purple zebra named Quix flew over the frozen lake.", true, false)
	L := len(toks)
	labels := make([]int32, L)
	for i := range labels {
		labels[i] = -1
		if i+1 < L {
			labels[i] = toks[i+1]
		}
	}
	pos, seg := iota32(L, 0), make([]int32, L)
	first, _, err := n.Loss(toks, pos, seg, labels, false)
	if err != nil {
		t.Fatal(err)
	}
	var last float32
	for step := 1; step <= 40; step++ {
		if last, _, err = n.Loss(toks, pos, seg, labels, true); err != nil {
			t.Fatal(err)
		}
		if err := n.AdamW(1e-2, kernels.DefaultAdam, 1, step); err != nil {
			t.Fatal(err)
		}
	}
	if !(last < first/3) {
		t.Fatalf("loss went from %.3f to %.3f in 40 steps; expected it to fall below a third", first, last)
	}
	mv, err := n.Get(0, kernels.ParamAdamM)
	if err != nil {
		t.Fatal(err)
	}
	if maxAbsDiff(mv, make([]float32, len(mv))) == 0 {
		t.Fatal("AdamW moments stayed zero")
	}
	g, _ := n.Get(0, kernels.ParamGrad)
	if maxAbsDiff(g, make([]float32, len(g))) != 0 {
		t.Fatal("gradients not cleared after the step")
	}
	t.Logf("loss %.3f -> %.3f; trained tensors use %d bytes", first, last, n.ParamBytes())
}

func TestNetRefusesVocabOnly(t *testing.T) {
	m, err := kernels.LoadModel(context.Background(), testmodel.Shared(t, "ggml-vocab-gpt-2.gguf"), kernels.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := kernels.NewNet(m, kernels.NetParams{}); err == nil {
		t.Fatal("net over a vocab-only model")
	}
	s := load(t, "stories260K.gguf")
	if _, err := kernels.NewNet(s, kernels.NetParams{Rank: 4, Targets: []string{"attn_qq"}}); err == nil || !strings.Contains(err.Error(), "attn_q") {
		t.Fatalf("unknown target: %v", err)
	}
}

// prefRow packs preference pairs into one row: for each pair, the prompt
// with the chosen answer (segment 2k), then the prompt with the rejected
// answer (segment 2k+1), answers labelled.
func prefRow(t *testing.T, m *kernels.Model, pairs [][3]string) (toks, pos, seg, labels []int32) {
	t.Helper()
	for k, p := range pairs {
		prompt, _ := m.Tokenize(p[0], true, false)
		for j, ans := range []string{p[1], p[2]} {
			a, _ := m.Tokenize(ans, false, false)
			s := append(append([]int32(nil), prompt...), a...)
			for i, tok := range s {
				toks = append(toks, tok)
				pos = append(pos, int32(i))
				seg = append(seg, int32(2*k+j))
				l := int32(-1)
				if i+1 >= len(prompt) && i+1 < len(s) {
					l = s[i+1]
				}
				labels = append(labels, l)
			}
		}
	}
	return
}

// logSoftmaxAt is log p(label) from one row of logits.
func logSoftmaxAt(row []float32, label int32) float64 {
	mx := math.Inf(-1)
	for _, v := range row {
		mx = max(mx, float64(v))
	}
	var s float64
	for _, v := range row {
		s += math.Exp(float64(v) - mx)
	}
	return float64(row[label]) - mx - math.Log(s)
}

// TestNetDPOGradientCheck checks the per-segment log-probabilities (with
// and without the LoRA terms) against log-softmaxed logits, and the DPO
// loss's LoRA gradients against central finite differences of the loss.
func TestNetDPOGradientCheck(t *testing.T) {
	m := load(t, "stories260K.gguf")
	n, err := kernels.NewNet(m, kernels.NetParams{Threads: 1, Rank: 4, Alpha: 8, Seed: 3,
		Targets: []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	base, err := kernels.NewNet(m, kernels.NetParams{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	setB(t, n, 5, 0.03)
	pairs := [][3]string{
		{"Once upon a time", " there was a little girl named Lily.", " the big dog ate a red ball and ran away."},
		{"Tom went to the park.", " He played with his friend.", " It was very cold and dark."},
	}
	toks, pos, seg, labels := prefRow(t, m, pairs)

	// Per-segment log-probabilities: with LoRA from this net's logits,
	// without LoRA from a net that has none (the base model).
	V := m.Info().Vocab
	for _, withLoRA := range []bool{true, false} {
		got, err := n.SeqLogProbs(toks, pos, seg, labels, withLoRA)
		if err != nil {
			t.Fatal(err)
		}
		src := n
		if !withLoRA {
			src = base
		}
		logits, err := src.Logits(toks, pos, seg)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]float64, 4)
		for i, l := range labels {
			if l >= 0 {
				want[seg[i]] += logSoftmaxAt(logits[i*V:(i+1)*V], l)
			}
		}
		for s := range want {
			if d := math.Abs(float64(got[s]) - want[s]); d > 1e-3*max(1, math.Abs(want[s])) {
				t.Fatalf("LoRA %v, segment %d: log-probability %g, from logits %g", withLoRA, s, got[s], want[s])
			}
		}
	}
	ref, err := n.SeqLogProbs(toks, pos, seg, labels, false)
	if err != nil {
		t.Fatal(err)
	}
	// Plain DPO plus the chosen answers' own loss (RPO), so that the
	// check covers both terms.
	const beta, sft = 0.1, 0.5
	loss0, pi, err := n.DPO(toks, pos, seg, labels, ref, beta, sft, true)
	if err != nil {
		t.Fatal(err)
	}
	nc := make([]float64, 4)
	for i, l := range labels {
		if l >= 0 {
			nc[seg[i]]++
		}
	}
	var want float64
	for k := 0; k < 2; k++ {
		z := beta * (float64(pi[2*k]-ref[2*k]) - float64(pi[2*k+1]-ref[2*k+1]))
		want += math.Log1p(math.Exp(-z)) - sft*float64(pi[2*k])/nc[2*k]
		// Away from saturation, so that the gradients are not vanishing.
		if math.Abs(z) < 0.05 || math.Abs(z) > 3 {
			t.Fatalf("pair %d: z = %g (policy %v, reference %v); the check wants 0.05 < |z| < 3", k, z, pi, ref)
		}
	}
	if math.Abs(float64(loss0)-want) > 1e-3 {
		t.Fatalf("DPO loss %g, from its log-probabilities %g", loss0, want)
	}
	const h = 1e-2
	checked := 0
	for _, pi := range []int{0, 1, 2, 3, 6, 7, 12, 13, 68, 69} {
		g, err := n.Get(pi, kernels.ParamGrad)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := n.Get(pi, kernels.ParamValue)
		idx := make([]int, len(g))
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool { return math.Abs(float64(g[idx[a]])) > math.Abs(float64(g[idx[b]])) })
		for _, k := range idx[:3] {
			orig := w[k]
			eval := func(x float32) float64 {
				w[k] = x
				if err := n.Set(pi, kernels.ParamValue, w); err != nil {
					t.Fatal(err)
				}
				l, _, err := n.DPO(toks, pos, seg, labels, ref, beta, sft, false)
				if err != nil {
					t.Fatal(err)
				}
				return float64(l)
			}
			fd := (eval(orig+h) - eval(orig-h)) / (2 * h)
			eval(orig)
			rel := math.Abs(fd-float64(g[k])) / max(math.Abs(fd), math.Abs(float64(g[k])), 1e-4)
			if rel > 2e-2 {
				t.Errorf("%s[%d]: DPO gradient %g, finite difference %g (relative error %.3g)", n.Params()[pi].Name, k, g[k], fd, rel)
			}
			checked++
		}
	}
	t.Logf("checked %d DPO gradient entries; loss %.4f over 2 pairs", checked, loss0)

	// A pair whose rejected answer has no labelled token is refused.
	bad := append([]int32(nil), labels...)
	for i := range bad {
		if seg[i] == 3 {
			bad[i] = -1
		}
	}
	if _, _, err := n.DPO(toks, pos, seg, bad, ref, beta, 0, false); err == nil || !strings.Contains(err.Error(), "rejected") {
		t.Fatalf("pair without a labelled rejected answer: %v", err)
	}
	if _, _, err := n.DPO(toks, pos, seg, labels, ref[:3], beta, 0, false); err == nil {
		t.Fatal("three reference values for four segments accepted")
	}
}

// A net with Tiles runs its Q8_0 matmuls of 16 or more tokens on AMX-INT8
// and its input gradients through Q8_0 weights on AMX-BF16 where the CPU
// has them: the logits of the net without, up to rounding, and gradients
// within bf16 rounding; a net without Tiles (embeddings, and serving's
// decoder, which never has them) leaves the tiles alone.
func TestNetTiles(t *testing.T) {
	path := decoderModels(t)[2] // llama-tiny, Q8_0
	m, err := kernels.LoadModel(context.Background(), path, kernels.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	all := []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}
	nets := make([]*kernels.Net, 2) // without, with tiles
	for i := range nets {
		n, err := kernels.NewNet(m, kernels.NetParams{Threads: 2, Rank: 4, Alpha: 8, Seed: 3, Targets: all, Tiles: i == 1})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		setB(t, n, 1, 0.1) // the same non-zero B in both, so that every gradient flows
		nets[i] = n
	}
	plain, tiled := nets[0], nets[1]
	toks, err := m.Tokenize(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 4), true, false)
	if err != nil || len(toks) < 32 {
		t.Fatalf("%d tokens, %v", len(toks), err)
	}
	pos, seg := iota32(len(toks), 0), make([]int32, len(toks))
	labels := make([]int32, len(toks))
	for i := range labels {
		labels[i] = -1
		if i+1 < len(toks) {
			labels[i] = toks[i+1]
		}
	}
	q8, bf16 := kernels.Q8AMXCalls(), kernels.OutProdAMXCalls()
	want, err := plain.Logits(toks, pos, seg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Embed(context.Background(), [][]int32{toks}, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := plain.Loss(toks, pos, seg, labels, true); err != nil {
		t.Fatal(err)
	}
	if kernels.Q8AMXCalls() != q8 || kernels.OutProdAMXCalls() != bf16 {
		t.Fatalf("a net without Tiles ran %d matmul and %d gradient shares on AMX", kernels.Q8AMXCalls()-q8, kernels.OutProdAMXCalls()-bf16)
	}
	got, err := tiled.Logits(toks, pos, seg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tiled.Loss(toks, pos, seg, labels, true); err != nil {
		t.Fatal(err)
	}
	ranQ8, ranBF16 := kernels.Q8AMXCalls()-q8, kernels.OutProdAMXCalls()-bf16
	if kernels.Q8AMXAvailable() != (ranQ8 > 0) || kernels.OutProdAMXAvailable() != (ranBF16 > 0) {
		t.Fatalf("AMX-INT8 %v, AMX-BF16 %v available; %d matmul and %d gradient shares ran on tiles",
			kernels.Q8AMXAvailable(), kernels.OutProdAMXAvailable(), ranQ8, ranBF16)
	}
	// The forward pass sums the same int8 products exactly per block;
	// only the float rounding of the scaled sums differs.
	if d := maxAbsDiff(got, want); d > 1e-3 {
		t.Fatalf("logits with tiles differ from those without by %g", d)
	}
	// The gradients went through bf16 input gradients: each LoRA tensor's
	// gradient within a few times bf16's 2^-8 of the fp32 one, in norm.
	worst := 0.0
	for pi, p := range plain.Params() {
		a, err := plain.Get(pi, kernels.ParamGrad)
		if err != nil {
			t.Fatal(err)
		}
		b, err := tiled.Get(pi, kernels.ParamGrad)
		if err != nil {
			t.Fatal(err)
		}
		var dd, aa float64
		for k := range a {
			dd += float64(a[k]-b[k]) * float64(a[k]-b[k])
			aa += float64(a[k]) * float64(a[k])
		}
		if aa == 0 {
			t.Fatalf("%s: no gradient", p.Name)
		}
		rel := math.Sqrt(dd / aa)
		worst = max(worst, rel)
		if rel > 0.03 {
			t.Fatalf("%s: gradient with tiles off by %.3g of its norm", p.Name, rel)
		}
	}
	t.Logf("AMX-INT8 %v, AMX-BF16 %v: %d matmul and %d gradient shares on tiles; logits within %g, gradients within %.2g of their norm",
		kernels.Q8AMXAvailable(), kernels.OutProdAMXAvailable(), ranQ8, ranBF16, maxAbsDiff(got, want), worst)
}
