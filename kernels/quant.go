package kernels

/*
#include <stdlib.h>
#include "ggml.h"

// llmrt_to_float dequantizes n values of type t; returns -1 when the type
// has no conversion.
static int llmrt_to_float(int t, const void * src, float * dst, int64_t n) {
    if (t < 0 || t >= GGML_TYPE_COUNT) return -1;
    const struct ggml_type_traits * tr = ggml_get_type_traits((enum ggml_type) t);
    if (tr == NULL || tr->to_float == NULL || tr->blck_size <= 0 || n % tr->blck_size != 0) return -1;
    tr->to_float(src, dst, n);
    return 0;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Dequantize converts n values stored as ggml type typ (a GGUF tensor
// type id) to float32.
func Dequantize(typ uint32, data []byte, n int) ([]float32, error) {
	Init()
	if n == 0 {
		return nil, nil
	}
	want := int(C.ggml_row_size(C.enum_ggml_type(typ), C.int64_t(n)))
	if typ >= uint32(C.GGML_TYPE_COUNT) || len(data) != want {
		return nil, fmt.Errorf("dequantize: %d bytes for %d values of type %d (want %d)", len(data), n, typ, want)
	}
	out := make([]float32, n)
	if typ == uint32(C.GGML_TYPE_F32) { // no conversion: the bytes are the values
		copy(out, unsafe.Slice((*float32)(unsafe.Pointer(&data[0])), n))
		return out, nil
	}
	if C.llmrt_to_float(C.int(typ), unsafe.Pointer(&data[0]), (*C.float)(unsafe.Pointer(&out[0])), C.int64_t(n)) != 0 {
		return nil, fmt.Errorf("dequantize: ggml type %d has no conversion to float", typ)
	}
	return out, nil
}

// QuantizeRows converts rows of cols float32 values to ggml type typ.
// Types that need an importance matrix (the IQ types) are refused.
func QuantizeRows(typ uint32, src []float32, rows, cols int) ([]byte, error) {
	Init()
	if typ >= uint32(C.GGML_TYPE_COUNT) || rows*cols != len(src) || rows <= 0 {
		return nil, fmt.Errorf("quantize: %d values as %d x %d of type %d", len(src), rows, cols, typ)
	}
	t := C.enum_ggml_type(typ)
	if C.ggml_quantize_requires_imatrix(t) {
		return nil, fmt.Errorf("quantize: type %d needs an importance matrix", typ)
	}
	if bs := int(C.ggml_blck_size(t)); bs <= 0 || cols%bs != 0 {
		return nil, fmt.Errorf("quantize: rows of %d values do not split into blocks of type %d", cols, typ)
	}
	size := int(C.ggml_row_size(t, C.int64_t(cols))) * rows
	out := make([]byte, size)
	n := C.ggml_quantize_chunk(t, (*C.float)(unsafe.Pointer(&src[0])), unsafe.Pointer(&out[0]), 0, C.int64_t(rows), C.int64_t(cols), nil)
	if int(n) != size {
		return nil, fmt.Errorf("quantize: wrote %d bytes, want %d", int(n), size)
	}
	return out, nil
}
