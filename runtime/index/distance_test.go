package index

import (
	"math"
	"math/rand/v2"
	"testing"
)

// refDot, refL2 and refDotI8 are float64 references.
func refDot(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

func refL2(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return s
}

func refDotI8(a []float32, b []int8) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// closeTo reports whether got is within a float32 accumulation error of
// want; scale is the sum of absolute terms.
func closeTo(got float32, want, scale float64) bool {
	return math.Abs(float64(got)-want) <= 1e-5*scale+1e-6
}

// TestKernelsAgree checks the dispatched kernels (assembly on AVX2
// machines) and the portable fallback against a float64 reference, and
// against each other, on random vectors of every length 1..1000.
func TestKernelsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	saved := useAsm
	defer func() { useAsm = saved }()
	t.Logf("SIMD kernels available: %v", saved)
	for n := 1; n <= 1000; n++ {
		a := make([]float32, n)
		b := make([]float32, n+rng.IntN(3)) // longer b is allowed
		c := make([]int8, len(b))
		for i := range a {
			a[i] = float32(rng.NormFloat64())
		}
		for i := range b {
			b[i] = float32(rng.NormFloat64())
			c[i] = int8(rng.IntN(255) - 127)
		}
		var absDot, absL2, absI8 float64
		for i := range a {
			absDot += math.Abs(float64(a[i] * b[i]))
			absI8 += math.Abs(float64(a[i]) * float64(c[i]))
		}
		wantDot, wantL2, wantI8 := refDot(a, b), refL2(a, b), refDotI8(a, c)
		absL2 = wantL2
		for _, asm := range []bool{false, saved} {
			useAsm = asm
			if got := dot(a, b); !closeTo(got, wantDot, absDot) {
				t.Fatalf("n=%d asm=%v: dot=%v want %v", n, asm, got, wantDot)
			}
			if got := l2sq(a, b); !closeTo(got, wantL2, absL2) {
				t.Fatalf("n=%d asm=%v: l2sq=%v want %v", n, asm, got, wantL2)
			}
			if got := dotI8(a, c); !closeTo(got, wantI8, absI8) {
				t.Fatalf("n=%d asm=%v: dotI8=%v want %v", n, asm, got, wantI8)
			}
		}
		useAsm = saved
		if g, f := dot(a, b), dotGeneric(a, b); !closeTo(g, float64(f), absDot) {
			t.Fatalf("n=%d: dispatched dot %v != fallback %v", n, g, f)
		}
		if g, f := l2sq(a, b), l2sqGeneric(a, b); !closeTo(g, float64(f), absL2) {
			t.Fatalf("n=%d: dispatched l2sq %v != fallback %v", n, g, f)
		}
		if g, f := dotI8(a, c), dotI8Generic(a, c); !closeTo(g, float64(f), absI8) {
			t.Fatalf("n=%d: dispatched dotI8 %v != fallback %v", n, g, f)
		}
	}
}

func TestKernelsExact(t *testing.T) {
	// Small integers are exact in float32: every kernel must agree bit for bit.
	a := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37}
	b := make([]float32, len(a))
	c := make([]int8, len(a))
	var wantDot, wantL2 float32
	for i := range a {
		b[i] = float32(len(a) - i)
		c[i] = int8(i%7 - 3)
		wantDot += a[i] * b[i]
		wantL2 += (a[i] - b[i]) * (a[i] - b[i])
	}
	var wantI8 float32
	for i := range a {
		wantI8 += a[i] * float32(c[i])
	}
	if got := dot(a, b); got != wantDot {
		t.Errorf("dot = %v, want %v", got, wantDot)
	}
	if got := l2sq(a, b); got != wantL2 {
		t.Errorf("l2sq = %v, want %v", got, wantL2)
	}
	if got := dotI8(a, c); got != wantI8 {
		t.Errorf("dotI8 = %v, want %v", got, wantI8)
	}
}

var sink float32

