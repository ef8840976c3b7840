// Command hnswbench measures llmrt's HNSW index (runtime/index) on a
// synthetic 100k x 384 ANN set: build time on one thread, then recall@10
// and single-goroutine queries/s over an efSearch sweep, beside
// github.com/coder/hnsw v0.6.1 on the same data and hnswlib 0.8's reference
// figures for this machine kind, and prints PASS/MISS against the targets.
//
// The data set comes from ../shared/bench/gen_data.c (relative to the
// repository root), compiled with cc and run once into a cache directory
// outside the repository:
//
//	go build -o /tmp/hnswbench ./scripts/hnswbench && /tmp/hnswbench
//
// Flags: -n base vectors, -q queries, -reps timed passes (best is kept),
// -build-workers, -metric, -skip-peer, -peer-n, -peer-timeout, -efs,
// -data (env LLMRT_BENCH_DATA), -gen-src, -json FILE.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/llmrt/llmrt/runtime/index"
)

// hnswlib 0.8 (C++, AVX, one thread) on this machine kind, same data and
// parameters (M=16, efConstruction=200).
var hnswlibRef = struct {
	BuildSec   float64
	InsertsPS  float64
	Sweep      []point
	Descriptor string
}{
	BuildSec:  58,
	InsertsPS: 1720,
	Sweep: []point{
		{Ef: 16, Recall: 0.69, QPS: 6900},
		{Ef: 32, Recall: 0.86, QPS: 4900},
		{Ef: 64, Recall: 0.97, QPS: 3600},
		{Ef: 128, Recall: 0.997, QPS: 2650},
		{Ef: 256, Recall: 0.9998, QPS: 2050},
	},
	Descriptor: "hnswlib 0.8 (C++, AVX, 1 thread), reference figures for this machine kind",
}

const (
	nameOurs  = "llmrt runtime/index"
	nameCoder = "coder/hnsw v0.6.1"
	k         = 10
)

// config is one benchmark run.
type config struct {
	DataDir      string
	GenSrc       string
	Gen          genSpec
	N, Q         int // 0: all
	PeerN        int
	PeerTimeout  time.Duration
	SkipPeer     bool
	Reps         int
	Efs          []int
	M, EfC       int
	Metric       index.Metric
	Seed         int64
	BuildWorkers int
	JSON         string
}

// implResult is one implementation's build and sweep.
type implResult struct {
	Name          string        `json:"implementation"`
	N             int           `json:"n_base"`
	Requested     int           `json:"n_requested"`
	Capped        string        `json:"capped,omitempty"`
	BuildWorkers  int           `json:"build_workers"`
	BuildSec      float64       `json:"build_seconds"`
	InsertsPerSec float64       `json:"inserts_per_second"`
	GTSource      string        `json:"ground_truth"`
	Sweep         []sweepResult `json:"sweep"`
}

type target struct {
	Name   string  `json:"target"`
	Pass   bool    `json:"pass"`
	Value  float64 `json:"value"`
	Limit  float64 `json:"threshold"`
	Detail string  `json:"detail"`
}

type report struct {
	Machine machineInfo `json:"machine"`
	Data    struct {
		Dir     string  `json:"dir"`
		Base    int     `json:"n_base_file"`
		Queries int     `json:"n_queries"`
		Dim     int     `json:"dim"`
		Gen     genSpec `json:"gen_data"`
	} `json:"data"`
	Params struct {
		M              int    `json:"M"`
		EfConstruction int    `json:"ef_construction"`
		Metric         string `json:"metric"`
		K              int    `json:"k"`
		Reps           int    `json:"reps"`
		Seed           int64  `json:"seed"`
	} `json:"params"`
	Results   []implResult `json:"results"`
	Reference struct {
		Name          string  `json:"implementation"`
		BuildSec      float64 `json:"build_seconds"`
		InsertsPerSec float64 `json:"inserts_per_second"`
		Sweep         []point `json:"sweep"`
	} `json:"reference"`
	Targets   []target `json:"targets"`
	When      string   `json:"when"`
	Revision  string   `json:"revision"`
	LoadStart string   `json:"loadavg_start"`
	LoadEnd   string   `json:"loadavg_end"`
}

