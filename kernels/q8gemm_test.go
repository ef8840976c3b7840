package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

const typeQ8_0 = 8 // GGUF/ggml type id of Q8_0

// refQ8 is the exact product the kernel must compute: both operands
// quantized to Q8_0 by ggml and dequantized, then summed in float64.
func refQ8(t *testing.T, a, b []float32, m, n, k int) (ref, mag []float64) {
	t.Helper()
	deq := func(x []float32, rows int) []float32 {
		q := quantQ8(t, x, rows, k)
		d, err := Dequantize(typeQ8_0, q, rows*k)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	da, db := deq(a, m), deq(b, n)
	ref = make([]float64, m*n)
	mag = make([]float64, m*n)
	for j := 0; j < n; j++ {
		for i := 0; i < m; i++ {
			var s, g float64
			for l := 0; l < k; l++ {
				p := float64(da[i*k+l]) * float64(db[j*k+l])
				s += p
				g += math.Abs(p)
			}
			ref[j*m+i], mag[j*m+i] = s, g
		}
	}
	return ref, mag
}

// quantQ8 quantizes rows of k floats to Q8_0 as a model stores them.
func quantQ8(t *testing.T, x []float32, rows, k int) []byte {
	t.Helper()
	q, err := QuantizeRows(typeQ8_0, x, rows, k)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// firstCols keeps the first k of each of rows rows of width floats: the
// values a strided view of them covers (Q8_0 blocks quantize alone).
func firstCols(x []float32, rows, width, k int) []float32 {
	out := make([]float32, 0, rows*k)
	for i := 0; i < rows; i++ {
		out = append(out, x[i*width:i*width+k]...)
	}
	return out
}

func randMat(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// checkClose fails when a result differs from the reference by more than
// float32 rounding of its terms can explain.
func checkClose(t *testing.T, what string, got []float32, ref, mag []float64) {
	t.Helper()
	for i := range got {
		if d := math.Abs(float64(got[i]) - ref[i]); d > 1e-5*mag[i]+1e-6 {
			t.Fatalf("%s: element %d = %g, want %g (|terms| %g)", what, i, got[i], ref[i], mag[i])
		}
	}
}

// needQ8Kernel skips a test of the kernel alone in builds without it
// (PORTABLE=1, or a CPU without AVX-512 VNNI): there ggml's own path runs,
// which TestQ8GEMMRouting and TestQ8GEMMDecodeStep still check.
func needQ8Kernel(t *testing.T) {
	t.Helper()
	if !Q8GEMMAvailable() {
		t.Skip("this build has no AVX-512 VNNI kernel: Q8_0 matmuls stay with ggml")
	}
}

func TestQ8GEMMKernelMatchesReference(t *testing.T) {
	needQ8Kernel(t)
	r := rand.New(rand.NewPCG(1, 2))
	for _, sh := range []struct{ m, k int }{{1, 32}, {37, 64}, {130, 96}, {257, 4864}} {
		for _, n := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 40} {
			a, b := randMat(r, sh.m*sh.k), randMat(r, n*sh.k)
			aq := quantQ8(t, a, sh.m, sh.k)
			bq := quantQ8(t, b, n, sh.k)
			got, err := q8GEMM(aq, bq, sh.m, n, sh.k/32, sh.k/32, sh.k/32)
			if err != nil {
				t.Fatal(err)
			}
			ref, mag := refQ8(t, a, b, sh.m, n, sh.k)
			checkClose(t, "kernel", got, ref, mag)
		}
	}
}

// TestQ8GEMMStridedViews runs the kernel on views: the first blocks of
// wider weight rows and activation columns (ggml passes row strides, and a
// view of a fused weight has a stride above its length).
func TestQ8GEMMStridedViews(t *testing.T) {
	needQ8Kernel(t)
	r := rand.New(rand.NewPCG(7, 8))
	const m, n, k, kA, kB = 45, 5, 96, 160, 128 // elements; the rows are wider
	a, b := randMat(r, m*kA), randMat(r, n*kB)
	aq := quantQ8(t, a, m, kA)
	bq := quantQ8(t, b, n, kB)
	got, err := q8GEMM(aq, bq, m, n, k/32, kA/32, kB/32)
	if err != nil {
		t.Fatal(err)
	}
	// Q8_0 blocks are quantized alone, so the reference is the product of
	// the first k elements of every row.
	ref, mag := refQ8(t, firstCols(a, m, kA, k), firstCols(b, n, kB, k), m, n, k)
	checkClose(t, "strided kernel", got, ref, mag)
}

// TestQ8GEMMRouting runs ggml's matmul with the kernel routed in and out
// on decode-shaped products (1..8 columns, odd block counts, 1-3 threads)
// and one wider product that must stay with tinyBLAS: every result matches
// the reference, and the kernel runs exactly for the shapes it takes.
func TestQ8GEMMRouting(t *testing.T) {
	defer EnableQ8GEMM(true)
	r := rand.New(rand.NewPCG(3, 4))
	for _, sh := range []struct{ m, k int }{{37, 96}, {513, 896}} {
		for _, n := range []int{1, 2, 3, 4, 8, 9, 16, 33} {
			a, b := randMat(r, sh.m*sh.k), randMat(r, n*sh.k)
			ref, mag := refQ8(t, a, b, sh.m, n, sh.k)
			for _, on := range []bool{false, true} {
				EnableQ8GEMM(on)
				for threads := 1; threads <= 3; threads++ {
					before := Q8GEMMCalls()
					got, err := mulMatQ8(a, b, sh.m, n, sh.k, threads)
					if err != nil {
						t.Fatal(err)
					}
					checkClose(t, "ggml mul_mat", got, ref, mag)
					ran := Q8GEMMCalls() - before
					want := int64(0)
					if on && Q8GEMMAvailable() && n <= Q8GEMMMaxColumns {
						want = 1
					}
					if ran != want {
						t.Fatalf("%dx%d by %d columns, kernel on=%v, %d threads: kernel ran %d times, want %d", sh.m, sh.k, n, on, threads, ran, want)
					}
				}
			}
		}
	}
}

// TestQ8AMXTilesMatchTheReference runs products that fill whole 16x16
// tiles and leave edges (rows and columns short of 16, odd block counts,
// strided views) with AMX on and off: both match the exact product, and
// the tiles ran only when on.
func TestQ8AMXTilesMatchTheReference(t *testing.T) {
	needQ8Kernel(t)
	if !Q8AMXAvailable() {
		t.Skip("no AMX-INT8 on this CPU (or the OS does not allow it): the VNNI kernel takes every tile")
	}
	defer EnableQ8AMX(true)
	r := rand.New(rand.NewPCG(9, 10))
	for _, sh := range []struct{ m, k, kA, kB int }{{16, 32, 32, 32}, {37, 96, 96, 96}, {130, 896, 896, 896}, {45, 96, 160, 128}} {
		for _, n := range []int{16, 17, 33, 48} {
			a, b := randMat(r, sh.m*sh.kA), randMat(r, n*sh.kB)
			aq := quantQ8(t, a, sh.m, sh.kA)
			bq := quantQ8(t, b, n, sh.kB)
			ref, mag := refQ8(t, firstCols(a, sh.m, sh.kA, sh.k), firstCols(b, n, sh.kB, sh.k), sh.m, n, sh.k)
			for _, on := range []bool{true, false} {
				EnableQ8AMX(on)
				before := Q8AMXCalls()
				got, err := q8GEMM(aq, bq, sh.m, n, sh.k/32, sh.kA/32, sh.kB/32)
				if err != nil {
					t.Fatal(err)
				}
				what := fmt.Sprintf("%dx%d (stride %d/%d) by %d columns, AMX %v", sh.m, sh.k, sh.kA, sh.kB, n, on)
				checkClose(t, what, got, ref, mag)
				if ran := Q8AMXCalls() - before; (ran > 0) != on {
					t.Fatalf("%s: tiles ran %d times", what, ran)
				}
			}
		}
	}
}
