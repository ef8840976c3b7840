package sched

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML is the part of NVIDIA's management library that device discovery
// uses. The real library (nvml.New()) and go-nvml's mock (mock.Interface)
// both satisfy it.
type NVML interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return)
}

// BackendDevice is one ggml backend device as the caller read it (the cgo
// binding lives in kernels; this package does not import it).
type BackendDevice struct {
	Name        string `json:"name"`        // ggml's name: "CUDA0", "CPU"
	Description string `json:"description"` // e.g. "NVIDIA GeForce RTX 4090"
	Type        string `json:"type"`        // "cpu", "gpu", "igpu"
	Total       uint64 `json:"total"`
	Free        uint64 `json:"free"`
	// ID (CUDA: the GPU's UUID, "GPU-...") and PCIBusID ("0000:01:00.0")
	// as the backend reports them: how a ggml device is matched to NVML's.
	ID       string `json:"id,omitempty"`
	PCIBusID string `json:"pci_bus_id,omitempty"`
}

// Device is one memory pool the scheduler manages: a GPU or the host's RAM.
type Device struct {
	ID   string `json:"id"`   // "gpu0", "gpu1", ... in ggml's order; "cpu"
	Kind string `json:"kind"` // "gpu" or "cpu"
	// Index is the GPU's position in llama.cpp's device list (the index
	// of MainGPU and TensorSplit); -1 for the CPU.
	Index             int    `json:"index"`
	Name              string `json:"name"`
	Backend           string `json:"backend,omitempty"` // ggml device name
	UUID              string `json:"uuid,omitempty"`
	PCIBusID          string `json:"pci_bus_id,omitempty"`
	ComputeCapability string `json:"compute_capability,omitempty"`
	// Source says where the numbers come from: nvml, ggml, meminfo, config.
	Source string `json:"source"`
	Total  int64  `json:"total"`
	Free   int64  `json:"free"` // free when last measured
	// UsedByOthers is memory other processes (and the driver) hold.
	UsedByOthers int64     `json:"used_by_others"`
	Processes    []Process `json:"processes,omitempty"` // other processes on the GPU
	// Utilization in percent (-1: unknown).
	UtilizationGPU int `json:"utilization_gpu"`
	UtilizationMem int `json:"utilization_mem"`
	// Margin is kept free for safety; Budget is what the ledger hands out:
	// total - used by others - margin (or the configured CPU limit).
	Margin int64 `json:"margin"`
	Budget int64 `json:"budget"`

	nvmlIndex int // -1 when not from NVML
}

// Process is another process's use of a GPU.
type Process struct {
	PID   uint32 `json:"pid"`
	Bytes int64  `json:"bytes"`
}

func selfPID() int { return os.Getpid() }

func shutdownNVML(nv NVML) error {
	if ret := nv.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("gpu scheduler: nvml shutdown: %v", ret)
	}
	return nil
}

// gpuReading is what NVML says about one device.
type gpuReading struct {
	name, uuid, cc   string
	pciBusID         string
	total, free      int64
	own, others      int64
	procs            []Process
	procsKnown       bool
	utilGPU, utilMem int
}

func readNVMLDevice(nv NVML, i, self int) (gpuReading, error) {
	d, ret := nv.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		return gpuReading{}, fmt.Errorf("nvml device %d: %v", i, ret)
	}
	r := gpuReading{utilGPU: -1, utilMem: -1}
	if r.name, ret = d.GetName(); ret != nvml.SUCCESS {
		return gpuReading{}, fmt.Errorf("nvml device %d: name: %v", i, ret)
	}
	mem, ret := d.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return gpuReading{}, fmt.Errorf("nvml device %d (%s): memory info: %v", i, r.name, ret)
	}
	r.total, r.free = int64(mem.Total), int64(mem.Free)
	if uuid, ret := d.GetUUID(); ret == nvml.SUCCESS {
		r.uuid = uuid
	}
	if pci, ret := d.GetPciInfo(); ret == nvml.SUCCESS {
		r.pciBusID = cString(pci.BusId[:])
	}
	if major, minor, ret := d.GetCudaComputeCapability(); ret == nvml.SUCCESS {
		r.cc = fmt.Sprintf("%d.%d", major, minor)
	}
	if u, ret := d.GetUtilizationRates(); ret == nvml.SUCCESS {
		r.utilGPU, r.utilMem = int(u.Gpu), int(u.Memory)
	}
	if ps, ret := d.GetComputeRunningProcesses(); ret == nvml.SUCCESS {
		r.procsKnown = true
		for _, p := range ps {
			if int(p.Pid) == self {
				r.own += int64(p.UsedGpuMemory)
				continue
			}
			r.procs = append(r.procs, Process{PID: p.Pid, Bytes: int64(p.UsedGpuMemory)})
		}
	}
	// Everything in use that is not ours: other processes, the driver,
	// other contexts NVML does not list.
	r.others = max(0, r.total-r.free-r.own)
	return r, nil
}