func main() {
	cfg := config{Gen: benchSpec, M: 16, EfC: 200, Seed: 42}
	var metric, efs string
	flag.StringVar(&cfg.DataDir, "data", defaultDataDir(), "data cache directory (env LLMRT_BENCH_DATA)")
	flag.StringVar(&cfg.GenSrc, "gen-src", "../shared/bench/gen_data.c", "gen_data.c (relative: to the working directory, else to the repository root)")
	flag.IntVar(&cfg.N, "n", 0, "base vectors to index (0: all)")
	flag.IntVar(&cfg.Q, "q", 0, "queries to run (0: all)")
	flag.IntVar(&cfg.PeerN, "peer-n", 100000, "base vectors for coder/hnsw (capped at -n)")
	flag.DurationVar(&cfg.PeerTimeout, "peer-timeout", 10*time.Minute, "stop coder/hnsw's build after this long and measure what was inserted (0: no limit)")
	flag.BoolVar(&cfg.SkipPeer, "skip-peer", false, "do not run coder/hnsw")
	flag.IntVar(&cfg.Reps, "reps", 3, "timed passes over the queries per ef (best kept), after one warm-up pass")
	flag.IntVar(&cfg.BuildWorkers, "build-workers", 1, "goroutines building our index (1: sequential Add, as hnswlib's 1-thread build)")
	flag.StringVar(&metric, "metric", "l2", "our index's metric: l2, cosine or dot (the data is unit length, so rankings agree)")
	flag.StringVar(&efs, "efs", "16,32,64,128,256", "efSearch values")
	flag.IntVar(&cfg.M, "M", 16, "HNSW M")
	flag.IntVar(&cfg.EfC, "efc", 200, "HNSW efConstruction")
	flag.Int64Var(&cfg.Seed, "seed", 42, "seed for the layer assignment")
	flag.StringVar(&cfg.JSON, "json", "", "write all results to this JSON file")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "hnswbench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	var err error
	if cfg.Metric, err = index.ParseMetric(metric); err != nil {
		fatal(err)
	}
	if cfg.Efs, err = parseInts(efs); err != nil {
		fatal(fmt.Errorf("-efs: %w", err))
	}
	if _, err := run(cfg, os.Stdout); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "hnswbench:", err)
	os.Exit(1)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad value %q", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// run performs the whole benchmark, printing to w.
