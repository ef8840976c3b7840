package dltest_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// bindingRE matches one line of the dynamic linker's LD_DEBUG=bindings
// output: which file's reference to a symbol was bound to which object.
var bindingRE = regexp.MustCompile("binding file (\\S+) \\[\\d+\\] to (\\S+) \\[\\d+\\]: normal symbol `([^']+)'")

// TestBackendBindsToExecutable proves there is one ggml in the process:
// the CMake-built CPU backend is linked against libggml-base.so (which
// dlopen loads, as DT_NEEDED), yet every ggml symbol it and that
// libggml-base.so reference binds to the test executable's own
// statically linked ggml, which kernels exports with -rdynamic. It re-runs
// TestLoadBackendsFromLibDir in a child process under LD_DEBUG=bindings.
func TestBackendBindsToExecutable(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadBackendsFromLibDir$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LD_DEBUG=bindings", "LD_DEBUG_OUTPUT="+filepath.Join(dir, "ld"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "ld.*"))
	if len(files) == 0 {
		t.Fatal("the dynamic linker wrote no LD_DEBUG output")
	}
	exe := filepath.Base(os.Args[0])
	toExe := map[string]bool{} // symbols the CPU backend bound to the executable
	bad := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range bindingRE.FindAllStringSubmatch(string(data), -1) {
			from, to, sym := filepath.Base(m[1]), filepath.Base(m[2]), m[3]
			if bad > 10 {
				t.Fatal("more wrong bindings left out")
			}
			if strings.HasPrefix(to, "libggml-base.so") {
				bad++
				t.Errorf("%s bound %s to %s: a second ggml-base is in use", from, sym, m[2])
			}
			if !strings.HasPrefix(from, "libggml-") || !strings.HasPrefix(sym, "ggml_") ||
				sym == "ggml_backend_init" || sym == "ggml_backend_score" { // the library's own entry points
				continue
			}
			if to != exe {
				bad++
				t.Errorf("%s bound %s to %s, not to the executable", from, sym, m[2])
			}
			if from == "libggml-cpu-x64.so" {
				toExe[sym] = true
			}
		}
	}
	// ggml-base's registry, buffer and log functions must be among them.
	// So is ggml_backend_cpu_reg: the executable exports its own CPU
	// backend too, so the library's entry point returns (and the loader
	// registers a second time) the executable's CPU backend, not its own.
	for _, sym := range []string{"ggml_backend_buft_alloc_buffer", "ggml_log_internal", "ggml_backend_reg_dev_get", "ggml_backend_cpu_reg"} {
		if !toExe[sym] {
			t.Errorf("no binding of %s from the CPU backend to the executable (%d ggml symbols bound there)", sym, len(toExe))
		}
	}
}
