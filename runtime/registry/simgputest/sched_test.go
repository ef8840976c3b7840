package simgputest_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/finetune"
	"github.com/llmrt/llmrt/runtime/sched"
	"github.com/llmrt/llmrt/runtime/server"
)

var bigOwner = sched.Owner{Kind: "model", ID: "big"}

// The placement the scheduler grants is what llama.cpp does: every device
// the scheduler gave layers holds those layers' weights (to 1%) in
// llama.cpp's own ledger, no other device holds any, and the scheduler's
// estimate for each device is within 10% of what the device counts in its
// buffers. On two simulated devices the model is split over both.
func TestPlacementIsWhatLlamaCppAllocates(t *testing.T) {
	r := newRig(t, models(t, map[string]string{"big": bigModelPath(t)}), nil)
	gpus := gpuDevices()
	before := make([]int64, len(gpus))
	for i := range gpus {
		before[i] = used(t, i)
	}
	ctx := context.Background()
	lease, err := r.reg.Acquire(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	res := r.reservation(t, bigOwner)
	if res.Placement == nil || !res.Placement.Full {
		t.Fatalf("the model is not fully offloaded: %+v", res.Placement)
	}
	byBuf, err := lease.Engine.MemoryByBuffer()
	if err != nil {
		t.Fatal(err)
	}
	withLayers := 0
	for i, g := range gpus {
		dev := r.ledgerDevice(t, g.Name)
		est := onDevice(res, dev.ID)
		llama := byBuf[g.Name]
		counted := used(t, i) - before[i]
		t.Logf("%s (%s): %d layers; scheduler estimate %s (%s); llama.cpp %d weights + %d KV + %d compute = %d; device counts %d (estimate %+.1f%%)",
			g.Name, dev.ID, est.Layers, sched.FormatBytes(est.Total()), est.Breakdown, llama.Weights, llama.KV, llama.Compute, llama.Total(),
			counted, pct(est.Total(), counted))
		if (est.Layers > 0) != (llama.Weights > 0) {
			t.Errorf("%s: the scheduler placed %d layers there, llama.cpp put %d bytes of weights", g.Name, est.Layers, llama.Weights)
		}
		if est.Layers > 0 {
			withLayers++
		}
		if d := pct(est.Weights, llama.Weights); math.Abs(d) > 1 {
			t.Errorf("%s: weights estimated %d, llama.cpp allocated %d (%+.2f%%): other layers than placed", g.Name, est.Weights, llama.Weights, d)
		}
		if d := pct(est.Total(), counted); math.Abs(d) > 10 {
			t.Errorf("%s: estimate %d is %+.1f%% off the %d bytes the device counts", g.Name, est.Total(), d, counted)
		}
	}
	if len(gpus) >= 2 && withLayers < 2 {
		t.Errorf("the model was not split over the GPUs: %+v", res.PerDevice)
	}
	if _, err := generate(ctx, lease.Engine); err != nil {
		t.Fatal(err)
	}
}

// loaded is the names of the registry's loaded models.
func loaded(r *rig) []string {
	var out []string
	for _, m := range r.reg.Loaded() {
		out = append(out, m.Name)
	}
	return out
}

// holdsOnly checks that the devices hold exactly what engine e's context
// allocated on each (nothing of a model that was unloaded or evicted).
func holdsOnly(t *testing.T, what string, e *engine.Engine) {
	t.Helper()
	byBuf, err := e.MemoryByBuffer()
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range gpuDevices() {
		want, got := byBuf[g.Name].Total(), used(t, i)
		if math.Abs(float64(got-want)) > float64(slack()) {
			t.Errorf("%s: %s holds %d bytes, the loaded model has %d there", what, g.Name, got, want)
		}
	}
}

// slack is how far a device's count may be from llama.cpp's: none on the
// simulated device (its buffers are llama.cpp's), 1 MiB on CUDA.
func slack() int64 {
	if useCUDA {
		return mib
	}
	return 0
}

// atBaseline checks that every GPU is back to what it held before any
// model: nothing allocated, free equal to total (simulated), and nothing
// reserved in the scheduler's ledgers.
func atBaseline(t *testing.T, what string, r *rig) {
	t.Helper()
	for i, g := range gpuDevices() {
		if u := used(t, i); u > slack() || u < -slack() {
			t.Errorf("%s: %s still holds %d bytes", what, g.Name, u)
		}
		if !useCUDA && g.Free != g.Total {
			t.Errorf("%s: %s reports %d free of %d", what, g.Name, g.Free, g.Total)
		}
	}
	for _, d := range r.sc.Snapshot().Devices {
		if d.Reserved != 0 {
			t.Errorf("%s: %s has %d bytes reserved", what, d.ID, d.Reserved)
		}
	}
}

// Unloading a model gives its devices back: nothing allocated, free memory
// equal to the total, nothing reserved.
func TestUnloadReturnsDevicesToBaseline(t *testing.T) {
	r := newRig(t, models(t, map[string]string{"big": bigModelPath(t)}), nil)
	atBaseline(t, "before loading", r)
	lease, err := r.reg.Acquire(context.Background(), "big")
	if err != nil {
		t.Fatal(err)
	}
	if used(t, 0) <= 0 {
		t.Fatalf("the first GPU holds nothing with the model loaded")
	}
	holdsOnly(t, "loaded", lease.Engine)
	lease.Release()
	if err := r.reg.Unload("big"); err != nil {
		t.Fatal(err)
	}
	atBaseline(t, "after unloading", r)
}

// A second model that needs the memory evicts the idle first one: the
// scheduler says so, the first is unloaded, and the devices hold exactly
// the second model.
func TestEvictionFreesTheDevices(t *testing.T) {
	big := bigModelPath(t)
	r := newRig(t, models(t, map[string]string{"big-a": big, "big-b": big}), nil)
	ctx := context.Background()
	a, err := r.reg.Acquire(ctx, "big-a")
	if err != nil {
		t.Fatal(err)
	}
	a.Release() // idle: evictable (no keep-alive)
	b, err := r.reg.Acquire(ctx, "big-b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if got := loaded(r); len(got) != 1 || got[0] != "big-b" {
		t.Fatalf("loaded models %v, want only big-b", got)
	}
	snap := r.sc.Snapshot()
	var evicting, evicted bool
	for _, d := range snap.Decisions {
		evicting = evicting || (d.Action == "evicting" && d.Owner.ID == "big-a" && strings.Contains(d.Reason, "makes room for model big-b"))
		evicted = evicted || (d.Action == "evicted" && d.Owner.ID == "big-a")
	}
	if !evicting || !evicted || snap.Stats.Evictions != 1 {
		t.Fatalf("no eviction of big-a for big-b in the decisions (stats %+v): %+v", snap.Stats, snap.Decisions)
	}
	if res := r.reservation(t, sched.Owner{Kind: "model", ID: "big-b"}); res.Placement == nil || !res.Placement.Full {
		t.Fatalf("big-b is not fully offloaded after the eviction: %+v", res.Placement)
	}
	holdsOnly(t, "after evicting big-a", b.Engine)
	if _, err := generate(ctx, b.Engine); err != nil {
		t.Fatal(err)
	}
}

// training is a LoRA run on stories260K with rows of ctx tokens, booked as
// finetune.Reserve books it (its own copy of the base, then
// sched.EstimateTraining's state, on the first GPU).
func training(ctx int) finetune.Spec {
	return finetune.Spec{BaseName: "stories260K", BasePath: filepath.Join(testmodel.SharedDir(), "stories260K.gguf"), Rank: 4, Ctx: ctx, GPULayers: -1}
}

func trainingBytes(t *testing.T, spec finetune.Spec) int64 {
	t.Helper()
	parts, err := finetune.TrainingMemory(spec)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, p := range parts {
		n += p.Total()
	}
	return n
}

// available is what the scheduler can still hand out on device id.
func available(t *testing.T, r *rig, id string) int64 {
	t.Helper()
	for _, d := range r.sc.Snapshot().Devices {
		if d.ID == id {
			return d.Available
		}
	}
	t.Fatalf("no device %s", id)
	return 0
}

// A training reservation and a serving model share the first GPU when both
// fit; a run that does not fit beside the busy model queues, and gets the
// device once the model is idle and evicted for it.
func TestTrainingSharesTheDeviceOnlyWhenBothFit(t *testing.T) {
	r := newRig(t, models(t, map[string]string{"big": bigModelPath(t)}), func(c *sched.Config) { c.MaxWait = 10 * time.Minute })
	ctx := context.Background()
	gpu0 := r.ledgerDevice(t, gpuDevices()[0].Name).ID
	lease, err := r.reg.Acquire(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			lease.Release()
		}
	}()

	small, large := training(16), training(128)
	free := available(t, r, gpu0)
	t.Logf("%s: %s available beside the model; training runs of %s and %s", gpu0, sched.FormatBytes(free),
		sched.FormatBytes(trainingBytes(t, small)), sched.FormatBytes(trainingBytes(t, large)))
	if trainingBytes(t, small) > free || trainingBytes(t, large) <= free {
		t.Fatalf("test sizes: the small run must fit in the %d bytes left on %s, the large one not", free, gpu0)
	}

	// Both fit: granted at once, beside the model.
	queuedBefore := r.sc.Snapshot().Stats.Queued
	job1, err := finetune.Reserve(ctx, r.sc, sched.Owner{Kind: "job", ID: "small"}, small)
	if err != nil {
		t.Fatal(err)
	}
	if st := r.sc.Snapshot().Stats; st.Queued != queuedBefore || st.Evictions != 0 {
		t.Fatalf("the fitting run waited or evicted: %+v", st)
	}
	if got := onDevice(r.reservation(t, sched.Owner{Kind: "job", ID: "small"}), gpu0).Total(); got != trainingBytes(t, small) {
		t.Fatalf("the run holds %d bytes on %s, want %d", got, gpu0, trainingBytes(t, small))
	}
	if onDevice(r.reservation(t, bigOwner), gpu0).Layers == 0 {
		t.Fatalf("the model has no layers on %s beside the run", gpu0)
	}
	job1.Release()

	// It does not fit beside the busy model: it queues.
	type result struct {
		res *sched.Reservation
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := finetune.Reserve(ctx, r.sc, sched.Owner{Kind: "job", ID: "large"}, large)
		done <- result{res, err}
	}()
	waitFor(t, "the large run in the queue", func() bool {
		q := r.sc.Snapshot().Queue
		return len(q) == 1 && q[0].Owner.ID == "large" && q[0].Kind == sched.KindTraining
	})
	if got := loaded(r); len(got) != 1 {
		t.Fatalf("the busy model was unloaded for the queued run: %v", got)
	}
	// The model goes idle: the scheduler evicts it for the run.
	lease.Release()
	released = true
	got := <-done
	if got.err != nil {
		t.Fatal(got.err)
	}
	defer got.res.Release()
	if l := loaded(r); len(l) != 0 {
		t.Fatalf("models still loaded after the run got their memory: %v", l)
	}
	if onDevice(r.reservation(t, sched.Owner{Kind: "job", ID: "large"}), gpu0).Total() != trainingBytes(t, large) {
		t.Fatalf("the large run is not on %s", gpu0)
	}
	for i, g := range gpuDevices() {
		if u := used(t, i); u > slack() {
			t.Errorf("%s holds %d bytes after the model was evicted", g.Name, u)
		}
	}
}

