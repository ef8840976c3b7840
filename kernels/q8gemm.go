package kernels

/*
#cgo linux LDFLAGS: -Wl,--wrap=llamafile_sgemm
#include "q8gemm.h"
#include "q8amx.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Q8GEMMAvailable reports whether this build has llmrt's Q8_0 matmul
// (q8gemm.c), which ggml's CPU backend then uses for Q8_0 weights in
// place of llamafile's tinyBLAS: decode steps of several sequences and
// prompt chunks alike. It needs AVX-512 with VNNI at compile time (the
// default -march=native build on such CPUs; not PORTABLE=1).
func Q8GEMMAvailable() bool { return C.llmrt_q8_gemm_available() != 0 }

// Q8GEMMMaxColumns is the widest matmul (tokens per ubatch) the kernel
// takes; wider ones go to ggml.
const Q8GEMMMaxColumns = C.LLMRT_Q8_GEMM_MAX_N

// EnableQ8GEMM routes Q8_0 matmuls of up to Q8GEMMMaxColumns columns
// to llmrt's kernel (the default where available) or leaves them to ggml. It is process-wide, like ggml's own CPU feature choice, and
// exists for benchmarks and tests that compare the two paths.
func EnableQ8GEMM(on bool) { C.llmrt_q8_gemm_enable(cBool(on)) }

// Q8GEMMCalls is how many matmuls llmrt's kernel has run in this
// process.
func Q8GEMMCalls() int64 { return int64(C.llmrt_q8_gemm_calls()) }

// Q8AMXAvailable reports whether the Q8_0 kernel can run whole 16x16
// tiles of a product (16 or more columns) on Intel AMX-INT8: the build
// has the code, the CPU has the unit and the OS lets this process use it.
// Only nets created with NetParams.Tiles use them.
func Q8AMXAvailable() bool { return C.llmrt_q8_amx_available() != 0 }

// EnableQ8AMX lets training nets use AMX tiles where available (the
// default: Q8_0 matmuls on AMX-INT8, input gradients on AMX-BF16) or
// keeps them on AVX-512 VNNI and fp32. Process-wide; for benchmarks and
// tests that compare the two.
func EnableQ8AMX(on bool) { C.llmrt_q8_amx_enable(cBool(on)) }

// Q8AMXEnabled reports the last EnableQ8AMX setting (true by default).
func Q8AMXEnabled() bool { return C.llmrt_q8_amx_enabled() != 0 }

// Q8AMXCalls is how many threads' shares of Q8_0 matmuls ran on AMX tiles
// in this process.
func Q8AMXCalls() int64 { return int64(C.llmrt_q8_amx_calls()) }

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

// q8GEMM runs the kernel alone, on one thread, over Q8_0 rows: a holds m
// rows of lda blocks and b n columns of ldb blocks, of which the first
// kBlocks take part (strides above kBlocks are views into wider rows). It
// returns n columns of m floats.
func q8GEMM(a, b []byte, m, n, kBlocks, lda, ldb int) ([]float32, error) {
	const blockBytes = 34 // ggml's block_q8_0: an f16 scale and 32 int8
	if len(a) != m*lda*blockBytes || len(b) != n*ldb*blockBytes || lda < kBlocks || ldb < kBlocks {
		return nil, fmt.Errorf("q8 gemm: %d and %d bytes for %d and %d rows of %d/%d Q8_0 blocks", len(a), len(b), m, n, lda, ldb)
	}
	c := make([]float32, m*n)
	rc := C.llmrt_q8_gemm(C.int64_t(m), C.int64_t(n), C.int64_t(kBlocks), unsafe.Pointer(&a[0]), C.int64_t(lda),
		unsafe.Pointer(&b[0]), C.int64_t(ldb), (*C.float)(unsafe.Pointer(&c[0])), C.int64_t(m))
	if rc != 0 {
		return nil, fmt.Errorf("q8 gemm: not in this build or shape out of range (%d x %d x %d blocks)", m, n, kBlocks)
	}
	return c, nil
}
