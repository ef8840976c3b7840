package kernels

/*
#cgo linux LDFLAGS: -Wl,--wrap=llamafile_sgemm
#include "smallgemm.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// SmallGEMMAvailable reports whether this build has the batched-decode
// matmul (smallgemm.c): a Q8_0 kernel for decode steps of up to
// SmallGEMMMaxColumns sequences, which needs AVX-512 with VNNI at compile
// time (the default -march=native build on such CPUs; not PORTABLE=1).
func SmallGEMMAvailable() bool { return C.llmrt_small_gemm_available() != 0 }

// SmallGEMMMaxColumns is the widest matmul (sequences per decode step) the
// batched-decode kernel takes; wider ones go to ggml.
const SmallGEMMMaxColumns = C.LLMRT_SG_MAX_N

// EnableSmallGEMM routes Q8_0 matmuls of up to SmallGEMMMaxColumns columns
// to the batched-decode kernel (the default where available) or leaves
// them to ggml. It is process-wide, like ggml's own CPU feature choice, and
// exists for benchmarks and tests that compare the two paths.
func EnableSmallGEMM(on bool) {
	v := C.int(0)
	if on {
		v = 1
	}
	C.llmrt_small_gemm_enable(v)
}

// SmallGEMMCalls is how many matmuls the batched-decode kernel has run in
// this process.
func SmallGEMMCalls() int64 { return int64(C.llmrt_small_gemm_calls()) }

// mulMatQ8 computes a (m×k, quantized to Q8_0 as a model stores it) times
// b (n columns of k floats) through ggml's CPU matmul on threads threads,
// returning n columns of m floats. Tests use it to run the routed and
// unrouted paths on the same product.
func mulMatQ8(a, b []float32, m, n, k, threads int) ([]float32, error) {
	if len(a) != m*k || len(b) != n*k {
		return nil, fmt.Errorf("mul_mat q8: %d and %d values for %dx%d by %dx%d", len(a), len(b), m, k, k, n)
	}
	Init()
	c := make([]float32, m*n)
	rc := C.llmrt_mul_mat_q8(C.int(m), C.int(n), C.int(k), (*C.float)(unsafe.Pointer(&a[0])),
		(*C.float)(unsafe.Pointer(&b[0])), (*C.float)(unsafe.Pointer(&c[0])), C.int(threads))
	if rc != 0 {
		return nil, fmt.Errorf("mul_mat q8: ggml failed on %dx%d by %dx%d", m, k, k, n)
	}
	return c, nil
}

// smallGEMMQ8 runs the kernel alone, on one thread, over Q8_0 rows: a holds
// m rows and b n columns of k blocks each. It returns n columns of m floats.
func smallGEMMQ8(a, b []byte, m, n, kBlocks int) ([]float32, error) {
	const blockBytes = 34 // ggml's block_q8_0: an f16 scale and 32 int8
	if len(a) != m*kBlocks*blockBytes || len(b) != n*kBlocks*blockBytes {
		return nil, fmt.Errorf("small gemm: %d and %d bytes for %d and %d rows of %d Q8_0 blocks", len(a), len(b), m, n, kBlocks)
	}
	c := make([]float32, m*n)
	rc := C.llmrt_small_gemm_q8(C.int64_t(m), C.int64_t(n), C.int64_t(kBlocks), unsafe.Pointer(&a[0]), C.int64_t(kBlocks),
		unsafe.Pointer(&b[0]), C.int64_t(kBlocks), (*C.float)(unsafe.Pointer(&c[0])), C.int64_t(m))
	if rc != 0 {
		return nil, fmt.Errorf("small gemm: not in this build or shape out of range (%d x %d x %d blocks)", m, n, kBlocks)
	}
	return c, nil
}
