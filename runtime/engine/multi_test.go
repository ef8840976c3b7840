package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
)

// storyAdapters writes n random adapters for stories260K: rank 4 on the
// attention projections (and every third also on the MLP), strong enough
// to change its greedy text.
func storyAdapters(t *testing.T, n int, seed uint64) []string {
	t.Helper()
	f, err := gguf.Open(testmodel.Shared(t, "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	paths := make([]string, n)
	for i := range paths {
		targets := []string{"attn_q", "attn_k", "attn_v", "attn_output"}
		if i%3 == 2 {
			targets = append(targets, "ffn_up", "ffn_down")
		}
		paths[i] = filepath.Join(dir, fmt.Sprintf("a%03d.gguf", i))
		if err := lora.WriteAdapter(paths[i], "llama", 8, lora.RandomAdapter(f, targets, 4, 0.25, seed+uint64(i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	return paths
}

// grouped is the reference: an engine that runs every request on
// llama.cpp's context with its adapter applied, one adapter set per step.
func grouped(t *testing.T) *Engine {
	return openStories(t, Options{NParallel: 1, Threads: 1, GroupAdapters: true})
}

func register(t *testing.T, e *Engine, paths []string) []string {
	t.Helper()
	names := make([]string, len(paths))
	for i, p := range paths {
		names[i] = strings.TrimSuffix(filepath.Base(p), ".gguf")
		if err := e.LoadAdapter(names[i], p); err != nil {
			t.Fatal(err)
		}
	}
	return names
}

func greedyReq(t *testing.T, e *Engine, text, adapter string, n int) Request {
	r := Request{Prompt: prompt(t, e, text), MaxTokens: n, IgnoreEOS: true}
	if adapter != "" {
		r.Adapters = []AdapterRef{{Name: adapter}}
	}
	return r
}

// TestMixedAdaptersShareSteps runs four requests at once, three under
// different adapters and one under none: they share decode steps, and each
// gives, token for token, what llama.cpp gives for it alone with its
// adapter applied.
func TestMixedAdaptersShareSteps(t *testing.T) {
	paths := storyAdapters(t, 3, 1)
	ref := grouped(t)
	names := register(t, ref, paths)
	e := openStories(t, Options{NParallel: 4, Threads: 1})
	register(t, e, paths)
	if b := e.AdapterBatching(); !strings.HasPrefix(b, "mixed") {
		t.Fatalf("stories260K batching: %s", b)
	}
	prompts := []string{"Once upon a time", "The little dog ran to the park", "Lily and Tom", "One day, a bird"}
	adapters := []string{names[0], names[1], names[2], ""}
	want := make([]string, 4)
	for i := range prompts {
		r, err := ref.Generate(context.Background(), greedyReq(t, ref, prompts[i], adapters[i], 32))
		if err != nil {
			t.Fatal(err)
		}
		want[i] = fmt.Sprint(tokensOf(r))
	}
	plain, err := ref.Generate(context.Background(), greedyReq(t, ref, prompts[0], "", 32))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(tokensOf(plain)) == want[0] {
		t.Fatal("the adapter does not change the greedy text: the test would prove nothing")
	}

	streams := make([]*Stream, 4)
	for i := range prompts {
		if streams[i], err = e.Submit(context.Background(), greedyReq(t, e, prompts[i], adapters[i], 32)); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range streams {
		r, err := s.Collect(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(tokensOf(r)); got != want[i] {
			t.Errorf("request %d (adapter %q): mixed batch gave\n%s\nllama.cpp alone gave\n%s", i, adapters[i], got, want[i])
		}
	}
	st := e.Stats()
	if len(st.StepAdapters) < 4 || st.StepAdapters[3] == 0 {
		t.Fatalf("no step ran the three adapters together: steps by distinct adapters %v", st.StepAdapters)
	}
	if st.AdapterSwitches != 0 {
		t.Fatalf("%d adapter switches on llama.cpp's context: the requests were grouped", st.AdapterSwitches)
	}
	if st.ResidentAdapters != 3 || st.AdapterLoads != 3 {
		t.Fatalf("resident %d, loads %d; want 3 and 3", st.ResidentAdapters, st.AdapterLoads)
	}

	// The prefix cache is keyed by adapter: prompt 1 under adapter 0 may
	// reuse the BOS cell that prompt 0 left under adapter 0, never prompt
	// 1's cells computed under adapter 1; under its own adapter again, all
	// but one token.
	p := greedyReq(t, e, prompts[1], names[0], 8)
	r, err := e.Generate(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if r.CachedTokens > 1 {
		t.Fatalf("prompt 1 under adapter 0 reused %d tokens: cells of another adapter", r.CachedTokens)
	}
	r, err = e.Generate(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if r.CachedTokens != len(p.Prompt)-1 {
		t.Fatalf("the same request again reused %d of %d tokens", r.CachedTokens, len(p.Prompt))
	}
}

// TestManyAdaptersBoundedResidency registers 100 adapters with room for 8
// in memory and serves 200 requests over random ones: every output is
// llama.cpp's for its adapter, no more than 8 are ever resident, and the
// memory held stays what it was.
func TestManyAdaptersBoundedResidency(t *testing.T) {
	paths := storyAdapters(t, 100, 1000)
	ref := grouped(t)
	names := register(t, ref, paths)
	e := openStories(t, Options{NParallel: 4, Threads: 1, MaxAdapters: 8})
	register(t, e, paths)
	prompts := []string{"Once upon a time", "The cat", "Tom and Sue went"}
	rng := rand.New(rand.NewPCG(7, 7))
	type job struct{ adapter, prompt int }
	jobs := make([]job, 200)
	for i := range jobs {
		jobs[i] = job{rng.IntN(len(names)), rng.IntN(len(prompts))}
	}
	want := map[job]string{}
	for _, j := range jobs {
		if _, ok := want[j]; ok {
			continue
		}
		r, err := ref.Generate(context.Background(), greedyReq(t, ref, prompts[j.prompt], names[j.adapter], 12))
		if err != nil {
			t.Fatal(err)
		}
		want[j] = fmt.Sprint(tokensOf(r))
	}

	var mu sync.Mutex
	maxResident, fixed := 0, int64(-1)
	watch := func() {
		st := e.Stats()
		mu.Lock()
		defer mu.Unlock()
		maxResident = max(maxResident, st.ResidentAdapters)
		if n := st.DecoderKVBytes + st.DecoderAdapterBytes; n > 0 {
			if fixed >= 0 && n != fixed {
				t.Errorf("decoder memory went from %d to %d bytes", fixed, n)
			}
			fixed = n
		}
	}
	work := make(chan int)
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				j := jobs[i]
				r, err := e.Generate(context.Background(), greedyReq(t, e, prompts[j.prompt], names[j.adapter], 12))
				if err != nil {
					t.Error(err)
					continue
				}
				if got := fmt.Sprint(tokensOf(r)); got != want[j] {
					t.Errorf("request %d (adapter %d): %s, llama.cpp alone %s", i, j.adapter, got, want[j])
				}
				watch()
			}
		}()
	}
	for i := range jobs {
		work <- i
	}
	close(work)
	wg.Wait()
	st := e.Stats()
	if maxResident > 8 || st.ResidentAdapters > 8 {
		t.Fatalf("%d adapters resident at most, %d now; the bound is 8", maxResident, st.ResidentAdapters)
	}
	if st.AdapterLoads <= 8 {
		t.Fatalf("%d adapter loads for 200 requests over 100 adapters with 8 slots", st.AdapterLoads)
	}
	if n := e.stats.hostCopies.Load(); n != 0 {
		t.Fatalf("%d adapters' weights still held outside the slots", n)
	}
	if n := e.llamaLoaded(); n != 0 {
		t.Fatalf("%d adapters loaded into llama.cpp: every request should have run in the decoder", n)
	}
	if fixed <= 0 {
		t.Fatal("the decoder's memory was never reported")
	}
	t.Logf("%d adapter loads, steps by distinct adapters %v, decoder memory %d bytes", st.AdapterLoads, st.StepAdapters, fixed)
}

// TestUnregisterWhileInUse unregisters an adapter while a request runs
// with it: the request finishes with the adapter's output, new requests
// are refused, the memory is freed after, and a new adapter registered
// under the same name is not confused with the old one.
func TestUnregisterWhileInUse(t *testing.T) {
	paths := storyAdapters(t, 2, 50)
	ref := grouped(t)
	refNames := register(t, ref, paths)
	e := openStories(t, Options{NParallel: 2, Threads: 1})
	if err := e.LoadAdapter("a", paths[0]); err != nil {
		t.Fatal(err)
	}
	text := "Once upon a time"
	want := func(i int) string {
		r, err := ref.Generate(context.Background(), greedyReq(t, ref, text, refNames[i], 40))
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(tokensOf(r))
	}
	want0, want1 := want(0), want(1)

	s, err := e.Submit(context.Background(), greedyReq(t, e, text, "a", 40))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.UnloadAdapter("a"); err != nil {
		t.Fatalf("unregister while in use: %v", err)
	}
	if _, err := e.Submit(context.Background(), greedyReq(t, e, text, "a", 4)); err == nil || !strings.Contains(err.Error(), "not loaded") {
		t.Fatalf("request for an unregistered adapter: %v", err)
	}
	r, err := s.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(tokensOf(r)); got != want0 {
		t.Fatalf("the running request changed when its adapter was unregistered:\n%s\nwant\n%s", got, want0)
	}
	// A request without adapter lets the loop run once more: the slot of
	// the unregistered adapter is freed.
	if _, err := e.Generate(context.Background(), greedyReq(t, e, text, "", 2)); err != nil {
		t.Fatal(err)
	}
	if n := e.Stats().ResidentAdapters; n != 0 {
		t.Fatalf("%d adapters resident after the only one was unregistered and its request ended", n)
	}
	// Same name, other file: the cached prompt of the old one is not reused.
	if err := e.LoadAdapter("a", paths[1]); err != nil {
		t.Fatal(err)
	}
	r, err = e.Generate(context.Background(), greedyReq(t, e, text, "a", 40))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(tokensOf(r)); got != want1 || r.CachedTokens != 0 {
		t.Fatalf("the new adapter under the old name gave (cached %d)\n%s\nwant\n%s", r.CachedTokens, got, want1)
	}
	if err := e.UnloadAdapter("a"); err != nil {
		t.Fatal(err)
	}
	if err := e.UnloadAdapter("a"); err == nil {
		t.Fatal("unregistered twice")
	}
}

// TestGroupedRotatesAdapterSets sends requests for three adapter sets at
// once to an engine that groups them: each set runs in turn, and every
// request ends (a set that waited too long once stopped admissions for
// good, its own included).
func TestGroupedRotatesAdapterSets(t *testing.T) {
	paths := storyAdapters(t, 3, 70)
	e := openStories(t, Options{NParallel: 2, Threads: 1, GroupAdapters: true})
	names := register(t, e, paths)
	want := make([]string, len(names))
	for i, n := range names {
		r, err := e.Generate(context.Background(), greedyReq(t, e, "Once upon a time", n, 16))
		if err != nil {
			t.Fatal(err)
		}
		want[i] = fmt.Sprint(tokensOf(r))
	}
	switches := e.Stats().AdapterSwitches
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for k := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.Generate(ctx, greedyReq(t, e, "Once upon a time", names[k%3], 16))
			if err != nil {
				t.Errorf("request %d: %v", k, err)
				return
			}
			if got := fmt.Sprint(tokensOf(r)); got != want[k%3] {
				t.Errorf("request %d: %s, alone %s", k, got, want[k%3])
			}
		}()
	}
	wg.Wait()
	if n := e.Stats().AdapterSwitches - switches; n < 3 {
		t.Fatalf("%d adapter set switches for three sets", n)
	}
}

// TestAbandonedLoadIsDropped submits requests for adapters that are not
// in memory and abandons them at once: the weights read for them in the
// background are freed once the loop sees nobody waits for them.
func TestAbandonedLoadIsDropped(t *testing.T) {
	paths := storyAdapters(t, 4, 90)
	e := openStories(t, Options{NParallel: 1, Threads: 1, MaxAdapters: 2})
	names := register(t, e, paths)
	// One request holds the only sequence, so the others wait.
	long, err := e.Submit(context.Background(), greedyReq(t, e, "Once upon a time", names[0], 64))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names[1:] {
		ctx, cancel := context.WithCancel(context.Background())
		s, err := e.Submit(ctx, greedyReq(t, e, "Once upon a time", n, 4))
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := s.Collect(context.Background()); err == nil {
			t.Fatal("an abandoned request finished")
		}
	}
	if _, err := long.Collect(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Let the loop run a few times after the reads have come in.
	for range 3 {
		if _, err := e.Generate(context.Background(), greedyReq(t, e, "Once", "", 1)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := e.stats.hostCopies.Load(); n != 0 {
		t.Fatalf("%d abandoned adapters' weights still held", n)
	}
	if st := e.Stats(); st.ResidentAdapters > 2 {
		t.Fatalf("%d adapters resident, bound 2", st.ResidentAdapters)
	}
}
