// Package quant explains llama.cpp's quantization in a model's own terms:
// which type each tensor got and why some fell back to another type, why a
// type cannot apply to a model at all and which types can. It also writes
// the trainable copy of a base whose F16/BF16 matrices ggml cannot train
// through.
package quant

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/gguf"
)

// Spec is one --type of `llmrt quantize`.
type Spec struct {
	Name  string
	FType kernels.FType
	// Main is the type most weight matrices get.
	Main gguf.Type
	// Mix are other types llama.cpp's mix gives some tensors on purpose.
	Mix []gguf.Type
}

var specs = []Spec{
	{Name: "F32", FType: kernels.FTypeF32, Main: gguf.TypeF32},
	{Name: "F16", FType: kernels.FTypeF16, Main: gguf.TypeF16},
	{Name: "BF16", FType: kernels.FTypeBF16, Main: gguf.TypeBF16},
	{Name: "Q4_0", FType: kernels.FTypeQ4_0, Main: gguf.TypeQ4_0, Mix: []gguf.Type{gguf.TypeQ6_K}},
	{Name: "Q8_0", FType: kernels.FTypeQ8_0, Main: gguf.TypeQ8_0},
	{Name: "Q4_K_M", FType: kernels.FTypeQ4_K_M, Main: gguf.TypeQ4_K, Mix: []gguf.Type{gguf.TypeQ6_K}},
	{Name: "Q5_K_M", FType: kernels.FTypeQ5_K_M, Main: gguf.TypeQ5_K, Mix: []gguf.Type{gguf.TypeQ6_K}},
	{Name: "Q6_K", FType: kernels.FTypeQ6_K, Main: gguf.TypeQ6_K},
}

// SpecOf returns the Spec of a file type ParseFType returned.
func SpecOf(ft kernels.FType) (Spec, bool) {
	for _, s := range specs {
		if s.FType == ft {
			return s, true
		}
	}
	return Spec{}, false
}

// fallbackOf is llama.cpp's per-tensor fallback (llama_tensor_get_type)
// when a row does not split into a type's blocks; a row that does not
// split into the fallback's blocks either stays F16. Types without an
// entry have no fallback: llama.cpp refuses the whole model.
var fallbackOf = map[gguf.Type]gguf.Type{
	gguf.TypeQ2_K: gguf.TypeIQ4_NL, gguf.TypeQ3_K: gguf.TypeIQ4_NL, gguf.TypeIQ4_XS: gguf.TypeIQ4_NL,
	gguf.TypeQ4_K: gguf.TypeQ5_0, gguf.TypeQ5_K: gguf.TypeQ5_1, gguf.TypeQ6_K: gguf.TypeQ8_0,
}

// quantized reports whether llama.cpp quantizes a tensor: weight matrices,
// less the ones it always keeps (norms, router and convolution weights).
func quantized(t gguf.TensorInfo) bool {
	if !strings.HasSuffix(t.Name, "weight") || len(t.Dims) < 2 || t.Dims[1] <= 1 {
		return false
	}
	for _, keep := range []string{"_norm.weight", "ffn_gate_inp.weight", "position_embd", "token_types", "ssm_conv1d", "shortconv.conv", "altup", "laurel", "per_layer_model_proj", "time_mix_"} {
		if strings.Contains(t.Name, keep) {
			return false
		}
	}
	return true
}

func fits(t gguf.TensorInfo, typ gguf.Type) bool {
	bs := typ.BlockSize()
	return bs > 0 && t.Dims[0]%uint64(bs) == 0
}

// applies reports whether every matrix of f splits into s's blocks, or
// falls back to a type whose blocks it splits into (F16 included).
func applies(f *gguf.File, s Spec) (clean, withFallback bool) {
	clean = true
	for _, t := range f.Tensors {
		if !quantized(t) || fits(t, s.Main) {
			continue
		}
		clean = false
		if _, ok := fallbackOf[s.Main]; !ok {
			return false, false
		}
	}
	return clean, true
}

