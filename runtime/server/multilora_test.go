package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
)

// TestMixedAdapterBatchOverHTTP registers three adapters through
// /v1/adapters and sends four completions at once, three under those
// adapters and one under none: they share decode steps (the step histogram
// has steps of three adapters), each answers what a server that groups
// requests by adapter answers for it alone, and /v1/system says which
// batching each server uses.
func TestMixedAdapterBatchOverHTTP(t *testing.T) {
	mixed := startServer(t, Config{}, engine.Options{NParallel: 4})
	grouped := startServer(t, Config{}, engine.Options{NParallel: 1, GroupAdapters: true})
	base, err := gguf.Open(testmodel.Shared(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	models := []string{"stories260K"}
	for _, ts := range []*testServer{mixed, grouped} {
		dir := ts.reg.AdapterDir()
		os.MkdirAll(dir, 0o755)
		for i, tg := range [][]string{{"attn_q", "attn_v"}, {"attn_k", "attn_output", "ffn_up"}, {"attn_q", "ffn_down", "ffn_gate"}} {
			name := fmt.Sprintf("style%d", i)
			if err := lora.WriteAdapter(filepath.Join(dir, name+".gguf"), "llama", 8, lora.RandomAdapter(base, tg, 4, 0.25, uint64(20+i)), nil); err != nil {
				t.Fatal(err)
			}
			resp, data := ts.post(t, "/v1/adapters", map[string]any{"name": name, "base": "stories260K", "path": name + ".gguf"})
			if resp.StatusCode != 201 {
				t.Fatalf("register %s: %d %s", name, resp.StatusCode, data)
			}
			if ts == mixed {
				models = append(models, name)
			}
		}
	}
	prompts := []string{"One day, a bird", "Once upon a time", "The little dog ran to the park", "Lily and Tom"}
	complete := func(ts *testServer, i int) string {
		resp, data := ts.post(t, "/v1/completions", map[string]any{"model": models[i], "prompt": prompts[i], "max_tokens": 48,
			"temperature": 0, "ignore_eos": true})
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", models[i], resp.StatusCode, data)
			return ""
		}
		var cr CompletionResponse
		json.Unmarshal(data, &cr)
		return cr.Choices[0].Text
	}
	want := make([]string, len(models))
	for i := range models {
		want[i] = complete(grouped, i)
	}
	// Once first, so that the adapters are resident and the four run side
	// by side rather than as their weights arrive.
	for i := range models {
		complete(mixed, i)
	}
	got := make([]string, len(models))
	var wg sync.WaitGroup
	for i := range models {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = complete(mixed, i)
		}()
	}
	wg.Wait()
	for i := range models {
		if got[i] != want[i] {
			t.Errorf("%s: mixed batch %q, alone on the grouping server %q", models[i], got[i], want[i])
		}
	}
	plain := models[1]
	models[1] = "stories260K"
	if complete(grouped, 1) == want[1] {
		t.Fatal("the adapter does not change the text: the test would prove nothing")
	}
	models[1] = plain
	below, atMost := histBucket(t, mixed, "llmrt_step_adapters", "2"), histBucket(t, mixed, "llmrt_step_adapters", "3")
	if atMost <= below {
		t.Fatalf("no decode step ran three adapters (steps with <= 2: %v, <= 3: %v)", below, atMost)
	}
	for ts, prefix := range map[*testServer]string{mixed: "mixed", grouped: "grouped"} {
		r, err := http.Get(ts.url + "/v1/system")
		if err != nil {
			t.Fatal(err)
		}
		var sys struct {
			Models []struct {
				Name            string `json:"name"`
				AdapterBatching string `json:"adapter_batching"`
			} `json:"models"`
		}
		json.NewDecoder(r.Body).Decode(&sys)
		r.Body.Close()
		if len(sys.Models) != 1 || !strings.HasPrefix(sys.Models[0].AdapterBatching, prefix) {
			t.Fatalf("/v1/system models %+v, want adapter batching %q", sys.Models, prefix)
		}
	}
}

// histBucket reads one bucket of a histogram from /metrics.
func histBucket(t *testing.T, ts *testServer, name, le string) float64 {
	t.Helper()
	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+"_bucket{") && strings.Contains(line, `le="`+le+`"`) {
			var v float64
			fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
			return v
		}
	}
	t.Fatalf("no bucket le=%s of %s", le, name)
	return 0
}
