// Command benchtrain measures llmrt's LoRA trainer against two yardsticks
// measured in the same run:
//
//   - full fine-tuning with ggml-opt, the optimizer and backward pass that
//     llama.cpp's llama_opt_epoch and its llama-finetune example run (stock
//     ggml kernels), of a small random llama (n_embd 256, 4 layers,
//     vocabulary 32,000, F32) on Debian's license texts in rows of 512
//     tokens, beside llmrt's LoRA (rank 16, all linear projections) on the
//     same rows. llama_opt_epoch itself aborts in the llama.cpp llmrt builds
//     (its KV-cache write is an in-place op that ggml's backward pass
//     rejects), so the reference runs over kernels/net's graph of the model
//     (kernels.Net.ReferenceFinetune);
//
//   - the machine's fp32 GEMM limit (OpenBLAS cblas_sgemm) for the
//     generated Qwen2.5-0.5B shape (qwen2, n_embd 896, 24 layers, vocab
//     151936) with an F16 and a Q8_0 base: 4 FLOPs per base parameter per
//     trained token (2 forward, 2 backward through the frozen base), and
//     peak memory beside what serving the same model at the same context
//     needs.
//
//     go run ./scripts/benchtrain              # both
//     go run ./scripts/benchtrain -case tiny   # the reference comparison only
//     go run ./scripts/benchtrain -case qwen -ctx 128 -steps 2
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
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

// licenseTexts is the tiny-llama comparison's training text, concatenated
// in this order (Debian's base-files package installs them).
var licenseTexts = []string{"GPL-3", "Apache-2.0", "MPL-2.0", "GFDL-1.3", "LGPL-2.1"}

