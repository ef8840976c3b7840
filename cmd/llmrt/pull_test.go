package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/models/testmodel"
)

// pull imports a local file and says "up to date" the second time; an
// unreachable hf:// source logs each retry with its error.
func TestPullLocalUpToDateAndRetries(t *testing.T) {
	home := t.TempDir()
	data, err := os.ReadFile(testmodel.Shared(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "tiny.gguf")
	os.WriteFile(src, data, 0o644)
	out, errOut, code := cli(t, home, "pull", src)
	if code != 0 || !strings.Contains(out, "imported "+src+" as tiny") {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = cli(t, home, "pull", src)
	if code != 0 || !strings.Contains(out, "tiny is up to date") {
		t.Fatalf("second pull: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, _ := cli(t, home, "run", "-m", "tiny", "--temp", "0", "-n", "8", "Once upon a time"); !strings.Contains(out, "there was") {
		t.Fatalf("the imported model does not run: %q", out)
	}
	if _, errOut, code := cli(t, home, "pull", "./missing.gguf"); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("missing file: exit %d %s", code, errOut)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HF_ENDPOINT", "http://"+ln.Addr().String())
	ln.Close()
	_, errOut, code = cli(t, home, "pull", "hf://owner/repo/absent.gguf", "--retries", "1")
	if code != 1 || !strings.Contains(errOut, "download failed; retrying") || !strings.Contains(errOut, "retry 1/1") ||
		strings.Count(errOut, "connection refused") != 2 || !strings.Contains(errOut, "gave up after 1 retries") {
		t.Fatalf("offline hf pull: exit %d\n%s", code, errOut)
	}
}
