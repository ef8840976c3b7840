package machine_test

import (
	"testing"

	"github.com/llmrt/llmrt/scripts/internal/machine"
)

func TestMachineLimits(t *testing.T) {
	bw, err := machine.MemoryBandwidth(512<<20, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := machine.SGEMMFlops(1024, 512, 1024, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	q8, err := machine.GEMMFlopsQ8(1024, 64, 1024, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bw %.1f GB/s  sgemm %.1f GFLOP/s  ggml q8_0 %.1f GFLOP/s", bw/1e9, fl/1e9, q8/1e9)
	if bw < 1e8 || fl < 1e8 || q8 < 1e8 {
		t.Fatalf("implausible machine limits: %v B/s, %v FLOP/s", bw, fl)
	}
}
