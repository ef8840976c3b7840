package kernels

/*
#cgo linux LDFLAGS: -Wl,--wrap=ggml_compute_forward_out_prod
#include "outprod.h"
#include "q8amx.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// EnableOutProd routes the matmul input gradients of training (ggml's
// OUT_PROD of a weight and a transposed gradient) to llmrt's blocked
// kernel (outprod.c, the default) or leaves them to ggml's rank-1 loop.
// It is process-wide and exists for benchmarks and tests that compare the
// two paths.
func EnableOutProd(on bool) { C.llmrt_outprod_enable(cBool(on)) }

// OutProdEnabled reports whether EnableOutProd last turned the kernel on.
func OutProdEnabled() bool { return C.llmrt_outprod_enabled() != 0 }

// OutProdCalls is how many OUT_PROD nodes llmrt's kernel has computed in
// this process.
func OutProdCalls() int64 { return int64(C.llmrt_outprod_calls()) }

// OutProdAMXAvailable reports whether training's input gradients through
// Q8_0 weights can run on AMX-BF16 tiles here (nets with NetParams.Tiles
// use them): in bf16 with fp32 sums, as mixed-precision training does.
func OutProdAMXAvailable() bool { return C.llmrt_bf16_amx_available() != 0 }

// OutProdAMXCalls is how many threads' shares of OUT_PROD nodes ran on
// AMX-BF16 tiles in this process.
func OutProdAMXCalls() int64 { return int64(C.llmrt_outprod_amx_calls()) }

// outProd computes dst (heads batches of m rows of n) =
// OUT_PROD(w, transpose(g)) with transposed set (g is m rows of k floats
// per head), else OUT_PROD(w, g) (g is k rows of m floats per head),
// through ggml's CPU backend: w is wHeads slices of k rows of n floats
// (each serving heads/wHeads batches), stored as F32 or, with q8, as Q8_0
// the way a model stores it. Tests use it to run the routed and unrouted
// paths on the same product.
func outProd(w, g []float32, n, m, k, heads, wHeads int, q8, transposed bool, threads int) ([]float32, error) {
	return outProdOn(w, g, n, m, k, heads, wHeads, q8, transposed, threads, false)
}

// outProdOn is outProd, with tiles on a thread pool allowed the AMX tiles
// as a training net's is.
func outProdOn(w, g []float32, n, m, k, heads, wHeads int, q8, transposed bool, threads int, tiles bool) ([]float32, error) {
	if len(w) != n*k*wHeads || len(g) != m*k*heads {
		return nil, fmt.Errorf("out_prod: %d and %d values for %d x %dx%d and %d x %dx%d", len(w), len(g), wHeads, k, n, heads, m, k)
	}
	Init()
	typ := C.int(C.GGML_TYPE_F32)
	if q8 {
		typ = C.GGML_TYPE_Q8_0
	}
	tr := C.int(0)
	if transposed {
		tr = 1
	}
	dst := make([]float32, n*m*heads)
	if C.llmrt_outprod_graph(C.int(n), C.int(m), C.int(k), C.int(heads), C.int(wHeads), typ, (*C.float)(unsafe.Pointer(&w[0])),
		(*C.float)(unsafe.Pointer(&g[0])), tr, (*C.float)(unsafe.Pointer(&dst[0])), C.int(threads), cBool(tiles)) != 0 {
		return nil, fmt.Errorf("out_prod: ggml failed on %d x %dx%d and %d x %dx%d", wHeads, k, n, heads, m, k)
	}
	return dst, nil
}
