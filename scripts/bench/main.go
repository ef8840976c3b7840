// Command bench measures llmrt's inference speed against this machine's
// limits (make bench).
//
// On a generated model of Qwen2.5-0.5B's shape in Q8_0 it measures prompt
// processing (one 512-token prompt) and decode (128 tokens) three ways:
// through llmrt's Go engine, through a minimal C loop over the same
// llama.cpp calls, and through that loop's calls made from Go via the
// kernels binding; the differences are the engine's and the binding's
// overhead. Beside them it prints the machine's limits, measured here:
// memory bandwidth (decode cannot beat bandwidth / bytes read per token)
// and OpenBLAS's fp32 GEMM FLOP/s (prompt processing cannot beat it at 2 FLOPs
// per parameter per token). Last, it
// measures batched decode (1, 4 and 8 sequences per step) with llmrt's
// Q8_0 matmul and with ggml's own, and single-stream decode through the
// HTTP server against the engine called directly, in turn.
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

// gpuLayers is -gpu-layers: 0 measures the CPU.
var gpuLayers int

func main() {
	threads := flag.Int("threads", 2, "threads for every measurement")
	nPrompt := flag.Int("prompt", 512, "prompt tokens")
	nGen := flag.Int("gen", 128, "generated tokens")
	reps := flag.Int("reps", 12, "repetitions (the median is reported; a multiple of 6 runs every order of the three paths equally often)")
	serveReps := flag.Int("serve-reps", 6, "rounds of the serving-overhead comparison")
	cache := flag.String("cache", testmodel.CacheDir(), "where the generated model is kept (env LLMRT_BENCH_DIR)")
	lib := flag.String("lib", "", "load GPU backends (make cuda) from this folder")
	flag.IntVar(&gpuLayers, "gpu-layers", 0, "layers the engine and the binding loop offload (the C loop stays on the CPU)")
	flag.Parse()
	kernels.SetLogger(nil)
	os.Setenv("LLMRT_LLAMA_LOG", "error")
	if *lib != "" {
		loaded, err := kernels.LoadBackends(*lib)
		check(err)
		fmt.Printf("backends loaded from %s: %v; %d layers offloaded\n", *lib, loaded, gpuLayers)
	}
	ctx := context.Background()

	fmt.Println("== machine limits (measured) ==")
	bw, err := machine.MemoryBandwidth(1<<30, *threads, 5)
	check(err)
	var flops, flopsQ8 float64
	for _, n := range []int{1024, 2048} {
		f, err := machine.SGEMMFlops(n, 512, n, *threads, 3)
		check(err)
		flops = max(flops, f)
		q, err := machine.GEMMFlopsQ8(n, 512, n, *threads, 3)
		check(err)
		flopsQ8 = max(flopsQ8, q)
	}
	fmt.Printf("memory bandwidth  %7.1f GB/s   (%d threads, 1 GiB read)\n", bw/1e9, *threads)
	fmt.Printf("fp32 GEMM         %7.1f GFLOP/s (OpenBLAS cblas_sgemm, %d threads)\n", flops/1e9, *threads)
	fmt.Printf("Q8_0 x f32 GEMM   %7.1f GFLOP/s (ggml's int8 dot products, %d threads; a yardstick, not a machine limit)\n", flopsQ8/1e9, *threads)

	spec := testmodel.Qwen2_05B(testmodel.SharedDir(), gguf.TypeQ8_0)
	t0 := time.Now()
	path, err := testmodel.CachedPath(ctx, *cache, spec)
	check(err)
	f, err := gguf.Open(path)
	check(err)
	params := f.ParamCount()
	weightBytes := f.TensorBytes()
	fmt.Printf("\n== model: %s ==\nqwen2, n_embd 896, 24 layers, 14/2 heads, ffn 4864, vocab 151936, Q8_0: %.0fM parameters, %.0f MiB of weights (ready in %s)\n",
		filepath.Base(path), float64(params)/1e6, float64(weightBytes)/(1<<20), time.Since(t0).Round(time.Millisecond))

	// The C loop and the Go engine take turns, so drift in the machine
	// (other processes, clocks) falls on both alike.
	nCtx := *nPrompt + *nGen + 8
	e, err := engine.Open(ctx, engine.Options{Path: path, NParallel: 1, CtxPerSeq: nCtx, NBatch: *nPrompt, Threads: *threads,
		Model: kernels.ModelParams{GPULayers: gpuLayers}})
	check(err)
	rng := rand.New(rand.NewPCG(7, 7))
	var rawPP, rawTG, goPP, goTG, bPP, bTG []float64
	for i := 0; i < *reps; i++ {
		prompt := make([]int32, *nPrompt)
		for j := range prompt {
			prompt[j] = int32(rng.IntN(50000)) // a fresh prompt each time: no prefix reuse
		}
		// The three take turns in each of their six orders in turn, so
		// that each path goes first, and follows each other path, equally
		// often: a path may run faster or slower for what ran before it
		// (memory just freed, caches).
		for _, which := range orders[i%len(orders)] {
			switch which {
			case 0:
				r, err := machine.RawBench(path, *nPrompt, *nGen, *threads, nCtx)
				check(err)
				rawPP = append(rawPP, float64(*nPrompt)/r.Prompt.Seconds())
				rawTG = append(rawTG, float64(*nGen)/r.Generation.Seconds())
			case 1:
				res, err := e.Generate(ctx, engine.Request{Prompt: prompt, MaxTokens: *nGen + 1, IgnoreEOS: true})
				check(err)
				goPP = append(goPP, float64(*nPrompt)/res.TimeToFirstToken.Seconds())
				goTG = append(goTG, float64(*nGen)/(res.Duration-res.TimeToFirstToken).Seconds())
			case 2:
				p, g, err := bindingLoop(ctx, path, prompt, *nGen, *threads, nCtx)
				check(err)
				bPP = append(bPP, float64(*nPrompt)/p.Seconds())
				bTG = append(bTG, float64(*nGen)/g.Seconds())
			}
		}
	}
	// The overhead is the median of each repetition's own difference: a
	// repetition's runs share the machine's state of the moment.
	ppLimit := flops / (2 * float64(params))
	ppLimitQ8 := flopsQ8 / (2 * float64(params))
	tgLimit := bw / float64(weightBytes)
	fmt.Printf("\n== results (median of %d, %d threads; overhead against the C loop: median of the paired differences) ==\n", *reps, *threads)
	fmt.Printf("%-28s %10s %10s %10s %9s %9s %12s %9s\n", "", "Go engine", "Go binding", "C loop", "engine", "binding", "machine limit", "of limit")
	row := func(name string, eng, bind, raw []float64, limit float64) {
		fmt.Printf("%-28s %10.1f %10.1f %10.1f %8.1f%% %8.1f%% %12.1f %8.1f%%\n", name, median(eng), median(bind), median(raw),
			pairedOverhead(eng, raw), pairedOverhead(bind, raw), limit, 100*median(eng)/limit)
	}
	row(fmt.Sprintf("prompt processing (%d) tok/s", *nPrompt), goPP, bPP, rawPP, ppLimit)
	row(fmt.Sprintf("decode (%d) tok/s", *nGen), goTG, bTG, rawTG, tgLimit)
	fmt.Printf("%-28s %10s %10s %10s %9s %9s %12.1f %8.1f%%\n", "  (vs the Q8_0 GEMM limit)", "", "", "", "", "", ppLimitQ8, 100*median(goPP)/ppLimitQ8)
	fmt.Printf("decode overhead per repetition, sorted: engine %s; binding %s\n", spread(goTG, rawTG), spread(bTG, rawTG))
	fmt.Println("\nGo binding: the C loop's calls made from Go through llmrt's kernels package, with no engine around them.")
	fmt.Println("limits: prompt = GEMM FLOP/s / (2 x parameters); decode = bandwidth / weight bytes read per token.")
	fmt.Println("A Q8_0 model's prompt runs on int8 dot products, so the fp32 GEMM rate is not its ceiling; the Q8_0 GEMM rate is.")
	fmt.Println("target: Go engine overhead under 3% of the C loop for both.")

	e.Close()
	batchedDecode(ctx, path, *threads, *nGen, tgLimit)
	serveOverhead(ctx, path, *threads, 256, *nGen, *serveReps)
}

