// Package store is llmrt's local model store: GGUF files under
// $LLMRT_HOME/models with a small JSON manifest each, fetched by Pull from
// Hugging Face (hf://OWNER/REPO/FILE.gguf), plain URLs, or a mirror.
//
// Pull resumes an interrupted download with an HTTP Range request, retries
// a cut connection, verifies the sha256 digest before the file is renamed
// into place, and leaves nothing in the store when verification fails.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/llmrt/llmrt/internal/atomicfile"
)

// DefaultRoot is $LLMRT_HOME, else $XDG_DATA_HOME/llmrt, else
// ~/.local/share/llmrt.
func DefaultRoot() string {
	if h := os.Getenv("LLMRT_HOME"); h != "" {
		return h
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "llmrt")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".llmrt"
	}
	return filepath.Join(home, ".local", "share", "llmrt")
}

// Store is a model directory.
type Store struct {
	root string
}

// Model is a stored model.
type Model struct {
	Name     string    `json:"name"`
	Path     string    `json:"path"`
	Size     int64     `json:"size"`
	SHA256   string    `json:"sha256,omitempty"`
	Source   string    `json:"source,omitempty"`
	Modified time.Time `json:"modified"`
	// UpToDate is set by Pull when the installed file already matched the
	// source and nothing was fetched.
	UpToDate bool `json:"-"`
}

// Open creates the store's directories if needed.
func Open(root string) (*Store, error) {
	for _, d := range []string{filepath.Join(root, "models"), filepath.Join(root, "models", ".partial")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	return &Store{root: root}, nil
}

// Root is the store's directory.
func (s *Store) Root() string { return s.root }

// PathFor is where a model named name lives.
func (s *Store) PathFor(name string) string {
	return filepath.Join(s.root, "models", name+".gguf")
}

func (s *Store) manifestPath(name string) string {
	return filepath.Join(s.root, "models", name+".json")
}

// NotFoundError is returned for a model that is not installed.
type NotFoundError struct {
	Name      string
	Installed []string
}

func (e *NotFoundError) Error() string {
	if len(e.Installed) == 0 {
		return fmt.Sprintf("model %q is not installed (the store is empty; try `llmrt pull %s`)", e.Name, e.Name)
	}
	return fmt.Sprintf("model %q is not installed (installed: %s)", e.Name, strings.Join(e.Installed, ", "))
}

// ValidName reports whether name can be a store name.
func ValidName(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) <= 200 && !strings.ContainsAny(name, "/\\\x00") && !strings.HasPrefix(name, ".")
}

// Resolve returns the file of a model: an existing .gguf path as is, or a
// store name's file.
func (s *Store) Resolve(name string) (string, error) {
	if strings.HasSuffix(name, ".gguf") || strings.ContainsRune(name, '/') {
		if st, err := os.Stat(name); err == nil && !st.IsDir() {
			return name, nil
		}
	}
	if ValidName(name) {
		p := s.PathFor(name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	var names []string
	if list, err := s.List(); err == nil {
		for _, m := range list {
			names = append(names, m.Name)
		}
	}
	return "", &NotFoundError{Name: name, Installed: names}
}

// List returns the installed models, by name.
func (s *Store) List() ([]Model, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "models"))
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	var out []Model
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".gguf")
		if !ok || e.IsDir() || !ValidName(name) {
			continue
		}
		m, err := s.Show(name)
		if err != nil {
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Show describes one installed model.
func (s *Store) Show(name string) (Model, error) {
	if !ValidName(name) {
		return Model{}, &NotFoundError{Name: name}
	}
	p := s.PathFor(name)
	st, err := os.Stat(p)
	if err != nil {
		return Model{}, &NotFoundError{Name: name}
	}
	m := Model{Name: name, Path: p, Size: st.Size(), Modified: st.ModTime()}
	if b, err := os.ReadFile(s.manifestPath(name)); err == nil {
		var man Model
		if json.Unmarshal(b, &man) == nil {
			m.SHA256, m.Source = man.SHA256, man.Source
		}
	}
	return m, nil
}

// Remove deletes a model and its manifest.
func (s *Store) Remove(name string) error {
	if _, err := s.Show(name); err != nil {
		var nf *NotFoundError
		if errors.As(err, &nf) {
			_, rerr := s.Resolve(name)
			return rerr
		}
		return err
	}
	if err := os.Remove(s.PathFor(name)); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	os.Remove(s.manifestPath(name))
	return nil
}

func (s *Store) writeManifest(m Model) error {
	if err := atomicfile.WriteJSON(s.manifestPath(m.Name), m); err != nil {
		return fmt.Errorf("manifest of %s: %w", m.Name, err)
	}
	return nil
}
