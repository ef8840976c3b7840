package kernels_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
)

// adapterSpec is a random adapter to generate for a test.
type adapterSpec struct {
	targets []string
	rank    int
	alpha   float32
	std     float64
}

// writeAdapters generates one random adapter file per spec for the model
// at base.
func writeAdapters(t *testing.T, base string, specs []adapterSpec) []string {
	t.Helper()
	f, err := gguf.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for i, s := range specs {
		p := filepath.Join(t.TempDir(), fmt.Sprintf("adapter%d.gguf", i))
		if err := lora.WriteAdapter(p, f.Architecture(), s.alpha, lora.RandomAdapter(f, s.targets, s.rank, s.std, uint64(100+i)), nil); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

func argmax(l []float32) int32 {
	best := 0
	for i, v := range l {
		if v > l[best] {
			best = i
		}
	}
	return int32(best)
}

// llamaGreedy generates n tokens greedily with llama.cpp, with adapter
// (nil: none) applied to the whole context.
func llamaGreedy(t *testing.T, m *kernels.Model, a *kernels.Adapter, prompt []int32, n int) []int32 {
	toks, _ := llamaGreedyLogits(t, m, a, prompt, n)
	return toks
}

// llamaGreedyLogits is llamaGreedy with the logits of every step.
func llamaGreedyLogits(t *testing.T, m *kernels.Model, a *kernels.Adapter, prompt []int32, n int) ([]int32, [][]float32) {
	t.Helper()
	c, err := m.NewContext(kernels.ContextParams{NCtx: 256, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if a != nil {
		if err := c.SetAdapters([]kernels.AdapterScale{{Adapter: a, Scale: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := kernels.NewBatch(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	idx, _ := b.AddTokens(prompt, 0, 0, true)
	var out []int32
	var logits [][]float32
	pos := len(prompt)
	for len(out) < n {
		if err := c.Decode(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		l, err := c.Logits(idx)
		if err != nil {
			t.Fatal(err)
		}
		tok := argmax(l)
		out = append(out, tok)
		logits = append(logits, append([]float32(nil), l...))
		b.Clear()
		idx, _ = b.Add(tok, pos, 0, true)
		pos++
	}
	return out, logits
}

// decoderModels are the models the decoder is checked on: the real
// stories260K (llama, grouped-query attention) and generated qwen2 (q/k/v
// biases, NeoX RoPE, tied embeddings) and llama models.
func decoderModels(t *testing.T) []string {
	t.Helper()
	vocab := testmodel.SharedDir()
	dir := t.TempDir()
	qwen := testmodel.Spec{Arch: "qwen2", Name: "qwen2-tiny", NEmbd: 128, NLayer: 2, NHead: 4, NHeadKV: 2, NFF: 320, NCtxTrain: 1024,
		VocabFile: filepath.Join(vocab, "ggml-vocab-gpt-2.gguf"), TiedEmbeddings: true, QKVBias: true, Type: gguf.TypeF32,
		RopeFreqBase: 1e6, NormEps: 1e-6, Seed: 5}
	llama := testmodel.Spec{Arch: "llama", Name: "llama-tiny", NEmbd: 96, NLayer: 3, NHead: 6, NHeadKV: 2, NFF: 256, NCtxTrain: 1024,
		VocabFile: filepath.Join(vocab, "ggml-vocab-llama-spm.gguf"), Type: gguf.TypeQ8_0, RopeFreqBase: 10000, NormEps: 1e-5, Seed: 6}
	paths := []string{testmodel.Shared(t, "stories260K.gguf")}
	for _, s := range []testmodel.Spec{qwen, llama} {
		p := filepath.Join(dir, s.Name+".gguf")
		if err := testmodel.Write(context.Background(), p, s); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// TestDecoderMixedAdaptersMatchLlamaCpp decodes four sequences in one
// batch, three under different adapters and one under none, and checks
// that each gives, token for token, what llama.cpp gives for it alone with
// its adapter applied.
func TestDecoderMixedAdaptersMatchLlamaCpp(t *testing.T) {
	all := []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}
	for _, path := range decoderModels(t) {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".gguf"), func(t *testing.T) {
			// Adapters strong enough to change the greedy text of a random model.
			std := 0.2
			if !strings.Contains(path, "stories") {
				std = 0.5
			}
			paths := writeAdapters(t, path, []adapterSpec{
				{targets: []string{"attn_q", "attn_v"}, rank: 8, alpha: 16, std: std},
				{targets: all, rank: 4, alpha: 4, std: std},
				{targets: []string{"ffn_up", "ffn_down", "attn_output"}, rank: 2, alpha: 0, std: std},
			})
			m, err := kernels.LoadModel(context.Background(), path, kernels.ModelParams{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			prompts := []string{"Once upon a time", "The little dog ran to the park", "Lily and Tom", "One day, a bird"}
			var toks [][]int32
			for _, p := range prompts {
				tk, err := m.Tokenize(p, true, false)
				if err != nil {
					t.Fatal(err)
				}
				toks = append(toks, tk)
			}
			const n = 24
			adapters := make([]*kernels.Adapter, 4)
			want := make([][]int32, 4)
			wantLogits := make([][][]float32, 4)
			for i := range adapters {
				if i < 3 {
					if adapters[i], err = m.LoadAdapter(paths[i]); err != nil {
						t.Fatal(err)
					}
					defer adapters[i].Close()
				}
				want[i], wantLogits[i] = llamaGreedyLogits(t, m, adapters[i], toks[i], n)
			}
			// The adapters must matter, or the test proves nothing.
			for i := range 3 {
				if plain := llamaGreedy(t, m, nil, toks[i], n); fmt.Sprint(plain) == fmt.Sprint(want[i]) {
					t.Fatalf("adapter %d does not change the greedy text of prompt %d", i, i)
				}
			}

			d, err := kernels.NewDecoder(m, kernels.DecoderParams{Threads: 1, Seqs: 6, CtxPerSeq: 128, Adapters: 4, Rank: 8, Targets: all})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			// Slots out of order, one left empty: a slot index is just a place.
			slotOf := []int{2, 0, 3}
			for i, p := range paths {
				l, err := kernels.ReadLoRA(m, p, true)
				if err != nil {
					t.Fatal(err)
				}
				if l.Unsupported() != "" || l.Bytes() == 0 {
					t.Fatalf("adapter %d: unsupported %q, %d bytes", i, l.Unsupported(), l.Bytes())
				}
				if err := d.SetAdapter(slotOf[i], l); err != nil {
					t.Fatal(err)
				}
				l.Close()
			}
			type seq struct {
				kv, adapter int
				pos         int
				next        []int32 // tokens to feed
				got         []int32
				diff        float64 // largest logit difference from llama.cpp alone
			}
			seqs := []*seq{
				{kv: 4, adapter: slotOf[0], next: toks[0]},
				{kv: 1, adapter: slotOf[1], next: toks[1]},
				{kv: 0, adapter: slotOf[2], next: toks[2]},
				{kv: 5, adapter: -1, next: toks[3]},
			}
			// The last sequence starts three steps late, and its prompt goes
			// in two chunks: steps mix prefill and decode rows.
			for step := 0; ; step++ {
				var batch []kernels.DecodeSeq
				var who []*seq
				for i, s := range seqs {
					if len(s.got) >= n || (i == 3 && step < 3) {
						continue
					}
					feed := s.next
					if i == 3 && s.pos == 0 {
						feed = feed[:2]
					}
					batch = append(batch, kernels.DecodeSeq{Seq: s.kv, Pos: s.pos, Tokens: feed, Adapter: s.adapter, Scale: 1,
						Logits: len(feed) == len(s.next)})
					who = append(who, s)
				}
				if len(batch) == 0 {
					break
				}
				if err := d.Step(batch); err != nil {
					t.Fatal(err)
				}
				out := 0
				for k, s := range who {
					s.pos += len(batch[k].Tokens)
					s.next = s.next[len(batch[k].Tokens):]
					if !batch[k].Logits {
						continue
					}
					l, err := d.Logits(out)
					if err != nil {
						t.Fatal(err)
					}
					out++
					tok := argmax(l)
					if k := len(s.got); k < n {
						s.diff = max(s.diff, maxAbsDiff(l, wantLogits[slices.Index(seqs, s)][k]))
					}
					s.got = append(s.got, tok)
					s.next = []int32{tok}
				}
			}
			for i, s := range seqs {
				if fmt.Sprint(s.got) != fmt.Sprint(want[i]) {
					t.Errorf("sequence %d (adapter %d): decoder gave\n%v\nllama.cpp alone gave\n%v", i, s.adapter, s.got, want[i])
				}
				// Alone, the decoder's logits are llama.cpp's to the bit. In a
				// batch, ggml multiplies F32 weights by several rows with
				// another kernel than by one, and the F16 KV cache turns the
				// rounding difference into up to ~1e-2 (0 for quantized
				// weights); a wrong adapter or graph is off by far more.
				if s.diff > 0.1 {
					t.Errorf("sequence %d: logits differ from llama.cpp's by up to %g", i, s.diff)
				}
				t.Logf("sequence %d: logits within %g of llama.cpp's", i, s.diff)
			}
			mem := d.Memory()
			if mem.KV <= 0 || mem.LoRA <= 0 || mem.Compute <= 0 {
				t.Fatalf("memory %+v", mem)
			}
		})
	}
}

// TestDecoderRefusesBadInput checks the decoder's errors.
func TestDecoderRefusesBadInput(t *testing.T) {
	m := load(t, "stories260K.gguf")
	if _, err := kernels.NewDecoder(m, kernels.DecoderParams{Seqs: 0, CtxPerSeq: 16}); err == nil {
		t.Fatal("decoder without sequences")
	}
	if _, err := kernels.NewDecoder(m, kernels.DecoderParams{Seqs: 1, CtxPerSeq: 16, Adapters: 1, Rank: 4, Targets: []string{"attn_qq"}}); err == nil {
		t.Fatal("unknown target accepted")
	}
	d, err := kernels.NewDecoder(m, kernels.DecoderParams{Threads: 1, Seqs: 2, CtxPerSeq: 16, Adapters: 2, Rank: 4, Targets: []string{"attn_q"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for name, seqs := range map[string][]kernels.DecodeSeq{
		"slot out of range":   {{Seq: 2, Tokens: []int32{1}, Adapter: -1}},
		"repeated slot":       {{Seq: 0, Tokens: []int32{1}, Adapter: -1}, {Seq: 0, Pos: 1, Tokens: []int32{1}, Adapter: -1}},
		"past the context":    {{Seq: 0, Pos: 15, Tokens: []int32{1, 2}, Adapter: -1}},
		"token out of vocab":  {{Seq: 0, Tokens: []int32{512}, Adapter: -1}},
		"empty adapter slot":  {{Seq: 0, Tokens: []int32{1}, Adapter: 1}},
		"adapter out of slot": {{Seq: 0, Tokens: []int32{1}, Adapter: 2}},
		"no tokens":           {{Seq: 0, Adapter: -1}},
	} {
		if err := d.Step(seqs); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	base := testmodel.Shared(t, "stories260K.gguf")
	paths := writeAdapters(t, base, []adapterSpec{
		{targets: []string{"attn_q"}, rank: 8, alpha: 8, std: 0.1}, // rank above the stacks'
		{targets: []string{"attn_v"}, rank: 2, alpha: 2, std: 0.1}, // a projection the stacks lack
		{targets: []string{"output"}, rank: 2, alpha: 2, std: 0.1}, // the head: llama.cpp only
	})
	for i, want := range []string{"rank 8", "attn_v", "output.weight"} {
		l, err := kernels.ReadLoRA(m, paths[i], true)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.SetAdapter(0, l); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("adapter %d: %v, want an error naming %q", i, err, want)
		}
		l.Close()
	}
	if _, err := kernels.ReadLoRA(m, base, false); err == nil || !strings.Contains(err.Error(), "adapter") {
		t.Fatalf("a model read as an adapter: %v", err)
	}
	if err := d.Step([]kernels.DecodeSeq{{Seq: 1, Tokens: []int32{1, 2, 3}, Adapter: -1, Logits: true}}); err != nil {
		t.Fatalf("a good step after refused ones: %v", err)
	}
	if _, err := d.Logits(1); err == nil {
		t.Fatal("logits of an output the step did not have")
	}
}

// TestSampleLogitsIsGreedy checks that a greedy chain sampling a
// decoder's logits picks their argmax.
func TestSampleLogitsIsGreedy(t *testing.T) {
	m := load(t, "stories260K.gguf")
	d, err := kernels.NewDecoder(m, kernels.DecoderParams{Threads: 1, Seqs: 1, CtxPerSeq: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	toks, _ := m.Tokenize("Once upon a time", true, false)
	if err := d.Step([]kernels.DecodeSeq{{Seq: 0, Tokens: toks, Adapter: -1, Logits: true}}); err != nil {
		t.Fatal(err)
	}
	l, err := d.Logits(0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewSampler(kernels.SamplerParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tok, err := s.SampleLogits(l)
	if err != nil || tok != argmax(l) {
		t.Fatalf("sampled %d (%v), argmax %d", tok, err, argmax(l))
	}
	if _, err := s.SampleLogits(l[:10]); err == nil {
		t.Fatal("short logits accepted")
	}
}

// TestDecoderAloneIsLlamaCpp decodes one sequence under an adapter, in F32
// and in F16, and checks its logits against llama.cpp's to the bit: the
// same graph, the same kernels, the same rounding.
func TestDecoderAloneIsLlamaCpp(t *testing.T) {
	path := testmodel.Shared(t, "stories260K.gguf")
	targets := []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_up"}
	m := load(t, "stories260K.gguf")
	toks, _ := m.Tokenize("The cat sat on the mat", true, false)
	for _, typ := range []gguf.Type{gguf.TypeF32, gguf.TypeF16} {
		file := filepath.Join(t.TempDir(), "a.gguf")
		if err := testmodel.WriteAdapter(file, path, testmodel.AdapterSpec{Targets: targets, Rank: 4, Alpha: 8, Std: 0.25, Type: typ, Seed: 3}); err != nil {
			t.Fatal(err)
		}
		a, err := m.LoadAdapter(file)
		if err != nil {
			t.Fatal(err)
		}
		l, err := kernels.ReadLoRA(m, file, true)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.ToLower(typ.String()); l.Type() != want {
			t.Fatalf("adapter type %q, want %q", l.Type(), want)
		}
		for _, ad := range []*kernels.Adapter{nil, a} {
			want, wantLogits := llamaGreedyLogits(t, m, ad, toks, 12)
			d, err := kernels.NewDecoder(m, kernels.DecoderParams{Threads: 1, Seqs: 1, CtxPerSeq: 256, Adapters: 1, Rank: 4, Targets: targets,
				Type: l.Type()})
			if err != nil {
				t.Fatal(err)
			}
			if err := d.SetAdapter(0, l); err != nil {
				t.Fatal(err)
			}
			slot := -1
			if ad != nil {
				slot = 0
			}
			feed, pos := toks, 0
			for k := range want {
				if err := d.Step([]kernels.DecodeSeq{{Seq: 0, Pos: pos, Tokens: feed, Adapter: slot, Scale: 1, Logits: true}}); err != nil {
					t.Fatal(err)
				}
				got, _ := d.Logits(0)
				if diff := maxAbsDiff(got, wantLogits[k]); diff != 0 {
					t.Fatalf("%s adapter %v, token %d: logits differ from llama.cpp's by %g", typ, ad != nil, k, diff)
				}
				pos += len(feed)
				feed = []int32{want[k]}
			}
			d.Close()
		}
		// In stacks of the other type the adapter is converted: close to
		// llama.cpp's logits, not equal.
		other := map[string]string{"f32": "f16", "f16": "f32"}[l.Type()]
		d, err := kernels.NewDecoder(m, kernels.DecoderParams{Threads: 1, Seqs: 1, CtxPerSeq: 256, Adapters: 1, Rank: 4, Targets: targets, Type: other})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.SetAdapter(0, l); err != nil {
			t.Fatal(err)
		}
		_, wantLogits := llamaGreedyLogits(t, m, a, toks, 1)
		if err := d.Step([]kernels.DecodeSeq{{Seq: 0, Tokens: toks, Adapter: 0, Scale: 1, Logits: true}}); err != nil {
			t.Fatal(err)
		}
		got, _ := d.Logits(0)
		if diff := maxAbsDiff(got, wantLogits[0]); diff > 5e-2 {
			t.Fatalf("%s adapter in %s stacks: logits differ from llama.cpp's by %g", typ, other, diff)
		}
		d.Close()
		l.Close()
		a.Close()
	}
}
