// Package versions keeps numbered versions of a named adapter in the
// adapters folder: each tune of NAME writes NAME@N.gguf (N = 1, 2, ...),
// and NAME.gguf is a symbolic link to the promoted version, so NAME means
// the promoted one everywhere a name or that path is taken, and NAME@N
// names one version. Promotion swaps the link atomically; every version
// stays on disk and loadable. The first version of a name is promoted
// when it is written; later ones are promoted by the evaluation gate
// (llmrt eval --promote) or by hand.
package versions

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Dir is an adapters folder.
type Dir string

// Version is one numbered version of an adapter.
type Version struct {
	Name string // the adapter name, without @N
	N    int
	Path string
}

// ID is NAME@N.
func (v Version) ID() string { return fmt.Sprintf("%s@%d", v.Name, v.N) }

// Parse splits "NAME@N" into NAME and N; a spec without a version gives
// n == 0.
func Parse(spec string) (name string, n int, err error) {
	i := strings.LastIndex(spec, "@")
	if i < 0 {
		return spec, 0, nil
	}
	n, err = strconv.Atoi(spec[i+1:])
	if i == 0 || err != nil || n < 1 {
		return "", 0, fmt.Errorf("adapter %q: a version is NAME@N with N a number from 1", spec)
	}
	return spec[:i], n, nil
}

func validName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= 200 && !strings.ContainsAny(s, "/\\\x00@+")
}

func (d Dir) path(name string, n int) string {
	if n == 0 {
		return filepath.Join(string(d), name+".gguf")
	}
	return filepath.Join(string(d), fmt.Sprintf("%s@%d.gguf", name, n))
}

// List returns the versions of name, oldest first.
func (d Dir) List(name string) ([]Version, error) {
	if !validName(name) {
		return nil, fmt.Errorf("invalid adapter name %q", name)
	}
	ents, err := os.ReadDir(string(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Version
	prefix := name + "@"
	for _, e := range ents {
		f := e.Name()
		if !strings.HasPrefix(f, prefix) || !strings.HasSuffix(f, ".gguf") || strings.HasSuffix(f, ".ckpt.gguf") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(f, prefix), ".gguf"))
		if err != nil || n < 1 {
			continue
		}
		out = append(out, Version{Name: name, N: n, Path: filepath.Join(string(d), f)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].N < out[j].N })
	return out, nil
}

// Promoted returns the version NAME.gguf points to; ok is false when the
// name has no promoted version (no NAME.gguf, or a plain file from before
// versions).
func (d Dir) Promoted(name string) (Version, bool, error) {
	if !validName(name) {
		return Version{}, false, fmt.Errorf("invalid adapter name %q", name)
	}
	target, err := os.Readlink(d.path(name, 0))
	if err != nil {
		return Version{}, false, nil
	}
	n, nerr := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(target), name+"@"), ".gguf"))
	if nerr != nil || filepath.Base(target) != fmt.Sprintf("%s@%d.gguf", name, n) {
		return Version{}, false, fmt.Errorf("adapter %s: %s points to %s, which is not one of its versions", name, d.path(name, 0), target)
	}
	if _, err := os.Stat(d.path(name, n)); err != nil {
		return Version{}, false, fmt.Errorf("adapter %s: the promoted version %s@%d is missing: %w", name, name, n, err)
	}
	return Version{Name: name, N: n, Path: d.path(name, n)}, true, nil
}

// Resolve maps an adapter spec to the name an engine loads it under and
// its file: "NAME@N" is that version; "NAME" is the promoted version
// (NAME@k, so that a promotion is a different adapter to the engines that
// hold the old one), or the plain NAME.gguf of an unversioned adapter.
// ok is false when spec names nothing in the folder.
func (d Dir) Resolve(spec string) (id, path string, ok bool, err error) {
	name, n, err := Parse(spec)
	if err != nil {
		return "", "", false, err
	}
	if !validName(name) {
		return "", "", false, nil
	}
	if n > 0 {
		p := d.path(name, n)
		if _, err := os.Stat(p); err != nil {
			vs, _ := d.List(name)
			var have []string
			for _, v := range vs {
				have = append(have, v.ID())
			}
			if len(have) == 0 {
				return "", "", false, fmt.Errorf("adapter %s has no versions in %s", name, d)
			}
			return "", "", false, fmt.Errorf("adapter %s has no version %d (have %s)", name, n, strings.Join(have, ", "))
		}
		return spec, p, true, nil
	}
	v, ok, err := d.Promoted(name)
	if err != nil {
		return "", "", false, err
	}
	if ok {
		return v.ID(), v.Path, true, nil
	}
	p := d.path(name, 0)
	if st, err := os.Stat(p); err == nil && !st.IsDir() {
		return name, p, true, nil
	}
	return "", "", false, nil
}

// sideSuffixes are the files a training run writes beside its adapter.
var sideSuffixes = []string{".metrics.jsonl", ".loss.svg", ".ckpt.gguf", ".feedback.jsonl"}

// Next returns the version a new run of name writes (resume: the latest
// version, whose checkpoint the run continues). An unversioned NAME.gguf
// (from before versions) becomes NAME@1 first, with its side files.
func (d Dir) Next(name string, resume bool) (Version, error) {
	if !validName(name) {
		return Version{}, fmt.Errorf("invalid adapter name %q (no /, \\, @ or +)", name)
	}
	if err := os.MkdirAll(string(d), 0o755); err != nil {
		return Version{}, err
	}
	if err := d.migrate(name); err != nil {
		return Version{}, err
	}
	vs, err := d.List(name)
	if err != nil {
		return Version{}, err
	}
	n := 1
	if len(vs) > 0 {
		n = vs[len(vs)-1].N
		if !resume {
			n++
		}
	}
	return Version{Name: name, N: n, Path: d.path(name, n)}, nil
}

// migrate turns a plain NAME.gguf into NAME@1 (promoted).
func (d Dir) migrate(name string) error {
	p := d.path(name, 0)
	st, err := os.Lstat(p)
	if err != nil || st.Mode()&os.ModeSymlink != 0 || st.IsDir() {
		return nil
	}
	if vs, _ := d.List(name); len(vs) > 0 {
		return fmt.Errorf("adapter %s: both a plain %s and versions exist; move one away", name, p)
	}
	base := strings.TrimSuffix(p, ".gguf")
	v1 := strings.TrimSuffix(d.path(name, 1), ".gguf")
	for _, s := range sideSuffixes {
		if _, err := os.Stat(base + s); err == nil {
			if err := os.Rename(base+s, v1+s); err != nil {
				return err
			}
		}
	}
	if err := os.Rename(p, v1+".gguf"); err != nil {
		return err
	}
	return d.Promote(name, 1)
}

// Promote points NAME.gguf at version n, atomically: a reader sees the
// old version or the new one, never neither.
func (d Dir) Promote(name string, n int) error {
	if !validName(name) {
		return fmt.Errorf("invalid adapter name %q", name)
	}
	target := filepath.Base(d.path(name, n))
	if _, err := os.Stat(d.path(name, n)); err != nil {
		return fmt.Errorf("promote %s@%d: %w", name, n, err)
	}
	link := d.path(name, 0)
	if st, err := os.Lstat(link); err == nil && st.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("promote %s@%d: %s is a plain file, not a version link", name, n, link)
	}
	tmp := fmt.Sprintf("%s.promote-%d.tmp", link, os.Getpid())
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("promote %s@%d: %w", name, n, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("promote %s@%d: %w", name, n, err)
	}
	if f, err := os.Open(string(d)); err == nil {
		f.Sync()
		f.Close()
	}
	return nil
}
