package kernels

/*
#include <stdlib.h>
#include "machine.h"
*/
import "C"

import (
	"fmt"
	"time"
	"unsafe"
)

// MemoryBandwidth measures this machine's read bandwidth in bytes/s:
// threads sum a buffer of the given size, best of reps.
func MemoryBandwidth(bytes int64, threads, reps int) (float64, error) {
	bw := float64(C.llmrt_mem_bandwidth(C.size_t(bytes), C.int(threads), C.int(reps)))
	if bw <= 0 {
		return 0, fmt.Errorf("memory bandwidth: measurement failed (%d bytes, %d threads)", bytes, threads)
	}
	return bw, nil
}

// GEMMFlops measures ggml's fp32 matrix product on the CPU in FLOP/s for an
// m×k by k×n product, best of reps.
func GEMMFlops(m, n, k, threads, reps int) (float64, error) {
	return gemm(m, n, k, threads, reps, C.GGML_TYPE_F32)
}

// GEMMFlopsQ8 is GEMMFlops with Q8_0 weights (f32 activations), the
// product a Q8_0 model's prompt processing runs on: int8 dot products,
// which on CPUs with VNNI exceed the fp32 rate.
func GEMMFlopsQ8(m, n, k, threads, reps int) (float64, error) {
	return gemm(m, n, k, threads, reps, C.GGML_TYPE_Q8_0)
}

func gemm(m, n, k, threads, reps int, typ C.int) (float64, error) {
	Init()
	f := float64(C.llmrt_gemm_flops(C.int(m), C.int(n), C.int(k), C.int(threads), C.int(reps), typ))
	if f <= 0 {
		return 0, fmt.Errorf("gemm: measurement failed (%dx%dx%d, type %d)", m, n, k, int(typ))
	}
	return f, nil
}

// RawBenchResult is the timing of the minimal C generation loop.
type RawBenchResult struct {
	Prompt     time.Duration // one decode of the whole prompt
	Generation time.Duration // nGen single-token decodes with greedy sampling
}

// RawBench runs llama.cpp's calls in a plain C loop with no Go in between:
// the reference for measuring the engine's overhead.
func RawBench(path string, nPrompt, nGen, threads, nCtx int) (RawBenchResult, error) {
	Init()
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var out C.llmrt_raw_result
	if rc := C.llmrt_raw_bench(cpath, C.int(nPrompt), C.int(nGen), C.int(threads), C.int(nCtx), &out); rc != 0 {
		return RawBenchResult{}, fmt.Errorf("raw bench on %s: step %d failed: %s", path, int(rc), takeLastLog())
	}
	return RawBenchResult{
		Prompt:     time.Duration(float64(out.prompt_seconds) * float64(time.Second)),
		Generation: time.Duration(float64(out.gen_seconds) * float64(time.Second)),
	}, nil
}
