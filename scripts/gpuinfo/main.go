// Command gpuinfo prints the first NVIDIA GPU's peak memory bandwidth from
// NVML (memory clock x 2 transfers per clock x bus width), the limit that
// single-stream decode speed is measured against in scripts/gpu-check.sh.
//
//	go run ./scripts/gpuinfo   # NVIDIA GeForce RTX 4090: 10501 MHz x 384 bit = 1008.0 GB/s
package main

import (
	"fmt"
	"os"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gpuinfo:", err)
		os.Exit(1)
	}
}

func run() error {
	nv := nvml.New()
	if ret := nv.Init(); ret != nvml.SUCCESS {
		return fmt.Errorf("NVML init: %v", ret)
	}
	defer nv.Shutdown()
	d, ret := nv.DeviceGetHandleByIndex(0)
	if ret != nvml.SUCCESS {
		return fmt.Errorf("NVML device 0: %v", ret)
	}
	name, _ := d.GetName()
	clock, ret := d.GetMaxClockInfo(nvml.CLOCK_MEM)
	if ret != nvml.SUCCESS {
		return fmt.Errorf("%s: memory clock: %v", name, ret)
	}
	width, ret := d.GetMemoryBusWidth()
	if ret != nvml.SUCCESS {
		return fmt.Errorf("%s: memory bus width: %v", name, ret)
	}
	// NVML's memory clock counts one edge; GDDR and HBM move data on two.
	gbs := float64(clock) * 1e6 * 2 * float64(width) / 8 / 1e9
	fmt.Printf("%s: %d MHz x %d bit = %.1f GB/s\n", name, clock, width, gbs)
	return nil
}
