package lora

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/llmrt/llmrt/internal/atomicfile"
	"github.com/llmrt/llmrt/models/gguf"
)

// Adapter is a LoRA adapter read from a GGUF file.
type Adapter struct {
	Arch  string
	Alpha float32
	Pairs map[string]Pair // by base tensor name, e.g. "blk.0.attn_q.weight"
	Meta  map[string]string
}

// Rank is the largest rank of the adapter's pairs.
func (a *Adapter) Rank() int {
	r := 0
	for _, p := range a.Pairs {
		r = max(r, p.Rank)
	}
	return r
}

// ReadAdapter reads a llama.cpp LoRA adapter (F32, F16 or BF16 tensors).
func ReadAdapter(path string) (*Adapter, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	if t, _ := f.String("general.type"); t != "adapter" {
		return nil, fmt.Errorf("%s is not a LoRA adapter (general.type %q)", path, t)
	}
	if t, _ := f.String("adapter.type"); t != "lora" {
		return nil, fmt.Errorf("%s: adapter type %q, want lora", path, t)
	}
	alpha, _ := f.Float("adapter.lora.alpha")
	a := &Adapter{Arch: f.Architecture(), Alpha: float32(alpha), Pairs: map[string]Pair{}, Meta: map[string]string{}}
	for _, kv := range f.KV {
		if s, ok := kv.Value.(string); ok && kv.Key != "general.type" && kv.Key != "general.architecture" && kv.Key != "adapter.type" {
			a.Meta[kv.Key] = s
		}
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	read := func(t gguf.TensorInfo) ([]float32, error) {
		n := t.NElements()
		var width int64
		switch t.Type {
		case gguf.TypeF32:
			width = 4
		case gguf.TypeF16, gguf.TypeBF16:
			width = 2
		default:
			return nil, fmt.Errorf("%s: tensor %s has type %v (want F32, F16 or BF16)", path, t.Name, t.Type)
		}
		b := make([]byte, n*width)
		if _, err := fh.ReadAt(b, f.TensorDataOffset(t)); err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %w", path, t.Name, err)
		}
		v := make([]float32, n)
		for i := range v {
			switch t.Type {
			case gguf.TypeF32:
				v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			case gguf.TypeF16:
				v[i] = f16to32(binary.LittleEndian.Uint16(b[2*i:]))
			default:
				v[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
			}
		}
		return v, nil
	}
	for _, t := range f.Tensors {
		base, ok := strings.CutSuffix(t.Name, ".lora_a")
		if !ok {
			continue
		}
		bt, ok := f.Tensor(base + ".lora_b")
		if !ok || len(t.Dims) != 2 || len(bt.Dims) != 2 || t.Dims[1] != bt.Dims[0] {
			return nil, fmt.Errorf("%s: %s has no matching lora_b", path, t.Name)
		}
		av, err := read(t)
		if err != nil {
			return nil, err
		}
		bv, err := read(bt)
		if err != nil {
			return nil, err
		}
		a.Pairs[base] = Pair{NIn: int(t.Dims[0]), Rank: int(t.Dims[1]), NOut: int(bt.Dims[1]), A: av, B: bv}
	}
	if len(a.Pairs) == 0 {
		return nil, fmt.Errorf("%s: no LoRA tensors", path)
	}
	return a, nil
}

// Heads are the base model's attention head counts, which the Q/K row
// permutation of llama-arch GGUF files depends on.
type Heads struct{ Q, KV int }

// HeadsOf reads the head counts from a base model's GGUF header.
func HeadsOf(base *gguf.File) (Heads, error) {
	arch := base.Architecture()
	q, ok := base.Uint(arch + ".attention.head_count")
	if !ok {
		return Heads{}, fmt.Errorf("base model has no %s.attention.head_count", arch)
	}
	kv, ok := base.Uint(arch + ".attention.head_count_kv")
	if !ok {
		kv = q
	}
	return Heads{Q: int(q), KV: int(kv)}, nil
}

// ggufToHF maps GGUF projection names to Hugging Face module names.
var ggufToHF = map[string]string{
	"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
	"ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}

var (
	ggufName = regexp.MustCompile(`^blk\.(\d+)\.([a-z_]+)\.weight$`)
	hfName   = regexp.MustCompile(`^(?:base_model\.model\.)?model\.layers\.(\d+)\.([a-z_]+\.[a-z_]+)\.lora_([AB])(?:\.default)?\.weight$`)
)

// permutesQK reports whether the architecture's GGUF conversion permutes
// the rows of Q and K (llama-style RoPE, as convert_hf_to_gguf does for
// the llama architecture; qwen2/qwen3 keep the Hugging Face order).
func permutesQK(arch string) bool { return arch == "llama" }

// permuteRows reorders the rows of an (n_out, r) matrix from Hugging
// Face's rotate-half layout to GGUF's interleaved one (inverse: back).
func permuteRows(b []float32, nOut, r, heads int, inverse bool) ([]float32, error) {
	if heads <= 0 || nOut%(2*heads) != 0 {
		return nil, fmt.Errorf("cannot permute %d rows for %d heads", nOut, heads)
	}
	half := nOut / heads / 2
	out := make([]float32, len(b))
	for h := 0; h < heads; h++ {
		for i := 0; i < half; i++ {
			for j := 0; j < 2; j++ {
				hf := h*2*half + j*half + i // HF row: [head][j][i]
				gg := h*2*half + i*2 + j    // GGUF row: [head][i][j]
				src, dst := hf, gg
				if inverse {
					src, dst = gg, hf
				}
				copy(out[dst*r:(dst+1)*r], b[src*r:(src+1)*r])
			}
		}
	}
	return out, nil
}

// peftConfig is the subset of adapter_config.json llmrt reads and writes.
type peftConfig struct {
	PeftType       string             `json:"peft_type"`
	TaskType       string             `json:"task_type,omitempty"`
	R              int                `json:"r"`
	LoraAlpha      float64            `json:"lora_alpha"`
	TargetModules  []string           `json:"target_modules"`
	Bias           string             `json:"bias,omitempty"`
	UseRSLoRA      bool               `json:"use_rslora,omitempty"`
	FanInFanOut    bool               `json:"fan_in_fan_out,omitempty"`
	BaseModel      string             `json:"base_model_name_or_path,omitempty"`
	RankPattern    map[string]int     `json:"rank_pattern,omitempty"`
	AlphaPattern   map[string]float64 `json:"alpha_pattern,omitempty"`
	InferenceMode  bool               `json:"inference_mode"`
	LoraDropout    float64            `json:"lora_dropout"`
	ModulesToSave  []string           `json:"modules_to_save,omitempty"`
	LayersPattern  any                `json:"layers_pattern,omitempty"`
	LayersToTransf any                `json:"layers_to_transform,omitempty"`
}

// ExportPEFT writes a as a PEFT adapter (adapter_model.safetensors and
// adapter_config.json) into dir.
func ExportPEFT(a *Adapter, heads Heads, baseName, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tensors := map[string]stTensor{}
	modules := map[string]bool{}
	rank := a.Rank()
	for base, p := range a.Pairs {
		m := ggufName.FindStringSubmatch(base)
		if m == nil || ggufToHF[m[2]] == "" {
			return fmt.Errorf("export: tensor %s has no PEFT name", base)
		}
		if p.Rank != rank {
			return fmt.Errorf("export: %s has rank %d, the adapter %d (mixed ranks are not exported)", base, p.Rank, rank)
		}
		hf := ggufToHF[m[2]]
		modules[strings.Split(hf, ".")[1]] = true
		b := p.B
		if permutesQK(a.Arch) && (m[2] == "attn_q" || m[2] == "attn_k") {
			h := heads.Q
			if m[2] == "attn_k" {
				h = heads.KV
			}
			var err error
			if b, err = permuteRows(p.B, p.NOut, p.Rank, h, true); err != nil {
				return fmt.Errorf("export %s: %w", base, err)
			}
		}
		prefix := "base_model.model.model.layers." + m[1] + "." + hf
		tensors[prefix+".lora_A.weight"] = stTensor{Shape: []int64{int64(p.Rank), int64(p.NIn)}, Data: p.A}
		tensors[prefix+".lora_B.weight"] = stTensor{Shape: []int64{int64(p.NOut), int64(p.Rank)}, Data: b}
	}
	var mods []string
	for m := range modules {
		mods = append(mods, m)
	}
	sort.Strings(mods)
	cfg := peftConfig{PeftType: "LORA", TaskType: "CAUSAL_LM", R: rank, LoraAlpha: float64(a.Alpha), TargetModules: mods, Bias: "none",
		BaseModel: baseName, InferenceMode: true}
	cb, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := writeSafetensors(filepath.Join(dir, "adapter_model.safetensors"), tensors, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return atomicfile.Write(filepath.Join(dir, "adapter_config.json"), func(f *os.File) error {
		_, err := f.Write(append(cb, '\n'))
		return err
	})
}

// ImportPEFT reads a PEFT adapter folder for a base of architecture arch.
// rsLoRA's alpha·sqrt(r) scaling and per-module alpha and rank patterns
// are folded into the adapter's alpha and B matrices.
func ImportPEFT(dir, arch string, heads Heads) (*Adapter, error) {
	cb, err := os.ReadFile(filepath.Join(dir, "adapter_config.json"))
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	var cfg peftConfig
	if err := json.Unmarshal(cb, &cfg); err != nil {
		return nil, fmt.Errorf("import: adapter_config.json: %w", err)
	}
	if cfg.PeftType != "" && cfg.PeftType != "LORA" {
		return nil, fmt.Errorf("import: peft_type %q, only LORA is supported", cfg.PeftType)
	}
	if cfg.FanInFanOut {
		return nil, errors.New("import: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported")
	}
	if cfg.R <= 0 {
		return nil, fmt.Errorf("import: r = %d", cfg.R)
	}
	tensors, _, err := readSafetensors(filepath.Join(dir, "adapter_model.safetensors"))
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	// scale(module) = alpha_m / r_m (or alpha_m / sqrt(r_m) with rsLoRA);
	// llama.cpp applies alpha / r_m with one alpha, so B takes the rest.
	scaleOf := func(module string, r int) float64 {
		alpha := cfg.LoraAlpha
		for pat, v := range cfg.AlphaPattern {
			if strings.HasSuffix(module, pat) || module == pat {
				alpha = v
			}
		}
		if cfg.UseRSLoRA {
			return alpha / math.Sqrt(float64(r))
		}
		return alpha / float64(r)
	}
	a := &Adapter{Arch: arch, Pairs: map[string]Pair{}, Meta: map[string]string{"llmrt.peft.base": cfg.BaseModel}}
	// The GGUF alpha reproduces the scale of the default rank exactly.
	a.Alpha = float32(scaleOf("", cfg.R) * float64(cfg.R))
	for name, ta := range tensors {
		m := hfName.FindStringSubmatch(name)
		if m == nil || m[3] != "A" {
			continue
		}
		var proj string
		for g, h := range ggufToHF {
			if h == m[2] {
				proj = g
			}
		}
		if proj == "" {
			return nil, fmt.Errorf("import: %s: unknown module %s", name, m[2])
		}
		tb, ok := tensors[strings.Replace(name, "lora_A", "lora_B", 1)]
		if !ok || len(ta.Shape) != 2 || len(tb.Shape) != 2 || ta.Shape[0] != tb.Shape[1] {
			return nil, fmt.Errorf("import: %s has no matching lora_B", name)
		}
		r, nIn, nOut := int(ta.Shape[0]), int(ta.Shape[1]), int(tb.Shape[0])
		b := append([]float32(nil), tb.Data...)
		if f := scaleOf("model.layers."+m[1]+"."+m[2], r) / (float64(a.Alpha) / float64(r)); math.Abs(f-1) > 1e-7 {
			for i := range b {
				b[i] *= float32(f)
			}
		}
		if permutesQK(arch) && (proj == "attn_q" || proj == "attn_k") {
			h := heads.Q
			if proj == "attn_k" {
				h = heads.KV
			}
			if b, err = permuteRows(b, nOut, r, h, false); err != nil {
				return nil, fmt.Errorf("import %s: %w", name, err)
			}
		}
		a.Pairs["blk."+m[1]+"."+proj+".weight"] = Pair{NIn: nIn, NOut: nOut, Rank: r, A: ta.Data, B: b}
	}
	if len(a.Pairs) == 0 {
		return nil, errors.New("import: no LoRA tensors for the llama family's projections")
	}
	return a, nil
}

// Write saves the adapter as a llama.cpp GGUF adapter.
func (a *Adapter) Write(path string) error {
	return WriteAdapter(path, a.Arch, a.Alpha, a.Pairs, a.Meta)
}
