package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/sched"
)

// With a memory budget that fits one model, a request for a second model
// evicts the idle first; while the first is busy, the second waits, then
// proceeds when the first's request ends.
func TestSchedulerEvictsAndQueues(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"first", "second"} {
		if err := os.Symlink(testmodel.Shared(t, "stories260K.gguf"), filepath.Join(dir, n+".gguf")); err != nil {
			t.Fatal(err)
		}
	}
	eng := engine.Options{NParallel: 2, CtxPerSeq: 1024, NBatch: 256, Threads: 2}
	// The budget: one model's estimate and a half.
	f, _ := gguf.Open(filepath.Join(dir, "first.gguf"))
	var sizes []sched.TensorSize
	for _, t := range f.Tensors {
		sizes = append(sizes, sched.TensorSize{Name: t.Name, Dims: t.Dims, Bytes: t.Size()})
	}
	facts, err := sched.FactsFromMetadata("first", f.Architecture(), f.Uint, sizes)
	if err != nil {
		t.Fatal(err)
	}
	est, err := sched.EstimateModel(facts, sched.ContextParams{NCtx: 2048, NBatch: 256, NSeq: 2, KVPerSeq: true})
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	sc, err := sched.New(sched.Config{NoNVML: true, CPULimit: est.Total.Total() * 3 / 2, MarginBytes: -1, MarginFraction: -1, MaxWait: 3 * time.Minute, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	reg := registry.NewRegistry(registry.RegistryConfig{Resolver: registry.DirResolver{Dir: dir}, Engine: eng, KeepAlive: -1, Sched: sc, Logger: quiet})
	defer reg.Close()
	srv := New(Config{Logger: quiet}, reg)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, ln)
	url := "http://" + ln.Addr().String()
	complete := func(model string, n int) (int, string) {
		body := `{"model": "` + model + `", "prompt": "Once upon a time", "max_tokens": ` + itoa(n) + `, "ignore_eos": true, "temperature": 0}`
		resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	loaded := func() []string {
		var names []string
		for _, m := range reg.Loaded() {
			names = append(names, m.Name)
		}
		return names
	}
	if code, body := complete("first", 4); code != 200 {
		t.Fatalf("first: %d %s", code, body)
	}
	// The second model does not fit beside the idle first: the first goes.
	if code, body := complete("second", 4); code != 200 {
		t.Fatalf("second: %d %s", code, body)
	}
	if got := loaded(); len(got) != 1 || got[0] != "second" {
		t.Fatalf("loaded after eviction: %v", got)
	}
	snap := sc.Snapshot()
	js, _ := json.Marshal(snap)
	if !strings.Contains(string(js), "evict") {
		t.Fatalf("the decision log does not mention the eviction: %s", js)
	}
	// Now "second" is busy with a long request; "first" must wait for it.
	type reply struct {
		code int
		body string
	}
	longDone := make(chan reply, 1)
	longStart := time.Now()
	go func() {
		code, body := complete("second", 300)
		longDone <- reply{code, body}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if ms := reg.Loaded(); len(ms) == 1 && ms[0].Busy == 1 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	code, body := complete("first", 4)
	if code != 200 {
		t.Fatalf("first after waiting: %d %s", code, body)
	}
	long := <-longDone
	// The busy model ran its request to the end: no eviction cut it short.
	if long.code != 200 || !strings.Contains(long.body, `"completion_tokens":300`) {
		t.Fatalf("the busy request: %d %s", long.code, long.body)
	}
	// The order is the scheduler's, not the clients' (their goroutines may
	// see the two responses end in either order): "first" was queued, and
	// "second" was evicted for it only when idle, after its request.
	var order []string
	for _, d := range sc.Snapshot().Decisions {
		if d.Time.Before(longStart.UTC().Round(0)) {
			continue
		}
		t.Logf("%s %s %s: %s", d.Time.Format("15:04:05.000000"), d.Action, d.Owner, d.Reason)
		switch {
		case d.Action == "queued" && d.Owner.ID == "first",
			d.Action == "evicting" && d.Owner.ID == "second",
			d.Action == "placed" && d.Owner.ID == "first":
			order = append(order, d.Action+" "+d.Owner.ID)
		}
	}
	if want := []string{"queued first", "evicting second", "placed first"}; strings.Join(order, ", ") != strings.Join(want, ", ") {
		t.Fatalf("scheduler decisions after the busy request started: %v, want %v", order, want)
	}
	if got := loaded(); len(got) != 1 || got[0] != "first" {
		t.Fatalf("loaded at the end: %v", got)
	}
	// /v1/system shows the scheduler's picture.
	resp, err := http.Get(url + "/v1/system")
	if err != nil {
		t.Fatal(err)
	}
	var sys map[string]json.RawMessage
	json.NewDecoder(resp.Body).Decode(&sys)
	resp.Body.Close()
	if len(sys["scheduler"]) < 10 {
		t.Fatalf("/v1/system without the scheduler: %v", sys)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// The scheduler's estimate is within 10% of what llama.cpp allocates, for
// two real models at two context sizes (and one and four sequences).
func TestEstimateMatchesLlamaCpp(t *testing.T) {
	s, err := sched.New(sched.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, name := range []string{"stories260K.gguf", "llama-2-tiny-random.gguf"} {
		path := testmodel.Shared(t, name)
		f, err := gguf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		sizes := make([]sched.TensorSize, len(f.Tensors))
		for i, tt := range f.Tensors {
			sizes[i] = sched.TensorSize{Name: tt.Name, Dims: tt.Dims, Bytes: tt.Size()}
		}
		facts, err := sched.FactsFromMetadata(name, f.Architecture(), f.Uint, sizes)
		if err != nil {
			t.Fatal(err)
		}
		for _, ctxLen := range []int{256, 2048} {
			for _, par := range []int{1, 4} {
				est, err := s.Estimate(name, facts, sched.ContextParams{NCtx: ctxLen * par, NBatch: 512, NSeq: par, KVPerSeq: par > 1})
				if err != nil {
					t.Fatal(err)
				}
				e, err := engine.Open(context.Background(), engine.Options{Path: path, CtxPerSeq: ctxLen, NParallel: par, NBatch: 512, Threads: 2})
				if err != nil {
					t.Fatal(err)
				}
				m, err := e.Memory()
				e.Close()
				if err != nil {
					t.Fatal(err)
				}
				diff := math.Abs(float64(est.Total.Total()-m.Total())) / float64(m.Total())
				if diff > 0.10 {
					t.Errorf("%s ctx %d x %d: estimated %d bytes (%v), llama.cpp allocated %d (%+v): %.1f%% off",
						name, ctxLen, par, est.Total.Total(), est.Total, m.Total(), m, 100*diff)
				}
			}
		}
	}
}
