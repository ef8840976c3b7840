package gguf_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
)

func TestSharedModels(t *testing.T) {
	for _, c := range []struct {
		file, arch    string
		vocab, tensor int
		params        int64
	}{
		{"stories260K.gguf", "llama", 512, 48, 292800},
		{"llama-2-tiny-random.gguf", "llama", 32000, 12, 513048},
		{"ggml-vocab-llama-spm.gguf", "llama", 32000, 0, 0},
		{"ggml-vocab-phi-3.gguf", "phi3", 32064, 0, 0},
		{"ggml-vocab-gpt-2.gguf", "gpt2", 50257, 0, 0},
		{"ggml-vocab-bert-bge.gguf", "bert", 30522, 0, 0},
	} {
		t.Run(c.file, func(t *testing.T) {
			f, err := gguf.Open(testmodel.Shared(t, c.file))
			if err != nil {
				t.Fatal(err)
			}
			toks, _ := f.Strings("tokenizer.ggml.tokens")
			if f.Version != 3 || f.Architecture() != c.arch || len(toks) != c.vocab || len(f.Tensors) != c.tensor || f.ParamCount() != c.params {
				t.Fatalf("v%d arch %q vocab %d tensors %d params %d", f.Version, f.Architecture(), len(toks), len(f.Tensors), f.ParamCount())
			}
		})
	}
	f, _ := gguf.Open(testmodel.Shared(t, "stories260K.gguf"))
	if n, _ := f.Uint("llama.block_count"); n != 5 {
		t.Fatalf("block_count %d", n)
	}
	if bos, _ := f.Uint("tokenizer.ggml.bos_token_id"); bos != 1 {
		t.Fatalf("bos %d", bos)
	}
	if tt, ok := f.Tensor("blk.0.ffn_down.weight"); !ok || tt.Dims[0] != 172 || tt.Dims[1] != 64 || tt.Type != gguf.TypeF32 {
		t.Fatalf("ffn_down %+v", tt)
	}
}

// Every metadata value llama.cpp reports equals ours, rendered its way.
func TestAgreesWithLlamaCpp(t *testing.T) {
	for _, file := range []string{"stories260K.gguf", "llama-2-tiny-random.gguf", "ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf", "ggml-vocab-gpt-2.gguf", "ggml-vocab-bert-bge.gguf"} {
		t.Run(file, func(t *testing.T) {
			path := testmodel.Shared(t, file)
			m, err := kernels.LoadModel(context.Background(), path, kernels.ModelParams{VocabOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			f, err := gguf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			meta := m.Meta()
			if len(meta) == 0 {
				t.Fatal("llama.cpp reported no metadata")
			}
			for k, want := range meta {
				kv, ok := f.Get(k)
				if !ok {
					t.Errorf("llama.cpp has %q, we do not", k)
					continue
				}
				if got := gguf.Render(kv); got != want {
					t.Errorf("%s: ours %.80q, llama.cpp %.80q", k, got, want)
				}
			}
			if len(meta) != len(f.KV) {
				t.Logf("llama.cpp reports %d of the %d keys (it omits some arrays)", len(meta), len(f.KV))
			}
		})
	}
}

// Copying every key and tensor of stories260K gives the same bytes.
func TestRewriteIsByteIdentical(t *testing.T) {
	src := testmodel.Shared(t, "stories260K.gguf")
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(src)
	out := filepath.Join(t.TempDir(), "copy.gguf")
	err = gguf.WriteFileAtomic(out, func(w *gguf.Writer) error {
		w.AddKVs(f.KV...)
		for _, ti := range f.Tensors {
			off := f.TensorDataOffset(ti)
			w.AddTensor(ti.Name, ti.Type, ti.Dims, raw[off:off+ti.Size()])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if sha256.Sum256(got) != sha256.Sum256(raw) {
		t.Fatalf("rewrite differs: %d vs %d bytes", len(got), len(raw))
	}
}

func TestRoundTripAllTypes(t *testing.T) {
	w := gguf.NewWriter()
	vals := map[string]any{
		"u8": uint8(7), "i8": int8(-7), "u16": uint16(700), "i16": int16(-700), "u32": uint32(70000), "i32": int32(-70000),
		"f32": float32(1.5), "b": true, "s": "héllo", "u64": uint64(1 << 40), "i64": int64(-1 << 40), "f64": 2.25,
		"as": []string{"a", "", "c\"q"}, "ai": []int32{1, -2}, "af": []float32{0.5, -1}, "ab": []bool{true, false}, "au8": []uint8{1, 2, 3},
	}
	keys := []string{"u8", "i8", "u16", "i16", "u32", "i32", "f32", "b", "s", "u64", "i64", "f64", "as", "ai", "af", "ab", "au8"}
	for _, k := range keys {
		w.AddKV(k, vals[k])
	}
	w.AddTensor("t.f32", gguf.TypeF32, []uint64{3, 2}, make([]byte, 24))
	w.AddTensor("t.q8", gguf.TypeQ8_0, []uint64{64}, make([]byte, 68))
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		kv := f.KV[i]
		if kv.Key != k || gguf.Render(kv) != gguf.Render(gguf.KV{Value: vals[k]}) {
			t.Errorf("%s: got %v (%T), want %v", k, kv.Value, kv.Value, vals[k])
		}
	}
	if q, ok := f.Tensor("t.q8"); !ok || q.Offset != 32 || q.Size() != 68 {
		t.Fatalf("q8 tensor %+v", q)
	}
	if int64(buf.Len()) != f.DataOffset+32+96 {
		t.Fatalf("file size %d, data offset %d", buf.Len(), f.DataOffset)
	}
	bad := gguf.NewWriter()
	bad.AddTensor("x", gguf.TypeF32, []uint64{4}, make([]byte, 8))
	if _, err := bad.WriteTo(io.Discard); err == nil {
		t.Fatal("short tensor data accepted")
	}
}

func TestDamagedFiles(t *testing.T) {
	raw, _ := os.ReadFile(testmodel.Shared(t, "stories260K.gguf"))
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"magic", append([]byte("GGML"), raw[4:]...), "not a GGUF"},
		{"version", append(append([]byte("GGUF"), 1, 0, 0, 0), raw[8:]...), "version 1"},
		{"header cut", raw[:300], "more than the file can hold"},
		{"array cut", raw[:2000], "exceeds"},
		{"tensor table cut", raw[:len(raw)-1100000], "truncated"},
		{"data cut", raw[:len(raw)-100], "past the end"},
		{"huge count", append(append(append([]byte(nil), raw[:8]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0), raw[16:]...), "more than the file can hold"},
	} {
		p := filepath.Join(dir, c.name+".gguf")
		os.WriteFile(p, c.data, 0o644)
		_, err := gguf.Open(p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v (want %q and the path)", c.name, err, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"stories260K.gguf", "ggml-vocab-bert-bge.gguf"} {
		if b, err := os.ReadFile(filepath.Join(testmodel.SharedDir(), name)); err == nil {
			f.Add(b[:min(len(b), 4096)])
		}
	}
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := gguf.Parse(bytes.NewReader(data))
		if err == nil && g == nil {
			t.Fatal("nil file without error")
		}
	})
}
