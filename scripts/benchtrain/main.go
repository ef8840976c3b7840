// Command benchtrain measures LoRA training on the generated Qwen2.5-0.5B
// shape (qwen2, n_embd 896, 24 layers, vocab 151936) for an F16 and a Q8_0
// base: trained tokens per second beside the machine's fp32 GEMM limit
// (4 FLOPs per base parameter per trained token: 2 forward, 2 backward
// through the frozen base), and peak memory beside what serving the same
// model at the same context needs.
//
//	go run ./scripts/benchtrain            # both bases
//	go run ./scripts/benchtrain -ctx 128 -steps 2
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/finetune"
	"github.com/llmrt/llmrt/scripts/internal/machine"
)

func main() {
	threads := flag.Int("threads", 2, "threads")
	ctxLen := flag.Int("ctx", 256, "tokens per training row (all labelled)")
	steps := flag.Int("steps", 3, "measured optimizer steps (after one warm-up step)")
	rank := flag.Int("rank", 16, "LoRA rank")
	child := flag.String("child", "", "internal: run one measurement (train:PATH or serve:PATH) and print its peak memory")
	cache := flag.String("cache", testmodel.CacheDir(), "where generated models are kept (env LLMRT_BENCH_DIR)")
	flag.Parse()
	kernels.SetLogger(nil)
	os.Setenv("LLMRT_LLAMA_LOG", "error")
	if *child != "" {
		if err := runChild(*child, *threads, *ctxLen, *steps, *rank); err != nil {
			fmt.Fprintln(os.Stderr, "benchtrain:", err)
			os.Exit(1)
		}
		return
	}
	ctx := context.Background()
	flops := 0.0
	for _, n := range []int{1024, 2048} {
		f, err := machine.SGEMMFlops(n, 512, n, *threads, 3)
		check(err)
		flops = max(flops, f)
	}
	fmt.Printf("machine: fp32 GEMM %.1f GFLOP/s (OpenBLAS cblas_sgemm, %d threads)\n", flops/1e9, *threads)
	fmt.Printf("training: rows of %d tokens, all labelled; rank %d on q/k/v/o; %d measured steps\n\n", *ctxLen, *rank, *steps)
	fmt.Printf("%-6s %10s %12s %12s %9s %12s %12s %7s\n", "base", "params", "train tok/s", "limit tok/s", "of limit", "train peak", "serve peak", "ratio")
	for _, typ := range []gguf.Type{gguf.TypeF16, gguf.TypeQ8_0} {
		path, err := testmodel.CachedPath(ctx, *cache, testmodel.Qwen2_05B(testmodel.SharedDir(), typ))
		check(err)
		f, err := gguf.Open(path)
		check(err)
		params := float64(f.ParamCount())
		measure("convert:"+path, *threads, *ctxLen, *steps, *rank) // an F16 base's Q8_0 copy, made once, as llmrt tune does
		train, trainPeak := measure("train:"+path, *threads, *ctxLen, *steps, *rank)
		_, servePeak := measure("serve:"+path, *threads, *ctxLen, *steps, *rank)
		limit := flops / (4 * params)
		fmt.Printf("%-6s %9.0fM %12.1f %12.1f %8.1f%% %10.0f MiB %10.0f MiB %6.2fx\n", typ, params/1e6, train, limit, 100*train/limit,
			trainPeak/(1<<20), servePeak/(1<<20), trainPeak/servePeak)
	}
	fmt.Println("\nlimit = fp32 GEMM FLOP/s / (4 x parameters). F16 bases train on a Q8_0 copy (ggml has no F16 matmul backward);")
	fmt.Println("peak memory is the process's high-water RSS; serving = the engine with one sequence of the same context.")
	fmt.Println("targets: at least 30% of the limit; training peak at most 1.5x serving.")
}

// measure runs one child process and returns its tokens/s and peak RSS.
func measure(what string, threads, ctxLen, steps, rank int) (float64, float64) {
	exe, err := os.Executable()
	check(err)
	out, err := exec.Command(exe, "-child", what, "-threads", fmt.Sprint(threads), "-ctx", fmt.Sprint(ctxLen),
		"-steps", fmt.Sprint(steps), "-rank", fmt.Sprint(rank)).CombinedOutput()
	if err != nil {
		check(fmt.Errorf("%s: %v\n%s", what, err, out))
	}
	var tps, peak float64
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "result" {
			tps, _ = strconv.ParseFloat(f[1], 64)
			peak, _ = strconv.ParseFloat(f[2], 64)
		}
	}
	return tps, peak
}

func runChild(what string, threads, ctxLen, steps, rank int) error {
	ctx := context.Background()
	kind, path, _ := strings.Cut(what, ":")
	if kind == "serve" {
		e, err := engine.Open(ctx, engine.Options{Path: path, NParallel: 1, CtxPerSeq: ctxLen, NBatch: ctxLen, Threads: threads})
		if err != nil {
			return err
		}
		defer e.Close()
		prompt := make([]int32, ctxLen-8)
		for i := range prompt {
			prompt[i] = int32(100 + i)
		}
		if _, err := e.Generate(ctx, engine.Request{Prompt: prompt, MaxTokens: 4, IgnoreEOS: true}); err != nil {
			return err
		}
		fmt.Printf("result 0 %d\n", peakRSS())
		return nil
	}
	// Training: the same conversion llmrt tune does for F16 bases, kept
	// beside the generated model and done in its own process.
	spec := finetune.Spec{BasePath: path, Data: "x", Out: strings.TrimSuffix(path, ".gguf") + "-lora.gguf", Threads: threads}
	trainPath, err := finetune.TrainableBase(ctx, spec)
	if err != nil || kind == "convert" {
		return err
	}
	m, err := kernels.LoadModel(ctx, trainPath, kernels.ModelParams{NoRepack: true})
	if err != nil {
		return err
	}
	defer m.Close()
	net, err := kernels.NewNet(m, kernels.NetParams{Threads: threads, Rank: rank, Alpha: float32(2 * rank), Targets: finetune.AttentionTargets})
	if err != nil {
		return err
	}
	defer net.Close()
	b, err := lora.NewNetBackend(net, m.Info().Arch, float32(2*rank), kernels.DefaultAdam)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	row := func() ([]int32, []int32, []int32, []int32) {
		toks, pos, seg, lab := make([]int32, ctxLen), make([]int32, ctxLen), make([]int32, ctxLen), make([]int32, ctxLen)
		for i := range toks {
			toks[i], pos[i] = int32(rng.IntN(50000)), int32(i)
		}
		for i := range lab {
			lab[i] = -1
			if i+1 < ctxLen {
				lab[i] = toks[i+1]
			}
		}
		return toks, pos, seg, lab
	}
	var t0 time.Time
	for s := 0; s <= steps; s++ {
		if s == 1 {
			t0 = time.Now() // step 0 warms up
		}
		if _, _, err := b.Accumulate(row()); err != nil {
			return err
		}
		if err := b.Step(1e-4); err != nil {
			return err
		}
	}
	tps := float64(steps*(ctxLen-1)) / time.Since(t0).Seconds()
	fmt.Printf("result %.3f %d\n", tps, peakRSS())
	return nil
}

// peakRSS is the process's high-water resident set (VmHWM) in bytes.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtrain:", err)
		os.Exit(1)
	}
}