// batchedDecode measures decode with several sequences advancing in one
// llama_decode per step (the server's continuous batching), with llmrt's
// Q8_0 matmul and with ggml's own (tinyBLAS) path. Prompts are 4
// tokens, so the time is decode.
func batchedDecode(ctx context.Context, path string, threads, nGen int, limit1 float64) {
	e, err := engine.Open(ctx, engine.Options{Path: path, NParallel: 8, CtxPerSeq: nGen + 16, Threads: threads,
		Model: kernels.ModelParams{GPULayers: gpuLayers}})
	check(err)
	defer e.Close()
	defer kernels.EnableQ8GEMM(true)
	fmt.Printf("\n== batched decode: N sequences, one llama_decode per step (%d tokens each, %d threads) ==\n", nGen, threads)
	if !kernels.Q8GEMMAvailable() {
		fmt.Println("(this build has no AVX-512 VNNI: the Q8_0 kernel is not in it; both rows are ggml)")
	}
	fmt.Printf("%-24s %12s %12s %12s\n", "", "N=1", "N=4", "N=8")
	for _, on := range []bool{true, false} {
		kernels.EnableQ8GEMM(on)
		name := "llmrt kernel tok/s"
		if !on {
			name = "ggml (tinyBLAS) tok/s"
		}
		var agg [3]float64
		for i, n := range []int{1, 4, 8} {
			agg[i] = aggregateDecode(ctx, e, n, nGen)
		}
		fmt.Printf("%-24s %12.1f %7.1f %4.2fx %7.1f %4.2fx\n", name, agg[0], agg[1], agg[1]/agg[0], agg[2], agg[2]/agg[0])
	}
	fmt.Printf("limit for N=1: %.1f tok/s (bandwidth / weight bytes); N sequences share each weight read.\n", limit1)
	fmt.Println("target (serve issue): at 4 sequences, aggregate at least 2x a single sequence.")
}

