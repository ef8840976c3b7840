package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/llmrt/llmrt/models/names"
	"github.com/llmrt/llmrt/models/store"
)

// target is what -m names, after models/names' grammar: a base model's
// file with the adapters the name carries (BASE+ADAPTER, ft:BASE:SUFFIX).
type target struct {
	ID       string // what to call it: a store name, a path's id, BASE+NAME
	Base     string // the base's id
	Path     string // the base's GGUF file
	Adapters []names.Adapter
}

// adapters is the adapters folder of this home.
func (a *app) adapters() names.AdapterDir {
	return names.AdapterDir(filepath.Join(a.home, "adapters"))
}

// resolveTarget resolves -m: a .gguf path, a store name (fetched into the
// store when it is a known name and fetch is set), or either with an
// adapter (BASE+NAME, ft:BASE:SUFFIX). Empty means LLMRT_MODEL, else the
// default model.
func (a *app) resolveTarget(ctx context.Context, spec string, fetch bool) (target, error) {
	if spec == "" {
		spec = os.Getenv("LLMRT_MODEL")
	}
	if spec == "" {
		spec = defaultModel
	}
	if st, err := os.Stat(spec); err == nil && !st.IsDir() {
		return target{ID: names.FromPath(spec), Base: names.FromPath(spec), Path: spec}, nil
	}
	base, adapter, split := names.SplitAdapter(spec)
	if split && !a.inStore(spec) {
		t, err := a.resolveTarget(ctx, base, fetch)
		if err != nil {
			return target{}, err
		}
		ad, err := a.adapters().Lookup(adapter)
		if err != nil {
			return target{}, fmt.Errorf("model %q: %w", spec, err)
		}
		t.ID = t.Base + "+" + adapter
		if t.Base == base {
			t.ID = spec // as given: BASE+NAME or ft:BASE:SUFFIX
		}
		t.Adapters = append(t.Adapters, ad)
		return t, nil
	}
	var p string
	var err error
	if fetch {
		p, err = a.resolveModel(ctx, spec)
	} else {
		p, err = a.modelPath(spec)
	}
	if err != nil {
		return target{}, a.adapterHint(spec, err)
	}
	id := spec
	if names.IsPath(spec) {
		id = names.FromPath(spec)
	}
	return target{ID: id, Base: id, Path: p}, nil
}

// inStore reports whether name is a store model (whose name may hold a
// '+').
func (a *app) inStore(name string) bool {
	s, err := a.openStore()
	if err != nil {
		return false
	}
	m, err := s.Show(name)
	return err == nil && m.Path != ""
}

// adapterHint adds to a "not installed" error that the name is an
// adapter, and how to call it.
func (a *app) adapterHint(name string, err error) error {
	var nf *store.NotFoundError
	if !errors.As(err, &nf) {
		return err
	}
	ad, aerr := a.adapters().Lookup(name)
	if aerr != nil {
		return err
	}
	if ad.Base != "" {
		return fmt.Errorf("%w; %q is an adapter for %s: call it %s+%s", err, name, ad.Base, ad.Base, name)
	}
	return fmt.Errorf("%w; %q is an adapter: call it BASE+%s", err, name, name)
}

// resolveAdapterSpec takes --adapter: a name in the adapters folder or a
// .gguf path, optionally with :SCALE.
func (a *app) resolveAdapterSpec(spec string) (names.Adapter, float32, error) {
	if _, err := os.Stat(spec); err == nil {
		ad, err := a.adapters().Find(spec)
		return ad, 1, err
	}
	name, scale := names.ParseScale(spec)
	ad, err := a.adapters().Find(name)
	if err != nil {
		return names.Adapter{}, 0, fmt.Errorf("--adapter %s: %w", spec, err)
	}
	return ad, scale, nil
}
