package versions

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVersionsPromoteAndResolve(t *testing.T) {
	d := Dir(t.TempDir())
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A plain adapter from before versions becomes NAME@1, promoted, with
	// its side files.
	write(filepath.Join(string(d), "fix.gguf"), "v1")
	write(filepath.Join(string(d), "fix.metrics.jsonl"), "m1")
	if id, p, ok, err := d.Resolve("fix"); err != nil || !ok || id != "fix" || !strings.HasSuffix(p, "fix.gguf") {
		t.Fatalf("unversioned: %q %q %v %v", id, p, ok, err)
	}
	v, err := d.Next("fix", false)
	if err != nil || v.N != 2 {
		t.Fatalf("next: %+v %v", v, err)
	}
	if b, err := os.ReadFile(filepath.Join(string(d), "fix@1.metrics.jsonl")); err != nil || string(b) != "m1" {
		t.Fatalf("side file not moved: %q %v", b, err)
	}
	write(v.Path, "v2")
	if id, _, ok, err := d.Resolve("fix"); err != nil || !ok || id != "fix@1" {
		t.Fatalf("fix before promotion: %q %v %v", id, ok, err)
	}
	if err := d.Promote("fix", 2); err != nil {
		t.Fatal(err)
	}
	id, p, ok, err := d.Resolve("fix")
	if b, _ := os.ReadFile(p); err != nil || !ok || id != "fix@2" || string(b) != "v2" {
		t.Fatalf("fix after promotion: %q %q %v %v", id, b, ok, err)
	}
	// The path NAME.gguf reads the promoted version too; the old one stays.
	if b, _ := os.ReadFile(filepath.Join(string(d), "fix.gguf")); string(b) != "v2" {
		t.Fatalf("fix.gguf reads %q", b)
	}
	if id, p, ok, _ := d.Resolve("fix@1"); !ok || id != "fix@1" || !strings.HasSuffix(p, "fix@1.gguf") {
		t.Fatalf("fix@1: %q %q", id, p)
	}
	if _, _, _, err := d.Resolve("fix@7"); err == nil || !strings.Contains(err.Error(), "fix@1, fix@2") {
		t.Fatalf("missing version: %v", err)
	}
	if _, _, _, err := d.Resolve("fix@x"); err == nil {
		t.Fatal("fix@x accepted")
	}
	if _, _, ok, err := d.Resolve("other"); ok || err != nil {
		t.Fatalf("unknown name: %v %v", ok, err)
	}
	if v, _ := d.Next("fix", true); v.N != 2 {
		t.Fatalf("resume continues the latest version, got %d", v.N)
	}
	if err := d.Promote("fix", 9); err == nil {
		t.Fatal("promoted a version that does not exist")
	}
	if vs, _ := d.List("fix"); len(vs) != 2 || vs[1].ID() != "fix@2" {
		t.Fatalf("versions %+v", vs)
	}
}

func TestGateDecision(t *testing.T) {
	if d := Decide("f1", "fix@3", 0.40, "fix@2", 0.45, 0.02); d.Promote || !strings.Contains(d.Reason, "worse") || !strings.Contains(d.Reason, "0.0200") {
		t.Fatalf("worse: %+v", d)
	}
	if d := Decide("f1", "fix@3", 0.46, "fix@2", 0.45, 0.02); d.Promote || !strings.Contains(d.Reason, "not better by the margin") {
		t.Fatalf("within the margin: %+v", d)
	}
	if d := Decide("f1", "fix@3", 0.60, "fix@2", 0.45, 0.02); !d.Promote {
		t.Fatalf("better: %+v", d)
	}
}
