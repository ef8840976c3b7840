// Package kernels is llmrt's cgo boundary: the only package that includes
// llama.cpp and ggml headers. It exposes Go types with Close methods for the
// llama.cpp objects (models, contexts, batches, samplers, LoRA adapters) and
// turns every llama.cpp failure into a Go error. No C type leaves it.
//
// llama.cpp and ggml are compiled from the Go module github.com/ollama/ollama
// (v0.17.4); the include paths come from the Makefile through CGO_CPPFLAGS.
package kernels

/*
#cgo CXXFLAGS: -std=c++17
#cgo linux LDFLAGS: -lm -ldl -lpthread -lstdc++
// Export the executable's symbols (ggml included) to the libraries it
// loads, so that a backend library's ggml_* calls reach this process's
// statically linked ggml instead of a second copy: one backend registry,
// one log callback, one set of buffer types (see kernels/simgpu).
#cgo linux LDFLAGS: -rdynamic
#include <stdlib.h>
#include "bridge.h"
*/
import "C"

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	_ "github.com/ollama/ollama/llama/llama.cpp/src"      // llama.cpp core
	_ "github.com/ollama/ollama/ml/backend/ggml/ggml/src" // ggml + CPU backend
)

var initOnce sync.Once

// logger receives llama.cpp's log lines. It is swapped atomically so that
// tests and the CLI can redirect llama.cpp output without a data race.
var logger atomic.Pointer[slog.Logger]

// logLevel is the lowest ggml log level forwarded (ggml: 1 debug, 2 info,
// 3 warn, 4 error). Warnings and errors by default.
var logLevel atomic.Int32

// Init initialises the llama.cpp backend once per process. It is called by
// every constructor in this package, so callers rarely need it directly.
// Set LLMRT_LLAMA_LOG=debug|info|warn|error to see more or less of
// llama.cpp's own output (default warn).
func Init() {
	initOnce.Do(func() {
		logLevel.Store(3)
		switch strings.ToLower(os.Getenv("LLMRT_LLAMA_LOG")) {
		case "debug":
			logLevel.Store(1)
		case "info":
			logLevel.Store(2)
		case "error":
			logLevel.Store(4)
		case "off", "none":
			logLevel.Store(99)
		}
		C.llmrt_set_log()
		C.llama_backend_init()
	})
}

// SetLogger sends llama.cpp's log output to l (nil restores stderr text).
func SetLogger(l *slog.Logger) { logger.Store(l) }

// lastLog keeps the most recent error/warning line from llama.cpp so that
// Go errors can say what llama.cpp said (it reports failures by logging).
var lastLog struct {
	sync.Mutex
	lines []string
}

// goLog receives one llama.cpp log line; quiet lines (from a call whose
// error will carry them) are kept for that error but not logged.
//
//export goLog
func goLog(level C.int, text *C.char, quiet C.int) {
	msg := strings.TrimRight(C.GoString(text), "\n")
	lvl := int32(level)
	if lvl == 5 { // GGML_LOG_LEVEL_CONT continues the previous line
		lvl = 2
	}
	if line := strings.Join(strings.Fields(msg), " "); lvl >= 3 && line != "" {
		lastLog.Lock()
		lastLog.lines = append(lastLog.lines, line)
		if len(lastLog.lines) > 8 {
			lastLog.lines = lastLog.lines[len(lastLog.lines)-8:]
		}
		lastLog.Unlock()
	}
	if lvl < logLevel.Load() || msg == "" || (quiet != 0 && lvl >= 3) {
		return
	}
	if l := logger.Load(); l != nil {
		l.Log(context.Background(), slog.Level((lvl-2)*4), msg, "source", "llama.cpp")
		return
	}
	fmt.Fprintln(os.Stderr, msg)
}

// takeLastLog returns and clears llama.cpp's recent warning/error lines.
func takeLastLog() string {
	lastLog.Lock()
	defer lastLog.Unlock()
	s := strings.Join(lastLog.lines, "; ")
	lastLog.lines = nil
	return s
}

// SystemInfo reports the CPU features ggml was built with.
func SystemInfo() string {
	Init()
	return C.GoString(C.llama_print_system_info())
}