func run(cfg config, w io.Writer) (*report, error) {
	if cfg.Reps < 1 {
		cfg.Reps = 1
	}
	if len(cfg.Efs) == 0 {
		cfg.Efs = []int{16, 32, 64, 128, 256}
	}
	rep := &report{Machine: getMachine(), When: time.Now().UTC().Format(time.RFC3339)}
	m := rep.Machine
	fmt.Fprintf(w, "hnswbench: %s vs %s vs hnswlib 0.8 (reference)\n", nameOurs, nameCoder)
	rep.Revision = buildRev()
	fmt.Fprintf(w, "build:    %s, repository revision %s\n", m.Go, rep.Revision)
	fmt.Fprintf(w, "machine:  %s, %d logical CPUs, GOMAXPROCS %d, %s %s\n", m.CPU, m.LogicalCPU, m.GOMAXPROCS, m.Go, m.OSArch)
	fmt.Fprintf(w, "kernels:  our distance kernels use %s\n", m.kernels())
	rep.LoadStart = loadAvg()
	fmt.Fprintf(w, "load:     %s (1/5/15-min load average at start; timings assume an otherwise idle machine)\n", rep.LoadStart)

	if err := prepareData(cfg.DataDir, cfg.GenSrc, cfg.Gen, w); err != nil {
		return nil, err
	}
	ds, err := loadData(cfg.DataDir, cfg.Gen)
	if err != nil {
		return nil, err
	}
	n := len(ds.Base)
	if cfg.N > 0 && cfg.N < n {
		n = cfg.N
	}
	nq := len(ds.Queries)
	if cfg.Q > 0 && cfg.Q < nq {
		nq = cfg.Q
	}
	if cfg.Gen.KGT < k {
		return nil, fmt.Errorf("ground truth holds %d neighbours per query, need %d", cfg.Gen.KGT, k)
	}
	queries := ds.Queries[:nq]
	rep.Data.Dir, rep.Data.Base, rep.Data.Queries, rep.Data.Dim, rep.Data.Gen = ds.Dir, len(ds.Base), nq, ds.Dim, cfg.Gen
	rep.Params.M, rep.Params.EfConstruction, rep.Params.Metric, rep.Params.K, rep.Params.Reps, rep.Params.Seed =
		cfg.M, cfg.EfC, cfg.Metric.String(), k, cfg.Reps, cfg.Seed
	fmt.Fprintf(w, "data:     %s: %d base x %d dims (using %d), %d queries (using %d), exact top-%d ground truth\n",
		ds.Dir, len(ds.Base), ds.Dim, n, len(ds.Queries), nq, cfg.Gen.KGT)
	fmt.Fprintf(w, "params:   M=%d efConstruction=%d k=%d seed=%d; our metric %s, coder/hnsw EuclideanDistance, Ml=1/M\n",
		cfg.M, cfg.EfC, k, cfg.Seed, cfg.Metric)
	fmt.Fprintf(w, "search:   one goroutine, all %d queries per pass, a warm-up pass then best of %d\n", nq, cfg.Reps)

	// Ground truth for a prefix of the base set: the file's when the
	// prefix is the whole set, else recomputed exactly.
	gtMemo := map[int][][]int32{}
	gtFor := func(nb int) ([][]int32, string) {
		if nb == len(ds.Base) {
			return ds.GT[:nq], "gt.ivecs"
		}
		src := fmt.Sprintf("recomputed exactly over the first %d base vectors", nb)
		if gt, ok := gtMemo[nb]; ok {
			return gt, src
		}
		t0 := time.Now()
		gt := exactGT(ds.Base[:nb], queries, k)
		gtMemo[nb] = gt
		fmt.Fprintf(w, "  ground truth %s (%.1f s, not timed)\n", src, time.Since(t0).Seconds())
		return gt, src
	}

	// Ours.
	fmt.Fprintf(w, "\nbuilding %s on %d vectors, %d build worker(s) ...\n", nameOurs, n, cfg.BuildWorkers)
	o, err := newOurs(ds.Dim, cfg.Metric, cfg.M, cfg.EfC, cfg.Seed, cfg.BuildWorkers)
	if err != nil {
		return nil, err
	}
	res, err := benchOne(w, nameOurs, o, ds.Base[:n], queries, gtFor, cfg, 0)
	if err != nil {
		return nil, err
	}
	rep.Results = append(rep.Results, res)
	o.idx.Close()

	// coder/hnsw.
	if !cfg.SkipPeer {
		pn := min(n, cfg.PeerN)
		if pn <= 0 {
			pn = n
		}
		fmt.Fprintf(w, "\nbuilding %s on %d vectors (1 thread) ...\n", nameCoder, pn)
		c := newCoder(cfg.M, cfg.EfC, cfg.Seed)
		res, err := benchOne(w, nameCoder, c, ds.Base[:pn], queries, gtFor, cfg, cfg.PeerTimeout)
		if err != nil {
			return nil, err
		}
		res.BuildWorkers = 1
		if res.Capped == "" && pn < n {
			res.Capped = fmt.Sprintf("built on %d of %d vectors (-peer-n %d)", pn, n, cfg.PeerN)
		}
		rep.Results = append(rep.Results, res)
	}

	rep.Reference.Name = hnswlibRef.Descriptor
	rep.Reference.BuildSec, rep.Reference.InsertsPerSec, rep.Reference.Sweep = hnswlibRef.BuildSec, hnswlibRef.InsertsPS, hnswlibRef.Sweep
	rep.LoadEnd = loadAvg()
	printTables(w, rep, n)
	rep.Targets = targets(rep.Results[0], n == len(ds.Base) && len(ds.Base) == benchSpec.NB)
	fmt.Fprintf(w, "\ntargets (%s vs hnswlib 0.8):\n", nameOurs)
	for _, t := range rep.Targets {
		v := "MISS"
		if t.Pass {
			v = "PASS"
		}
		fmt.Fprintf(w, "  %s  %s: %s\n", v, t.Name, t.Detail)
	}
	fmt.Fprintf(w, "\nload average at the end: %s\n", rep.LoadEnd)
	if cfg.JSON != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return rep, err
		}
		if err := os.WriteFile(cfg.JSON, append(b, '\n'), 0o644); err != nil {
			return rep, err
		}
		fmt.Fprintf(w, "\nresults written to %s\n", cfg.JSON)
	}
	return rep, nil
}

