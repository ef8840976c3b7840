package names

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/models/versions"
)

func TestSplitAdapter(t *testing.T) {
	for _, c := range []struct {
		id, base, adapter string
		ok                bool
	}{
		{"stories260K+pc", "stories260K", "pc", true},
		{"a+b+c", "a+b", "c", true},
		{"ft:stories260K:pc", "stories260K", "pc", true},
		{"ft:qwen:0.5b:v2", "qwen:0.5b", "v2", true},
		{"stories260K", "", "", false},
		{"+pc", "", "", false},
		{"stories260K+", "", "", false},
		{"ft:stories260K", "", "", false},
		{"ft:stories260K:", "", "", false},
	} {
		base, ad, ok := SplitAdapter(c.id)
		if base != c.base || ad != c.adapter || ok != c.ok {
			t.Errorf("SplitAdapter(%q) = %q, %q, %v; want %q, %q, %v", c.id, base, ad, ok, c.base, c.adapter, c.ok)
		}
	}
}

func TestFromPathAndScale(t *testing.T) {
	if got := FromPath("/models/my+model.gguf"); got != "my-model" {
		t.Errorf("FromPath = %q", got)
	}
	if got := FromPath("./stories260K.gguf"); got != "stories260K" {
		t.Errorf("FromPath = %q", got)
	}
	if n, s := ParseScale("pc:0.5"); n != "pc" || s != 0.5 {
		t.Errorf("ParseScale = %q %v", n, s)
	}
	if n, s := ParseScale("pc"); n != "pc" || s != 1 {
		t.Errorf("ParseScale = %q %v", n, s)
	}
}

// writeAdapter writes a real LoRA adapter for stories260K.
func writeAdapter(t *testing.T, path string, meta map[string]string) {
	t.Helper()
	base, err := gguf.Open(testmodel.Shared(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := lora.WriteAdapter(path, "llama", 8, lora.RandomAdapter(base, []string{"attn_q"}, 4, 0.1, 1), meta); err != nil {
		t.Fatal(err)
	}
}

func TestAdapterDir(t *testing.T) {
	dir := AdapterDir(filepath.Join(t.TempDir(), "adapters"))
	if list, err := dir.List(); err != nil || len(list) != 0 {
		t.Fatalf("missing folder: %v %v", list, err)
	}
	os.MkdirAll(string(dir), 0o755)
	writeAdapter(t, dir.Path("pc"), map[string]string{BaseKey: "stories260K"})
	writeAdapter(t, dir.Path("plain"), nil)
	writeAdapter(t, dir.Path("pc.ckpt"), nil) // a checkpoint, not an adapter
	list, err := dir.List()
	if err != nil || len(list) != 2 || list[0].Name != "pc" || list[0].Base != "stories260K" || list[1].Name != "plain" || list[1].Base != "" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if a, err := dir.Lookup("pc"); err != nil || a.Path != dir.Path("pc") || a.Modified.IsZero() {
		t.Fatalf("Lookup(pc) = %+v, %v", a, err)
	}
	// Lookup takes names only: a path or a checkpoint is not found, and
	// the error lists what there is.
	for _, bad := range []string{"../adapters/pc", "pc.ckpt", "nope", ""} {
		_, err := dir.Lookup(bad)
		var nf *NotFoundError
		if !errors.As(err, &nf) || !strings.Contains(err.Error(), "have: pc, plain") {
			t.Errorf("Lookup(%q): %v", bad, err)
		}
	}
	// Find also takes files, and a name with .gguf.
	other := filepath.Join(t.TempDir(), "elsewhere.gguf")
	writeAdapter(t, other, map[string]string{BaseKey: "x"})
	if a, err := dir.Find(other); err != nil || a.Name != "elsewhere" || a.Base != "x" {
		t.Fatalf("Find(file) = %+v, %v", a, err)
	}
	if a, err := dir.Find("pc.gguf"); err != nil || a.Path != dir.Path("pc") {
		t.Fatalf("Find(pc.gguf) = %+v, %v", a, err)
	}
	if _, err := dir.Find("/no/such/file.gguf"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Find(missing file) = %v", err)
	}
}

// TestVersionedAdapterLookup: NAME of a versioned adapter is its promoted
// version, known as NAME@k; NAME@N is one version.
func TestVersionedAdapterLookup(t *testing.T) {
	dir := t.TempDir()
	d := AdapterDir(dir)
	for _, f := range []string{"fix@1.gguf", "fix@2.gguf"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := versions.Dir(dir).Promote("fix", 1); err != nil {
		t.Fatal(err)
	}
	a, err := d.Lookup("fix")
	if err != nil || a.Name != "fix@1" || filepath.Base(a.Path) != "fix@1.gguf" {
		t.Fatalf("fix: %+v %v", a, err)
	}
	if err := versions.Dir(dir).Promote("fix", 2); err != nil {
		t.Fatal(err)
	}
	if a, err = d.Lookup("fix"); err != nil || a.Name != "fix@2" {
		t.Fatalf("fix after promoting fix@2: %+v %v", a, err)
	}
	if a, err = d.Find("fix@1"); err != nil || a.Name != "fix@1" || filepath.Base(a.Path) != "fix@1.gguf" {
		t.Fatalf("fix@1: %+v %v", a, err)
	}
	if _, err := d.Lookup("fix@9"); err == nil || !strings.Contains(err.Error(), "no version 9 (have fix@1, fix@2)") {
		t.Fatalf("fix@9: %v", err)
	}
}
