//go:build !amd64 || purego

package index

import "unsafe"

func dotBatch(q, vecs []float32, ids []uint32, out []float32) { dotBatchGeneric(q, vecs, ids, out) }
func l2sqBatch(q, vecs []float32, ids []uint32, out []float32) {
	l2sqBatchGeneric(q, vecs, ids, out)
}
func dotI8Batch(q []float32, codes []int8, ids []uint32, out []float32) {
	dotI8BatchGeneric(q, codes, ids, out)
}

func prefetch(unsafe.Pointer) {}