// benchOne builds idx over base and sweeps efSearch.
func benchOne(w io.Writer, name string, idx annIndex, base, queries [][]float32,
	gtFor func(int) ([][]int32, string), cfg config, timeout time.Duration) (implResult, error) {
	res := implResult{Name: name, Requested: len(base), BuildWorkers: cfg.BuildWorkers}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	t0 := time.Now()
	got, err := idx.build(base, deadline)
	el := time.Since(t0)
	if err != nil {
		return res, fmt.Errorf("%s: build: %w", name, err)
	}
	res.N = got
	res.BuildSec = el.Seconds()
	res.InsertsPerSec = float64(got) / el.Seconds()
	if got < len(base) {
		res.Capped = fmt.Sprintf("build stopped after %d of %d vectors at the %v limit (-peer-timeout); measured on those %d", got, len(base), timeout, got)
		fmt.Fprintf(w, "  CAPPED: %s\n", res.Capped)
	}
	fmt.Fprintf(w, "  built %d in %.1f s (%s inserts/s)\n", got, res.BuildSec, fmtInt(res.InsertsPerSec))
	gt, src := gtFor(got)
	res.GTSource = src
	for _, ef := range cfg.Efs {
		r, err := measure(idx, queries, gt, k, ef, cfg.Reps)
		if err != nil {
			return res, fmt.Errorf("%s: search ef %d: %w", name, ef, err)
		}
		fmt.Fprintf(w, "  ef %4d  recall@10 %.4f  %9s QPS\n", ef, r.Recall, fmtInt(r.QPS))
		res.Sweep = append(res.Sweep, r)
	}
	return res, nil
}

func printTables(w io.Writer, rep *report, n int) {
	fmt.Fprintf(w, "\n== build (M=%d, efConstruction=%d) ==\n", rep.Params.M, rep.Params.EfConstruction)
	fmt.Fprintf(w, "%-44s %8s %10s %11s\n", "implementation", "vectors", "time", "inserts/s")
	for _, r := range rep.Results {
		name := r.Name
		if r.BuildWorkers > 1 {
			name += fmt.Sprintf(" (%d workers)", r.BuildWorkers)
		} else {
			name += " (1 thread)"
		}
		fmt.Fprintf(w, "%-44s %8d %8.1f s %11s\n", name, r.N, r.BuildSec, fmtInt(r.InsertsPerSec))
	}
	fmt.Fprintf(w, "%-44s %8d %8.1f s %11s\n", "hnswlib 0.8 (C++, AVX, 1 thread) [reference]", 100000, hnswlibRef.BuildSec, fmtInt(hnswlibRef.InsertsPS))

	fmt.Fprintf(w, "\n== search: recall@10 and QPS (1 goroutine, %d queries) ==\n", rep.Data.Queries)
	fmt.Fprintf(w, "%-22s %8s %10s %10s   | %-26s\n", "implementation", "efSearch", "recall@10", "QPS", "hnswlib 0.8 [reference]")
	fmt.Fprintf(w, "%-22s %8s %10s %10s   | %10s %10s\n", "", "", "", "", "recall@10", "QPS")
	for _, r := range rep.Results {
		for _, p := range r.Sweep {
			line := fmt.Sprintf("%-22s %8d %10.4f %10s", r.Name, p.Ef, p.Recall, fmtInt(p.QPS))
			if r.Name == nameOurs {
				if ref, ok := refAt(p.Ef); ok {
					line += fmt.Sprintf("   | %10.4f %10s", ref.Recall, fmtInt(ref.QPS))
				} else {
					line += "   |          -          -"
				}
			}
			fmt.Fprintln(w, line)
		}
		if r.Capped != "" {
			fmt.Fprintf(w, "%-22s note: %s\n", "", r.Capped)
		}
	}
	if n != 100000 {
		fmt.Fprintf(w, "note: hnswlib's figures are for 100000 base vectors; this run indexed %d\n", n)
	}
}