// waitFor polls until cond holds; a minute without it is a failure (the
// condition is one state change away, not a race against the clock).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A model that does not fit while another is busy waits in the queue, then
// the server answers 503 with the scheduler's explanation (who holds the
// memory) and Retry-After; the busy model stays loaded.
func TestFullDeviceQueuesThen503(t *testing.T) {
	big := bigModelPath(t)
	r := newRig(t, models(t, map[string]string{"big-a": big, "big-b": big}), func(c *sched.Config) { c.MaxWait = 300 * time.Millisecond })
	ctx := context.Background()
	a, err := r.reg.Acquire(ctx, "big-a") // busy for the whole test
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	usedBefore := used(t, 0)

	srv := server.New(server.Config{DefaultModel: "big-a", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, r.reg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	defer func() { cancel(); <-served }()

	body := `{"model": "big-b", "prompt": "Once upon a time", "max_tokens": 2}`
	resp, err := http.Post("http://"+ln.Addr().String()+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d %s", resp.StatusCode, e.Error.Message)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	for _, frag := range []string{"not enough memory for the model right now", "model big-b got no memory after waiting",
		"held by: model big-a", "busy (1 in use)"} {
		if !strings.Contains(e.Error.Message, frag) {
			t.Errorf("the explanation lacks %q", frag)
		}
	}
	snap := r.sc.Snapshot()
	var queued, timedOut bool
	for _, d := range snap.Decisions {
		queued = queued || (d.Action == "queued" && d.Owner.ID == "big-b")
		timedOut = timedOut || (d.Action == "timeout" && d.Owner.ID == "big-b")
	}
	if !queued || !timedOut || snap.Stats.TimedOut != 1 || len(snap.Queue) != 0 {
		t.Fatalf("big-b was not queued then timed out: stats %+v, queue %+v", snap.Stats, snap.Queue)
	}
	if got := loaded(r); len(got) != 1 || got[0] != "big-a" || used(t, 0) != usedBefore {
		t.Fatalf("the busy model was disturbed: loaded %v, first GPU %d bytes (was %d)", got, used(t, 0), usedBefore)
	}
}

// A preloaded (pinned) model is never evicted: a second model gets what
// is left (here the CPU takes the layers that do not fit) and the first
// stays loaded on its devices.
func TestPreloadedModelIsNotEvicted(t *testing.T) {
	big := bigModelPath(t)
	r := newRig(t, models(t, map[string]string{"big-a": big, "big-b": big}), nil)
	ctx := context.Background()
	if err := r.reg.Preload(ctx, "big-a"); err != nil {
		t.Fatal(err)
	}
	b, err := r.reg.Acquire(ctx, "big-b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if got := loaded(r); len(got) != 2 {
		t.Fatalf("loaded models %v, want both", got)
	}
	if st := r.sc.Snapshot().Stats; st.Evictions != 0 {
		t.Fatalf("the pinned model was evicted: %+v", st)
	}
	if res := r.reservation(t, sched.Owner{Kind: "model", ID: "big-b"}); res.Placement == nil || res.Placement.Full {
		t.Fatalf("big-b fully offloaded beside the pinned model: %+v", res.Placement)
	}
	if _, err := generate(ctx, b.Engine); err != nil {
		t.Fatal(err)
	}
}
