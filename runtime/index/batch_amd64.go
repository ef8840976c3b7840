//go:build amd64 && !purego

package index

import "unsafe"

//go:noescape
func dotBatchAVX2(q []float32, base unsafe.Pointer, ids []uint32, stride uintptr, out []float32)

//go:noescape
func l2sqBatchAVX2(q []float32, base unsafe.Pointer, ids []uint32, stride uintptr, out []float32)

//go:noescape
func dotI8BatchAVX2(q []float32, base unsafe.Pointer, ids []uint32, stride uintptr, out []float32)

// dotBatch sets out[i] = dot(q, row ids[i] of vecs), rows len(q) wide.
func dotBatch(q, vecs []float32, ids []uint32, out []float32) {
	if !useAsm {
		dotBatchGeneric(q, vecs, ids, out)
		return
	}
	checkRows(len(q), len(vecs), ids, out)
	if len(ids) > 0 {
		dotBatchAVX2(q, unsafe.Pointer(unsafe.SliceData(vecs)), ids, uintptr(4*len(q)), out)
	}
}

// l2sqBatch sets out[i] = l2sq(q, row ids[i] of vecs).
func l2sqBatch(q, vecs []float32, ids []uint32, out []float32) {
	if !useAsm {
		l2sqBatchGeneric(q, vecs, ids, out)
		return
	}
	checkRows(len(q), len(vecs), ids, out)
	if len(ids) > 0 {
		l2sqBatchAVX2(q, unsafe.Pointer(unsafe.SliceData(vecs)), ids, uintptr(4*len(q)), out)
	}
}

// dotI8Batch sets out[i] = dotI8(q, row ids[i] of codes).
func dotI8Batch(q []float32, codes []int8, ids []uint32, out []float32) {
	if !useAsm {
		dotI8BatchGeneric(q, codes, ids, out)
		return
	}
	checkRows(len(q), len(codes), ids, out)
	if len(ids) > 0 {
		dotI8BatchAVX2(q, unsafe.Pointer(unsafe.SliceData(codes)), ids, uintptr(len(q)), out)
	}
}

// checkRows keeps the assembly memory-safe: every row must lie inside the
// storage and out must have room.
func checkRows(dim, n int, ids []uint32, out []float32) {
	if len(out) < len(ids) {
		panic("index: batch output too short")
	}
	rows := uint32(n / max(dim, 1))
	for _, id := range ids {
		if id >= rows {
			panic("index: batch row out of range")
		}
	}
}

// prefetch asks for the cache line at p; it never faults.
//
//go:noescape
func prefetch(p unsafe.Pointer)
