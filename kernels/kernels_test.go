package kernels_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/testmodel"
)

func load(t *testing.T, name string) *kernels.Model {
	t.Helper()
	m, err := kernels.LoadModel(context.Background(), testmodel.Shared(t, name), kernels.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestModelInfo(t *testing.T) {
	m := load(t, "stories260K.gguf")
	info := m.Info()
	if info.Arch != "llama" || info.Params != 292800 || info.Layers != 5 || info.Embd != 64 || info.Vocab != 512 ||
		info.Heads != 8 || info.HeadsKV != 4 || info.CtxTrain != 2048 || info.BOS != 1 || info.EOS != 2 || !info.AddBOS {
		t.Fatalf("unexpected info %+v", info)
	}
	if got := m.MetaValue("llama.block_count"); got != "5" {
		t.Fatalf("meta block_count = %q", got)
	}
	if meta := m.Meta(); meta["general.architecture"] != "llama" || len(meta) < 10 {
		t.Fatalf("meta = %v", meta)
	}
}

func TestTokenizeRoundTrip(t *testing.T) {
	for _, name := range []string{"stories260K.gguf", "ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf", "ggml-vocab-phi-3.gguf", "ggml-vocab-bert-bge.gguf"} {
		t.Run(name, func(t *testing.T) {
			m, err := kernels.LoadModel(context.Background(), testmodel.Shared(t, name), kernels.ModelParams{VocabOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			texts := []string{"Once upon a time, there was a little girl.", "Hello world", "a  b\tc\nd", "Ünïcödé and 数字 123"}
			if name == "ggml-vocab-bert-bge.gguf" {
				texts = []string{"hello world", "once upon a time"} // WordPiece lower-cases and drops spacing
			}
			if name == "stories260K.gguf" {
				texts = texts[:3] // 512-token vocab has no pieces for CJK
			}
			for _, text := range texts {
				toks, err := m.Tokenize(text, false, false)
				if err != nil {
					t.Fatal(err)
				}
				if len(toks) == 0 {
					t.Fatalf("%q gave no tokens", text)
				}
				back, err := m.Detokenize(toks, false, false)
				if err != nil {
					t.Fatal(err)
				}
				if strings.TrimSpace(back) != strings.TrimSpace(text) {
					t.Fatalf("round trip %q -> %v -> %q", text, toks, back)
				}
				// Piece by piece gives the same bytes.
				var sb strings.Builder
				for _, tk := range toks {
					sb.Write(m.TokenPiece(tk, false))
				}
				if strings.TrimSpace(sb.String()) != strings.TrimSpace(back) {
					t.Fatalf("pieces %q vs detokenize %q", sb.String(), back)
				}
			}
		})
	}
	m := load(t, "stories260K.gguf")
	toks, _ := m.Tokenize("Once", true, false)
	if toks[0] != 1 {
		t.Fatalf("addSpecial did not add BOS: %v", toks)
	}
}

// Each broken file gives an error that names the file and the cause, and
// the process goes on to load a good model afterwards.
func TestBrokenModelFiles(t *testing.T) {
	good := testmodel.Shared(t, "stories260K.gguf")
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// An unknown architecture: same length as "llama" keeps every offset.
	unknown := append([]byte(nil), data...)
	i := strings.Index(string(unknown), "general.architecture")
	j := strings.Index(string(unknown[i:]), "llama") + i
	copy(unknown[j:], "zzzzz")
	cases := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.gguf"), "no such file"},
		{"empty", write("empty.gguf", nil), "too short"},
		{"wrong magic", write("magic.gguf", append([]byte("GGML"), data[4:]...)), "not a GGUF file"},
		{"bad version", write("version.gguf", append(append([]byte("GGUF"), 9, 0, 0, 0), data[8:]...)), "version 9"},
		{"truncated header", write("trunc-header.gguf", data[:200]), "trunc-header.gguf"},
		{"truncated data", write("trunc-data.gguf", data[:len(data)/2]), "trunc-data.gguf"},
		{"unknown architecture", write("arch.gguf", unknown), "zzzzz"},
		{"no tensors", testmodel.Shared(t, "ggml-vocab-gpt-2.gguf"), "missing tensor"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := kernels.LoadModel(context.Background(), c.path, kernels.ModelParams{})
			if err == nil {
				m.Close()
				t.Fatalf("loaded a broken file")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.path) || !strings.Contains(msg, c.want) {
				t.Fatalf("error %q does not name %s and %q", msg, c.path, c.want)
			}
		})
	}
	m := load(t, "stories260K.gguf")
	if m.Info().Params != 292800 {
		t.Fatal("good model after broken ones")
	}
}

func TestLoadCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls int
	_, err := kernels.LoadModel(ctx, testmodel.Shared(t, "stories260K.gguf"), kernels.ModelParams{
		NoMmap:   true,
		Progress: func(float32) { calls++; cancel() },
	})
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled load: %v (progress calls %d)", err, calls)
	}
}

