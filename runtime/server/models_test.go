package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/names"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/registry"
)

func (ts *testServer) models(t *testing.T) map[string]ModelObject {
	t.Helper()
	r, err := http.Get(ts.url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var ml ModelList
	if err := json.NewDecoder(r.Body).Decode(&ml); err != nil {
		t.Fatal(err)
	}
	out := map[string]ModelObject{}
	for _, m := range ml.Data {
		out[m.ID] = m
	}
	return out
}

// /v1/models lists the adapters folder's adapters as BASE+NAME, with the
// file's time as created, and adapters registered at run time with the
// time they were registered.
func TestModelsListFolderAdaptersWithTimes(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{NParallel: 1})
	dir := ts.reg.AdapterDir()
	os.MkdirAll(dir, 0o755)
	base, _ := gguf.Open(testmodel.Shared(t, "stories260K.gguf"))
	write := func(name, forBase string) string {
		p := filepath.Join(dir, name+".gguf")
		meta := map[string]string{}
		if forBase != "" {
			meta[names.BaseKey] = forBase
		}
		if err := lora.WriteAdapter(p, "llama", 8, lora.RandomAdapter(base, []string{"attn_q"}, 4, 0.3, 7), meta); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pc := write("pc", "stories260K")
	write("other", "not-served-here") // its base is not here: not listed
	write("anon", "")                 // records no base: not listed
	trained := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	os.Chtimes(pc, trained, trained)
	modelFile, _ := filepath.EvalSymlinks(filepath.Join(filepath.Dir(dir), "stories260K.gguf"))
	st, _ := os.Stat(modelFile)

	ms := ts.models(t)
	m, ok := ms["stories260K+pc"]
	if !ok || m.Parent != "stories260K" || m.Kind != "adapter" || m.Created != trained.Unix() {
		t.Fatalf("stories260K+pc listed as %+v (ok %v); all: %+v", m, ok, ms)
	}
	if _, ok := ms["not-served-here+other"]; ok {
		t.Fatal("an adapter for a base this server lacks is listed")
	}
	if len(ms) != 2 {
		t.Fatalf("want the model and one adapter, got %+v", ms)
	}
	if ms["stories260K"].Created != st.ModTime().Unix() {
		t.Fatalf("model created %d, want its file's time %d", ms["stories260K"].Created, st.ModTime().Unix())
	}
	if got, ok := ts.models(t)["stories260K+pc"]; !ok || got.Created != m.Created {
		t.Fatal("the listing is not stable")
	}
	resp, data := ts.post(t, "/v1/completions", map[string]any{"model": "stories260K+pc", "prompt": "Once upon a time", "max_tokens": 4})
	if resp.StatusCode != 200 {
		t.Fatalf("a listed id does not serve: %d %s", resp.StatusCode, data)
	}

	// A registered adapter carries the time it was registered, whatever
	// the request says, in the answer, GET /v1/adapters and /v1/models.
	before := time.Now().Add(-time.Second)
	resp, data = ts.post(t, "/v1/adapters", map[string]any{"name": "alias", "base": "stories260K", "path": "pc.gguf", "created": "0001-01-01T00:00:00Z"})
	after := time.Now().Add(time.Second)
	var ad registry.AdapterInfo
	if resp.StatusCode != 201 || json.Unmarshal(data, &ad) != nil || ad.Created.Before(before) || ad.Created.After(after) {
		t.Fatalf("register: %d %s", resp.StatusCode, data)
	}
	r, _ := http.Get(ts.url + "/v1/adapters")
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	var list struct{ Data []registry.AdapterInfo }
	if json.Unmarshal(body, &list) != nil || len(list.Data) != 1 || !list.Data[0].Created.Equal(ad.Created) {
		t.Fatalf("GET /v1/adapters: %s", body)
	}
	ms = ts.models(t)
	if a := ms["alias"]; a.Created != ad.Created.Unix() || a.Parent != "stories260K" {
		t.Fatalf("alias listed as %+v", a)
	}
	// The folder file is now listed under its registered name only.
	if _, ok := ms["stories260K+pc"]; ok {
		t.Fatalf("the adapter is listed twice: %+v", ms)
	}
	if r, _ := http.Get(ts.url + "/v1/models/stories260K+pc"); r.StatusCode != 200 {
		t.Fatalf("GET /v1/models/stories260K+pc: %d", r.StatusCode)
	}
}

func (ts *testServer) loaded(t *testing.T) []registry.LoadedModel {
	t.Helper()
	r, err := http.Get(ts.url + "/v1/system")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var sys struct{ Models []registry.LoadedModel }
	if err := json.NewDecoder(r.Body).Decode(&sys); err != nil {
		t.Fatal(err)
	}
	return sys.Models
}

// /v1/system says how much memory a loaded model holds on which device and
// its shape (llmrt ps); keep_alive 0 on a busy model (llmrt stop) unloads
// it after its last request.
func TestLoadedModelMemoryAndStopWhenIdle(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{NParallel: 1}, func(rc *registry.RegistryConfig) { rc.KeepAlive = time.Hour })
	ts.post(t, "/v1/completions", map[string]any{"prompt": "Once", "max_tokens": 2})
	lm := ts.loaded(t)
	if len(lm) != 1 || lm[0].SizeBytes <= 0 || lm[0].MemoryByDevice["CPU"] != lm[0].SizeBytes || lm[0].Parallel != 1 || lm[0].CtxPerSeq != 512 {
		t.Fatalf("loaded: %+v", lm)
	}
	if lm[0].ExpiresAt == nil || lm[0].ExpiresAt.Sub(lm[0].LastUsed) != time.Hour {
		t.Fatalf("expires at %v, last used %v", lm[0].ExpiresAt, lm[0].LastUsed)
	}
	// A request holds it: it stays until that request ends, then goes.
	lease, err := ts.reg.Acquire(context.Background(), "stories260K")
	if err != nil {
		t.Fatal(err)
	}
	resp, data := ts.post(t, "/v1/system/keep_alive", map[string]any{"model": "stories260K", "keep_alive": 0})
	if resp.StatusCode != 200 {
		lease.Release()
		t.Fatalf("keep_alive 0 while busy: %d %s", resp.StatusCode, data)
	}
	if lm := ts.loaded(t); len(lm) != 1 || lm[0].Busy != 1 || lm[0].KeepAliveSeconds != 0 {
		lease.Release()
		t.Fatalf("busy model after keep_alive 0: %+v", lm)
	}
	lease.Release()
	if lm := ts.loaded(t); len(lm) != 0 {
		t.Fatalf("not unloaded after its last request: %+v", lm)
	}
}
