package kernels

/*
#include <stdlib.h>
#include "bridge.h"
#include "guard.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// Adapter is a LoRA adapter loaded for one model.
type Adapter struct {
	model *Model
	path  string
	c     *C.struct_llama_adapter_lora
}

// LoadAdapter loads a GGUF LoRA adapter for m.
func (m *Model) LoadAdapter(path string) (*Adapter, error) {
	if err := checkGGUFFile(path); err != nil {
		return nil, fmt.Errorf("adapter: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == nil {
		return nil, errors.New("load adapter: model is closed")
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	takeLastLog()
	var ge guardErr
	c := C.llmrt_adapter_lora_init(m.c, cpath, ge.p())
	if c == nil {
		reason := takeLastLog()
		if ge.caught() {
			reason = ge.message()
		}
		if reason == "" {
			reason = "llama.cpp could not load the adapter"
		}
		return nil, fmt.Errorf("load adapter %s: %s", path, reason)
	}
	a := &Adapter{model: m, path: path, c: c}
	m.adapters[a] = struct{}{}
	return a, nil
}

// Path is the adapter's file.
func (a *Adapter) Path() string { return a.path }

// Meta returns the adapter's scalar metadata as llama.cpp renders it.
func (a *Adapter) Meta() map[string]string {
	n := int(C.llama_adapter_meta_count(a.c))
	out := make(map[string]string, n)
	for i := 0; i < n; i++ {
		k := metaString(func(b *C.char, sz C.size_t) C.int32_t {
			return C.llama_adapter_meta_key_by_index(a.c, C.int32_t(i), b, sz)
		})
		v := metaString(func(b *C.char, sz C.size_t) C.int32_t {
			return C.llama_adapter_meta_val_str_by_index(a.c, C.int32_t(i), b, sz)
		})
		out[k] = v
	}
	return out
}

// Close frees the adapter. Detach it from every context first.
func (a *Adapter) Close() error {
	if a == nil {
		return nil
	}
	a.model.mu.Lock()
	defer a.model.mu.Unlock()
	if _, ok := a.model.adapters[a]; ok {
		delete(a.model.adapters, a)
		a.free()
	}
	return nil
}

func (a *Adapter) free() {
	if a.c != nil {
		C.llama_adapter_lora_free(a.c)
		a.c = nil
	}
}

// AdapterScale pairs an adapter with its user scale (1 = as trained).
type AdapterScale struct {
	Adapter *Adapter
	Scale   float32
}

// SetAdapters makes set the context's active adapters (nil: none). The KV
// cells computed under another set are not valid under this one: callers
// must not reuse them.
func (c *Context) SetAdapters(set []AdapterScale) error {
	c.rebuild = true
	C.llama_clear_adapter_lora(c.c)
	for _, as := range set {
		if as.Adapter == nil || as.Adapter.c == nil {
			return errors.New("set adapters: adapter is closed")
		}
		if as.Adapter.model != c.model {
			return fmt.Errorf("set adapters: %s was loaded for another model", as.Adapter.path)
		}
		var rc C.int32_t
		threw := C.llmrt_set_adapter_lora(c.c, as.Adapter.c, C.float(as.Scale), &rc, c.ge.p()) != 0
		if threw || rc != 0 {
			C.llama_clear_adapter_lora(c.c)
			c.adapter = nil
			if threw {
				return c.ge.err("set adapters: " + as.Adapter.path)
			}
			return fmt.Errorf("set adapters: llama_set_adapter_lora(%s) returned %d", as.Adapter.path, int(rc))
		}
	}
	c.adapter = append(c.adapter[:0], set...)
	return nil
}

// Adapters returns the context's active adapter set.
func (c *Context) Adapters() []AdapterScale { return append([]AdapterScale(nil), c.adapter...) }
