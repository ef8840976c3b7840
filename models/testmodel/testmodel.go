// Package testmodel writes random-weight GGUF models of a chosen
// architecture and shape with a real tokenizer taken from a vocabulary
// file, for tests and benchmarks that need a model the shared folder lacks
// (for example Qwen2.5-0.5B's shape, whose per-token cost is realistic).
//
// Weights are N(0, 0.02²), norms 1, biases 0; the same spec always gives
// the same bytes. Tensors are generated in parallel and streamed to disk,
// so a 0.5B-parameter model never sits in memory whole.
//
// It also finds the small real models tests use (SharedDir, Shared).
package testmodel

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/llmrt/llmrt/models/gguf"
)

// Spec describes a model to generate.
type Spec struct {
	Arch                    string // llama, qwen2 or qwen3
	Name                    string
	NEmbd, NLayer, NHead    int
	NHeadKV, NFF, NCtxTrain int
	// NVocab pads the vocabulary with unused tokens up to this size (0:
	// the vocabulary file's size).
	NVocab         int
	VocabFile      string
	TiedEmbeddings bool
	QKVBias        bool
	Type           gguf.Type // F32, F16 or Q8_0 for the matrices
	RopeFreqBase   float32
	NormEps        float32
	Seed           uint64
	ChatTemplate   string
	// ClassLabels makes a reranking model (qwen3 only): rank pooling and
	// a classification head (cls.output) with one output per label;
	// llama.cpp scores a query/document pair by the softmax over them at
	// the last token and reports the first.
	ClassLabels []string
}

// Qwen2_05B is Qwen2.5-0.5B's shape with GPT-2's tokenizer padded to its
// 151,936 tokens (the real per-token cost of the output head).
func Qwen2_05B(vocabDir string, typ gguf.Type) Spec {
	return Spec{Arch: "qwen2", Name: "qwen2-0.5b-random", NEmbd: 896, NLayer: 24, NHead: 14, NHeadKV: 2, NFF: 4864, NCtxTrain: 32768,
		NVocab: 151936, VocabFile: filepath.Join(vocabDir, "ggml-vocab-gpt-2.gguf"), TiedEmbeddings: true, QKVBias: true,
		Type: typ, RopeFreqBase: 1e6, NormEps: 1e-6, Seed: 1}
}

// TinyLlama is a small llama (n_embd 256, 4 layers, 4 heads, ffn 768) with
// Llama's 32,000-token tokenizer, in F32.
func TinyLlama(vocabDir string) Spec {
	return Spec{Arch: "llama", Name: "tiny-llama-random", NEmbd: 256, NLayer: 4, NHead: 4, NHeadKV: 4, NFF: 768, NCtxTrain: 4096,
		VocabFile: filepath.Join(vocabDir, "ggml-vocab-llama-spm.gguf"), Type: gguf.TypeF32, RopeFreqBase: 10000, NormEps: 1e-5, Seed: 1}
}

func (s Spec) check() error {
	switch s.Arch {
	case "llama", "qwen2", "qwen3":
	default:
		return fmt.Errorf("testmodel: architecture %q is not supported (llama, qwen2, qwen3)", s.Arch)
	}
	if s.NEmbd <= 0 || s.NLayer <= 0 || s.NHead <= 0 || s.NFF <= 0 || s.NEmbd%s.NHead != 0 {
		return fmt.Errorf("testmodel: bad shape %+v", s)
	}
	if s.NHeadKV <= 0 || s.NHead%s.NHeadKV != 0 {
		return fmt.Errorf("testmodel: %d heads are not a multiple of %d KV heads", s.NHead, s.NHeadKV)
	}
	if len(s.ClassLabels) > 0 && s.Arch != "qwen3" {
		return fmt.Errorf("testmodel: a reranking model needs the qwen3 architecture, not %s", s.Arch)
	}
	switch s.Type {
	case gguf.TypeF32, gguf.TypeF16, gguf.TypeQ8_0:
	default:
		return fmt.Errorf("testmodel: weight type %s is not supported (F32, F16, Q8_0)", s.Type)
	}
	return nil
}

func fileType(t gguf.Type) uint32 {
	switch t {
	case gguf.TypeF16:
		return 1
	case gguf.TypeQ8_0:
		return 7
	}
	return 0
}

