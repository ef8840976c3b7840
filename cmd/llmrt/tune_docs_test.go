package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// tune on a document folder (Markdown and HTML) and on a collection: the
// summary says every token was used, in windows, none truncated.
func TestTuneOnDocuments(t *testing.T) {
	home := t.TempDir()
	docs := filepath.Join(t.TempDir(), "docs")
	os.MkdirAll(docs, 0o755)
	os.WriteFile(filepath.Join(docs, "lily.md"), []byte("# Lily\n\n"+strings.Repeat("Lily had a red ball and played with it in the park every day. ", 30)), 0o644)
	os.WriteFile(filepath.Join(docs, "tom.html"), []byte("<html><body><h1>Tom</h1><p>"+strings.Repeat("Tom went fishing in a small blue boat with his grandfather. ", 30)+"</p></body></html>"), 0o644)
	used := regexp.MustCompile(`\((\d+) windows of longer texts\) in \d+ rows, (\d+) of (\d+) tokens used .*, 0 truncated`)
	for _, args := range [][]string{
		{"--data", docs},
		{"--collection", "stories"},
	} {
		if args[0] == "--collection" {
			if _, errOut, code := cli(t, home, "index", "add", "-c", "stories", docs); code != 0 {
				t.Fatalf("index: %s", errOut)
			}
		}
		out, errOut, code := cli(t, home, append([]string{"tune", "--out", "docs", "--ctx", "128", "--epochs", "1", "--rank", "2", "--targets", "attn_q", "--eval-split", "0", "-t", "1"}, args...)...)
		m := used.FindStringSubmatch(out)
		if code != 0 || m == nil || m[1] == "0" || m[2] != m[3] {
			t.Fatalf("tune %v: exit %d\n%s\n%s", args, code, out, errOut)
		}
	}
	if _, _, code := cli(t, home, "tune", "--out", "x"); code != 2 {
		t.Fatalf("tune without data: exit %d, want 2", code)
	}
}