func main() {
	threads := flag.Int("threads", 2, "threads")
	which := flag.String("case", "all", "what to measure: tiny (against ggml-opt full fine-tuning), qwen (against the GEMM limit) or all")
	ctxLen := flag.Int("ctx", 256, "tokens per training row of the qwen case (all labelled)")
	steps := flag.Int("steps", 3, "measured optimizer steps of the qwen case (after one warm-up step)")
	rows := flag.Int("rows", 24, "rows of 512 tokens in the tiny case (the first is a warm-up)")
	pairs := flag.Int("pairs", 3, "alternating reference/LoRA runs in the tiny case")
	rank := flag.Int("rank", 16, "LoRA rank")
	child := flag.String("child", "", "internal: run one measurement (train:PATH, serve:PATH, lora:PATH or ref:PATH) and print its peak memory")
	cache := flag.String("cache", testmodel.CacheDir(), "where generated models are kept (env LLMRT_BENCH_DIR)")
	ggmlOutProd := flag.Bool("ggml-outprod", false, "leave the matmul input gradients to ggml's OUT_PROD loop (to measure llmrt's kernel)")
	noAMX := flag.Bool("no-amx", false, "keep training off the AMX tiles where the CPU has them: Q8_0 matmuls on AVX-512 VNNI, input gradients in fp32 (to measure the tiles)")
	flag.Parse()
	kernels.EnableOutProd(!*ggmlOutProd)
	kernels.EnableQ8AMX(!*noAMX)
	kernels.SetLogger(nil)
	os.Setenv("LLMRT_LLAMA_LOG", "error")
	if *child != "" {
		if err := runChild(*child, *threads, *ctxLen, *steps, *rank, *rows); err != nil {
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
	fmt.Printf("training's Q8_0 matmuls: %s\n\n", q8Path())
	if *which == "tiny" || *which == "all" {
		path, err := testmodel.CachedPath(ctx, *cache, testmodel.TinyLlama(testmodel.SharedDir()))
		check(err)
		f, err := gguf.Open(path)
		check(err)
		params := float64(f.ParamCount())
		// The token embedding is a lookup, not a matmul, when the model
		// has its own output head: it costs no FLOPs.
		mmParams := params
		if _, ok := f.Tensor("output.weight"); ok {
			if e, ok := f.Tensor("token_embd.weight"); ok {
				mmParams -= float64(e.NElements())
			}
		}
		args := []string{"-rows", fmt.Sprint(*rows), "-rank", fmt.Sprint(*rank)}
		// The two sides alternate, and the ratio is the median of each
		// pair's own: the machine's speed drifts between runs.
		var refs, ourss, ratios []float64
		var refPeak, oursPeak float64
		for range *pairs {
			r, rp := measure("ref:"+path, *threads, args...)
			o, op := measure("lora:"+path, *threads, args...)
			refs, ourss, ratios = append(refs, r), append(ourss, o), append(ratios, o/r)
			refPeak, oursPeak = max(refPeak, rp), max(oursPeak, op)
		}
		ref, ours := median(refs), median(ourss)
		fmt.Printf("tiny llama (%.1fM parameters, F32): %d rows of %d tokens from %s, %d threads, median of %d alternating pairs\n",
			params/1e6, *rows, tinyCtx, strings.Join(licenseTexts, "+"), *threads, *pairs)
		fmt.Printf("%-44s %12s %10s %12s\n", "trainer", "train tok/s", "of limit", "peak")
		// Full fine-tuning costs 6 FLOPs per matmul parameter per token
		// (weight gradients too), LoRA 4 through the frozen base.
		fmt.Printf("%-44s %12.1f %9.1f%% %8.0f MiB\n", "ggml-opt full fine-tuning (llama-finetune's)", ref, 100*ref*6*mmParams/flops, refPeak/(1<<20))
		fmt.Printf("%-44s %12.1f %9.1f%% %8.0f MiB\n", fmt.Sprintf("llmrt LoRA rank %d, all linear projections", *rank), ours, 100*ours*4*mmParams/flops, oursPeak/(1<<20))
		sort.Float64s(ratios)
		fmt.Printf("ratio: %.2fx the reference's tokens/s (target 1.5x); per pair, sorted: %s\n\n", median(ratios), fmtRatios(ratios))
	}
	if *which == "qwen" || *which == "all" {
		fmt.Printf("training: rows of %d tokens, all labelled; rank %d on q/k/v/o; %d measured steps\n", *ctxLen, *rank, *steps)
		fmt.Printf("%-6s %10s %12s %12s %9s %12s %12s %7s\n", "base", "params", "train tok/s", "limit tok/s", "of limit", "train peak", "serve peak", "ratio")
		args := []string{"-ctx", fmt.Sprint(*ctxLen), "-steps", fmt.Sprint(*steps), "-rank", fmt.Sprint(*rank)}
		for _, typ := range []gguf.Type{gguf.TypeF16, gguf.TypeQ8_0} {
			path, err := testmodel.CachedPath(ctx, *cache, testmodel.Qwen2_05B(testmodel.SharedDir(), typ))
			check(err)
			f, err := gguf.Open(path)
			check(err)
			params := float64(f.ParamCount())
			measure("convert:"+path, *threads, args...) // an F16 base's Q8_0 copy, made once, as llmrt tune does
			train, trainPeak := measure("train:"+path, *threads, args...)
			_, servePeak := measure("serve:"+path, *threads, args...)
			limit := flops / (4 * params)
			fmt.Printf("%-6s %9.0fM %12.1f %12.1f %8.1f%% %10.0f MiB %10.0f MiB %6.2fx\n", typ, params/1e6, train, limit, 100*train/limit,
				trainPeak/(1<<20), servePeak/(1<<20), trainPeak/servePeak)
		}
		fmt.Println("\nlimit = fp32 GEMM FLOP/s / (4 x parameters). F16 bases train on a Q8_0 copy (ggml has no F16 matmul backward);")
		fmt.Println("peak memory is the process's high-water RSS; serving = the engine with one sequence of the same context.")
		fmt.Println("targets: at least 50% of the limit; training peak at most 1.5x serving.")
	}
}

// tinyCtx is the row length of the tiny-llama comparison.
const tinyCtx = 512

// licenseText reads the tiny-llama comparison's training text.
func licenseText() (string, error) {
	var b strings.Builder
	for _, n := range licenseTexts {
		data, err := os.ReadFile("/usr/share/common-licenses/" + n)
		if err != nil {
			return "", fmt.Errorf("the training text: %w", err)
		}
		b.Write(data)
	}
	return b.String(), nil
}

// tinyRows loads the model at path (without mmap when writable is set:
// the reference trains the weights in place) and cuts the license texts
// into at most rows rows of tinyCtx tokens at a stride of tinyCtx/2, each
// position labelled with the next token, as llama.cpp's llama-finetune
// does.
func tinyRows(ctx context.Context, path string, rows int, writable bool) (*kernels.Model, [][2][]int32, error) {
	text, err := licenseText()
	if err != nil {
		return nil, nil, err
	}
	m, err := kernels.LoadModel(ctx, path, kernels.ModelParams{NoRepack: true, NoMmap: writable})
	if err != nil {
		return nil, nil, err
	}
	toks, err := m.Tokenize(text, true, false)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	const stride = tinyCtx / 2
	rows = min(rows, (len(toks)-tinyCtx-1)/stride)
	out := make([][2][]int32, rows)
	for r := range out {
		out[r] = [2][]int32{toks[r*stride : r*stride+tinyCtx], toks[r*stride+1 : r*stride+tinyCtx+1]}
	}
	return m, out, nil
}

// tinyLoRA trains rank-rank LoRA on all linear projections of the model at
// path over tinyRows, one optimizer step per row, and returns tokens/s
// after the first row.
func tinyLoRA(ctx context.Context, path string, threads, rank, rows int) (float64, error) {
	m, data, err := tinyRows(ctx, path, rows, false)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	net, err := kernels.NewNet(m, kernels.NetParams{Threads: threads, Rank: rank, Alpha: float32(2 * rank), Targets: finetune.AllLinearTargets, Tiles: true})
	if err != nil {
		return 0, err
	}
	defer net.Close()
	b, err := lora.NewNetBackend(net, m.Info().Arch, float32(2*rank), kernels.DefaultAdam)
	if err != nil {
		return 0, err
	}
	pos, seg := make([]int32, tinyCtx), make([]int32, tinyCtx)
	for i := range pos {
		pos[i] = int32(i)
	}
	var t0 time.Time
	for r, row := range data {
		if r == 1 {
			t0 = time.Now()
		}
		if _, _, err := b.Accumulate(row[0], pos, seg, row[1]); err != nil {
			return 0, err
		}
		if err := b.Step(1e-4); err != nil {
			return 0, err
		}
	}
	return float64((len(data)-1)*tinyCtx) / time.Since(t0).Seconds(), nil
}

// tinyReference fully fine-tunes the model at path over tinyRows with
// ggml-opt (kernels.Net.ReferenceFinetune) and returns tokens/s after the
// first row.
func tinyReference(ctx context.Context, path string, threads, rows int) (float64, error) {
	// As llama.cpp ships it: ggml's own OUT_PROD, not llmrt's kernel.
	kernels.EnableOutProd(false)
	m, data, err := tinyRows(ctx, path, rows, true)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	net, err := kernels.NewNet(m, kernels.NetParams{Threads: threads})
	if err != nil {
		return 0, err
	}
	defer net.Close()
	var toks, labs []int32
	for _, row := range data {
		toks, labs = append(toks, row[0]...), append(labs, row[1]...)
	}
	r, err := net.ReferenceFinetune(toks, labs, tinyCtx)
	if err != nil {
		return 0, err
	}
	if !(r.LastLoss < r.FirstLoss) {
		return 0, fmt.Errorf("the reference did not train: the first row's loss went from %.3f to %.3f", r.FirstLoss, r.LastLoss)
	}
	return float64((len(data)-1)*tinyCtx) / r.Seconds, nil
}

// measure runs one child process and returns its tokens/s and peak RSS.
func measure(what string, threads int, args ...string) (float64, float64) {
	exe, err := os.Executable()
	check(err)
	args = append([]string{"-child", what, "-threads", fmt.Sprint(threads), "-ggml-outprod=" + fmt.Sprint(!kernels.OutProdEnabled()),
		"-no-amx=" + fmt.Sprint(!kernels.Q8AMXEnabled())}, args...)
	out, err := exec.Command(exe, args...).CombinedOutput()
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

func runChild(what string, threads, ctxLen, steps, rank, rows int) error {
	ctx := context.Background()
	kind, path, _ := strings.Cut(what, ":")
	switch kind {
	case "ref":
		tps, err := tinyReference(ctx, path, threads, rows)
		if err != nil {
			return err
		}
		fmt.Printf("result %.3f %d\n", tps, peakRSS())
		return nil
	case "lora":
		tps, err := tinyLoRA(ctx, path, threads, rank, rows)
		if err != nil {
			return err
		}
		fmt.Printf("result %.3f %d\n", tps, peakRSS())
		return nil
	}
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
	net, err := kernels.NewNet(m, kernels.NetParams{Threads: threads, Rank: rank, Alpha: float32(2 * rank), Targets: finetune.AttentionTargets, Tiles: true})
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

// median of xs (which it sorts).
func median(xs []float64) float64 {
	sort.Float64s(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

func fmtRatios(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
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

// q8Path says which kernels run the Q8_0 matmuls of the forward passes
// and the input gradients through them.
func q8Path() string {
	grad := "fp32 (outprod.c)"
	if kernels.OutProdAMXAvailable() && kernels.Q8AMXEnabled() {
		grad = "AMX-BF16 tiles"
	}
	switch {
	case !kernels.Q8GEMMAvailable():
		return "not in this build (ggml's tinyBLAS); input gradients " + grad
	case kernels.Q8AMXAvailable() && kernels.Q8AMXEnabled():
		return "AMX-INT8 tiles, AVX-512 VNNI at the edges; input gradients " + grad
	case kernels.Q8AMXAvailable():
		return "AVX-512 VNNI (AMX off: -no-amx); input gradients " + grad
	}
	return "AVX-512 VNNI (no AMX on this CPU); input gradients " + grad
}
