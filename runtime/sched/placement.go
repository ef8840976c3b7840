package sched

import (
	"fmt"
	"strings"
)

// Placement says where a model goes, in the terms llama.cpp loads with:
// n_gpu_layers, tensor_split and main_gpu (split mode "layer").
type Placement struct {
	// NGPULayers counts offloaded layers the way llama.cpp does: the last
	// NGPULayers repeating blocks go to the GPUs; NLayer+1 also offloads
	// the output head. 0 keeps everything on the CPU.
	NGPULayers int `json:"n_gpu_layers"`
	// TensorSplit holds, per GPU in ggml's device order, the number of
	// offloaded layers it gets (llama.cpp normalises the proportions; whole
	// counts reproduce this exact split). Nil when nothing is offloaded.
	TensorSplit []float32 `json:"tensor_split,omitempty"`
	MainGPU     int       `json:"main_gpu"`
	// PerDevice is what each device holds (GPUs first, then the CPU).
	PerDevice   []DeviceBytes `json:"per_device"`
	Full        bool          `json:"full_offload"` // every layer and the head on GPUs
	Explanation string        `json:"explanation"`
}

// DeviceBytes is memory on one device, by kind.
type DeviceBytes struct {
	Device string `json:"device"`
	// Layers placed on the device (the output head counts as one).
	Layers int `json:"layers,omitempty"`
	Breakdown
}

// capacity is a device's free memory as placement sees it.
type capacity struct {
	dev  *Device
	free int64
}

// placeModel finds the most layers that fit on the GPUs, the rest on the
// CPU: every GPU that holds layers also needs a compute buffer, the CPU keeps
// the token embeddings, the layers not offloaded, the host compute buffer
// and the logits. ok is false when not even the CPU can take the rest.
func placeModel(f ModelFacts, e Estimate, gpus []capacity, cpu capacity) (p Placement, ok bool) {
	L := f.NLayer
	items := make([]int64, L+1) // per layer: weights + KV; item L: the head
	for i := 0; i < L; i++ {
		items[i] = f.LayerBytes[i] + e.LayerKV
	}
	items[L] = f.OutputBytes
	maxN := L + 1
	if len(gpus) == 0 || e.Context.NoOffload {
		maxN = 0
	}
	for n := maxN; n >= 0; n-- {
		first := L - n
		if n == L+1 {
			first = 0
		}
		copies := offloadCopies(f, e, first, n)
		counts, ok := splitLayers(items[first:first+n], n == L+1, copies, gpus, e)
		if !ok {
			continue
		}
		cpuBytes := cpuShare(f, e, first, n)
		if cpuBytes.Total() > cpu.free {
			continue
		}
		return buildPlacement(f, e, first, n, counts, copies, gpus, cpu, cpuBytes), true
	}
	return Placement{}, false
}

// offloadCopies is the room a GPU's compute buffer needs for weights that
// stay on the CPU when layers [first, first+n) are offloaded: for batches of
// 32 tokens or more ggml-backend's scheduler runs matrix products whose
// weights are in host memory on the first GPU (op_offload), copying the
// weights into that GPU's compute buffer. About two thirds of a layer (the
// FFN gate and up matrices of one split) or the output head are live at
// once. This part is not checked against a real GPU here.
func offloadCopies(f ModelFacts, e Estimate, first, n int) int64 {
	L := f.NLayer
	if n == 0 || n == L+1 || e.Context.NUBatch < 32 {
		return 0
	}
	a := f.OutputBytes // the head stays on the CPU
	for i := 0; i < L; i++ {
		if i < first || i >= first+n {
			a = max(a, f.LayerBytes[i]*2/3)
		}
	}
	return a
}

// cpuShare is what the CPU holds when layers [first, first+n) are offloaded.
func cpuShare(f ModelFacts, e Estimate, first, n int) Breakdown {
	L := f.NLayer
	b := Breakdown{Weights: f.TokenEmbdBytes + f.OtherBytes, Output: e.Output}
	for i := 0; i < L; i++ {
		if i < first || i >= first+n {
			b.Weights += f.LayerBytes[i]
			b.KV += e.LayerKV
		}
	}
	switch {
	case n == L+1:
		b.Compute = e.ComputeHost
	default:
		b.Compute = e.Compute // the CPU runs layers and the head
		if !f.TiedOutput {
			b.Weights += f.OutputBytes
		}
	}
	return b
}

// gpuCompute is a GPU's compute buffer: larger when it runs the head.
func gpuCompute(e Estimate, withHead bool) int64 {
	if withHead {
		return e.Compute
	}
	return e.ComputeLayers
}