func benchKernel(b *testing.B, dim int, asm bool, f func(x, y []float32) float32) {
	saved := useAsm
	useAsm = asm && saved
	defer func() { useAsm = saved }()
	x := make([]float32, dim)
	y := make([]float32, dim)
	for i := range x {
		x[i], y[i] = float32(i), float32(dim-i)
	}
	b.SetBytes(int64(8 * dim))
	for b.Loop() {
		sink += f(x, y)
	}
}

func BenchmarkDot384(b *testing.B)        { benchKernel(b, 384, true, dot) }
func BenchmarkDot384Generic(b *testing.B) { benchKernel(b, 384, false, dot) }
func BenchmarkL2384(b *testing.B)         { benchKernel(b, 384, true, l2sq) }

// TestBatchKernels checks the batched (prefetching) kernels against the
// single ones for odd widths and random rows.
func TestBatchKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	saved := useAsm
	defer func() { useAsm = saved }()
	for _, dim := range []int{1, 3, 7, 8, 9, 31, 32, 33, 100, 384, 385, 1000} {
		const rows = 50
		vecs := make([]float32, rows*dim)
		codes := make([]int8, rows*dim)
		for i := range vecs {
			vecs[i] = float32(rng.NormFloat64())
			codes[i] = int8(rng.IntN(255) - 127)
		}
		q := make([]float32, dim)
		for i := range q {
			q[i] = float32(rng.NormFloat64())
		}
		ids := make([]uint32, 40)
		for i := range ids {
			ids[i] = uint32(rng.IntN(rows))
		}
		ids[0] = rows - 1 // the last row, up to the end of the storage
		for _, asm := range []bool{false, saved} {
			useAsm = asm
			for _, k := range []struct {
				name   string
				batch  func(out []float32)
				single func(id uint32) float64
			}{
				{"dot", func(out []float32) { dotBatch(q, vecs, ids, out) },
					func(id uint32) float64 { return refDot(q, vecs[int(id)*dim:int(id+1)*dim]) }},
				{"l2sq", func(out []float32) { l2sqBatch(q, vecs, ids, out) },
					func(id uint32) float64 { return refL2(q, vecs[int(id)*dim:int(id+1)*dim]) }},
				{"dotI8", func(out []float32) { dotI8Batch(q, codes, ids, out) },
					func(id uint32) float64 { return refDotI8(q, codes[int(id)*dim:int(id+1)*dim]) }},
			} {
				out := make([]float32, len(ids)+1)
				out[len(ids)] = 42
				k.batch(out)
				if out[len(ids)] != 42 {
					t.Fatalf("%s dim=%d: wrote past len(ids)", k.name, dim)
				}
				for i, id := range ids {
					want := k.single(id)
					if !closeTo(out[i], want, 130*float64(dim)) {
						t.Fatalf("%s dim=%d asm=%v row %d: %v, want %v", k.name, dim, asm, id, out[i], want)
					}
				}
			}
		}
	}
	// Out-of-range rows panic instead of reading past the storage.
	defer func() {
		if recover() == nil {
			t.Fatal("row past the storage did not panic")
		}
	}()
	useAsm = saved
	dotBatch(make([]float32, 4), make([]float32, 8), []uint32{2}, make([]float32, 1))
}

// Similarity agrees with the scores Search gives under each metric.
func TestSimilarity(t *testing.T) {
	const dim = 37
	for _, m := range []Metric{Cosine, Dot, L2} {
		h, err := New(Options{Dim: dim, Metric: m})
		if err != nil {
			t.Fatal(err)
		}
		for id := uint64(0); id < 20; id++ {
			h.Add(id, vecFor(id, dim), nil)
		}
		q := vecFor(99, dim)
		rs, err := h.Search(q, 20, SearchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			got := Similarity(m, q, vecFor(r.ID, dim))
			if math.Abs(float64(got-r.Score)) > 1e-4*max(1, math.Abs(float64(r.Score))) {
				t.Fatalf("%v: Similarity %v, search score %v", m, got, r.Score)
			}
		}
		h.Close()
	}
	if s := Similarity(Cosine, []float32{0, 0}, []float32{1, 0}); s != 0 {
		t.Fatalf("cosine with a zero vector: %v", s)
	}
}
