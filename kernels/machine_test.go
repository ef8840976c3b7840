package kernels_test

import (
	"github.com/llmrt/llmrt/kernels"
	"testing"
)

func TestMachineLimits(t *testing.T) {
	bw, err := kernels.MemoryBandwidth(512<<20, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := kernels.GEMMFlops(1024, 512, 1024, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bw %.1f GB/s  gemm %.1f GFLOP/s", bw/1e9, fl/1e9)
	if bw < 1e8 || fl < 1e8 {
		t.Fatalf("implausible machine limits: %v B/s, %v FLOP/s", bw, fl)
	}
}
