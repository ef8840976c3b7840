package dataset

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/testmodel"
)

// vocabTok is a real llama.cpp tokenizer and chat template (Phi-3's).
type vocabTok struct{ m *kernels.Model }

func (v vocabTok) RenderChat(msgs []Message, gen bool) (string, error) {
	km := make([]kernels.ChatMessage, len(msgs))
	for i, m := range msgs {
		km[i] = kernels.ChatMessage{Role: m.Role, Content: m.Content}
	}
	return v.m.ApplyChatTemplate("", km, gen)
}
func (v vocabTok) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	return v.m.Tokenize(text, addSpecial, parseSpecial)
}
func (v vocabTok) EOS() int32 { return v.m.Info().EOS }

func phi3(t *testing.T) vocabTok {
	t.Helper()
	m, err := kernels.LoadModel(context.Background(), testmodel.Shared(t, "ggml-vocab-phi-3.gguf"), kernels.ModelParams{VocabOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return vocabTok{m}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// trained returns the text of the trained tokens.
func trained(t *testing.T, tok vocabTok, ex Example) string {
	t.Helper()
	var ids []int32
	for i, on := range ex.Train {
		if on {
			ids = append(ids, ex.Tokens[i])
		}
	}
	s, err := tok.m.Detokenize(ids, false, true)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFormatsAndMasks(t *testing.T) {
	tok := phi3(t)
	data := strings.Join([]string{
		`{"prompt": "The capital of France is", "completion": " Paris."}`,
		`{"instruction": "Name a colour.", "input": "", "output": "Blue"}`,
		`{"text": "Plain text for pre-training."}`,
		`{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]}`,
	}, "\n")
	exs, warns, err := Load(writeFile(t, "d.jsonl", data), tok, Options{})
	if err != nil || len(warns) != 0 || len(exs) != 4 {
		t.Fatalf("load: %v %v %d", err, warns, len(exs))
	}
	if got := trained(t, tok, exs[0]); got != " Paris.<|endoftext|>" && got != "Paris.<|endoftext|>" {
		t.Fatalf("prompt-completion trains on %q", got)
	}
	if got := trained(t, tok, exs[1]); !strings.HasPrefix(got, "Blue") || strings.Contains(got, "Instruction") {
		t.Fatalf("alpaca trains on %q", got)
	}
	if got := trained(t, tok, exs[2]); !strings.HasPrefix(got, "Plain text") {
		t.Fatalf("text trains on %q", got)
	}
	// Chat: both assistant turns with their end-of-turn, nothing of the
	// system or user turns.
	got := trained(t, tok, exs[3])
	if !strings.Contains(got, "Hello!") || !strings.Contains(got, "Goodbye.") || strings.Contains(got, "Bye<") ||
		strings.Contains(got, "Hi") || strings.Contains(got, "brief") || !strings.Contains(got, "<|end|>") {
		t.Fatalf("chat trains on %q", got)
	}
	if exs[0].Source == "" || !strings.HasSuffix(exs[3].Source, ":4") {
		t.Fatalf("sources %q %q", exs[0].Source, exs[3].Source)
	}
}

func TestBadLinesReportLineNumbers(t *testing.T) {
	tok := phi3(t)
	data := "{\"text\": \"ok\"}\n\n{not json}\n{\"foo\": 1}\n{\"prompt\": \"x\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n{\"text\": \"ok too\"}\n"
	path := writeFile(t, "bad.jsonl", data)
	exs, warns, err := Load(path, tok, Options{})
	if err != nil || len(exs) != 2 || len(warns) != 4 {
		t.Fatalf("lenient: %v, %d examples, %d warnings", err, len(exs), len(warns))
	}
	for i, line := range []int{3, 4, 5, 6} {
		var le *LineError
		if !errors.As(warns[i], &le) || le.Line != line || le.File != path {
			t.Fatalf("warning %d = %v, want line %d", i, warns[i], line)
		}
	}
	_, _, err = Load(path, tok, Options{Strict: true})
	var le *LineError
	if !errors.As(err, &le) || le.Line != 3 || !strings.Contains(err.Error(), "bad.jsonl:3") {
		t.Fatalf("strict: %v", err)
	}
	if _, _, err := Load(writeFile(t, "x.jsonl", `{"text": "a"}`), tok, Options{Format: FormatChat}); err == nil {
		t.Fatal("a text line passed --format chat")
	}
}

func TestEmptyAnswerCarriesNoLoss(t *testing.T) {
	tok := phi3(t)
	exs, _, err := Load(writeFile(t, "e.jsonl", `{"prompt": "Question?", "completion": ""}`), tok, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var st Stats
	rows := Pack(exs, 64, &st)
	if rows[0].TrainTokens() != 0 || st.EmptyAnswers != 1 || st.TrainTokens != 0 {
		t.Fatalf("empty answer trains %d tokens (stats %+v)", rows[0].TrainTokens(), st)
	}
}

func TestPacking(t *testing.T) {
	mk := func(n int, trainFrom int) Example {
		ex := Example{Tokens: make([]int32, n), Train: make([]bool, n)}
		for i := range ex.Tokens {
			ex.Tokens[i] = int32(100*n + i)
			ex.Train[i] = i >= trainFrom
		}
		return ex
	}
	exs := []Example{mk(6, 3), mk(5, 1), mk(4, 2), mk(12, 1)}
	var st Stats
	rows := Pack(exs, 10, &st)
	// 6 -> row0 (free 4); 5 -> row1 (free 5); 4 -> row0 (free 0); 12 truncated to 10 -> row2.
	if len(rows) != 3 || st.Truncated != 1 || st.TruncatedToks != 2 || st.Rows != 3 || st.PaddingTokens != 5 {
		t.Fatalf("rows %d stats %+v", len(rows), st)
	}
	r0 := rows[0]
	wantPos := []int32{0, 1, 2, 3, 4, 5, 0, 1, 2, 3}
	wantSeg := []int32{0, 0, 0, 0, 0, 0, 1, 1, 1, 1}
	for i := range wantPos {
		if r0.Pos[i] != wantPos[i] || r0.Seg[i] != wantSeg[i] {
			t.Fatalf("row0 pos %v seg %v", r0.Pos, r0.Seg)
		}
	}
	// Labels: position i predicts token i+1 of the same example when that
	// token is trained; never across the example boundary.
	wantLabels := []int32{-1, -1, 603, 604, 605, -1, -1, 402, 403, -1}
	for i, l := range wantLabels {
		if r0.Labels[i] != l {
			t.Fatalf("row0 labels %v, want %v", r0.Labels, wantLabels)
		}
	}
	if st.TrainTokens != 3+4+2+9 {
		t.Fatalf("train tokens %d", st.TrainTokens)
	}
}

func TestOrderIsReproducible(t *testing.T) {
	a, b, c := Order(50, 7, 1), Order(50, 7, 1), Order(50, 7, 2)
	same := true
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("same seed and epoch gave different orders")
		}
		same = same && a[i] == c[i]
	}
	if same {
		t.Fatal("different epochs gave the same order")
	}
}

func TestFolderOfText(t *testing.T) {
	tok := phi3(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.md"), []byte("# Title\n\nSome text."), 0o644)
	os.WriteFile(filepath.Join(dir, "b.txt"), []byte("More text."), 0o644)
	os.WriteFile(filepath.Join(dir, "skip.bin"), []byte{0, 1}, 0o644)
	exs, _, err := Load(dir, tok, Options{})
	if err != nil || len(exs) != 2 {
		t.Fatalf("%v %d", err, len(exs))
	}
	if _, _, err := Load(t.TempDir(), tok, Options{}); err == nil {
		t.Fatal("empty folder accepted")
	}
}

// Windows cover a long text: no window is longer than its size, each
// after the first starts with the stride tokens before it as untrained
// context, and every token of the text is trained exactly as often as in
// the whole example; packing them truncates nothing.
func TestWindowsCoverEveryToken(t *testing.T) {
	tok := phi3(t)
	text := strings.Repeat("The quick brown fox jumps over the lazy dog while the cat watches from the wall. ", 40)
	p := writeFile(t, "long.txt", text)
	whole, _, err := Load(p, tok, Options{})
	if err != nil || len(whole) != 1 {
		t.Fatalf("whole: %v %d", err, len(whole))
	}
	n := len(whole[0].Tokens)
	for _, stride := range []int{0, 1, 7, 20} {
		ws, _, err := Load(p, tok, Options{Window: 64, Stride: stride})
		if err != nil {
			t.Fatal(err)
		}
		s := max(stride, 1)
		var cover []int32
		trained := 0
		for i, w := range ws {
			if len(w.Tokens) > 64 || !w.Windowed {
				t.Fatalf("stride %d: window %d has %d tokens (windowed %v)", stride, i, len(w.Tokens), w.Windowed)
			}
			if i > 0 && (w.Overlap != s || !slices.Equal(w.Tokens[:s], cover[len(cover)-s:]) || slices.Contains(w.Train[:s], true)) {
				t.Fatalf("stride %d: window %d does not start with %d untrained tokens of context", stride, i, s)
			}
			cover = append(cover, w.Tokens[w.Overlap:]...)
			for _, on := range w.Train {
				if on {
					trained++
				}
			}
		}
		if !slices.Equal(cover, whole[0].Tokens) || trained != n-1 {
			t.Fatalf("stride %d: windows cover %d of %d tokens, train %d (want %d)", stride, len(cover), n, trained, n-1)
		}
		var st Stats
		Pack(ws, 64, &st)
		if st.Truncated != 0 || st.AvailableTokens != n || st.UsedTokens != n || st.TrainTokens != n-1 || st.Windows != len(ws) {
			t.Fatalf("stride %d: stats %+v for %d tokens", stride, st, n)
		}
	}
	// A "text" line is windowed too; other formats are still truncated.
	jl := writeFile(t, "d.jsonl", fmt.Sprintf("{\"text\": %q}\n{\"prompt\": %q, \"completion\": \"x\"}\n", text, text))
	ex, _, err := Load(jl, tok, Options{Window: 64})
	if err != nil {
		t.Fatal(err)
	}
	var st Stats
	Pack(ex, 64, &st)
	if st.Windows != len(ex)-1 || st.Truncated != 1 || st.UsedTokens != st.AvailableTokens-st.TruncatedToks {
		t.Fatalf("jsonl stats %+v over %d examples", st, len(ex))
	}
}
