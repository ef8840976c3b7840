package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/models/testmodel"
)

// Q8_0 does not apply to stories260K (rows of 172): one error line that
// says why and what fits. Q4_K_M applies with fallbacks the summary names,
// and the result tunes.
func TestQuantizeExplainsAndResultTunes(t *testing.T) {
	home := t.TempDir()
	src := testmodel.Shared(t, "stories260K.gguf")
	_, errOut, code := cli(t, home, "quantize", src, "q8", "--type", "Q8_0")
	if code != 1 || strings.Count(errOut, "rows of 172") != 1 || !strings.Contains(errOut, "F16") || !strings.Contains(errOut, "Q4_K_M") {
		t.Fatalf("Q8_0: exit %d\n%s", code, errOut)
	}
	if strings.Contains(errOut, "source=llama.cpp") || strings.Count(errOut, "error:") != 1 {
		t.Fatalf("Q8_0: llama.cpp's error was logged besides ours:\n%s", errOut)
	}
	out, errOut, code := cli(t, home, "quantize", src, "q4", "--type", "Q4_K_M")
	if code != 0 {
		t.Fatalf("Q4_K_M: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"fallback for Q4_K: rows of 64 values", "F16 ", "blk.*.ffn_down.weight ×5", "37 of 37 weight matrices fell back"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if _, errOut, code := cli(t, home, "quantize", "q4", "q4again", "--type", "Q4_0"); code != 1 || !strings.Contains(errOut, "already quantized (F16×5, F32×11, Q5_0×29, Q8_0×3)") {
		t.Fatalf("requantizing: exit %d\n%s", code, errOut)
	}
	data := filepath.Join(t.TempDir(), "d.jsonl")
	os.WriteFile(data, []byte(strings.Repeat(`{"prompt": "The dog", "completion": " ran to the park."}`+"\n", 4)), 0o644)
	out, errOut, code = cli(t, home, "tune", "-m", "q4", "--data", data, "--out", "q4t", "--epochs", "2", "--eval-split", "0", "-t", "1")
	if code != 0 || !strings.Contains(out, "use it as -m q4+q4t") {
		t.Fatalf("tune on the Q4_K_M result: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "for training (F16 -> F32") {
		t.Errorf("the conversion of the F16 fallbacks is not reported:\n%s", errOut)
	}
	if _, err := os.Stat(filepath.Join(home, "adapters", "q4t.gguf")); err != nil {
		t.Fatal(err)
	}
}
