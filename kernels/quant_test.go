package kernels_test

import (
	"math"
	"testing"

	"github.com/llmrt/llmrt/kernels"
)

func TestQuantizeRowsRoundTrip(t *testing.T) {
	const rows, cols = 3, 64
	src := make([]float32, rows*cols)
	for i := range src {
		src[i] = float32(math.Sin(float64(i) * 0.37))
	}
	for _, c := range []struct {
		name string
		typ  uint32
		tol  float64
	}{{"F32", 0, 0}, {"F16", 1, 1e-3}, {"Q8_0", 8, 1e-2}, {"Q4_K", 12, 0.1}} {
		t.Run(c.name, func(t *testing.T) {
			cols := cols
			if c.typ == 12 { // K-quants use blocks of 256
				cols = 256
			}
			src := src
			if len(src) < rows*cols {
				src = make([]float32, rows*cols)
				for i := range src {
					src[i] = float32(math.Sin(float64(i) * 0.37))
				}
			}
			q, err := kernels.QuantizeRows(c.typ, src[:rows*cols], rows, cols)
			if err != nil {
				t.Fatal(err)
			}
			back, err := kernels.Dequantize(c.typ, q, rows*cols)
			if err != nil {
				t.Fatal(err)
			}
			var d float64
			for i := range back {
				d = math.Max(d, math.Abs(float64(back[i]-src[i])))
			}
			if d > c.tol {
				t.Fatalf("round trip error %g over %g", d, c.tol)
			}
		})
	}
	if _, err := kernels.Dequantize(8, make([]byte, 5), 32); err == nil {
		t.Fatal("wrong byte count accepted")
	}
	if _, err := kernels.QuantizeRows(8, make([]float32, 30), 1, 30); err == nil {
		t.Fatal("row not a multiple of the block accepted")
	}
}
