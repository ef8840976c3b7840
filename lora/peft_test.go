package lora

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
)

// convert_hf_to_gguf's permute for llama Q/K: GGUF row (h, i, j) is
// Hugging Face row (h, j, i) for rows viewed as [head][2][half].
func TestPermuteRowsMatchesTheConverter(t *testing.T) {
	hf := []float32{0, 1, 2, 3, 4, 5, 6, 7} // 8 rows of rank 1, 2 heads, half 2
	gg, err := permuteRows(hf, 8, 1, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{0, 2, 1, 3, 4, 6, 5, 7}; !slices.Equal(gg, want) {
		t.Fatalf("permuted %v, want %v", gg, want)
	}
	back, _ := permuteRows(gg, 8, 1, 2, true)
	if !slices.Equal(back, hf) {
		t.Fatalf("inverse %v", back)
	}
	if _, err := permuteRows(hf, 8, 1, 3, false); err == nil {
		t.Fatal("rows that do not split into heads accepted")
	}
}

func TestPEFTRoundTrip(t *testing.T) {
	base, err := gguf.Open(testmodel.Shared(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	heads, err := HeadsOf(base)
	if err != nil || heads.Q != 8 || heads.KV != 4 {
		t.Fatalf("heads %+v, %v", heads, err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "a.gguf")
	pairs := RandomAdapter(base, []string{"attn_q", "attn_k", "attn_v", "ffn_down"}, 4, 0.1, 3)
	if err := WriteAdapter(src, "llama", 8, pairs, map[string]string{"general.name": "a"}); err != nil {
		t.Fatal(err)
	}
	a, err := ReadAdapter(src)
	if err != nil {
		t.Fatal(err)
	}
	peft := filepath.Join(dir, "peft")
	if err := ExportPEFT(a, heads, "stories260K", peft); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"adapter_model.safetensors", "adapter_config.json"} {
		if _, err := os.Stat(filepath.Join(peft, f)); err != nil {
			t.Fatal(err)
		}
	}
	// The exported Q B is in Hugging Face order: it differs from the GGUF
	// one (the permutation ran) while V's is unchanged.
	st, _, err := readSafetensors(filepath.Join(peft, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	q := st["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
	v := st["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"]
	if slices.Equal(q.Data, pairs["blk.0.attn_q.weight"].B) || !slices.Equal(v.Data, pairs["blk.0.attn_v.weight"].B) {
		t.Fatal("Q/K rows were not permuted, or V rows were")
	}
	if q.Shape[0] != 64 || q.Shape[1] != 4 {
		t.Fatalf("lora_B shape %v, want (out, r) = (64, 4)", q.Shape)
	}
	b, err := ImportPEFT(peft, "llama", heads)
	if err != nil {
		t.Fatal(err)
	}
	if b.Alpha != a.Alpha || len(b.Pairs) != len(a.Pairs) {
		t.Fatalf("alpha %v / %d pairs after the round trip, want %v / %d", b.Alpha, len(b.Pairs), a.Alpha, len(a.Pairs))
	}
	for name, p := range a.Pairs {
		got := b.Pairs[name]
		if got.NIn != p.NIn || got.NOut != p.NOut || got.Rank != p.Rank || !slices.Equal(got.A, p.A) || !slices.Equal(got.B, p.B) {
			t.Fatalf("%s differs after export and import", name)
		}
	}
	// rsLoRA: alpha·sqrt(r) becomes the GGUF alpha.
	cfg, _ := os.ReadFile(filepath.Join(peft, "adapter_config.json"))
	os.WriteFile(filepath.Join(peft, "adapter_config.json"), []byte(string(cfg[:len(cfg)-2])+`, "use_rslora": true}`), 0o644)
	rs, err := ImportPEFT(peft, "llama", heads)
	if err != nil {
		t.Fatal(err)
	}
	if want := a.Alpha * 2; rs.Alpha != want { // sqrt(4) = 2
		t.Fatalf("rsLoRA alpha %v, want %v", rs.Alpha, want)
	}
	if _, err := ImportPEFT(t.TempDir(), "llama", heads); err == nil {
		t.Fatal("a folder without an adapter imported")
	}
}