func TestLoadProgress(t *testing.T) {
	var last float32
	var n int
	m, err := kernels.LoadModel(context.Background(), testmodel.Shared(t, "stories260K.gguf"), kernels.ModelParams{
		Progress: func(p float32) {
			if p < last {
				t.Errorf("progress went back: %v after %v", p, last)
			}
			last = p
			n++
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if n == 0 || last != 1 {
		t.Fatalf("progress calls %d, last %v", n, last)
	}
}

// contextAndBatch makes a context on m and a 64-token batch, both closed
// when the test ends.
func contextAndBatch(t *testing.T, m *kernels.Model, p kernels.ContextParams) (*kernels.Context, *kernels.Batch) {
	t.Helper()
	c, err := m.NewContext(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	b, err := kernels.NewBatch(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return c, b
}

// decodeLogits decodes b on c and returns a copy of the logits of batch
// position idx.
func decodeLogits(t *testing.T, c *kernels.Context, b *kernels.Batch, idx int) []float32 {
	t.Helper()
	if err := c.Decode(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	l, err := c.Logits(idx)
	if err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), l...)
}

func TestDecodeAndLogits(t *testing.T) {
	m := load(t, "stories260K.gguf")
	c, b := contextAndBatch(t, m, kernels.ContextParams{NCtx: 128, NSeqMax: 2, Threads: 2})
	toks, _ := m.Tokenize("Once upon a time", true, false)
	idx, _ := b.AddTokens(toks, 0, 0, true)
	if err := c.Decode(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	l, err := c.Logits(idx)
	if err != nil || len(l) != 512 {
		t.Fatalf("logits %d %v", len(l), err)
	}
	if _, err := c.Logits(0); err == nil {
		t.Fatal("logits of a position without output")
	}
	if c.SeqPosMax(0) != len(toks)-1 || c.SeqPosMax(1) != -1 {
		t.Fatalf("pos max %d %d", c.SeqPosMax(0), c.SeqPosMax(1))
	}
	c.SeqCopy(0, 1, -1, -1)
	if c.SeqPosMax(1) != len(toks)-1 {
		t.Fatal("seq copy")
	}
	if !c.SeqRemove(0, 2, -1) || c.SeqPosMax(0) != 1 {
		t.Fatalf("seq remove: pos max %d", c.SeqPosMax(0))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.Clear()
	b.Add(toks[0], 10, 1, true)
	if err := c.Decode(ctx, b); !errors.Is(err, kernels.ErrAborted) {
		t.Fatalf("decode with cancelled ctx: %v", err)
	}
}

func TestQuantize(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "f16.gguf")
	if err := kernels.Quantize(context.Background(), testmodel.Shared(t, "stories260K.gguf"), out, kernels.FTypeF16, 2); err != nil {
		t.Fatal(err)
	}
	m, err := kernels.LoadModel(context.Background(), out, kernels.ModelParams{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if ft := m.MetaValue("general.file_type"); ft != "1" {
		t.Fatalf("file_type %q, want 1 (F16)", ft)
	}
	orig := load(t, "stories260K.gguf")
	if m.Info().SizeBytes >= orig.Info().SizeBytes {
		t.Fatalf("F16 size %d not below F32 size %d", m.Info().SizeBytes, orig.Info().SizeBytes)
	}
	// stories260K's feed-forward width (172) is not a multiple of Q8_0's
	// block of 32: llama.cpp refuses, and the error says why. What
	// llama.cpp said is in the error only, not logged a second time.
	var logged bytes.Buffer
	kernels.SetLogger(slog.New(slog.NewTextHandler(&logged, nil)))
	bad := filepath.Join(dir, "q8.gguf")
	err = kernels.Quantize(context.Background(), testmodel.Shared(t, "stories260K.gguf"), bad, kernels.FTypeQ8_0, 2)
	kernels.SetLogger(nil)
	if err == nil || !strings.Contains(err.Error(), "not divisible by 32") || !strings.Contains(err.Error(), "failed to quantize") {
		t.Fatalf("Q8_0 of stories260K: %v", err)
	}
	if strings.Contains(logged.String(), "quantize") {
		t.Fatalf("the error was logged too: %s", logged.String())
	}
	if err := kernels.Quantize(context.Background(), filepath.Join(dir, "none.gguf"), bad, kernels.FTypeQ8_0, 2); err == nil {
		t.Fatal("quantized a missing file")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("failed quantizations left files: %v", entries)
	}
}

func TestGrammarSampler(t *testing.T) {
	m := load(t, "stories260K.gguf")
	if err := m.ValidateGrammar(`root ::= "yes" | "no"`); err != nil {
		t.Fatal(err)
	}
	if err := m.ValidateGrammar(`root ::= (`); err == nil {
		t.Fatal("broken grammar accepted")
	}
}

func TestChatTemplateBuiltin(t *testing.T) {
	m := load(t, "stories260K.gguf")
	out, err := m.ApplyChatTemplate("chatml", []kernels.ChatMessage{{Role: "user", Content: "hi"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if out != "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" {
		t.Fatalf("chatml = %q", out)
	}
	if len(kernels.BuiltinChatTemplates()) < 10 {
		t.Fatal("few builtin templates")
	}
}

func TestDevices(t *testing.T) {
	ds := kernels.Devices()
	if len(ds) == 0 || ds[0].Type != kernels.DeviceCPU || ds[0].Total == 0 {
		t.Fatalf("devices %+v", ds)
	}
}
