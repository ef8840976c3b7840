// Command bench-multilora measures batching requests for different LoRA
// adapters together (make bench-multilora).
//
// On a generated model of Qwen2.5-0.5B's shape in Q8_0, with random rank-16
// adapters on all seven linear projections of every layer, it measures:
//   - aggregate decode tokens/s of N streams over N distinct adapters,
//     against N streams on one adapter (target: at least 0.85x) and
//     against the same load under grouped scheduling, one adapter set per
//     step as llama.cpp and llama-server do (target: at least 3x);
//   - time to first token, p95, of a request whose adapter no running
//     sequence uses, against a request for the adapter that is running,
//     while other streams decode (target: at most 1.5x); both when that
//     adapter is resident and when it must first be read from disk.
//
// Beside the figures it prints the machine's limits, measured here, as
// make bench does. On a shared machine the figures move between runs:
// every comparison alternates its two sides, and the ratios are what to
// read.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/scripts/internal/machine"
)

func main() {
	threads := flag.Int("threads", 2, "threads for every measurement")
	streams := flag.Int("streams", 8, "concurrent streams")
	nGen := flag.Int("gen", 32, "tokens each stream generates")
	reps := flag.Int("reps", 5, "repetitions of the three throughput runs (medians are reported)")
	probes := flag.Int("probes", 60, "time-to-first-token probes of each kind (p95 over 20 would be the second slowest)")
	rank := flag.Int("rank", 16, "adapter rank")
	typ := flag.String("type", "f16", "adapters' number format: f16 or f32")
	cache := flag.String("cache", testmodel.CacheDir(), "where the generated model and adapters are kept (env LLMRT_BENCH_DIR)")
	flag.Parse()
	kernels.SetLogger(nil)
	os.Setenv("LLMRT_LLAMA_LOG", "error")
	ctx := context.Background()

	fmt.Println("== machine limits (measured) ==")
	bw, err := machine.MemoryBandwidth(1<<30, *threads, 5)
	check(err)
	flops, err := machine.SGEMMFlops(2048, 512, 2048, *threads, 3)
	check(err)
	fmt.Printf("memory bandwidth  %7.1f GB/s   (%d threads, 1 GiB read)\n", bw/1e9, *threads)
	fmt.Printf("fp32 GEMM         %7.1f GFLOP/s (OpenBLAS cblas_sgemm, %d threads)\n", flops/1e9, *threads)

	spec := testmodel.Qwen2_05B(testmodel.SharedDir(), gguf.TypeQ8_0)
	t0 := time.Now()
	path, err := testmodel.CachedPath(ctx, *cache, spec)
	check(err)
	f, err := gguf.Open(path)
	check(err)
	weightBytes := f.TensorBytes()
	nAdapters := *streams + 2
	adapters := writeAdapters(*cache, path, nAdapters, *rank, *typ)
	st0, err := os.Stat(adapters[0])
	check(err)
	adapterBytes := st0.Size()
	fmt.Printf("\n== model: %s ==\nqwen2, n_embd 896, 24 layers, 14/2 heads, ffn 4864, vocab 151936, Q8_0: %.0f MiB of weights (ready in %s)\n",
		filepath.Base(path), float64(weightBytes)/(1<<20), time.Since(t0).Round(time.Millisecond))
	fmt.Printf("%d adapters of rank %d on all 7 projections of the 24 layers, %s: %.1f MiB each\n", nAdapters, *rank, strings.ToUpper(*typ),
		float64(adapterBytes)/(1<<20))

	nCtx := 64 + *nGen
	open := func(grouped bool, maxAdapters int) *engine.Engine {
		e, err := engine.Open(ctx, engine.Options{Path: path, NParallel: *streams, CtxPerSeq: nCtx, Threads: *threads,
			MaxAdapters: maxAdapters, GroupAdapters: grouped})
		check(err)
		for i, p := range adapters {
			check(e.LoadAdapter(fmt.Sprintf("a%d", i), p))
		}
		return e
	}
	mixed := open(false, *streams)
	grouped := open(true, *streams)

	// Throughput: the three loads take turns, each repetition in another
	// order.
	fmt.Printf("\n== aggregate decode, %d streams x %d tokens (%d threads) ==\n", *streams, *nGen, *threads)
	same := make([]string, *streams)
	distinct := make([]string, *streams)
	for i := range same {
		same[i] = "a0"
		distinct[i] = fmt.Sprintf("a%d", i)
	}
	warm := func(e *engine.Engine) { aggregate(ctx, e, distinct, *nGen) } // adapters resident, buffers sized
	warm(mixed)
	var rOne, rMixed, rGrouped []float64
	for r := 0; r < *reps; r++ {
		runs := []func(){
			func() { rOne = append(rOne, aggregate(ctx, mixed, same, *nGen)) },
			func() { rMixed = append(rMixed, aggregate(ctx, mixed, distinct, *nGen)) },
			func() { rGrouped = append(rGrouped, aggregate(ctx, grouped, distinct, *nGen)) },
		}
		for k := range runs {
			runs[(k+r)%len(runs)]()
		}
	}
	// The ratios are taken within each repetition, whose runs share the
	// machine's state of the moment, and their median reported.
	limit := bw / float64(weightBytes)
	vsOne, vsGrouped := ratios(rMixed, rOne), ratios(rMixed, rGrouped)
	fmt.Printf("%-48s %8s\n", "", "tok/s")
	fmt.Printf("%-48s %8.1f\n", fmt.Sprintf("%d streams, one adapter", *streams), median(rOne))
	fmt.Printf("%-48s %8.1f   %.2fx one adapter (target >= 0.85x)\n", fmt.Sprintf("%d streams, %d adapters, mixed batches", *streams, *streams),
		median(rMixed), median(vsOne))
	fmt.Printf("%-48s %8.1f   mixed is %.2fx this (target >= 3x)\n", fmt.Sprintf("%d streams, %d adapters, grouped (one set per step)", *streams, *streams),
		median(rGrouped), median(vsGrouped))
	fmt.Printf("runs (tok/s): one adapter %s; mixed %s; grouped %s\n", list(rOne), list(rMixed), list(rGrouped))
	fmt.Printf("per repetition, sorted: mixed / one adapter %s; mixed / grouped %s\n", list(sorted(vsOne)), list(sorted(vsGrouped)))
	fmt.Printf("limit: one stream cannot decode faster than bandwidth / weight bytes = %.1f tok/s; %d streams share each weight read\n", limit, *streams)
	st := mixed.Stats()
	fmt.Printf("decoder: %.1f MiB KV cache, %.1f MiB for %d resident adapter slots, %.1f MiB compute; steps by distinct adapters %v\n",
		mib(st.DecoderKVBytes), mib(st.DecoderAdapterBytes), *streams, mib(st.DecoderComputeBytes), st.StepAdapters)
	grouped.Close()

	// Time to first token while streams decode on adapter a0: a probe for
	// a0 (running), for an adapter that is resident but runs nowhere, and
	// for one that must be read from disk first (four resident slots: the
	// background's, the idle one's, and two that the cold probes, cycling
	// through more adapters, take in turn).
	mixed.Close()
	ttft := open(false, 4)
	fmt.Printf("\n== time to first token, %d probes each, while %d streams decode on one adapter ==\n", *probes, *streams-1)
	bg, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := 0; i < *streams-1; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for bg.Err() == nil {
				ttft.Generate(bg, engine.Request{Prompt: prompt(i, 8), MaxTokens: *nGen, IgnoreEOS: true, Adapters: []engine.AdapterRef{{Name: "a0"}}})
			}
		}()
	}
	time.Sleep(2 * time.Second)
	probe := func(adapter string, i int) float64 {
		res, err := ttft.Generate(ctx, engine.Request{Prompt: prompt(100+i, 32), MaxTokens: 1, IgnoreEOS: true,
			Adapters: []engine.AdapterRef{{Name: adapter}}})
		check(err)
		return res.TimeToFirstToken.Seconds()
	}
	// a1 is made resident before the probes: its first use reads it from
	// disk, which is the cold case, not this one.
	probe("a1", 0)
	var tSame, tIdle, tCold []float64
	loadsBefore := ttft.Stats().AdapterLoads
	for i := 0; i < *probes; i++ {
		// The resident idle adapter is a1; cold probes cycle through the
		// other adapters, more than the two slots left: each reads its
		// adapter from disk.
		cold := fmt.Sprintf("a%d", 2+i%(nAdapters-2))
		ps := []func(){
			func() { tSame = append(tSame, probe("a0", i)) },
			func() { tIdle = append(tIdle, probe("a1", i)) },
			func() { tCold = append(tCold, probe(cold, i)) },
		}
		for k := range ps {
			ps[(k+i)%len(ps)]()
		}
	}
	loads := ttft.Stats().AdapterLoads - loadsBefore
	cancel()
	wg.Wait()
	ttft.Close()
	fmt.Printf("%-44s %10s %10s\n", "", "p50 ms", "p95 ms")
	row := func(name string, v []float64, ref []float64) {
		extra := ""
		if ref != nil {
			extra = fmt.Sprintf("   p95 %.2fx the running adapter's (target <= 1.5x)", pct(v, 95)/pct(ref, 95))
		}
		fmt.Printf("%-44s %10.1f %10.1f%s\n", name, 1000*pct(v, 50), 1000*pct(v, 95), extra)
	}
	row("adapter running in the batch", tSame, nil)
	row("adapter resident, not running", tIdle, tSame)
	row("adapter read from disk first", tCold, tSame)
	fmt.Printf("adapter loads during the probes: %d (%.1f MiB read each)\n", loads, float64(adapterBytes)/(1<<20))
	fmt.Println("\nThe machine is shared with other work: rates move between runs; compare the ratios.")
}

