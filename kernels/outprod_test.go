package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The blocked kernel gives ggml's OUT_PROD result for F32 and Q8_0
// weights, for a transposed gradient (an input gradient) and a plain one
// (a LoRA factor's weight gradient), batched over heads with W broadcast
// (attention), on shapes with partial tiles in every dimension and
// narrower than the threads, on one and two threads; with the kernel off,
// ggml's own loop runs.
func TestOutProdMatchesGGML(t *testing.T) {
	defer EnableOutProd(true)
	r := rand.New(rand.NewPCG(3, 4))
	for _, sh := range []struct{ n, m, k, heads, wHeads int }{{32, 6, 256, 1, 1}, {256, 64, 700, 1, 1}, {96, 13, 40, 1, 1}, {896, 7, 16, 1, 1},
		{64, 1, 1, 1, 1}, {4864, 30, 300, 1, 1}, {16, 896, 64, 1, 1}, {64, 50, 50, 4, 2}, {50, 64, 64, 6, 6}} {
		for _, c := range []struct{ q8, tr bool }{{false, true}, {true, true}, {false, false}} {
			q8 := c.q8
			if q8 && (sh.n%32 != 0 || sh.wHeads != sh.heads) {
				continue // ggml has no broadcast for quantized OUT_PROD to compare with
			}
			for _, threads := range []int{1, 2} {
				w := make([]float32, sh.n*sh.k*sh.wHeads)
				g := make([]float32, sh.m*sh.k*sh.heads)
				for i := range w {
					w[i] = float32(r.NormFloat64())
				}
				for i := range g {
					g[i] = float32(r.NormFloat64())
				}
				EnableOutProd(false)
				before := OutProdCalls()
				want, err := outProd(w, g, sh.n, sh.m, sh.k, sh.heads, sh.wHeads, q8, c.tr, threads)
				if err != nil {
					t.Fatal(err)
				}
				if OutProdCalls() != before {
					t.Fatal("the kernel ran while disabled")
				}
				EnableOutProd(true)
				got, err := outProd(w, g, sh.n, sh.m, sh.k, sh.heads, sh.wHeads, q8, c.tr, threads)
				if err != nil {
					t.Fatal(err)
				}
				if OutProdCalls() != before+1 {
					t.Fatalf("%+v %+v: the kernel did not run", sh, c)
				}
				for i := range want {
					tol := 1e-4 * math.Sqrt(float64(sh.k)) * (1 + math.Abs(float64(want[i])))
					if d := math.Abs(float64(got[i] - want[i])); d > tol || math.IsNaN(float64(got[i])) {
						t.Fatalf("%+v %+v threads=%d: element %d (head %d, row %d, column %d) = %v, ggml %v", sh, c, threads, i, i/(sh.n*sh.m), i/sh.n%sh.m, i%sh.n, got[i], want[i])
					}
				}
			}
		}
	}
}

// On a thread pool allowed the AMX tiles (a training net's), the input
// gradient through Q8_0 weights runs whole 32x32 blocks on AMX-BF16 and
// the rest in fp32: every element stays within bf16 rounding of ggml's
// result, on shapes with tokens and features left over, one or two threads
// and one narrower than two threads; a pool without tiles never runs them.
func TestOutProdTilesMatchGGML(t *testing.T) {
	if !OutProdAMXAvailable() {
		t.Skip("no AMX-BF16 on this CPU: input gradients stay in fp32")
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, sh := range []struct{ n, m, k int }{{32, 32, 32}, {896, 64, 200}, {4864, 45, 96}, {96, 70, 1000}, {100 * 32, 33, 17}, {64, 40, 5000}} {
		for _, threads := range []int{1, 2} {
			w := make([]float32, sh.n*sh.k)
			g := make([]float32, sh.m*sh.k)
			for i := range w {
				w[i] = float32(r.NormFloat64())
			}
			for i := range g {
				g[i] = float32(r.NormFloat64())
			}
			want, err := outProd(w, g, sh.n, sh.m, sh.k, 1, 1, true, true, threads)
			if err != nil {
				t.Fatal(err)
			}
			before := OutProdAMXCalls()
			if _, err := outProd(w, g, sh.n, sh.m, sh.k, 1, 1, true, true, threads); err != nil || OutProdAMXCalls() != before {
				t.Fatalf("%+v: a pool without tiles ran %d shares on them (%v)", sh, OutProdAMXCalls()-before, err)
			}
			got, err := outProdOn(w, g, sh.n, sh.m, sh.k, 1, 1, true, true, threads, true)
			if err != nil {
				t.Fatal(err)
			}
			// Narrower than the threads, the work splits by tokens and
			// stays in fp32.
			if ran := OutProdAMXCalls() > before; ran != (sh.n/32 >= threads) {
				t.Fatalf("%+v threads=%d: tiles ran: %v", sh, threads, ran)
			}
			// bf16 keeps 8 significant bits of each factor: each of the k
			// unit-sized terms is off by about 2^-9, so a sum by about
			// 2.4e-3*sqrt(k) (measured), and the largest of thousands of
			// elements by up to 6 times that. A wrong pairing or tile
			// would be off by whole terms.
			var se, sw float64
			for i := range want {
				d := math.Abs(float64(got[i] - want[i]))
				if tol := 0.016*math.Sqrt(float64(sh.k)) + 1e-3; d > tol || math.IsNaN(float64(got[i])) {
					t.Fatalf("%+v threads=%d: element %d (token %d, feature %d) = %v, ggml %v", sh, threads, i, i/sh.n, i%sh.n, got[i], want[i])
				}
				se += d * d
				sw += float64(want[i]) * float64(want[i])
			}
			if math.Sqrt(se) > math.Sqrt(sw)/128 {
				t.Fatalf("%+v threads=%d: rms error %.3g of rms %.3g: more than bf16 rounding", sh, threads, math.Sqrt(se/float64(len(want))), math.Sqrt(sw/float64(len(want))))
			}
		}
	}
}
