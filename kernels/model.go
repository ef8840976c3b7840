package kernels

/*
#include <stdlib.h>
#include "bridge.h"
#include "guard.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/cgo"
	"strconv"
	"sync"
	"unsafe"
)

// ModelParams controls how a GGUF file is loaded.
type ModelParams struct {
	// GPULayers is the number of layers to offload (-1: all that the
	// backends can take; 0: none). Ignored on the CPU backend.
	GPULayers int
	// MainGPU and TensorSplit place the model across several GPUs; the
	// split holds one proportion per device (see MaxDevices).
	MainGPU     int
	TensorSplit []float32
	// NoMmap reads the file into memory instead of mapping it.
	NoMmap bool
	// Mlock pins the weights in RAM.
	Mlock bool
	// VocabOnly loads the tokenizer and metadata without weights.
	VocabOnly bool
	// NoRepack keeps the weights in their file layout instead of the
	// CPU backend's repacked (interleaved) buffers. Training needs it: the
	// matmul backward pass cannot read repacked weights.
	NoRepack bool
	// Progress, if set, is called with a fraction in [0, 1] while loading.
	Progress func(fraction float32)
}

// Model is a loaded llama.cpp model. It is safe for concurrent use by
// several contexts; Close frees it and must be called after every context
// and adapter made from it is closed.
type Model struct {
	path  string
	c     *C.struct_llama_model
	vocab *C.struct_llama_vocab
	info  ModelInfo
	mu    sync.Mutex
	// adapters loaded on this model; llama.cpp frees them with the model,
	// so Close releases them first.
	adapters map[*Adapter]struct{}
	// nets built over this model's weights; Close frees them first.
	nets map[*Net]struct{}
	// decoders built over this model's weights; Close frees them first.
	decoders map[*Decoder]struct{}
}

type loadState struct {
	ctx      context.Context
	progress func(float32)
}

//export goLoadProgress
func goLoadProgress(h C.uintptr_t, p C.float) C.bool {
	st := cgo.Handle(h).Value().(*loadState)
	if st.ctx.Err() != nil {
		return false
	}
	if st.progress != nil {
		st.progress(float32(p))
	}
	return true
}

// LoadModel loads a GGUF model. Cancelling ctx aborts the load. A missing,
// truncated or corrupt file, or an architecture llama.cpp does not know,
// returns an error naming the file and llama.cpp's reason.
func LoadModel(ctx context.Context, path string, p ModelParams) (*Model, error) {
	Init()
	if err := checkGGUFFile(path); err != nil {
		return nil, err
	}
	params := C.llama_model_default_params()
	if p.GPULayers >= 0 {
		params.n_gpu_layers = C.int32_t(p.GPULayers)
	}
	params.main_gpu = C.int32_t(p.MainGPU)
	params.use_mmap = C.bool(!p.NoMmap)
	params.use_mlock = C.bool(p.Mlock)
	params.vocab_only = C.bool(p.VocabOnly)
	if p.NoRepack {
		params.use_extra_bufts = false
	}
	if len(p.TensorSplit) > 0 {
		max := MaxDevices()
		if len(p.TensorSplit) > max {
			return nil, fmt.Errorf("load %s: tensor split has %d entries, llama.cpp supports %d devices", path, len(p.TensorSplit), max)
		}
		split := C.llmrt_alloc_split()
		if split == nil {
			return nil, fmt.Errorf("load %s: out of memory", path)
		}
		defer C.free(unsafe.Pointer(split))
		s := unsafe.Slice((*float32)(unsafe.Pointer(split)), max)
		copy(s, p.TensorSplit)
		params.tensor_split = split
	}
	st := &loadState{ctx: ctx, progress: p.Progress}
	h := cgo.NewHandle(st)
	defer h.Delete()
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	takeLastLog()
	var ge guardErr
	m := C.llmrt_load_model(cpath, params, C.uintptr_t(h), C.bool(true), ge.p())
	if m == nil {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("load %s: %w", path, err)
		}
		reason := takeLastLog()
		if ge.caught() {
			reason = ge.message()
		}
		if reason == "" {
			reason = "llama.cpp could not load the model"
		}
		return nil, fmt.Errorf("load %s: %s", path, reason)
	}
	model := &Model{path: path, c: m, vocab: C.llama_model_get_vocab(m), adapters: map[*Adapter]struct{}{}}
	model.info = model.readInfo()
	return model, nil
}

// checkGGUFFile refuses what is not a GGUF file before llama.cpp sees it,
// so that the error is precise (llama.cpp's own messages are terse).
func checkGGUFFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load %s: %w", path, err)
	}
	defer f.Close()
	var hdr [8]byte
	n, err := f.Read(hdr[:])
	if n < 8 {
		return fmt.Errorf("load %s: file is %d bytes, too short to be a GGUF model", path, n)
	}
	if err != nil {
		return fmt.Errorf("load %s: %w", path, err)
	}
	if string(hdr[:4]) != "GGUF" {
		return fmt.Errorf("load %s: not a GGUF file (it does not start with the GGUF magic)", path)
	}
	v := uint32(hdr[4]) | uint32(hdr[5])<<8 | uint32(hdr[6])<<16 | uint32(hdr[7])<<24
	if v < 2 || v > 3 {
		return fmt.Errorf("load %s: unsupported GGUF version %d (llama.cpp reads 2 and 3)", path, v)
	}
	return nil
}

// errModelClosed is returned by calls on a closed model (llama.cpp would
// read freed memory).
var errModelClosed = errors.New("model is closed")

// Path is the file the model was loaded from.
func (m *Model) Path() string { return m.path }

// Close frees the model and the adapters loaded on it.
func (m *Model) Close() error {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == nil {
		return nil
	}
	for a := range m.adapters {
		a.free()
	}
	m.adapters = nil
	for n := range m.nets {
		n.free()
	}
	m.nets = nil
	for d := range m.decoders {
		d.free()
	}
	m.decoders = nil
	C.llama_model_free(m.c)
	m.c = nil
	m.vocab = nil
	return nil
}

// ModelInfo holds the facts about a loaded model.
type ModelInfo struct {
	Arch         string  `json:"architecture"`
	Name         string  `json:"name"`
	Description  string  `json:"description"`
	Params       uint64  `json:"parameters"`
	SizeBytes    uint64  `json:"size_bytes"`
	CtxTrain     int     `json:"context_length"`
	Embd         int     `json:"embedding_length"`
	Layers       int     `json:"block_count"`
	Heads        int     `json:"head_count"`
	HeadsKV      int     `json:"head_count_kv"`
	Vocab        int     `json:"vocab_size"`
	ChatTemplate string  `json:"chat_template,omitempty"`
	BOS          int32   `json:"bos_token_id"`
	EOS          int32   `json:"eos_token_id"`
	EOT          int32   `json:"eot_token_id"`
	AddBOS       bool    `json:"add_bos_token"`
	AddEOS       bool    `json:"add_eos_token"`
	HasEncoder   bool    `json:"has_encoder"`
	RopeScale    float32 `json:"rope_freq_scale_train"`
}

func (m *Model) readInfo() ModelInfo {
	var buf [256]C.char
	C.llama_model_desc(m.c, &buf[0], C.size_t(len(buf)))
	info := ModelInfo{
		Arch:        m.MetaValue("general.architecture"),
		Name:        m.MetaValue("general.name"),
		Description: C.GoString(&buf[0]),
		Params:      uint64(C.llama_model_n_params(m.c)),
		SizeBytes:   uint64(C.llama_model_size(m.c)),
		CtxTrain:    int(C.llama_model_n_ctx_train(m.c)),
		Embd:        int(C.llama_model_n_embd(m.c)),
		Layers:      int(C.llama_model_n_layer(m.c)),
		Vocab:       int(C.llama_vocab_n_tokens(m.vocab)),
		BOS:         int32(C.llama_vocab_bos(m.vocab)),
		EOS:         int32(C.llama_vocab_eos(m.vocab)),
		EOT:         int32(C.llama_vocab_eot(m.vocab)),
		AddBOS:      bool(C.llama_vocab_get_add_bos(m.vocab)),
		AddEOS:      bool(C.llama_vocab_get_add_eos(m.vocab)),
		HasEncoder:  bool(C.llama_model_has_encoder(m.c)),
		RopeScale:   float32(C.llama_model_rope_freq_scale_train(m.c)),
	}
	// llama.cpp aborts on per-layer queries of a model without layers
	// (vocab-only loads), so ask only when there are some.
	if info.Layers > 0 {
		info.Heads = int(C.llama_model_n_head(m.c))
		info.HeadsKV = int(C.llama_model_n_head_kv(m.c))
	}
	if t := C.llama_model_chat_template(m.c, nil); t != nil {
		info.ChatTemplate = C.GoString(t)
	}
	return info
}

// Info returns the model's facts.
func (m *Model) Info() ModelInfo { return m.info }

// MetaValue returns a metadata value as llama.cpp renders it ("" if absent).
// Arrays are rendered as llama.cpp does: "arr[type,len]".
func (m *Model) MetaValue(key string) string {
	if m.c == nil {
		return ""
	}
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	n := C.llama_model_meta_val_str(m.c, ckey, nil, 0)
	if n < 0 {
		return ""
	}
	buf := make([]byte, int(n)+1)
	C.llama_model_meta_val_str(m.c, ckey, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	return string(buf[:n])
}

// Meta returns every metadata key/value pair as llama.cpp renders them.
func (m *Model) Meta() map[string]string {
	if m.c == nil {
		return nil
	}
	n := int(C.llama_model_meta_count(m.c))
	out := make(map[string]string, n)
	for i := 0; i < n; i++ {
		k := metaString(func(b *C.char, sz C.size_t) C.int32_t {
			return C.llama_model_meta_key_by_index(m.c, C.int32_t(i), b, sz)
		})
		v := metaString(func(b *C.char, sz C.size_t) C.int32_t {
			return C.llama_model_meta_val_str_by_index(m.c, C.int32_t(i), b, sz)
		})
		out[k] = v
	}
	return out
}

func metaString(get func(*C.char, C.size_t) C.int32_t) string {
	n := get(nil, 0)
	if n < 0 {
		return ""
	}
	buf := make([]byte, int(n)+1)
	get((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	return string(buf[:n])
}

// Tokenize converts text to token ids. addSpecial adds BOS/EOS as the model
// is configured to; parseSpecial turns special-token text (e.g. "<|im_end|>")
// into its token instead of plain text.
func (m *Model) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	if len(text) > 1<<30 {
		return nil, fmt.Errorf("tokenize: text of %d bytes is too long", len(text))
	}
	if m.vocab == nil {
		return nil, errModelClosed
	}
	ctext := C.CString(text)
	defer C.free(unsafe.Pointer(ctext))
	n := len(text) + 2
	for attempt := 0; attempt < 2; attempt++ {
		toks := make([]int32, n)
		var ptr *C.llama_token
		if n > 0 {
			ptr = (*C.llama_token)(unsafe.Pointer(&toks[0]))
		}
		var got C.int32_t
		var ge guardErr
		if C.llmrt_tokenize(m.vocab, ctext, C.int32_t(len(text)), ptr, C.int32_t(n), C.bool(addSpecial), C.bool(parseSpecial), &got, ge.p()) != 0 {
			return nil, ge.err("tokenize")
		}
		if got == C.INT32_MIN {
			return nil, errors.New("tokenize: result does not fit in int32")
		}
		if got >= 0 {
			return toks[:got], nil
		}
		n = int(-got)
	}
	return nil, errors.New("tokenize: token count changed between calls")
}

// TokenPiece returns the bytes of one token. A piece may be part of a
// multi-byte UTF-8 character; callers that stream text must buffer.
// special renders control tokens (e.g. "</s>") as text. A token outside
// the vocabulary has no piece (nil).
func (m *Model) TokenPiece(tok int32, special bool) []byte {
	if tok < 0 || int(tok) >= m.info.Vocab || m.vocab == nil {
		return nil
	}
	var small [64]byte
	n, ok := m.tokenPiece(tok, small[:], special)
	if !ok {
		return nil
	}
	if n >= 0 {
		return append([]byte(nil), small[:n]...)
	}
	buf := make([]byte, int(-n))
	if n, ok = m.tokenPiece(tok, buf, special); !ok || n < 0 {
		return nil
	}
	return buf[:n]
}

func (m *Model) tokenPiece(tok int32, buf []byte, special bool) (int, bool) {
	var n C.int32_t
	rc := C.llmrt_token_to_piece(m.vocab, C.llama_token(tok), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(len(buf)), 0, C.bool(special), &n, nil)
	return int(n), rc == 0
}

// TokenError reports a token id outside the model's vocabulary.
type TokenError struct {
	Token int32 // the id
	Index int   // its position in the input
	Vocab int   // the vocabulary's size
}

func (e *TokenError) Error() string {
	return fmt.Sprintf("token %d at position %d is outside the vocabulary (ids 0..%d)", e.Token, e.Index, e.Vocab-1)
}

// CheckTokens returns a *TokenError for the first id in toks that is not
// in the vocabulary. llama.cpp does not check ids before it indexes its
// tables, so every token that comes from outside must pass here first.
func (m *Model) CheckTokens(toks []int32) error {
	for i, t := range toks {
		if t < 0 || int(t) >= m.info.Vocab {
			return &TokenError{Token: t, Index: i, Vocab: m.info.Vocab}
		}
	}
	return nil
}

// Detokenize converts tokens back to text.
func (m *Model) Detokenize(toks []int32, removeSpecial, unparseSpecial bool) (string, error) {
	if len(toks) == 0 {
		return "", nil
	}
	if err := m.CheckTokens(toks); err != nil {
		return "", fmt.Errorf("detokenize: %w", err)
	}
	if m.vocab == nil {
		return "", errModelClosed
	}
	n := len(toks)*8 + 16
	for attempt := 0; attempt < 2; attempt++ {
		buf := make([]byte, n)
		var got C.int32_t
		var ge guardErr
		if C.llmrt_detokenize(m.vocab, (*C.llama_token)(unsafe.Pointer(&toks[0])), C.int32_t(len(toks)),
			(*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(n), C.bool(removeSpecial), C.bool(unparseSpecial), &got, ge.p()) != 0 {
			return "", ge.err("detokenize")
		}
		if got >= 0 {
			return string(buf[:got]), nil
		}
		n = int(-got)
	}
	return "", errors.New("detokenize: length changed between calls")
}

// IsEOG reports whether tok ends generation (EOS, EOT and the like).
func (m *Model) IsEOG(tok int32) bool {
	var out C.bool
	if tok < 0 || int(tok) >= m.info.Vocab || m.vocab == nil || C.llmrt_vocab_is_eog(m.vocab, C.llama_token(tok), &out, nil) != 0 {
		return false
	}
	return bool(out)
}

// IsControl reports whether tok is a control token.
func (m *Model) IsControl(tok int32) bool {
	var out C.bool
	if tok < 0 || int(tok) >= m.info.Vocab || m.vocab == nil || C.llmrt_vocab_is_control(m.vocab, C.llama_token(tok), &out, nil) != 0 {
		return false
	}
	return bool(out)
}

// TokenText is the vocabulary's text for tok (not detokenized).
func (m *Model) TokenText(tok int32) string {
	if tok < 0 || int(tok) >= m.info.Vocab || m.vocab == nil {
		return ""
	}
	return C.GoString(C.llama_vocab_get_text(m.vocab, C.llama_token(tok)))
}

// ChatMessage is one message for llama.cpp's built-in chat templates.
type ChatMessage struct{ Role, Content string }

// ApplyChatTemplate renders msgs with llama.cpp's built-in template
// matching tmpl (a template name such as "chatml" or "llama3", or a Jinja
// template text that llama.cpp recognises; "" uses the model's own).
func (m *Model) ApplyChatTemplate(tmpl string, msgs []ChatMessage, addAssistant bool) (string, error) {
	if tmpl == "" {
		tmpl = m.info.ChatTemplate
	}
	if tmpl == "" {
		return "", errors.New("chat template: model has none and none was given")
	}
	ctmpl := C.CString(tmpl)
	defer C.free(unsafe.Pointer(ctmpl))
	cmsgs := (*C.struct_llama_chat_message)(C.calloc(C.size_t(len(msgs)+1), C.size_t(unsafe.Sizeof(C.struct_llama_chat_message{}))))
	defer C.free(unsafe.Pointer(cmsgs))
	view := unsafe.Slice(cmsgs, len(msgs)+1)
	total := 0
	for i, msg := range msgs {
		view[i].role = C.CString(msg.Role)
		view[i].content = C.CString(msg.Content)
		total += len(msg.Role) + len(msg.Content)
	}
	defer func() {
		for i := range msgs {
			C.free(unsafe.Pointer(view[i].role))
			C.free(unsafe.Pointer(view[i].content))
		}
	}()
	n := 2*total + 256
	for attempt := 0; attempt < 2; attempt++ {
		buf := make([]byte, n)
		var got C.int32_t
		var ge guardErr
		if C.llmrt_chat_apply_template(ctmpl, cmsgs, C.size_t(len(msgs)), C.bool(addAssistant), (*C.char)(unsafe.Pointer(&buf[0])), C.int32_t(n), &got, ge.p()) != 0 {
			return "", ge.err("chat template")
		}
		if got < 0 {
			return "", errors.New("chat template: llama.cpp does not support this template")
		}
		if int(got) <= n {
			return string(buf[:got]), nil
		}
		n = int(got)
	}
	return "", errors.New("chat template: output length changed between calls")
}

// BuiltinChatTemplates lists the template names llama.cpp knows.
func BuiltinChatTemplates() []string {
	Init()
	n := int(C.llama_chat_builtin_templates(nil, 0))
	if n <= 0 {
		return nil
	}
	arr := make([]*C.char, n)
	C.llama_chat_builtin_templates(&arr[0], C.size_t(n))
	out := make([]string, n)
	for i, p := range arr {
		out[i] = C.GoString(p)
	}
	return out
}

// FType is a llama.cpp file type for quantization.
type FType int

// File types accepted by Quantize.
const (
	FTypeF32    FType = 0
	FTypeF16    FType = 1
	FTypeQ4_0   FType = 2
	FTypeQ8_0   FType = 7
	FTypeQ5_K_M FType = 17
	FTypeQ4_K_M FType = 15
	FTypeQ6_K   FType = 18
	FTypeBF16   FType = 32
)

// ParseFType maps a name such as "Q8_0" or "q4_k_m" to its FType.
func ParseFType(name string) (FType, error) {
	switch name {
	case "F32", "f32":
		return FTypeF32, nil
	case "F16", "f16":
		return FTypeF16, nil
	case "BF16", "bf16":
		return FTypeBF16, nil
	case "Q4_0", "q4_0":
		return FTypeQ4_0, nil
	case "Q8_0", "q8_0":
		return FTypeQ8_0, nil
	case "Q4_K_M", "q4_k_m", "Q4_K", "q4_k":
		return FTypeQ4_K_M, nil
	case "Q5_K_M", "q5_k_m":
		return FTypeQ5_K_M, nil
	case "Q6_K", "q6_k":
		return FTypeQ6_K, nil
	}
	return 0, fmt.Errorf("unknown quantization type %q (known: F32, F16, BF16, Q4_0, Q8_0, Q4_K_M, Q5_K_M, Q6_K)", name)
}

// Quantize converts the GGUF model at in to out with llama_model_quantize.
// threads <= 0 uses every core. The output is written to a temporary file
// beside out and renamed into place only when llama.cpp succeeds.
func Quantize(ctx context.Context, in, out string, ft FType, threads int) error {
	Init()
	if err := checkGGUFFile(in); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tmp := out + ".tmp-" + strconv.Itoa(os.Getpid())
	cin, ctmp := C.CString(in), C.CString(tmp)
	defer C.free(unsafe.Pointer(cin))
	defer C.free(unsafe.Pointer(ctmp))
	takeLastLog()
	var rc C.uint32_t
	var ge guardErr
	if C.llmrt_model_quantize_quiet(cin, ctmp, C.int32_t(ft), C.int32_t(threads), &rc, ge.p()) != 0 {
		os.Remove(tmp)
		return ge.err("quantize " + in)
	}
	if rc != 0 {
		os.Remove(tmp)
		reason := takeLastLog()
		if reason == "" {
			reason = "llama_model_quantize failed"
		}
		return fmt.Errorf("quantize %s: %s", in, reason)
	}
	if err := syncAndRename(tmp, out); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("quantize %s: %w", in, err)
	}
	return nil
}

func syncAndRename(tmp, out string) error {
	f, err := os.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
