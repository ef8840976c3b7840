package main

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/llmrt/llmrt/runtime/index"
)

func TestVecsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	fv := [][]float32{{1, -2.5, 3e-8}, {float32(math.Pi), 0, -0}, {7, 8, 9}}
	fp := filepath.Join(dir, "a.fvecs")
	if err := writeFvecs(fp, fv); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(fp); st.Size() != 3*(4+3*4) {
		t.Fatalf("fvecs size %d", st.Size())
	}
	got, err := readFvecs(fp, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, fv) {
		t.Fatalf("fvecs round trip: got %v want %v", got, fv)
	}
	if got, err = readFvecs(fp, 0); err != nil || len(got) != 3 {
		t.Fatalf("any width: %v %v", got, err)
	}

	iv := [][]int32{{0, 5, 2, 9}, {1, 1, 3, 0}}
	ip := filepath.Join(dir, "a.ivecs")
	if err := writeIvecs(ip, iv); err != nil {
		t.Fatal(err)
	}
	gi, err := readIvecs(ip, 4, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gi, iv) {
		t.Fatalf("ivecs round trip: got %v want %v", gi, iv)
	}
}

func TestVecsMalformed(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, words ...any) string {
		var b bytes.Buffer
		for _, w := range words {
			binary.Write(&b, binary.LittleEndian, w)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.fvecs", int32(2), float32(1), float32(2), int32(2), float32(3), float32(4))
	nanf := write("nan.fvecs", int32(2), float32(1), float32(math.NaN()))
	cases := []struct {
		name, path string
		dim        int
		ivecs      bool
		maxID      int
		want       string
	}{
		{"wrong dim", good, 3, false, 0, "vectors are 2 wide, want 3"},
		{"empty", write("empty.fvecs"), 0, false, 0, "empty file"},
		{"zero width", write("zero.fvecs", int32(0), int32(0)), 0, false, 0, "declares width 0"},
		{"negative width", write("neg.fvecs", int32(-4), float32(1)), 0, false, 0, "declares width -4"},
		{"huge width", write("huge.fvecs", int32(1<<30), float32(1)), 0, false, 0, "declares width 1073741824"},
		{"truncated row", write("trunc.fvecs", int32(2), float32(1), float32(2), int32(2), float32(3)), 0, false, 0, "not a multiple of the row size"},
		{"short header", write("hdr.fvecs", int32(1), float32(1), int16(1), int16(0)), 0, false, 0, "not a multiple"},
		{"mixed widths", write("mixed.fvecs", int32(2), float32(1), float32(2), int32(1), float32(3), float32(4)), 0, false, 0, "row 1 declares width 1"},
		{"nan", nanf, 2, false, 0, "is NaN"},
		{"id out of range", write("range.ivecs", int32(2), int32(1), int32(10)), 2, true, 10, "id 10 outside [0, 10)"},
		{"negative id", write("negid.ivecs", int32(1), int32(-1)), 1, true, 10, "id -1 outside"},
		{"missing", filepath.Join(dir, "nope.fvecs"), 0, false, 0, "no such file"},
	}
	for _, c := range cases {
		var err error
		if c.ivecs {
			_, err = readIvecs(c.path, c.dim, c.maxID)
		} else {
			_, err = readFvecs(c.path, c.dim)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	// loadData rejects a data set of the wrong shape clearly.
	if _, err := loadData(dir, genSpec{NB: 2, NQ: 1, Dim: 3, KGT: 1}); err == nil || !strings.Contains(err.Error(), "base.fvecs") {
		t.Errorf("loadData on a directory without data: %v", err)
	}
}

func TestRecall(t *testing.T) {
	gt := [][]int32{
		{1, 2, 3, 4, 99}, // only the first k=4 count
		{5, 6, 7, 8, 9},
		{10, 11, 12, 13, 14},
	}
	found := [][]int{
		{4, 3, 2, 1},         // all 4, order does not matter: 1
		{5, 99, 6, 6},        // 5 and 6 (6 counted once): 0.5
		{14, 20, 21, 22, 10}, // 14 is beyond gt[:4]; 10 is 5th found, ignored: 0
	}
	got := recallAt(found, gt, 4)
	want := (1 + 0.5 + 0) / 3
	if math.Abs(got-want) > 1e-12 {
		t.Fatalf("recall %v, want %v", got, want)
	}
	// Fewer results than k count as misses.
	if got := recallAt([][]int{{1}}, gt[:1], 4); got != 0.25 {
		t.Fatalf("short result: recall %v, want 0.25", got)
	}
}

func TestQPSAtRecall(t *testing.T) {
	// hnswlib's table, worked by hand:
	// 0.95 lies between (0.86, 4900) and (0.97, 3600):
	//   4900 + (0.95-0.86)/(0.97-0.86) * (3600-4900) = 4900 - 0.0900/0.1100*1300 = 3836.3636...
	// 0.99 lies between (0.97, 3600) and (0.997, 2650):
	//   3600 + (0.99-0.97)/(0.997-0.97) * (2650-3600) = 3600 - 0.02/0.027*950 = 2896.2963...
	ref := hnswlibRef.Sweep
	for _, c := range []struct{ r, want float64 }{{0.95, 3836.3636}, {0.99, 2896.2963}, {0.97, 3600}, {0.86, 4900}} {
		got, clamped, ok := qpsAtRecall(ref, c.r)
		if !ok || clamped || math.Abs(got-c.want) > 0.001 {
			t.Errorf("qpsAtRecall(hnswlib, %v) = %v, %v, %v; want %v", c.r, got, clamped, ok, c.want)
		}
	}
	// Below the first point: that point's QPS, flagged as a lower bound.
	if got, clamped, ok := qpsAtRecall(ref, 0.5); !ok || !clamped || got != 6900 {
		t.Errorf("below range: %v %v %v", got, clamped, ok)
	}
	// Never reached.
	if _, _, ok := qpsAtRecall(ref, 0.99995); ok {
		t.Error("0.99995 should not be reachable")
	}
	// Unsorted input is sorted by ef; 0.9 between (0.8, 1000) and (1.0, 500) = 750.
	pts := []point{{Ef: 64, Recall: 1, QPS: 500}, {Ef: 16, Recall: 0.8, QPS: 1000}}
	if got, _, _ := qpsAtRecall(pts, 0.9); math.Abs(got-750) > 1e-9 {
		t.Errorf("unsorted: %v, want 750", got)
	}
}

func TestTargets(t *testing.T) {
	mk := func(pts ...point) implResult {
		r := implResult{BuildSec: 60, InsertsPerSec: 1666, BuildWorkers: 1}
		for _, p := range pts {
			r.Sweep = append(r.Sweep, sweepResult{point: p})
		}
		return r
	}
	ts := targets(mk(point{16, 0.8, 8000}, point{64, 0.96, 5000}, point{128, 0.995, 3000}), true)
	for _, tg := range ts {
		if !tg.Pass {
			t.Errorf("%s: MISS (%s)", tg.Name, tg.Detail)
		}
	}
	ts = targets(mk(point{16, 0.5, 8000}, point{64, 0.90, 3000}, point{128, 0.94, 1000}), true)
	for _, tg := range ts[:3] {
		if tg.Pass {
			t.Errorf("%s: PASS (%s)", tg.Name, tg.Detail)
		}
	}
}

// TestEndToEnd runs the whole benchmark on a small generated set (both
// implementations), checks that a second run reuses the data, and that
// exactGT (used when -n or -peer-n index a prefix) reproduces gen_data's
// ground truth.
func TestEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("cc"); err != nil {
		t.Fatalf("a C compiler (cc) is needed to build gen_data.c (the cgo build needs one too): %v", err)
	}
	dir := t.TempDir()
	spec := genSpec{NB: 2000, NQ: 50, Dim: 32, Clusters: 10, Sigma: 1.0, Seed: 42, KGT: 10}
	var out bytes.Buffer
	cfg := config{
		DataDir: dir, GenSrc: "../shared/bench/gen_data.c", Gen: spec,
		PeerN: spec.NB, PeerTimeout: time.Minute, Reps: 1, Efs: []int{16, 64, 128},
		M: 16, EfC: 200, Metric: index.L2, Seed: 1, BuildWorkers: 1,
		JSON: filepath.Join(dir, "out.json"),
	}
	t0 := time.Now()
	rep, err := run(cfg, &out)
	t.Logf("run took %v; output:\n%s", time.Since(t0), out.String())
	if err != nil {
		t.Fatal(err)
	}
	if !haveData(dir, spec) {
		t.Fatal("data files missing after run")
	}
	if len(rep.Results) != 2 {
		t.Fatalf("%d results, want ours and coder/hnsw", len(rep.Results))
	}
	at := func(r implResult, ef int) float64 {
		for _, p := range r.Sweep {
			if p.Ef == ef {
				return p.Recall
			}
		}
		t.Fatalf("%s: ef %d not measured", r.Name, ef)
		return 0
	}
	ours, peer := rep.Results[0], rep.Results[1]
	if ours.N != spec.NB || peer.N != spec.NB {
		t.Fatalf("built %d and %d, want %d", ours.N, peer.N, spec.NB)
	}
	if r := at(ours, 64); r < 0.9 {
		t.Errorf("ours: recall@10 at ef 64 = %.4f, want >= 0.9", r)
	}
	if r16, r128 := at(ours, 16), at(ours, 128); r128 < r16 {
		t.Errorf("ours: recall must rise with ef: %.4f at ef 16, %.4f at ef 128", r16, r128)
	}
	if r := at(peer, 64); r < 0 || r > 1 {
		t.Errorf("coder/hnsw: recall %v out of range", r)
	}
	for _, p := range append(ours.Sweep, peer.Sweep...) {
		if !(p.QPS > 0) {
			t.Errorf("QPS %v at ef %d", p.QPS, p.Ef)
		}
	}
	if st, err := os.Stat(cfg.JSON); err != nil || st.Size() == 0 {
		t.Errorf("JSON not written: %v", err)
	}
	for _, s := range []string{"PASS", "recall@10", "hnswlib"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q", s)
		}
	}

	// A second run reuses the data.
	out.Reset()
	cfg.SkipPeer, cfg.Efs, cfg.JSON = true, []int{64}, ""
	if _, err := run(cfg, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "data: reusing") {
		t.Errorf("second run did not reuse the data:\n%s", out.String())
	}

	// exactGT agrees with gen_data's ground truth.
	ds, err := loadData(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	gt := exactGT(ds.Base, ds.Queries, spec.KGT)
	if !reflect.DeepEqual(gt, ds.GT) {
		t.Errorf("exactGT differs from gen_data's gt.ivecs")
	}
}

func TestDataDirInsideRepoRefused(t *testing.T) {
	root := repoRoot()
	if root == "" {
		t.Fatal("no go.mod above the test's directory")
	}
	err := prepareData(filepath.Join(root, "scripts", "hnswbench", "testdata-never"), "x.c", benchSpec, new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), "inside the repository") {
		t.Fatalf("want refusal, got %v", err)
	}
}
