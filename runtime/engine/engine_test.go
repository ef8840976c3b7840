package engine

import (
	"context"
	"errors"
	"io"
	"math"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/testmodel"
)

const lily = ", there was a little girl named Lily. She loved to play outside"

func openStories(t *testing.T, opt Options) *Engine {
	t.Helper()
	opt.Path = testmodel.Shared(t, "stories260K.gguf")
	if opt.Threads == 0 {
		opt.Threads = 2
	}
	if opt.CtxPerSeq == 0 {
		opt.CtxPerSeq = 256
	}
	e, err := Open(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func prompt(t *testing.T, e *Engine, text string) []int32 {
	t.Helper()
	toks, err := e.Tokenize(text, true, false)
	if err != nil {
		t.Fatal(err)
	}
	return toks
}

func TestGreedyStories(t *testing.T) {
	e := openStories(t, Options{NParallel: 1})
	res, err := e.Generate(context.Background(), Request{Prompt: prompt(t, e, "Once upon a time"), MaxTokens: 24})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Text, lily) {
		t.Fatalf("greedy continuation = %q, want prefix %q", res.Text, lily)
	}
	if res.FinishReason != FinishLength || res.CompletionTokens != 24 {
		t.Fatalf("finish %q after %d tokens, want length after 24", res.FinishReason, res.CompletionTokens)
	}
	if res.PromptTokens != 5 { // BOS + 4 tokens
		t.Fatalf("prompt tokens = %d", res.PromptTokens)
	}
}

func TestSeededSamplingRepeats(t *testing.T) {
	e := openStories(t, Options{NParallel: 2})
	req := Request{Prompt: prompt(t, e, "Once upon a time"), MaxTokens: 40,
		Sampling: kernels.SamplerParams{Temperature: 1.0, TopK: 40, TopP: 0.95, Seed: 1234}}
	a, err := e.Generate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.Generate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if a.Text != b.Text {
		t.Fatalf("same seed gave different text:\n%q\n%q", a.Text, b.Text)
	}
	req.Sampling.Seed = 99
	c, err := e.Generate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if c.Text == a.Text {
		t.Fatalf("different seeds gave the same 40 tokens: %q", a.Text)
	}
}

func TestStopStrings(t *testing.T) {
	e := openStories(t, Options{NParallel: 1})
	res, err := e.Generate(context.Background(), Request{Prompt: prompt(t, e, "Once upon a time"), MaxTokens: 40, Stop: []string{"Lily"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Text != ", there was a little girl named " || res.FinishReason != FinishStop {
		t.Fatalf("stop: text %q finish %q", res.Text, res.FinishReason)
	}
}

func TestStreamChunksJoinToResult(t *testing.T) {
	e := openStories(t, Options{NParallel: 1})
	s, err := e.Submit(context.Background(), Request{Prompt: prompt(t, e, "Once upon a time"), MaxTokens: 30, Logprobs: true, TopLogprobs: 3})
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	ntok := 0
	for {
		c, err := s.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sb.WriteString(c.Text)
		for _, tk := range c.Tokens {
			ntok++
			if tk.Logprob > 0 || len(tk.Top) != 3 || tk.Top[0].Logprob < tk.Top[1].Logprob {
				t.Fatalf("bad logprobs %+v", tk)
			}
			// Greedy: the chosen token is the most likely one.
			if tk.Top[0].ID != tk.ID || math.Abs(float64(tk.Top[0].Logprob-tk.Logprob)) > 1e-5 {
				t.Fatalf("greedy token %d is not the top alternative %+v", tk.ID, tk.Top[0])
			}
		}
	}
	if r := s.Result(); r.Text != sb.String() || ntok != r.CompletionTokens {
		t.Fatalf("chunks %q (%d tokens) vs result %q (%d)", sb.String(), ntok, r.Text, r.CompletionTokens)
	}
}

// Collect, started mid-stream, still returns the whole generation, and
// from then on the stream keeps no chunks for a reader that never comes.
func TestCollectKeepsNoChunks(t *testing.T) {
	e := openStories(t, Options{NParallel: 1})
	ctx := context.Background()
	s, err := e.Submit(ctx, Request{Prompt: prompt(t, e, "Once upon a time"), MaxTokens: 40, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Text, lily) || !strings.HasPrefix(r.Text, first.Text) || r.CompletionTokens != 40 || len(r.Tokens) != 40 {
		t.Fatalf("collected %q (%d tokens, %d kept) after a first chunk %q; want 40 tokens starting %q", r.Text, r.CompletionTokens, len(r.Tokens), first.Text, lily)
	}
	s.mu.Lock()
	left := len(s.pending)
	s.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d chunks kept after Collect", left)
	}

	// A cancelled wait returns the context's error.
	s, err = e.Submit(ctx, Request{Prompt: prompt(t, e, "Once upon a time"), MaxTokens: 200, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Collect(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Collect with a cancelled context: %v", err)
	}
}

// With a wake interval longer than the generation, the reader is woken for
// the first chunk and then only at the end, which brings every later token
// in one merged chunk; nothing is lost.
func TestWakeIntervalMergesChunks(t *testing.T) {
	e := openStories(t, Options{NParallel: 1})
	ctx := context.Background()
	s, err := e.Submit(ctx, Request{Prompt: prompt(t, e, "Once upon a time"), MaxTokens: 40, IgnoreEOS: true, WakeInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var chunks []Chunk
	for {
		c, err := s.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, c)
	}
	r := s.Result()
	var text strings.Builder
	ntok := 0
	for _, c := range chunks {
		text.WriteString(c.Text)
		ntok += len(c.Tokens)
	}
	// (The first chunk may hold several tokens: this model makes one in
	// well under the time the reader takes to wake.)
	if len(chunks) != 2 || ntok != 40 || text.String() != r.Text || !strings.HasPrefix(r.Text, lily) {
		t.Fatalf("%d chunks, %d tokens in all, text %q; want 2 chunks, 40 tokens, the result's text %q",
			len(chunks), ntok, text.String(), r.Text)
	}
}

// Concurrent greedy requests decoded together give the same text as the
// same requests one at a time.
func TestBatchedEqualsSequential(t *testing.T) {
	e := openStories(t, Options{NParallel: 8})
	prompts := []string{"Once upon a time", "The cat", "Tom and Sue went", "One day, a little bird", "The sun was", "Lily wanted", "A big dog", "Mom said"}
	want := make([]string, len(prompts))
	for i, p := range prompts {
		r, err := e.Generate(context.Background(), Request{Prompt: prompt(t, e, p), MaxTokens: 32})
		if err != nil {
			t.Fatal(err)
		}
		want[i] = r.Text
	}
	got := make([]string, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.Generate(context.Background(), Request{Prompt: prompt(t, e, p), MaxTokens: 32})
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = r.Text
		}()
	}
	wg.Wait()
	for i := range prompts {
		if got[i] != want[i] {
			t.Errorf("prompt %q: batched %q, sequential %q", prompts[i], got[i], want[i])
		}
	}
}

// TestPackMovesRunningSequences lets the second of four sequences finish
// first: the last one moves down into its id (one ubatch per step needs
// consecutive ids) through a copy of its KV stream, and every sequence
// still generates what it generates alone.
func TestPackMovesRunningSequences(t *testing.T) {
	e := openStories(t, Options{NParallel: 4})
	reqs := []Request{
		{Prompt: prompt(t, e, "Once upon a time"), MaxTokens: 40, IgnoreEOS: true},
		{Prompt: prompt(t, e, "The cat"), MaxTokens: 3, IgnoreEOS: true},
		{Prompt: prompt(t, e, "Tom and Sue went"), MaxTokens: 40, IgnoreEOS: true},
		{Prompt: prompt(t, e, "One day, a little bird"), MaxTokens: 40, IgnoreEOS: true},
	}
	want := make([]string, len(reqs))
	for i, r := range reqs {
		res, err := e.Generate(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = res.Text
	}
	moves := e.Stats().SequenceMoves
	streams := make([]*Stream, len(reqs))
	for i, r := range reqs {
		s, err := e.Submit(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		streams[i] = s
	}
	for i, s := range streams {
		res, err := s.Collect(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if res.Text != want[i] {
			t.Errorf("request %d: %q together, %q alone", i, res.Text, want[i])
		}
	}
	if got := e.Stats().SequenceMoves - moves; got < 1 {
		t.Fatalf("no sequence moved after the second one finished (moves %d)", got)
	}
}

func TestPrefixCacheReuse(t *testing.T) {
	e := openStories(t, Options{NParallel: 2})
	p1 := prompt(t, e, "Once upon a time, there was a little girl named Lily.")
	r1, err := e.Generate(context.Background(), Request{Prompt: p1, MaxTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	if r1.CachedTokens != 0 {
		t.Fatalf("first request reused %d tokens", r1.CachedTokens)
	}
	// A follow-up that extends the first prompt and its answer.
	p2 := append(append(append([]int32(nil), p1...), tokensOf(r1)...), prompt(t, e, " She")[1:]...)
	r2, err := e.Generate(context.Background(), Request{Prompt: p2, MaxTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	if r2.CachedTokens < len(p1) {
		t.Fatalf("follow-up reused %d tokens, want at least %d", r2.CachedTokens, len(p1))
	}
	// The reused cells must give the same answer as a cold computation.
	cold := openStories(t, Options{NParallel: 1})
	r3, err := cold.Generate(context.Background(), Request{Prompt: p2, MaxTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	if r3.Text != r2.Text {
		t.Fatalf("cached prefix changed the answer: %q vs cold %q", r2.Text, r3.Text)
	}
	// Same prompt again: everything but the last token is reused.
	r4, err := e.Generate(context.Background(), Request{Prompt: p2, MaxTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	if r4.CachedTokens != len(p2)-1 || r4.Text != r2.Text {
		t.Fatalf("repeat: cached %d of %d, text %q vs %q", r4.CachedTokens, len(p2), r4.Text, r2.Text)
	}
}

func tokensOf(r Result) []int32 {
	out := make([]int32, len(r.Tokens))
	for i, t := range r.Tokens {
		out[i] = t.ID
	}
	return out
}

func TestCancelFreesSequence(t *testing.T) {
	e := openStories(t, Options{NParallel: 2, CtxPerSeq: 2048})
	ctx, cancel := context.WithCancel(context.Background())
	s, err := e.Submit(ctx, Request{Prompt: prompt(t, e, "Once upon a time"), IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.Submit(context.Background(), Request{Prompt: prompt(t, e, "The cat"), MaxTokens: 200, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := s.Next(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if e.Stats().Active != 2 {
		t.Fatalf("active = %d, want 2", e.Stats().Active)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for e.Stats().Active != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if e.Stats().Active != 1 {
		t.Fatalf("cancelled stream still active")
	}
	r, err := other.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.CompletionTokens != 200 {
		t.Fatalf("other stream stopped after %d tokens", r.CompletionTokens)
	}
	// Only the finished stream's cells remain.
	if used := e.Stats().KVCellsUsed; used > r.PromptTokens+r.CompletionTokens {
		t.Fatalf("kv cells used %d after cancel, want <= %d", used, r.PromptTokens+r.CompletionTokens)
	}
}

func TestErrors(t *testing.T) {
	e := openStories(t, Options{NParallel: 1, CtxPerSeq: 64, QueueLen: 1})
	long := make([]int32, 100)
	for i := range long {
		long[i] = 100
	}
	var tooLong *PromptTooLongError
	if _, err := e.Submit(context.Background(), Request{Prompt: long}); !errors.As(err, &tooLong) || tooLong.Tokens != 100 || tooLong.Limit != 64 {
		t.Fatalf("long prompt: %v", err)
	}
	if _, err := e.Submit(context.Background(), Request{}); err == nil {
		t.Fatal("empty prompt accepted")
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: []int32{1, 9999}}); err == nil {
		t.Fatal("out-of-vocabulary token accepted")
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: []int32{1}, Sampling: kernels.SamplerParams{Grammar: "root ::= ("}}); err == nil {
		t.Fatal("broken grammar accepted")
	}
	if _, err := e.Submit(context.Background(), Request{Prompt: []int32{1}, Adapters: []AdapterRef{{Name: "nope"}}}); err == nil {
		t.Fatal("unknown adapter accepted")
	}
}

func TestEmbeddings(t *testing.T) {
	e := openStories(t, Options{NParallel: 1})
	in := [][]int32{prompt(t, e, "Once upon a time"), prompt(t, e, "The cat sat on the mat"), prompt(t, e, "Once upon a time")}
	vs, err := e.Embed(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if e.embedNet == nil {
		t.Fatal("a llama model's embeddings did not use the head-free graph")
	}
	for i, v := range vs {
		if len(v) != e.Info().Embd {
			t.Fatalf("embedding %d has width %d, want %d", i, len(v), e.Info().Embd)
		}
		var n float64
		for _, x := range v {
			n += float64(x) * float64(x)
		}
		if math.Abs(n-1) > 1e-4 {
			t.Fatalf("embedding %d norm² = %v", i, n)
		}
	}
	dot := func(a, b []float32) float64 {
		var s float64
		for i := range a {
			s += float64(a[i]) * float64(b[i])
		}
		return s
	}
	if d := dot(vs[0], vs[2]); d < 0.9999 {
		t.Fatalf("same text embedded twice differs: cos %v", d)
	}
	if d := dot(vs[0], vs[1]); d > 0.999 {
		t.Fatalf("different texts embed identically: cos %v", d)
	}
	// One at a time gives the same vectors as packed together.
	single, err := e.Embed(context.Background(), in[1:2])
	if err != nil {
		t.Fatal(err)
	}
	if d := dot(single[0], vs[1]); d < 0.9999 {
		t.Fatalf("packed and single embeddings differ: cos %v", d)
	}
}

// A long prompt arriving while another stream generates is prefilled in
// chunks between that stream's tokens, and both give the same text as alone.
func TestChunkedPrefillInterleaves(t *testing.T) {
	opt := Options{NParallel: 2, NBatch: 256, PrefillChunk: 32, CtxPerSeq: 1024}
	ref := openStories(t, opt)
	e := openStories(t, opt)
	long := prompt(t, e, strings.Repeat("Once upon a time there was a cat. ", 20))
	short := prompt(t, e, "The dog")
	aloneLong, err := ref.Generate(context.Background(), Request{Prompt: long, MaxTokens: 16})
	if err != nil {
		t.Fatal(err)
	}
	aloneShort, err := ref.Generate(context.Background(), Request{Prompt: short, MaxTokens: 200, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	s1, err := e.Submit(context.Background(), Request{Prompt: short, MaxTokens: 200, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var times []time.Time
	var text strings.Builder
	done := make(chan error)
	go func() {
		for {
			c, err := s1.Next(context.Background())
			if err == io.EOF {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
			mu.Lock()
			text.WriteString(c.Text)
			for range c.Tokens {
				times = append(times, time.Now())
			}
			mu.Unlock()
		}
	}()
	for {
		mu.Lock()
		n := len(times)
		mu.Unlock()
		if n >= 5 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	submitted := time.Now()
	r2, err := e.Generate(context.Background(), Request{Prompt: long, MaxTokens: 16})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r2.CachedTokens != 0 {
		t.Fatalf("long prompt reused %d cached tokens", r2.CachedTokens)
	}
	firstTok := submitted.Add(r2.TimeToFirstToken)
	during := 0
	for _, ts := range times {
		if ts.After(submitted) && ts.Before(firstTok) {
			during++
		}
	}
	// At 32 prompt tokens per step the short stream gets a token per chunk.
	if want := len(long)/32 - 2; during < want {
		t.Fatalf("short stream produced %d tokens while a %d-token prompt was prefilled, want >= %d", during, len(long), want)
	}
	if text.String() != aloneShort.Text || r2.Text != aloneLong.Text {
		t.Fatalf("interleaving changed the output:\n%q vs %q\n%q vs %q", text.String(), aloneShort.Text, r2.Text, aloneLong.Text)
	}
}

// A grammar-constrained request stops at the grammar's end even with
// IgnoreEOS, and the prompt never reaches the grammar (llama.cpp would
// abort the process on either).
func TestGrammarWithIgnoreEOSStops(t *testing.T) {
	e := openStories(t, Options{NParallel: 1})
	res, err := e.Generate(context.Background(), Request{Prompt: prompt(t, e, "Once upon a time"), MaxTokens: 50, IgnoreEOS: true,
		Sampling: kernels.SamplerParams{Grammar: `root ::= "yes" | "no"`}})
	if err != nil {
		t.Fatal(err)
	}
	if (res.Text != "yes" && res.Text != "no") || res.FinishReason != FinishStop {
		t.Fatalf("grammar output %q finish %q", res.Text, res.FinishReason)
	}
}

// CloseWithin ends a grammar's output inside the token budget: a list the
// model would go on writing is closed with the grammar's shortest ending,
// and the result says it was cut short (FinishLength).
func TestCloseWithinEndsGrammar(t *testing.T) {
	e := openStories(t, Options{NParallel: 1})
	g := `root ::= "[" item ( ", " item )* "]"
item ::= "\"" [a-zA-Z .]* "\""`
	full := regexp.MustCompile(`^\["[a-zA-Z .]*"(, "[a-zA-Z .]*")*\]$`)
	for _, budget := range []int{8, 20} {
		req := Request{Prompt: prompt(t, e, "Once upon a time"), MaxTokens: budget, Sampling: kernels.SamplerParams{Grammar: g}}
		open, err := e.Generate(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if full.MatchString(open.Text) {
			t.Fatalf("without CloseWithin the model already ends its list in %d tokens: %q", budget, open.Text)
		}
		req.Sampling.CloseWithin = budget
		res, err := e.Generate(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if !full.MatchString(res.Text) || res.FinishReason != FinishLength || res.CompletionTokens > budget {
			t.Fatalf("budget %d: %q, finish %s after %d tokens", budget, res.Text, res.FinishReason, res.CompletionTokens)
		}
	}
}
