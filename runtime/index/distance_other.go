//go:build !amd64 || purego

package index

// useAsm reports whether the SIMD kernels are in use; never on this build.
var useAsm = false

func dot(a, b []float32) float32          { return dotGeneric(a, b) }
func l2sq(a, b []float32) float32         { return l2sqGeneric(a, b) }
func dotI8(a []float32, b []int8) float32 { return dotI8Generic(a, b) }
