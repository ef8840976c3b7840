//go:build amd64 && !purego

package index

import "golang.org/x/sys/cpu"

// useAsm selects the AVX2+FMA kernels in distance_amd64.s. It is decided
// once at start-up; tests flip it to exercise the portable fallback.
var useAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// The assembly kernels require len(b) >= len(a); callers guarantee it.

//go:noescape
func dotAVX2(a, b []float32) float32

//go:noescape
func l2sqAVX2(a, b []float32) float32

//go:noescape
func dotI8AVX2(a []float32, b []int8) float32

func dot(a, b []float32) float32 {
	if useAsm {
		return dotAVX2(a, b[:len(a)])
	}
	return dotGeneric(a, b)
}

func l2sq(a, b []float32) float32 {
	if useAsm {
		return l2sqAVX2(a, b[:len(a)])
	}
	return l2sqGeneric(a, b)
}

func dotI8(a []float32, b []int8) float32 {
	if useAsm {
		return dotI8AVX2(a, b[:len(a)])
	}
	return dotI8Generic(a, b)
}