// discovery is the result of looking for devices.
type discovery struct {
	devices  []Device // GPUs in ggml order, then the CPU
	nv       NVML     // initialised NVML, nil if none
	source   string   // "nvml", "ggml" or "cpu"
	warnings []string // what is wrong: a GPU that cannot be used
	notes    []string // how each GPU was found and where its budget comes from
	unused   []string // the warnings about NVML GPUs without a ggml device
}

// discover finds the GPUs (NVML, matched to ggml's devices when given) and
// the host's RAM.
func discover(cfg Config) (discovery, error) {
	var out discovery
	var gpus []gpuReading
	nv := cfg.NVML
	if nv == nil && !cfg.NoNVML {
		nv = nvml.New()
	}
	if cfg.NoNVML {
		nv = nil
	}
	if nv != nil {
		if ret := nv.Init(); ret != nvml.SUCCESS {
			out.warnings = append(out.warnings, fmt.Sprintf("NVML unavailable (%v): no NVIDIA GPU information", ret))
			nv = nil
		}
	}
	if nv != nil {
		n, ret := nv.DeviceGetCount()
		if ret != nvml.SUCCESS {
			out.warnings = append(out.warnings, fmt.Sprintf("NVML device count: %v", ret))
			n = 0
		}
		for i := 0; i < n; i++ {
			r, err := readNVMLDevice(nv, i, selfPID())
			if err != nil {
				out.warnings = append(out.warnings, err.Error())
				continue
			}
			gpus = append(gpus, r)
		}
		out.nv = nv
	}

	// Order GPUs as ggml does when its devices are known: that order is
	// what llama.cpp's tensor split and main GPU index. Each ggml GPU is
	// paired with the NVML device of the same PCI bus id or UUID; a GPU
	// only one side sees is explained in the notes or warnings.
	var ggmlGPUs []BackendDevice
	for _, b := range cfg.Backends {
		if b.Type == "gpu" || b.Type == "igpu" {
			ggmlGPUs = append(ggmlGPUs, b)
		}
	}
	used := make([]bool, len(gpus))
	addNVML := func(i int, backend string) {
		used[i] = true
		r := gpus[i]
		out.devices = append(out.devices, Device{
			ID: fmt.Sprintf("gpu%d", len(out.devices)), Kind: "gpu", Index: len(out.devices),
			Name: r.name, Backend: backend, UUID: r.uuid, PCIBusID: r.pciBusID, ComputeCapability: r.cc, Source: "nvml",
			Total: r.total, Free: r.free, UsedByOthers: r.others, Processes: r.procs,
			UtilizationGPU: r.utilGPU, UtilizationMem: r.utilMem, nvmlIndex: i,
		})
	}
	switch {
	case cfg.Backends == nil:
		for i := range gpus {
			addNVML(i, "")
		}
	default:
		for _, b := range ggmlGPUs {
			id := fmt.Sprintf("gpu%d", len(out.devices))
			if i, how := matchNVML(b, gpus, used); i >= 0 {
				addNVML(i, b.Name)
				out.notes = append(out.notes, fmt.Sprintf("%s: ggml device %s (%s) is NVML device %d (%s), matched by %s; budget from NVML",
					id, b.Name, b.Description, i, gpus[i].name, how))
				continue
			}
			why := "NVML is not available"
			if nv != nil {
				why = "NVML does not list it"
			}
			out.notes = append(out.notes, fmt.Sprintf("%s: ggml device %s (%s, %s) has no NVML device (%s); budget from ggml's own report: total %s, free %s",
				id, b.Name, b.Description, idString(b.PCIBusID, b.ID), why, FormatBytes(int64(b.Total)), FormatBytes(int64(b.Free))))
			out.devices = append(out.devices, Device{
				ID: id, Kind: "gpu", Index: len(out.devices),
				Name: b.Description, Backend: b.Name, UUID: b.ID, PCIBusID: b.PCIBusID, Source: "ggml",
				Total: int64(b.Total), Free: int64(b.Free), UsedByOthers: int64(b.Total - b.Free),
				UtilizationGPU: -1, UtilizationMem: -1, nvmlIndex: -1,
			})
		}
		for i, r := range gpus {
			if !used[i] {
				w := fmt.Sprintf("NVML device %d (%s, %s) has no ggml backend device: not used (is the CUDA backend built? make cuda)",
					i, r.name, idString(r.pciBusID, r.uuid))
				out.warnings = append(out.warnings, w)
				out.unused = append(out.unused, w)
			}
		}
	}
	for i := range out.devices {
		d := &out.devices[i]
		d.Margin = cfg.margin(d.Total)
		d.Budget = cfg.gpuBudget(*d)
	}
	switch {
	case len(out.devices) > 0 && out.devices[0].Source == "nvml":
		out.source = "nvml"
	case len(out.devices) > 0:
		out.source = "ggml"
	default:
		out.source = "cpu"
	}

	cpu, err := cpuDevice(cfg)
	if err != nil {
		if out.nv != nil {
			out.nv.Shutdown()
		}
		return discovery{}, err
	}
	out.devices = append(out.devices, cpu)
	return out, nil
}

