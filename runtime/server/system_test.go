package server

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/registry"
)

func loadedNames(t *testing.T, ts *testServer) map[string]registry.LoadedModel {
	t.Helper()
	resp, err := http.Get(ts.url + "/v1/system")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sys struct{ Models []registry.LoadedModel }
	json.NewDecoder(resp.Body).Decode(&sys)
	out := map[string]registry.LoadedModel{}
	for _, m := range sys.Models {
		out[m.Name] = m
	}
	return out
}

// TestModelControl: load, keep-alive and unload from the API (the
// console's buttons), with the registry's view after each.
func TestModelControl(t *testing.T) {
	ts := startServer(t, Config{}, engine.Options{NParallel: 1, CtxPerSeq: 128}, func(rc *registry.RegistryConfig) {
		rc.KeepAlive = -1
	})
	var m registry.LoadedModel
	resp, data := ts.post(t, "/v1/system/load", map[string]any{"model": "stories260K", "keep_alive": "10m"})
	if json.Unmarshal(data, &m); resp.StatusCode != 200 || m.Name != "stories260K" || m.KeepAliveSeconds != 600 || m.ExpiresAt == nil || m.Pinned {
		t.Fatalf("load: %d %s", resp.StatusCode, data)
	}
	if _, ok := loadedNames(t, ts)["stories260K"]; !ok {
		t.Fatal("/v1/system does not list the loaded model")
	}
	resp, data = ts.post(t, "/v1/system/keep_alive", map[string]any{"model": "stories260K", "keep_alive": -1})
	m = registry.LoadedModel{}
	if json.Unmarshal(data, &m); resp.StatusCode != 200 || m.KeepAliveSeconds != -1 || !m.Pinned || m.ExpiresAt != nil {
		t.Fatalf("keep forever: %d %s", resp.StatusCode, data)
	}
	resp, data = ts.post(t, "/v1/system/keep_alive", map[string]any{"model": "stories260K", "keep_alive": "soon"})
	if resp.StatusCode != 400 || apiErr(t, data).Param == nil || *apiErr(t, data).Param != "keep_alive" {
		t.Fatalf("bad keep_alive: %d %s", resp.StatusCode, data)
	}
	resp, data = ts.post(t, "/v1/system/unload", map[string]any{"model": "stories260K"})
	if resp.StatusCode != 200 || len(loadedNames(t, ts)) != 0 {
		t.Fatalf("unload: %d %s, still loaded: %v", resp.StatusCode, data, loadedNames(t, ts))
	}
	if resp, data = ts.post(t, "/v1/system/unload", map[string]any{"model": "stories260K"}); resp.StatusCode != 404 {
		t.Fatalf("unload twice: %d %s", resp.StatusCode, data)
	}
	if resp, data = ts.post(t, "/v1/system/load", map[string]any{"model": "nope"}); resp.StatusCode != 404 {
		t.Fatalf("load unknown: %d %s", resp.StatusCode, data)
	}
	// keep_alive 0 unloads an idle model at once.
	ts.post(t, "/v1/system/load", map[string]any{"model": "stories260K"})
	if len(loadedNames(t, ts)) != 1 {
		t.Fatal("load without keep_alive did not load")
	}
	resp, data = ts.post(t, "/v1/system/keep_alive", map[string]any{"model": "stories260K", "keep_alive": "0s"})
	if resp.StatusCode != 200 || len(loadedNames(t, ts)) != 0 {
		t.Fatalf("keep_alive 0: %d %s", resp.StatusCode, data)
	}
}

// TestConsoleMount: the console answers / without a key (the page asks for
// one) while the API still needs it, and the host check covers it.
func TestConsoleMount(t *testing.T) {
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "console page "+r.URL.Path) })
	ts := startServer(t, Config{APIKeys: []string{"k"}, Console: page}, engine.Options{NParallel: 1, CtxPerSeq: 128})
	get := func(path, host string) (int, string) {
		req, _ := http.NewRequest("GET", ts.url+path, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/", ""); code != 200 || body != "console page /" {
		t.Fatalf("GET /: %d %q", code, body)
	}
	if code, _ := get("/v1/models", ""); code != 401 {
		t.Fatalf("the API without a key: %d", code)
	}
	if code, body := get("/v1/nope", ""); code != 401 {
		t.Fatalf("an unknown API path goes to the API, not the console: %d %q", code, body)
	}
	if code, _ := get("/", "evil.example"); code != 403 {
		t.Fatalf("console under a foreign host name: %d", code)
	}
	ts.srv.loopback.Store(true)
	if code, _ := get("/", "evil.example"); code != 403 {
		t.Fatalf("console under a foreign host name on loopback: %d", code)
	}
}
