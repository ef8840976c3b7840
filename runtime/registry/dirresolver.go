package registry

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DirResolver resolves model names to NAME.gguf files in a directory.
type DirResolver struct{ Dir string }

// Resolve returns Dir/name.gguf if it exists.
func (d DirResolver) Resolve(name string) (string, error) {
	if !validName(name) {
		return "", fmt.Errorf("invalid model name %q", name)
	}
	p := filepath.Join(d.Dir, name+".gguf")
	if _, err := os.Stat(p); err != nil {
		names, _ := d.Names()
		return "", fmt.Errorf("no model %q in %s (have: %s)", name, d.Dir, strings.Join(names, ", "))
	}
	return p, nil
}

// Names lists the .gguf files of Dir without their suffix.
func (d DirResolver) Names() ([]string, error) {
	entries, err := os.ReadDir(d.Dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".gguf"); ok && !e.IsDir() {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}