// splitLayers shares consecutive offloaded items among the GPUs: in
// proportion to their free memory if that fits, else filling each GPU in
// order. head says whether the last item is the output head; copies is
// added to the compute buffer of the first GPU that holds layers.
func splitLayers(items []int64, head bool, copies int64, gpus []capacity, e Estimate) ([]int, bool) {
	n := len(items)
	counts := make([]int, len(gpus))
	if n == 0 {
		return counts, true
	}
	fits := func(counts []int) bool {
		j := 0
		for g, c := range counts {
			if c == 0 {
				continue
			}
			sum := gpuCompute(e, head && j+c == n)
			if j == 0 {
				sum += copies
			}
			for k := 0; k < c; k++ {
				sum += items[j+k]
			}
			j += c
			if sum > gpus[g].free {
				return false
			}
		}
		return j == n
	}
	// Proportional to free memory (after a compute buffer), largest
	// remainder rounding.
	var total int64
	avail := make([]int64, len(gpus))
	for g, c := range gpus {
		avail[g] = max(0, c.free-e.Compute)
		total += avail[g]
	}
	if total > 0 {
		given := 0
		rem := make([]float64, len(gpus))
		for g := range gpus {
			x := float64(n) * float64(avail[g]) / float64(total)
			counts[g] = int(x)
			rem[g] = x - float64(counts[g])
			given += counts[g]
		}
		for ; given < n; given++ {
			best := 0
			for g := range rem {
				if rem[g] > rem[best] {
					best = g
				}
			}
			counts[best]++
			rem[best] = -1
		}
		if fits(counts) {
			return counts, true
		}
	}
	// Greedy: each GPU in order takes as many as fit.
	clear(counts)
	j := 0
	for g := 0; g < len(gpus) && j < n; g++ {
		var used int64
		if j == 0 { // this GPU gets the first layer
			used = copies
		}
		for j < n && used+items[j]+gpuCompute(e, head && j == n-1) <= gpus[g].free {
			used += items[j]
			counts[g]++
			j++
		}
	}
	return counts, j == n
}

func buildPlacement(f ModelFacts, e Estimate, first, n int, counts []int, copies int64, gpus []capacity, cpu capacity, cpuBytes Breakdown) Placement {
	L := f.NLayer
	p := Placement{NGPULayers: n, Full: n == L+1}
	j := first
	best := -1
	for g, c := range counts {
		if c == 0 {
			continue
		}
		d := DeviceBytes{Device: gpus[g].dev.ID, Layers: c}
		for k := 0; k < c; k, j = k+1, j+1 {
			if j == L {
				d.Weights += f.OutputBytes
			} else {
				d.Weights += f.LayerBytes[j]
				d.KV += e.LayerKV
			}
		}
		d.Compute = gpuCompute(e, j == L+1)
		if len(p.PerDevice) == 0 {
			d.Compute += copies
		}
		p.PerDevice = append(p.PerDevice, d)
		if best < 0 || c > counts[best] {
			best = g
		}
	}
	if n > 0 {
		p.TensorSplit = make([]float32, len(gpus))
		for g, c := range counts {
			p.TensorSplit[g] = float32(c)
		}
		p.MainGPU = gpus[best].dev.Index
	}
	cpuLayers := L + 1 - n
	p.PerDevice = append(p.PerDevice, DeviceBytes{Device: cpu.dev.ID, Layers: cpuLayers, Breakdown: cpuBytes})
	p.Explanation = explainPlacement(f, e, n, p, gpus, cpu)
	return p
}

func explainPlacement(f ModelFacts, e Estimate, n int, p Placement, gpus []capacity, cpu capacity) string {
	L := f.NLayer
	free := map[string]int64{cpu.dev.ID: cpu.free}
	for _, g := range gpus {
		free[g.dev.ID] = g.free
	}
	var parts []string
	for _, d := range p.PerDevice {
		parts = append(parts, fmt.Sprintf("%s: %d layers, %s (of %s free)", d.Device, d.Layers, d.Breakdown, FormatBytes(free[d.Device])))
	}
	ctx := fmt.Sprintf("n_ctx %d, %d seq, KV %s/%s", e.Context.NCtx, e.Context.NSeq, e.Context.TypeK, e.Context.TypeV)
	var head string
	switch {
	case len(gpus) == 0:
		head = fmt.Sprintf("no GPU: all %d layers of %s on the CPU", L+1, f.Name)
	case e.Context.NoOffload:
		head = fmt.Sprintf("offload disabled: all %d layers of %s on the CPU", L+1, f.Name)
	case n == L+1:
		head = fmt.Sprintf("%s fully offloaded: %d/%d layers on GPU", f.Name, n, L+1)
	case n == 0:
		head = fmt.Sprintf("%s: no layer fits on the GPUs (one layer needs %s plus a %s compute buffer); all %d layers on the CPU",
			f.Name, FormatBytes(f.LayerBytes[L-1]+e.LayerKV), FormatBytes(e.ComputeLayers), L+1)
	default:
		var need int64
		for i := 0; i < L; i++ {
			need += f.LayerBytes[i] + e.LayerKV
		}
		need += f.OutputBytes + e.Compute
		head = fmt.Sprintf("%s partially offloaded: %d/%d layers on GPU, %d stay on the CPU (full offload needs %s on GPUs)",
			f.Name, n, L+1, L+1-n, FormatBytes(need))
	}
	return head + " [" + ctx + "]; " + strings.Join(parts, "; ")
}
