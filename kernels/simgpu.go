package kernels

/*
#include <stdlib.h>
#include "ggml-backend.h"
#include "simgpu/simgpu.h"

static int llmrt_call_sim_stats(void * fn, int dev, llmrt_sim_stats_t * out, int reset_peak) {
    return ((llmrt_sim_stats_fn) fn)(dev, out, reset_peak);
}

static void llmrt_call_sim_probe(void * fn, uintptr_t * addr, size_t * count) {
    ((llmrt_sim_probe_fn) fn)(addr, count);
}

// The address of ggml_backend_reg_count as this executable sees it.
static uintptr_t llmrt_reg_count_addr(void) { return (uintptr_t) &ggml_backend_reg_count; }
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// SimGPUBackend is the registry name of the simulated GPU backend
// (lib/libggml-simgpu.so, built from kernels/simgpu by `make simgpu`).
const SimGPUBackend = "SIM"

// SimGPUStats is what one simulated device's buffers hold, counted by the
// device itself (not by llama.cpp's ledger).
type SimGPUStats struct {
	Total     uint64 // configured size
	Allocated uint64 // bytes in live buffers now
	Peak      uint64 // most bytes live at once since load or the last reset
	Buffers   int    // live buffers
	Failed    int    // allocations refused for lack of room
	Graphs    int64  // graphs (graph splits) computed on the device
}

// simProc returns the simulated GPU backend's function name, or an error
// when the backend is not loaded.
func simProc(name string) (unsafe.Pointer, error) {
	Init()
	cname := C.CString(SimGPUBackend)
	defer C.free(unsafe.Pointer(cname))
	reg := C.ggml_backend_reg_by_name(cname)
	if reg == nil {
		return nil, errors.New("simulated GPU backend not loaded")
	}
	cfn := C.CString(name)
	defer C.free(unsafe.Pointer(cfn))
	fn := C.ggml_backend_reg_get_proc_address(reg, cfn)
	if fn == nil {
		return nil, fmt.Errorf("simulated GPU backend has no %s", name)
	}
	return fn, nil
}

// SimGPUStatsOf returns the counters of simulated device index (SIM<index>);
// resetPeak then restarts the peak from the bytes allocated now.
func SimGPUStatsOf(index int, resetPeak bool) (SimGPUStats, error) {
	fn, err := simProc("llmrt_sim_stats")
	if err != nil {
		return SimGPUStats{}, err
	}
	var st C.llmrt_sim_stats_t
	reset := C.int(0)
	if resetPeak {
		reset = 1
	}
	if C.llmrt_call_sim_stats(fn, C.int(index), &st, reset) != 0 {
		return SimGPUStats{}, fmt.Errorf("no simulated device %d", index)
	}
	return SimGPUStats{Total: uint64(st.total), Allocated: uint64(st.allocated), Peak: uint64(st.peak),
		Buffers: int(st.n_buffers), Failed: int(st.n_failed), Graphs: int64(st.n_graphs)}, nil
}

// GGMLBinding says where a loaded backend library's ggml calls land,
// against this executable's own ggml.
type GGMLBinding struct {
	LibRegCountAddr, ExeRegCountAddr uintptr // &ggml_backend_reg_count in each
	LibRegs, ExeRegs                 int     // ggml_backend_reg_count() in each
}

// SimGPUBinding asks the simulated GPU library where its ggml calls land.
// With one ggml in the process both addresses and both counts agree.
func SimGPUBinding() (GGMLBinding, error) {
	fn, err := simProc("llmrt_sim_probe")
	if err != nil {
		return GGMLBinding{}, err
	}
	var addr C.uintptr_t
	var n C.size_t
	C.llmrt_call_sim_probe(fn, &addr, &n)
	return GGMLBinding{
		LibRegCountAddr: uintptr(addr), ExeRegCountAddr: uintptr(C.llmrt_reg_count_addr()),
		LibRegs: int(n), ExeRegs: int(C.ggml_backend_reg_count()),
	}, nil
}
