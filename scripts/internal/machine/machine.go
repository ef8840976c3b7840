// Package machine measures this machine's limits for the benchmarks (read
// bandwidth from a STREAM-like loop, fp32 GEMM from OpenBLAS's
// cblas_sgemm, ggml's Q8_0 matmul as a yardstick) and runs the plain C
// llama.cpp loop that the engine's overhead is measured against. Only
// benchmarks and their tests build it; it links OpenBLAS (Debian
// libopenblas-dev).
package machine

/*
#cgo CFLAGS: -I${SRCDIR}/../../../kernels
#cgo LDFLAGS: -lopenblas
#include <stdlib.h>
#include "machine.h"
*/
import "C"

import (
	"fmt"
	"time"
	"unsafe"

	"github.com/llmrt/llmrt/kernels"
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

// SGEMMFlops measures OpenBLAS's fp32 matrix product (cblas_sgemm) in
// FLOP/s for an m×k by k×n product on threads threads, best of reps: the
// machine's fp32 GEMM limit.
func SGEMMFlops(m, n, k, threads, reps int) (float64, error) {
	f := float64(C.llmrt_sgemm_flops(C.int(m), C.int(n), C.int(k), C.int(threads), C.int(reps)))
	if f <= 0 {
		return 0, fmt.Errorf("sgemm: measurement failed (%dx%dx%d, %d threads)", m, n, k, threads)
	}
	return f, nil
}

// GEMMFlopsQ8 measures ggml's matrix product with Q8_0 weights (f32
// activations) in FLOP/s, best of reps: the product a Q8_0 model's prompt
// processing runs on. It is ggml's own rate, a yardstick, not a limit of
// the machine.
func GEMMFlopsQ8(m, n, k, threads, reps int) (float64, error) {
	kernels.Init()
	f := float64(C.llmrt_gemm_flops(C.int(m), C.int(n), C.int(k), C.int(threads), C.int(reps), C.GGML_TYPE_Q8_0))
	if f <= 0 {
		return 0, fmt.Errorf("gemm q8_0: measurement failed (%dx%dx%d)", m, n, k)
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
	kernels.Init()
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var out C.llmrt_raw_result
	if rc := C.llmrt_raw_bench(cpath, C.int(nPrompt), C.int(nGen), C.int(threads), C.int(nCtx), &out); rc != 0 {
		return RawBenchResult{}, fmt.Errorf("raw bench on %s: step %d failed (llama.cpp's log says why)", path, int(rc))
	}
	return RawBenchResult{
		Prompt:     time.Duration(float64(out.prompt_seconds) * float64(time.Second)),
		Generation: time.Duration(float64(out.gen_seconds) * float64(time.Second)),
	}, nil
}