// Unfit explains why llama.cpp cannot quantize f to s (rows that split
// into no block of s's type, which has no fallback) and which types do
// apply; nil when that is not the problem.
func Unfit(f *gguf.File, s Spec) error {
	if _, ok := fallbackOf[s.Main]; ok {
		return nil
	}
	var bad []gguf.TensorInfo
	for _, t := range f.Tensors {
		if quantized(t) && !fits(t, s.Main) {
			bad = append(bad, t)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	rows := map[uint64]bool{}
	var names []string
	for _, t := range bad {
		rows[t.Dims[0]] = true
		names = append(names, t.Name)
	}
	var rl []string
	for r := range rows {
		rl = append(rl, fmt.Sprint(r))
	}
	sort.Strings(rl)
	var clean, fallback []string
	for _, o := range specs {
		switch c, fb := applies(f, o); {
		case c:
			clean = append(clean, o.Name)
		case fb:
			fallback = append(fallback, o.Name)
		}
	}
	msg := fmt.Sprintf("rows of %s values (%s) do not split into %s's blocks of %d, and llama.cpp has no per-tensor fallback for %s",
		strings.Join(rl, ", "), strings.Join(collapse(names), ", "), s.Name, s.Main.BlockSize(), s.Name)
	if len(clean) > 0 {
		msg += "; types that fit every tensor: " + strings.Join(clean, ", ")
	}
	if len(fallback) > 0 {
		msg += "; types that fall back per tensor where blocks do not fit: " + strings.Join(fallback, ", ")
	}
	return fmt.Errorf("%s", msg)
}

// Group is a set of tensors that got one type for one reason.
type Group struct {
	Type gguf.Type
	Why  string
	// Names are the tensor names, with blk.N. collapsed (see collapse).
	Names    []string
	Count    int
	Fallback bool
}

// Explain compares a quantized file with its input and groups the output
// tensors by type and reason, fallbacks first.
func Explain(in, out *gguf.File, s Spec) []Group {
	type key struct {
		typ gguf.Type
		why string
	}
	groups := map[key]*Group{}
	var order []key
	for _, t := range out.Tensors {
		src, ok := in.Tensor(t.Name)
		if !ok {
			src = t
		}
		why, fb := reason(src, t, s)
		k := key{t.Type, why}
		g := groups[k]
		if g == nil {
			g = &Group{Type: t.Type, Why: why, Fallback: fb}
			groups[k] = g
			order = append(order, k)
		}
		g.Names = append(g.Names, t.Name)
		g.Count++
	}
	out2 := make([]Group, 0, len(order))
	for _, k := range order {
		g := groups[k]
		g.Names = collapse(g.Names)
		out2 = append(out2, *g)
	}
	sort.SliceStable(out2, func(i, j int) bool {
		if out2[i].Fallback != out2[j].Fallback {
			return out2[i].Fallback
		}
		return out2[i].Count > out2[j].Count
	})
	return out2
}

// reason says why the output tensor t (from src) has its type, and whether
// that is a fallback from the type the spec wanted.
func reason(src, t gguf.TensorInfo, s Spec) (string, bool) {
	if !quantized(src) {
		return "kept: llama.cpp quantizes weight matrices only (not norms or 1-D tensors)", false
	}
	if t.Type == s.Main {
		return "as requested", false
	}
	for _, m := range s.Mix {
		if t.Type == m && fits(t, m) {
			return fmt.Sprintf("%s's mix: more bits for tensors that matter most", s.Name), false
		}
	}
	row := t.Dims[0]
	for _, want := range []gguf.Type{s.Main, gguf.TypeQ4_K, gguf.TypeQ5_K, gguf.TypeQ6_K, gguf.TypeQ3_K, gguf.TypeQ2_K} {
		if fb, ok := fallbackOf[want]; ok && t.Type == fb && row%uint64(want.BlockSize()) != 0 {
			return fmt.Sprintf("fallback for %s: rows of %d values do not split into its blocks of %d", want, row, want.BlockSize()), true
		}
	}
	if (t.Type == gguf.TypeF16 || t.Type == src.Type) && !fits(src, s.Main) {
		if fb, ok := fallbackOf[s.Main]; ok {
			return fmt.Sprintf("fallback: rows of %d values split into neither %s's blocks of %d nor %s's of %d", row, s.Main, s.Main.BlockSize(), fb, fb.BlockSize()), true
		}
	}
	return "chosen by llama.cpp for this tensor", false
}

var blockNum = regexp.MustCompile(`^blk\.\d+\.`)

// collapse turns per-layer names into one entry each: blk.0.attn_q.weight
// ... blk.4.attn_q.weight becomes "blk.*.attn_q.weight ×5".
func collapse(names []string) []string {
	count := map[string]int{}
	var order []string
	for _, n := range names {
		c := blockNum.ReplaceAllString(n, "blk.*.")
		if count[c] == 0 {
			order = append(order, c)
		}
		count[c]++
	}
	out := make([]string, len(order))
	for i, c := range order {
		out[i] = c
		if count[c] > 1 {
			out[i] = fmt.Sprintf("%s ×%d", c, count[c])
		}
	}
	return out
}

// Summary is the lines `llmrt quantize` prints after writing a file from
// in: one per group, then a note with the types that fit when tensors fell
// back.
func Summary(in *gguf.File, groups []Group, s Spec) []string {
	var lines []string
	fell := 0
	matrices := 0
	for _, g := range groups {
		lines = append(lines, fmt.Sprintf("  %-6s %3d  %s: %s", g.Type, g.Count, g.Why, strings.Join(g.Names, ", ")))
		if g.Fallback {
			fell += g.Count
		}
		if !strings.HasPrefix(g.Why, "kept:") {
			matrices += g.Count
		}
	}
	if fell > 0 {
		lines = append(lines, fmt.Sprintf("note: %d of %d weight matrices fell back from %s because their rows do not split into its blocks, so the file is larger than %s usually is", fell, matrices, s.Name, s.Name))
		var clean []string
		for _, o := range specs {
			if c, _ := applies(in, o); c {
				clean = append(clean, o.Name)
			}
		}
		if len(clean) > 0 {
			lines = append(lines, "note: types that fit every tensor of this model: "+strings.Join(clean, ", "))
		}
	}
	return lines
}