// Write generates the model into path (atomically).
func Write(ctx context.Context, path string, s Spec) error {
	if err := s.check(); err != nil {
		return err
	}
	voc, err := gguf.Open(s.VocabFile)
	if err != nil {
		return fmt.Errorf("testmodel: vocabulary: %w", err)
	}
	tokens, ok := voc.Strings("tokenizer.ggml.tokens")
	if !ok {
		return fmt.Errorf("testmodel: %s has no tokenizer.ggml.tokens", s.VocabFile)
	}
	nVocab := len(tokens)
	if s.NVocab > nVocab {
		nVocab = s.NVocab
	}
	headDim := s.NEmbd / s.NHead
	kvDim := headDim * s.NHeadKV
	return gguf.WriteFileAtomic(path, func(w *gguf.Writer) error {
		a := s.Arch
		name := s.Name
		if name == "" {
			name = a + "-random"
		}
		w.AddKV("general.architecture", a)
		w.AddKV("general.name", name)
		w.AddKV("general.file_type", fileType(s.Type))
		w.AddKV(a+".context_length", uint32(max(s.NCtxTrain, 512)))
		w.AddKV(a+".embedding_length", uint32(s.NEmbd))
		w.AddKV(a+".block_count", uint32(s.NLayer))
		w.AddKV(a+".feed_forward_length", uint32(s.NFF))
		w.AddKV(a+".attention.head_count", uint32(s.NHead))
		w.AddKV(a+".attention.head_count_kv", uint32(s.NHeadKV))
		w.AddKV(a+".rope.freq_base", s.RopeFreqBase)
		w.AddKV(a+".attention.layer_norm_rms_epsilon", s.NormEps)
		if a == "llama" {
			w.AddKV(a+".rope.dimension_count", uint32(headDim))
			w.AddKV(a+".vocab_size", uint32(nVocab))
		}
		if a == "qwen3" {
			w.AddKV(a+".attention.key_length", uint32(headDim))
			w.AddKV(a+".attention.value_length", uint32(headDim))
		}
		for _, kv := range voc.KV {
			if !strings.HasPrefix(kv.Key, "tokenizer.") {
				continue
			}
			if kv.Key == "tokenizer.chat_template" && s.ChatTemplate != "" {
				continue
			}
			w.AddKVs(padVocab(kv, len(tokens), nVocab))
		}
		if s.ChatTemplate != "" {
			w.AddKV("tokenizer.chat_template", s.ChatTemplate)
		}
		if len(s.ClassLabels) > 0 {
			w.AddKV(a+".pooling_type", uint32(4)) // LLAMA_POOLING_TYPE_RANK
			w.AddKV(a+".classifier.output_labels", s.ClassLabels)
		}
		g := &gen{spec: s, ctx: ctx}
		g.matrix(w, "token_embd.weight", s.NEmbd, nVocab)
		for l := 0; l < s.NLayer; l++ {
			p := fmt.Sprintf("blk.%d.", l)
			g.ones(w, p+"attn_norm.weight", s.NEmbd)
			g.matrix(w, p+"attn_q.weight", s.NEmbd, s.NEmbd)
			g.matrix(w, p+"attn_k.weight", s.NEmbd, kvDim)
			g.matrix(w, p+"attn_v.weight", s.NEmbd, kvDim)
			if s.QKVBias {
				g.zeros(w, p+"attn_q.bias", s.NEmbd)
				g.zeros(w, p+"attn_k.bias", kvDim)
				g.zeros(w, p+"attn_v.bias", kvDim)
			}
			if a == "qwen3" {
				g.ones(w, p+"attn_q_norm.weight", headDim)
				g.ones(w, p+"attn_k_norm.weight", headDim)
			}
			g.matrix(w, p+"attn_output.weight", s.NEmbd, s.NEmbd)
			g.ones(w, p+"ffn_norm.weight", s.NEmbd)
			g.matrix(w, p+"ffn_gate.weight", s.NEmbd, s.NFF)
			g.matrix(w, p+"ffn_up.weight", s.NEmbd, s.NFF)
			g.matrix(w, p+"ffn_down.weight", s.NFF, s.NEmbd)
		}
		g.ones(w, "output_norm.weight", s.NEmbd)
		if !s.TiedEmbeddings {
			g.matrix(w, "output.weight", s.NEmbd, nVocab)
		}
		if len(s.ClassLabels) > 0 {
			g.matrix(w, "cls.output.weight", s.NEmbd, len(s.ClassLabels))
		}
		return nil
	})
}

// padVocab extends the per-token arrays with unused tokens up to n.
func padVocab(kv gguf.KV, have, n int) gguf.KV {
	if n == have {
		return kv
	}
	switch v := kv.Value.(type) {
	case []string:
		if kv.Key == "tokenizer.ggml.tokens" && len(v) == have {
			out := append([]string(nil), v...)
			for i := have; i < n; i++ {
				out = append(out, fmt.Sprintf("<|pad_%d|>", i))
			}
			kv.Value = out
		}
	case []float32:
		if len(v) == have {
			out := append([]float32(nil), v...)
			for i := have; i < n; i++ {
				out = append(out, -1e9)
			}
			kv.Value = out
		}
	case []int32:
		if kv.Key == "tokenizer.ggml.token_type" && len(v) == have {
			out := append([]int32(nil), v...)
			for i := have; i < n; i++ {
				out = append(out, 5) // LLAMA_TOKEN_TYPE_UNUSED: never produced by the tokenizer
			}
			kv.Value = out
		}
	}
	return kv
}

