package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/models/testmodel"
)

// A collection built with -m is queried, extended and evaluated without
// repeating -m: it records its model and uses it; another -m is refused
// with a hint.
func TestCollectionUsesItsOwnModel(t *testing.T) {
	home := t.TempDir()
	docs := filepath.Join(t.TempDir(), "docs")
	os.MkdirAll(docs, 0o755)
	os.WriteFile(filepath.Join(docs, "tom.txt"), []byte("Tom went fishing in a small blue boat with his grandfather.\n"), 0o644)
	os.WriteFile(filepath.Join(docs, "lily.md"), []byte("# Lily\n\nLily had a red ball and a dog named Max.\n"), 0o644)
	tiny := testmodel.Shared(t, "llama-2-tiny-random.gguf")
	if out, errOut, code := cli(t, home, "index", "add", "-m", tiny, "-c", "tiny", docs); code != 0 {
		t.Fatalf("add: %d %s %s", code, out, errOut)
	}
	out, errOut, code := cli(t, home, "index", "query", "-c", "tiny", "-k", "2", "fishing boat")
	if code != 0 || !strings.Contains(out, "tom.txt") || !strings.Contains(errOut, "llama-2-tiny-random") {
		t.Fatalf("query without -m: %d\n%s\n%s", code, out, errOut)
	}
	os.WriteFile(filepath.Join(docs, "sea.txt"), []byte("The lighthouse keeper counted the ships.\n"), 0o644)
	if out, _, code = cli(t, home, "index", "add", "-c", "tiny", docs); code != 0 || !strings.Contains(out, "1 added") {
		t.Fatalf("add without -m: %d %s", code, out)
	}
	if out, _, code = cli(t, home, "index", "stats", "-c", "tiny"); code != 0 || !strings.Contains(out, "model "+tiny+", 8 dims") {
		t.Fatalf("stats: %d %s", code, out)
	}
	if _, errOut, code = cli(t, home, "index", "query", "-m", "stories260K", "-c", "tiny", "boat"); code != 1 || !strings.Contains(errOut, "leave out -m") {
		t.Fatalf("query with another model: %d %s", code, errOut)
	}
}
