package sched

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

func TestSnapshotJSONRoundTripAndFormat(t *testing.T) {
	clk := newClock()
	nv := fakeNVML(fakeGPU("NVIDIA GeForce RTX 4090", 24*GiB, 2*GiB, nvml.ProcessInfo{Pid: 4242, UsedGpuMemory: uint64(2 * GiB)}))
	s := newSched(t, Config{NVML: nv, Now: clk.Now, Backends: []BackendDevice{
		{Name: "CUDA0", Description: "NVIDIA GeForce RTX 4090", Type: "gpu"}, {Name: "CPU", Type: "cpu"}}})
	rec := &recorder{}
	// Another process holds 2 GiB: the 70B gets 39 layers (not 43).
	big := loadModel(t, s, rec, "llama-2-70b", llama70, ctx4k, func(r *Request) { r.KeepAlive = 5 * time.Minute })
	done, _ := big.res.Load().Use()
	defer done()
	idx, err := s.Acquire(t.Context(), Request{Owner: Owner{"collection", "handbook"}, Kind: KindIndex, Reason: "HNSW vectors",
		Bytes: []DeviceBytes{{Device: "cpu", Breakdown: Breakdown{Index: 300 * MiB}}}})
	if err != nil {
		t.Fatal(err)
	}
	idx.Release()
	idx.Release() // a double release shows in the log and stats
	idx, _ = s.Acquire(t.Context(), Request{Owner: Owner{"collection", "handbook"}, Kind: KindIndex,
		Bytes: []DeviceBytes{{Device: "cpu", Breakdown: Breakdown{Index: 300 * MiB}}}})
	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan error, 1)
	go func() {
		m := llama7
		_, err := s.Acquire(ctx, Request{Owner: Owner{"model", "llama-2-7b"}, Model: &m, Context: ctx4k, Reason: "chat request"})
		waiting <- err
	}()
	waitFor(t, "7B queued", func() bool { return len(s.Snapshot().Queue) == 1 })
	clk.Add(3 * time.Second)

	snap := s.Snapshot()
	data, err := json.MarshalIndent(snap, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	var back Snapshot
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(snap, back) {
		t.Errorf("snapshot changed in a JSON round trip:\n%s\nvs\n%+v", data, back)
	}
	for _, key := range []string{`"n_gpu_layers": 39`, `"tensor_split"`, `"used_by_others"`, `"decisions"`, `"action": "queued"`, `"kv_cache"`} {
		if !bytes.Contains(data, []byte(key)) {
			t.Errorf("JSON lacks %s", key)
		}
	}
	if len(snap.Consumers) != 2 || snap.Consumers[0].Owner.ID != "llama-2-70b" || snap.Consumers[1].PerDevice["cpu"] != 300*MiB {
		t.Errorf("consumers %+v", snap.Consumers)
	}
	if snap.Reservations[0].State != "busy (1 in use)" || snap.Reservations[0].Placement == nil {
		t.Errorf("reservation %+v", snap.Reservations[0])
	}

	var out strings.Builder
	if err := Format(&out, back); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"gpu0", "NVIDIA GeForce RTX 4090 (CUDA0) cc 8.9", "process 4242 uses 2.0 GiB",
		"model llama-2-70b", "busy (1 in use)", "load with n_gpu_layers=39 main_gpu=0 tensor_split=[39]",
		"collection handbook", "[index_vectors]", "QUEUE", "1. model llama-2-7b [model] waiting since",
		"RECENT DECISIONS", "double-release", "queued", "partially offloaded", "double releases 1",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	idx.Release()
	cancel()
	if err := <-waiting; err == nil || !strings.Contains(err.Error(), "llama-2-7b") {
		t.Errorf("cancelled wait: %v", err)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 24 * GiB: "24.0 GiB", -2 * MiB: "-2.0 MiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