type gen struct {
	spec Spec
	ctx  context.Context
	n    uint64 // tensor counter: each tensor has its own random stream
}

func (g *gen) ones(w *gguf.Writer, name string, n int) {
	b := make([]byte, 4*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(1))
	}
	w.AddTensor(name, gguf.TypeF32, []uint64{uint64(n)}, b)
}

func (g *gen) zeros(w *gguf.Writer, name string, n int) {
	w.AddTensor(name, gguf.TypeF32, []uint64{uint64(n)}, make([]byte, 4*n))
}

// matrix adds a [cols, rows] weight of N(0, 0.02²) values, generated in
// parallel row blocks when the file is written.
func (g *gen) matrix(w *gguf.Writer, name string, cols, rows int) {
	g.n++
	stream := g.n
	typ := g.spec.Type
	seed := g.spec.Seed
	ctx := g.ctx
	w.AddTensorFunc(name, typ, []uint64{uint64(cols), uint64(rows)}, func(out io.Writer) error {
		rowBytes := int(typ.RowSize(int64(cols)))
		const block = 256 // rows per work item
		nBlocks := (rows + block - 1) / block
		window := 4 * runtime.NumCPU() // blocks generated ahead of the writer
		sem := make(chan struct{}, runtime.NumCPU())
		for start := 0; start < nBlocks; start += window {
			if err := ctx.Err(); err != nil {
				return err
			}
			end := min(start+window, nBlocks)
			bufs := make([][]byte, end-start)
			var wg sync.WaitGroup
			for b := start; b < end; b++ {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; wg.Done() }()
					r := rand.New(rand.NewPCG(seed, stream<<32|uint64(b)))
					lo, hi := b*block, min((b+1)*block, rows)
					buf := make([]byte, (hi-lo)*rowBytes)
					vals := make([]float32, cols)
					for row := lo; row < hi; row++ {
						for i := range vals {
							vals[i] = float32(r.NormFloat64() * 0.02)
						}
						encodeRow(buf[(row-lo)*rowBytes:], vals, typ)
					}
					bufs[b-start] = buf
				}()
			}
			wg.Wait()
			for _, buf := range bufs {
				if _, err := out.Write(buf); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// encodeRow writes vals as one row of typ.
func encodeRow(dst []byte, vals []float32, typ gguf.Type) {
	switch typ {
	case gguf.TypeF32:
		for i, v := range vals {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case gguf.TypeF16:
		for i, v := range vals {
			binary.LittleEndian.PutUint16(dst[2*i:], F16(v))
		}
	case gguf.TypeQ8_0:
		for b := 0; b < len(vals)/32; b++ {
			blk := vals[32*b : 32*b+32]
			amax := float32(0)
			for _, v := range blk {
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			d := amax / 127
			inv := float32(0)
			if d != 0 {
				inv = 1 / d
			}
			o := dst[34*b:]
			binary.LittleEndian.PutUint16(o, F16(d))
			for i, v := range blk {
				o[2+i] = byte(int8(math.Round(float64(v * inv))))
			}
		}
	}
}

// F16 converts to IEEE half precision, rounding to nearest even.
func F16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	switch {
	case exp >= 31:
		if b&0x7fffffff > 0x7f800000 {
			return sign | 0x7e00 // NaN
		}
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - exp)
		half := uint16(mant >> shift)
		rem := mant & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | half
	}
	half := sign | uint16(exp)<<10 | uint16(mant>>13)
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++
	}
	return half
}

// CachedPath writes the model into dir once (named after a hash of the
// spec) and returns its path; later calls reuse the file.
func CachedPath(ctx context.Context, dir string, s Spec) (string, error) {
	h := sha256.Sum256([]byte(fmt.Sprintf("%+v", s)))
	name := s.Name
	if name == "" {
		name = s.Arch
	}
	p := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.gguf", name, strings.ToLower(s.Type.String()), hex.EncodeToString(h[:4])))
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return p, Write(ctx, p, s)
}

// CacheDir is where benchmarks keep generated models: LLMRT_BENCH_DIR, else
// llmrt-bench in the user's cache directory.
func CacheDir() string {
	if d := os.Getenv("LLMRT_BENCH_DIR"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "llmrt-bench")
	}
	return filepath.Join(os.TempDir(), "llmrt-bench")
}
