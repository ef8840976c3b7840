// Package names says what the names users give models and adapters mean,
// the same for every command and for the API: a model is a store name or a
// .gguf path; BASE+ADAPTER and ft:BASE:SUFFIX are a base with an adapter;
// an adapter is a name in the adapters folder or a .gguf path, optionally
// with :SCALE. A model served from a path is called by its file name
// without .gguf.
package names

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/versions"
)

// Valid reports whether s can be a model or adapter name: not empty, no
// path separators or NUL, not "." or "..", at most 200 bytes.
func Valid(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 200 {
		return false
	}
	return !strings.ContainsAny(s, "/\\\x00")
}

// SplitAdapter splits "BASE+ADAPTER" or "ft:BASE:SUFFIX" (a fine-tuning
// job's name; its adapter is SUFFIX) into base and adapter names.
func SplitAdapter(id string) (base, adapter string, ok bool) {
	if rest, ok := strings.CutPrefix(id, "ft:"); ok {
		if i := strings.LastIndex(rest, ":"); i > 0 && i < len(rest)-1 {
			return rest[:i], rest[i+1:], true
		}
		return "", "", false
	}
	if i := strings.LastIndex(id, "+"); i > 0 && i < len(id)-1 {
		return id[:i], id[i+1:], true
	}
	return "", "", false
}

// IsPath reports whether s is meant as a file rather than a name: it has a
// path separator or ends in .gguf.
func IsPath(s string) bool {
	return strings.ContainsRune(s, filepath.Separator) || strings.ContainsRune(s, '/') || strings.HasSuffix(s, ".gguf")
}

// FromPath is the id a model file is served under: its file name without
// .gguf, with '+' (which would read as BASE+ADAPTER) turned into '-'.
func FromPath(path string) string {
	id := strings.TrimSuffix(filepath.Base(path), ".gguf")
	return strings.ReplaceAll(id, "+", "-")
}

// ParseScale splits an optional ":SCALE" off an adapter spec ("pc:0.5").
func ParseScale(spec string) (string, float32) {
	if i := strings.LastIndex(spec, ":"); i > 0 {
		if v, err := strconv.ParseFloat(spec[i+1:], 32); err == nil {
			return spec[:i], float32(v)
		}
	}
	return spec, 1
}

// BaseKey is the adapter metadata key naming the base model an adapter
// was trained for (written by llmrt tune, fine-tuning jobs and import).
const BaseKey = "llmrt.base"

// Adapter is an adapter file in the adapters folder.
type Adapter struct {
	Name     string // file name without .gguf
	Base     string // the base it records (BaseKey), "" when none
	Path     string
	Size     int64
	Modified time.Time
}

// AdapterDir is the folder of NAME.gguf adapters ($LLMRT_HOME/adapters).
type AdapterDir string

// Path is where the adapter called name lives (or would).
func (d AdapterDir) Path(name string) string { return filepath.Join(string(d), name+".gguf") }

// NotFoundError reports an adapter that is neither a file nor a name in
// the folder; it lists the names there.
type NotFoundError struct {
	Name string
	Dir  string
	Have []string
}

func (e *NotFoundError) Error() string {
	if len(e.Have) == 0 {
		return fmt.Sprintf("adapter %q not found: no file by that path and no adapters in %s (llmrt tune --out NAME makes one)", e.Name, e.Dir)
	}
	return fmt.Sprintf("adapter %q not found: no file by that path and no %s.gguf in %s (have: %s)", e.Name, e.Name, e.Dir, strings.Join(e.Have, ", "))
}

// Lookup finds the adapter called name in the folder. Only names are
// taken, never paths, so it is safe for names that come from requests.
func (d AdapterDir) Lookup(name string) (Adapter, error) {
	if d == "" || !Valid(name) || strings.HasSuffix(name, ".ckpt") {
		return Adapter{}, d.notFound(name)
	}
	a, err := d.read(name)
	if err != nil {
		if _, n, perr := versions.Parse(name); perr == nil && n > 0 {
			if _, _, _, verr := versions.Dir(d).Resolve(name); verr != nil {
				return Adapter{}, verr // says which versions there are
			}
		}
		return Adapter{}, d.notFound(name)
	}
	// NAME of a versioned adapter is its promoted version: it is known
	// (and loaded by engines) as NAME@k, so a promotion is a new adapter
	// to everything that holds the old one.
	if v, ok, err := versions.Dir(d).Promoted(name); err == nil && ok {
		a.Name, a.Path = v.ID(), v.Path
	}
	return a, nil
}

// Find takes an adapter as the user gives it: an existing .gguf file, or a
// name in the folder.
func (d AdapterDir) Find(spec string) (Adapter, error) {
	if st, err := os.Stat(spec); err == nil && !st.IsDir() {
		return Adapter{Name: FromPath(spec), Base: recordedBase(spec), Path: spec, Size: st.Size(), Modified: st.ModTime()}, nil
	}
	if IsPath(spec) && !Valid(strings.TrimSuffix(spec, ".gguf")) {
		return Adapter{}, fmt.Errorf("adapter %s: %w", spec, os.ErrNotExist)
	}
	return d.Lookup(strings.TrimSuffix(spec, ".gguf"))
}

func (d AdapterDir) read(name string) (Adapter, error) {
	p := d.Path(name)
	st, err := os.Stat(p)
	if err != nil || st.IsDir() {
		return Adapter{}, errors.New("no such adapter")
	}
	return Adapter{Name: name, Base: recordedBase(p), Path: p, Size: st.Size(), Modified: st.ModTime()}, nil
}

func (d AdapterDir) notFound(name string) error {
	e := &NotFoundError{Name: name, Dir: string(d)}
	list, _ := d.List()
	for _, a := range list {
		e.Have = append(e.Have, a.Name)
	}
	return e
}

// List returns the adapters in the folder by name (what training keeps
// beside an adapter to resume, its checkpoint NAME.ckpt.gguf and the
// converted copy of an F16/BF16 base NAME.base-q8_0.gguf or
// NAME.base-f32.gguf, are not adapters). A missing folder holds none.
func (d AdapterDir) List() ([]Adapter, error) {
	if d == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(string(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list adapters: %w", err)
	}
	var out []Adapter
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".gguf")
		side := strings.HasSuffix(name, ".ckpt") || strings.HasSuffix(name, ".base-q8_0") || strings.HasSuffix(name, ".base-f32")
		if !ok || e.IsDir() || side || !Valid(name) {
			continue
		}
		if a, err := d.read(name); err == nil {
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// recordedBase reads the base model an adapter file records ("" when it
// records none or is not a GGUF file).
func recordedBase(path string) string {
	f, err := gguf.Open(path)
	if err != nil {
		return ""
	}
	b, _ := f.String(BaseKey)
	return b
}
