package machine_test

import (
	"fmt"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/scripts/internal/machine"
)

// BenchmarkMulMatQ8 times ggml's Q8_0 matmul on decode-shaped products (a
// 4864x896 weight, the 0.5B model's FFN up projection, by 1..32 columns:
// one per sequence in a decode step) with the Q8_0 kernel routed
// in ("llmrt") and out ("ggml"), on 2 threads, and reports GFLOP/s and the
// weight bytes streamed per second (best of each iteration's 20 runs).
func BenchmarkMulMatQ8(b *testing.B) {
	const m, k, threads, reps = 4864, 896, 2, 20
	defer kernels.EnableQ8GEMM(true)
	for _, n := range []int{1, 2, 4, 8, 16, 64, 512} {
		for _, on := range []bool{false, true} {
			if on && !kernels.Q8GEMMAvailable() {
				continue
			}
			name := fmt.Sprintf("n=%d/ggml", n)
			if on {
				name = fmt.Sprintf("n=%d/llmrt", n)
			}
			b.Run(name, func(b *testing.B) {
				kernels.EnableQ8GEMM(on)
				var best float64
				for i := 0; i < b.N; i++ {
					f, err := machine.GEMMFlopsQ8(m, n, k, threads, reps)
					if err != nil {
						b.Fatal(err)
					}
					best = max(best, f)
				}
				b.ReportMetric(best/1e9, "GFLOP/s")
				b.ReportMetric(best/(2*float64(n))*34/32/1e9, "weightGB/s")
			})
		}
	}
}