// LoadBackends loads ggml backend libraries (libggml-cuda.so and friends,
// as `make cuda` or `make backends` build them) from dir with
// ggml_backend_load_all_from_path and returns the names of the backends it
// registered. A missing directory is not an error: the statically linked
// CPU backend is always present.
func LoadBackends(dir string) ([]string, error) {
	Init()
	st, err := os.Stat(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("load backends from %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("load backends from %s: not a directory", dir)
	}
	before := int(C.ggml_backend_reg_count())
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	C.ggml_backend_load_all_from_path(cdir)
	var loaded []string
	for i := before; i < int(C.ggml_backend_reg_count()); i++ {
		loaded = append(loaded, C.GoString(C.ggml_backend_reg_name(C.ggml_backend_reg_get(C.size_t(i)))))
	}
	return loaded, nil
}

// loadedBackends maps the absolute path of each file LoadBackend loaded to
// its backend's name.
var loadedBackends struct {
	sync.Mutex
	names map[string]string
}

// LoadBackend loads one ggml backend library file with ggml_backend_load
// (for a backend that ggml_backend_load_all_from_path does not look for by
// name, such as the simulated GPU) and returns the name of the backend it
// registered. Loading the same file again returns the name without
// registering its devices a second time.
func LoadBackend(path string) (string, error) {
	Init()
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("load backend: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("load backend: %w", err)
	}
	loadedBackends.Lock()
	defer loadedBackends.Unlock()
	if name, ok := loadedBackends.names[abs]; ok {
		return name, nil
	}
	cpath := C.CString(abs)
	defer C.free(unsafe.Pointer(cpath))
	takeLastLog()
	reg := C.ggml_backend_load(cpath)
	if reg == nil {
		reason := takeLastLog()
		if reason == "" {
			reason = "ggml_backend_load failed"
		}
		return "", fmt.Errorf("load backend %s: %s", path, reason)
	}
	name := C.GoString(C.ggml_backend_reg_name(reg))
	if loadedBackends.names == nil {
		loadedBackends.names = map[string]string{}
	}
	loadedBackends.names[abs] = name
	return name, nil
}

// DeviceType is the kind of a ggml backend device.
type DeviceType string

// Device types as ggml names them.
const (
	DeviceCPU   DeviceType = "cpu"
	DeviceGPU   DeviceType = "gpu"
	DeviceIGPU  DeviceType = "igpu"
	DeviceAccel DeviceType = "accel"
)

// Device is one ggml backend device with its memory as the backend reports it.
type Device struct {
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Backend     string     `json:"backend"`
	Type        DeviceType `json:"type"`
	Total       uint64     `json:"total_bytes"`
	Free        uint64     `json:"free_bytes"`
	// ID (a UUID for GPUs) and PCIBusID ("0000:01:00.0") as the backend
	// reports them; empty when it does not.
	ID       string `json:"id,omitempty"`
	PCIBusID string `json:"pci_bus_id,omitempty"`
}

// Devices lists the ggml backend devices known to the process.
func Devices() []Device {
	Init()
	n := int(C.ggml_backend_dev_count())
	out := make([]Device, 0, n)
	for i := 0; i < n; i++ {
		d := C.ggml_backend_dev_get(C.size_t(i))
		var free, total C.size_t
		C.ggml_backend_dev_memory(d, &free, &total)
		var props C.struct_ggml_backend_dev_props
		C.ggml_backend_dev_get_props(d, &props)
		var typ DeviceType
		switch C.ggml_backend_dev_type(d) {
		case C.GGML_BACKEND_DEVICE_TYPE_CPU:
			typ = DeviceCPU
		case C.GGML_BACKEND_DEVICE_TYPE_GPU:
			typ = DeviceGPU
		case C.GGML_BACKEND_DEVICE_TYPE_IGPU:
			typ = DeviceIGPU
		default:
			typ = DeviceAccel
		}
		out = append(out, Device{
			Name:        C.GoString(C.ggml_backend_dev_name(d)),
			Description: C.GoString(C.ggml_backend_dev_description(d)),
			Backend:     C.GoString(C.ggml_backend_reg_name(C.ggml_backend_dev_backend_reg(d))),
			Type:        typ,
			Total:       uint64(total),
			Free:        uint64(free),
			ID:          cString(props.id),
			PCIBusID:    cString(props.device_id),
		})
	}
	return out
}

// cString is C.GoString that maps NULL to "".
func cString(s *C.char) string {
	if s == nil {
		return ""
	}
	return C.GoString(s)
}

// DevicesOf lists the devices of one backend ("SIM", "CUDA"), in ggml's
// order.
func DevicesOf(backend string) []Device {
	var out []Device
	for _, d := range Devices() {
		if d.Backend == backend {
			out = append(out, d)
		}
	}
	return out
}

// MaxDevices is llama.cpp's compile-time limit on devices in a tensor split.
func MaxDevices() int { Init(); return int(C.llama_max_devices()) }

// MaxParallelSequences is llama.cpp's limit on n_seq_max.
func MaxParallelSequences() int { Init(); return int(C.llama_max_parallel_sequences()) }

// SupportsGPUOffload reports whether any loaded backend can hold layers.
func SupportsGPUOffload() bool { Init(); return bool(C.llama_supports_gpu_offload()) }

// cBool is a Go flag as C's int.
func cBool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