// writeAdapters generates n random adapters of the given rank and type on
// every linear projection of the model at base (kept in dir across runs).
func writeAdapters(dir, base string, n, rank int, typ string) []string {
	t := gguf.TypeF32
	switch typ {
	case "f16":
		t = gguf.TypeF16
	case "f32":
	default:
		check(fmt.Errorf("-type %q: f16 or f32", typ))
	}
	spec := testmodel.AdapterSpec{Targets: []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"},
		Rank: rank, Alpha: float32(2 * rank), Std: 0.01, Type: t}
	paths := make([]string, n)
	for i := range paths {
		paths[i] = filepath.Join(dir, fmt.Sprintf("multilora-%s-r%d-%d.gguf", typ, rank, i))
		if _, err := os.Stat(paths[i]); err == nil {
			continue
		}
		spec.Seed = uint64(i + 1)
		check(testmodel.WriteAdapter(paths[i], base, spec))
	}
	return paths
}

// aggregate runs one greedy generation per adapter name at once and
// returns all their tokens over the wall time.
func aggregate(ctx context.Context, e *engine.Engine, adapters []string, nGen int) float64 {
	var wg sync.WaitGroup
	errs := make([]error, len(adapters))
	t0 := time.Now()
	for i, a := range adapters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.Generate(ctx, engine.Request{Prompt: prompt(i, 4), MaxTokens: nGen, IgnoreEOS: true,
				Adapters: []engine.AdapterRef{{Name: a}}})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		check(err)
	}
	return float64(len(adapters)*nGen) / time.Since(t0).Seconds()
}

// prompt is n tokens of a fixed random stream of seed i: distinct prompts
// share no prefix.
func prompt(i, n int) []int32 {
	r := rand.New(rand.NewPCG(uint64(i), 99))
	p := make([]int32, n)
	for j := range p {
		p[j] = int32(1000 + r.IntN(40000))
	}
	return p
}

func pct(v []float64, p int) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

func median(v []float64) float64 { return pct(v, 50) }

// ratios is a[i] / b[i] for each repetition i.
func ratios(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] / b[i]
	}
	return out
}

func sorted(v []float64) []float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s
}

func list(v []float64) string {
	out := ""
	for i, x := range v {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%.2f", x)
	}
	return out
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-multilora:", err)
		os.Exit(1)
	}
}