// aggregateDecode runs n greedy generations at once and returns all their
// tokens over the wall time.
func aggregateDecode(ctx context.Context, e *engine.Engine, n, nGen int) float64 {
	var wg sync.WaitGroup
	errs := make([]error, n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prompt := []int32{int32(1000 + i), int32(2000 + i), int32(3000 + i), int32(4000 + i)}
			_, errs[i] = e.Generate(ctx, engine.Request{Prompt: prompt, MaxTokens: nGen, IgnoreEOS: true})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		check(err)
	}
	return float64(n*nGen) / time.Since(t0).Seconds()
}

// bindingLoop runs the C loop's steps from Go through the kernels package:
// a fresh model and context, one untimed pass over the prompt (as the C
// loop's warm-up), then the timed prompt and nGen greedy single-token
// decodes. It separates the binding's cost from the engine's.
func bindingLoop(ctx context.Context, path string, prompt []int32, nGen, threads, nCtx int) (pp, tg time.Duration, err error) {
	m, err := kernels.LoadModel(ctx, path, kernels.ModelParams{GPULayers: gpuLayers})
	if err != nil {
		return 0, 0, err
	}
	defer m.Close()
	c, err := m.NewContext(kernels.ContextParams{NCtx: nCtx, NBatch: len(prompt), Threads: threads})
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	b, err := kernels.NewBatch(len(prompt), 1)
	if err != nil {
		return 0, 0, err
	}
	defer b.Close()
	smp, err := m.NewSampler(kernels.SamplerParams{})
	if err != nil {
		return 0, 0, err
	}
	defer smp.Close()
	idx, err := b.AddTokens(prompt, 0, 0, true)
	if err != nil {
		return 0, 0, err
	}
	if err := c.Decode(ctx, b); err != nil {
		return 0, 0, fmt.Errorf("warm-up: %w", err)
	}
	c.SeqRemove(0, -1, -1)
	t0 := time.Now()
	if err := c.Decode(ctx, b); err != nil {
		return 0, 0, fmt.Errorf("prompt: %w", err)
	}
	t1 := time.Now()
	for i := 0; i < nGen; i++ {
		tok, err := smp.Sample(c, idx)
		if err != nil {
			return 0, 0, err
		}
		b.Clear()
		if idx, err = b.Add(tok, len(prompt)+i, 0, true); err != nil {
			return 0, 0, err
		}
		if err := c.Decode(ctx, b); err != nil {
			return 0, 0, fmt.Errorf("decode step %d: %w", i, err)
		}
	}
	return t1.Sub(t0), time.Since(t1), nil
}

// orders are the six orders of the three paths (0: C loop, 1: engine,
// 2: binding).
var orders = [][3]int{{0, 1, 2}, {2, 1, 0}, {1, 2, 0}, {0, 2, 1}, {2, 0, 1}, {1, 0, 2}}

// pairedOverhead is the median over repetitions of how much slower (in
// percent) a path was than the reference (the C loop) in the same
// repetition.
func pairedOverhead(rate, ref []float64) float64 { return median(overheads(rate, ref)) }

// overheads is, per repetition, how much slower (in percent) a path was
// than the reference.
func overheads(rate, ref []float64) []float64 {
	d := make([]float64, len(rate))
	for i := range rate {
		d[i] = 100 * (ref[i] - rate[i]) / ref[i]
	}
	return d
}

// spread lists each repetition's overhead against the C loop, sorted: the
// noise the median is taken from.
func spread(rate, ref []float64) string {
	d := overheads(rate, ref)
	sort.Float64s(d)
	parts := make([]string, len(d))
	for i, v := range d {
		parts[i] = fmt.Sprintf("%.1f", v)
	}
	return strings.Join(parts, " ") + " %"
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
