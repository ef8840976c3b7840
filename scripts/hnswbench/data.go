package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// genSpec is one gen_data invocation: gen_data OUTDIR nb nq dim clusters
// sigma seed kgt.
type genSpec struct {
	NB, NQ, Dim, Clusters int
	Sigma                 float64
	Seed                  uint64
	KGT                   int
}

// benchSpec is the benchmark set: 100k base, 1000 queries, 384 dims.
var benchSpec = genSpec{NB: 100000, NQ: 1000, Dim: 384, Clusters: 100, Sigma: 1.0, Seed: 42, KGT: 100}

func (g genSpec) args() []string {
	return []string{
		strconv.Itoa(g.NB), strconv.Itoa(g.NQ), strconv.Itoa(g.Dim), strconv.Itoa(g.Clusters),
		strconv.FormatFloat(g.Sigma, 'f', -1, 64), strconv.FormatUint(g.Seed, 10), strconv.Itoa(g.KGT),
	}
}

// sizes returns the exact byte sizes of base.fvecs, query.fvecs, gt.ivecs.
func (g genSpec) sizes() map[string]int64 {
	row := int64(4 + 4*g.Dim)
	return map[string]int64{
		"base.fvecs":  int64(g.NB) * row,
		"query.fvecs": int64(g.NQ) * row,
		"gt.ivecs":    int64(g.NQ) * int64(4+4*g.KGT),
	}
}

// dataset is a loaded benchmark set.
type dataset struct {
	Dir     string
	Base    [][]float32
	Queries [][]float32
	GT      [][]int32 // per query, nearest base ids, nearest first
	Dim     int
}

// defaultDataDir is $LLMRT_BENCH_DATA, else
// ${XDG_CACHE_HOME:-~/.cache}/llmrt-bench/ann-100k-384.
func defaultDataDir() string {
	if d := os.Getenv("LLMRT_BENCH_DATA"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = filepath.Join(os.TempDir(), "cache")
	}
	return filepath.Join(base, "llmrt-bench", "ann-100k-384")
}

// repoRoot is the llmrt repository's root: the nearest folder at or above
// this module's (go env GOMOD; hnswbench is a module of its own) whose
// go.mod declares github.com/llmrt/llmrt, or "" when there is none.
func repoRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return ""
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return ""
	}
	for dir := filepath.Dir(mod); ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/llmrt/llmrt\n") {
			return dir
		}
		if filepath.Dir(dir) == dir {
			return ""
		}
	}
}

// resolveGenSrc finds gen_data.c: src as given (absolute, or relative to
// the working directory), else relative to the repository root.
func resolveGenSrc(src string) (string, error) {
	var tried []string
	cands := []string{src}
	if !filepath.IsAbs(src) {
		if root := repoRoot(); root != "" {
			cands = append(cands, filepath.Join(root, src))
		}
	}
	for _, c := range cands {
		abs, err := filepath.Abs(c)
		if err != nil {
			continue
		}
		tried = append(tried, abs)
		if st, err := os.Stat(abs); err == nil && st.Mode().IsRegular() {
			return abs, nil
		}
	}
	return "", fmt.Errorf("gen_data source %q not found (tried %s); pass -gen-src", src, strings.Join(tried, ", "))
}

// haveData reports whether dir holds the three files at their exact sizes.
func haveData(dir string, g genSpec) bool {
	for name, want := range g.sizes() {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Size() != want {
			return false
		}
	}
	return true
}

// insideDir reports whether path is dir or below it.
func insideDir(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// prepareData makes sure dir holds the set described by g, compiling
// gen_data.c with cc and running it when the files are missing or have the
// wrong sizes. Progress goes to log.
func prepareData(dir, genSrc string, g genSpec, log io.Writer) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if root := repoRoot(); root != "" {
		if real, err := filepath.EvalSymlinks(root); err == nil {
			root = real
		}
		d := dir
		if real, err := filepath.EvalSymlinks(filepath.Dir(dir)); err == nil {
			d = filepath.Join(real, filepath.Base(dir))
		}
		if insideDir(d, root) {
			return fmt.Errorf("data directory %s is inside the repository %s; use -data or LLMRT_BENCH_DATA to put it elsewhere", dir, root)
		}
	}
	if haveData(dir, g) {
		fmt.Fprintf(log, "data: reusing %s\n", dir)
		return nil
	}
	src, err := resolveGenSrc(genSrc)
	if err != nil {
		return err
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		return fmt.Errorf("a C compiler (cc) is needed to build %s: %w", src, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(dir, "gen_data")
	var stderr bytes.Buffer
	cmd := exec.Command(cc, "-O2", "-o", bin, src, "-lm")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cc -O2 -o %s %s -lm: %v\n%s", bin, src, err, stderr.String())
	}
	// Generate into a fresh sibling directory, then move the files in, so
	// an interrupted run never leaves files of the right size but wrong
	// content.
	tmp, err := os.MkdirTemp(dir, ".gen-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintf(log, "data: generating %s with %s (gen_data %s) ...\n", dir, src, strings.Join(g.args(), " "))
	t0 := time.Now()
	stderr.Reset()
	cmd = exec.Command(bin, append([]string{tmp}, g.args()...)...)
	cmd.Stderr = &stderr
	cmd.Stdout = io.Discard
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("gen_data: %v\n%s", err, stderr.String())
	}
	if !haveData(tmp, g) {
		return errors.New("gen_data finished but its files do not have the expected sizes")
	}
	for name := range g.sizes() {
		if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	fmt.Fprintf(log, "data: generated in %.1f s\n", time.Since(t0).Seconds())
	return nil
}

// loadData reads the set from dir and checks that its parts agree with g.
func loadData(dir string, g genSpec) (*dataset, error) {
	base, err := readFvecs(filepath.Join(dir, "base.fvecs"), g.Dim)
	if err != nil {
		return nil, err
	}
	queries, err := readFvecs(filepath.Join(dir, "query.fvecs"), g.Dim)
	if err != nil {
		return nil, err
	}
	gt, err := readIvecs(filepath.Join(dir, "gt.ivecs"), g.KGT, len(base))
	if err != nil {
		return nil, err
	}
	if len(base) != g.NB || len(queries) != g.NQ || len(gt) != g.NQ {
		return nil, fmt.Errorf("%s: %d base, %d query, %d ground-truth rows; want %d, %d, %d",
			dir, len(base), len(queries), len(gt), g.NB, g.NQ, g.NQ)
	}
	return &dataset{Dir: dir, Base: base, Queries: queries, GT: gt, Dim: g.Dim}, nil
}
