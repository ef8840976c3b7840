package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"

	"golang.org/x/sys/cpu"

	"github.com/llmrt/llmrt/runtime/index"
)

// machineInfo describes where the benchmark ran.
type machineInfo struct {
	CPU        string `json:"cpu"`
	LogicalCPU int    `json:"logical_cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Go         string `json:"go"`
	OSArch     string `json:"os_arch"`
	HasAVX2    bool   `json:"cpu_avx2"`
	HasFMA     bool   `json:"cpu_fma"`
	// Kernels is runtime/index's own report of the distance kernels it
	// dispatches to: "AVX2+FMA" or "portable".
	Kernels string `json:"index_kernels"`
}

func getMachine() machineInfo {
	m := machineInfo{
		CPU:        "unknown",
		LogicalCPU: runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		Go:         runtime.Version(),
		OSArch:     runtime.GOOS + "/" + runtime.GOARCH,
		HasAVX2:    cpu.X86.HasAVX2,
		HasFMA:     cpu.X86.HasFMA,
		Kernels:    index.Kernels(),
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func (m machineInfo) kernels() string {
	yn := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	s := "portable Go"
	if m.Kernels == "AVX2+FMA" {
		s = "AVX2+FMA assembly"
	}
	return s + " (index.Kernels() = " + m.Kernels + "; CPU has AVX2 " + yn(m.HasAVX2) + ", FMA " + yn(m.HasFMA) + ")"
}

// loadAvg returns /proc/loadavg's first three fields, or "unknown".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// buildRev returns the VCS revision this binary was built from, with
// "+dirty" when the tree had uncommitted changes, or "unknown".
func buildRev() string {
	rev, dirty := "unknown", ""
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
			if len(rev) > 12 {
				rev = rev[:12]
			}
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "unknown" {
		// Not stamped (e.g. -buildvcs=false): ask git, read-only.
		if root := repoRoot(); root != "" {
			if out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
				rev = strings.TrimSpace(string(out))
				st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--", "runtime/index").Output()
				if err == nil && len(bytes.TrimSpace(st)) > 0 {
					dirty = " (runtime/index has uncommitted changes)"
				}
			}
		}
	}
	return rev + dirty
}