// matchNVML finds the unused NVML device that is ggml device b: same PCI
// bus id, else same UUID; by name only when the backend reports neither
// (two identical cards would then pair in order). It returns -1 when none.
func matchNVML(b BackendDevice, gpus []gpuReading, used []bool) (int, string) {
	for i, r := range gpus {
		if !used[i] && b.PCIBusID != "" && samePCI(b.PCIBusID, r.pciBusID) {
			return i, "PCI bus id " + b.PCIBusID
		}
	}
	for i, r := range gpus {
		if !used[i] && b.ID != "" && strings.EqualFold(b.ID, r.uuid) {
			return i, "UUID " + b.ID
		}
	}
	if b.PCIBusID != "" || b.ID != "" {
		return -1, ""
	}
	for i, r := range gpus {
		if !used[i] && r.name == b.Description {
			return i, "name (the backend reports no PCI bus id or UUID)"
		}
	}
	return -1, ""
}

// samePCI compares PCI addresses whatever their domain width: NVML writes
// "00000000:01:00.0", CUDA "0000:01:00.0".
func samePCI(a, b string) bool {
	parse := func(s string) (v [4]uint64, ok bool) {
		dom, rest, ok1 := strings.Cut(strings.ToLower(strings.TrimSpace(s)), ":")
		bus, rest, ok2 := strings.Cut(rest, ":")
		dev, fn, ok3 := strings.Cut(rest, ".")
		if !ok1 || !ok2 || !ok3 {
			return v, false
		}
		for i, p := range []string{dom, bus, dev, fn} {
			n, err := strconv.ParseUint(p, 16, 32)
			if err != nil {
				return v, false
			}
			v[i] = n
		}
		return v, true
	}
	x, ok1 := parse(a)
	y, ok2 := parse(b)
	return ok1 && ok2 && x == y
}

// idString names a GPU by its PCI bus id and UUID, for notes.
func idString(pci, uuid string) string {
	var parts []string
	if pci != "" {
		parts = append(parts, "PCI "+pci)
	}
	if uuid != "" {
		parts = append(parts, uuid)
	}
	if len(parts) == 0 {
		return "no PCI bus id or UUID"
	}
	return strings.Join(parts, ", ")
}

// cString reads a NUL-terminated C string from NVML's fixed-size arrays.
func cString(b []int8) string {
	var out []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

// cpuDevice describes host RAM: budget = the configured limit, or
// MemAvailable minus the margin.
func cpuDevice(cfg Config) (Device, error) {
	d := Device{ID: "cpu", Kind: "cpu", Index: -1, Name: "host RAM", UtilizationGPU: -1, UtilizationMem: -1, nvmlIndex: -1}
	total, avail, err := readMeminfo(cfg.meminfoPath())
	if err != nil && cfg.CPULimit <= 0 {
		for _, b := range cfg.Backends {
			if b.Type == "cpu" && b.Total > 0 {
				total, avail, err = int64(b.Total), int64(b.Free), nil
				d.Source = "ggml"
			}
		}
		if err != nil {
			return Device{}, fmt.Errorf("host memory: %w (set a CPU limit)", err)
		}
	}
	if d.Source == "" {
		d.Source = "meminfo"
	}
	d.Total, d.Free = total, avail
	d.UsedByOthers = max(0, total-avail)
	if cfg.CPULimit > 0 {
		d.Source = "config"
		d.Budget = cfg.CPULimit
		if d.Total == 0 {
			d.Total, d.Free = cfg.CPULimit, cfg.CPULimit
		}
		return d, nil
	}
	d.Margin = cfg.margin(total)
	d.Budget = max(0, avail-d.Margin)
	return d, nil
}

// readMeminfo returns MemTotal and MemAvailable in bytes.
func readMeminfo(path string) (total, avail int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, perr := strconv.ParseInt(fields[1], 10, 64)
		if perr != nil {
			continue
		}
		if len(fields) > 2 && fields[2] == "kB" {
			v *= 1024
		}
		switch fields[0] {
		case "MemTotal:":
			total = v
		case "MemAvailable:":
			avail = v
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", path, err)
	}
	if total == 0 || avail == 0 {
		return 0, 0, fmt.Errorf("read %s: no MemTotal/MemAvailable", path)
	}
	return total, avail, nil
}