func refAt(ef int) (point, bool) {
	for _, p := range hnswlibRef.Sweep {
		if p.Ef == ef {
			return p, true
		}
	}
	return point{}, false
}

// targets judges our result against the goals. comparable says whether the
// run used the full 100k set that hnswlib's figures are for.
func targets(r implResult, comparable bool) []target {
	pts := make([]point, len(r.Sweep))
	for i, s := range r.Sweep {
		pts[i] = s.point
	}
	var out []target

	// 1. recall@10 >= 0.95 at some ef <= 64.
	t := target{Name: "recall@10 >= 0.95 at efSearch <= 64", Limit: 0.95, Value: math.NaN()}
	bestEf := 0
	for _, p := range pts {
		if p.Ef <= 64 && (bestEf == 0 || p.Recall > t.Value || math.IsNaN(t.Value)) {
			t.Value, bestEf = p.Recall, p.Ef
		}
	}
	if bestEf == 0 {
		t.Detail = "no efSearch <= 64 measured"
	} else {
		t.Pass = t.Value >= 0.95
		t.Detail = fmt.Sprintf("%.4f at ef %d (hnswlib: 0.97 at ef 64)", t.Value, bestEf)
	}
	out = append(out, t)

	// 2, 3. QPS at recall 0.95 and 0.99 >= hnswlib's.
	for _, rr := range []float64{0.95, 0.99} {
		ref, _, _ := qpsAtRecall(hnswlibRef.Sweep, rr)
		t := target{Name: fmt.Sprintf("QPS at recall@10 %.2f >= hnswlib's", rr), Limit: ref}
		q, clamped, ok := qpsAtRecall(pts, rr)
		t.Value = q
		switch {
		case !ok:
			maxR, maxEf := 0.0, 0
			for _, p := range pts {
				if p.Recall > maxR {
					maxR, maxEf = p.Recall, p.Ef
				}
			}
			t.Detail = fmt.Sprintf("recall %.2f not reached in the sweep (best %.4f at ef %d); hnswlib %s QPS", rr, maxR, maxEf, fmtInt(ref))
		default:
			t.Pass = q >= ref
			ge := ""
			if clamped {
				ge = ">= "
			}
			t.Detail = fmt.Sprintf("%s%s vs hnswlib %s QPS (%+.0f%%; both interpolated linearly in their ef sweeps)", ge, fmtInt(q), fmtInt(ref), 100*(q/ref-1))
		}
		out = append(out, t)
	}

	// 4. Build time <= 1.2 x 58 s.
	lim := 1.2 * hnswlibRef.BuildSec
	t = target{Name: fmt.Sprintf("build time <= 1.2 x %.0f s = %.1f s", hnswlibRef.BuildSec, lim), Limit: lim, Value: r.BuildSec}
	t.Pass = r.BuildSec <= lim
	t.Detail = fmt.Sprintf("%.1f s, %s inserts/s (hnswlib %.0f s, %s inserts/s), %d build worker(s)",
		r.BuildSec, fmtInt(r.InsertsPerSec), hnswlibRef.BuildSec, fmtInt(hnswlibRef.InsertsPS), r.BuildWorkers)
	out = append(out, t)

	for i := range out {
		if math.IsNaN(out[i].Value) {
			out[i].Value = 0 // JSON has no NaN; Detail says why
		}
	}
	if !comparable {
		for i := range out {
			out[i].Detail += " [not the full 100k set: not comparable with hnswlib's figures]"
		}
	}
	return out
}
