package simgputest_test

import (
	"math"
	"strings"
	"testing"

	"github.com/llmrt/llmrt/kernels"
)

// LoRA training with the base weights on the simulated GPU: llmrt's
// training graph (kernels.Net) runs on the devices llama.cpp placed the
// weights on. Twenty AdamW steps give the CPU run's losses within 1e-3
// relative and the same adapter, and the device computes graphs while it
// trains: stories260K's F32 base and the generated qwen2's Q8_0 one.
func TestTrainingOnDevice(t *testing.T) {
	needSim(t)
	for _, name := range []string{"stories260K", "qwen2"} {
		t.Run(name, func(t *testing.T) {
			path := modelPath(t, name)
			train := func(p kernels.ModelParams) trainResult { return trainSteps(t, path, p) }
			cpu := train(kernels.ModelParams{GPULayers: 0})
			before := simStats(t, 0).Graphs
			dev := train(kernels.ModelParams{GPULayers: -1, TensorSplit: []float32{1, 0}})
			if simStats(t, 0).Graphs == before {
				t.Fatal("no graph ran on SIM0 while training with the base on it")
			}
			sameLosses(t, name, cpu, dev)
			if !(cpu.losses[19] < cpu.losses[0]) {
				t.Fatalf("the loss did not fall: %.4f -> %.4f", cpu.losses[0], cpu.losses[19])
			}
			for i := range cpu.params {
				if d := maxDiff(cpu.params[i], dev.params[i]); d > 1e-3 {
					t.Fatalf("trained tensor %d differs by %g", i, d)
				}
			}
			t.Logf("%s: loss %.4f -> %.4f on both", name, cpu.losses[0], cpu.losses[19])
		})
	}
}

// With a GPU present, LoRA gradients agree with finite differences of the
// loss whether the base's layers are all on the device, half, or none.
// With none offloaded, every pair used to live on the device while its
// weight stayed on the CPU, and attn_output's gradients came out wrong.
func TestTrainingGradientsWherever(t *testing.T) {
	needSim(t)
	path := modelPath(t, "stories260K")
	for _, layers := range []int{0, 3, -1} {
		for _, targets := range [][]string{{"attn_output"}, {"attn_q", "attn_k", "attn_v", "attn_output"}} {
			m := load(t, path, kernels.ModelParams{GPULayers: layers, TensorSplit: []float32{1, 0}, NoRepack: true})
			n, err := kernels.NewNet(m, kernels.NetParams{Threads: testThreads, Rank: 4, Alpha: 8, Seed: 7, Targets: targets})
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range n.Params() {
				v := make([]float32, p.Shape[0]*p.Shape[1])
				for k := range v {
					v[k] = float32((k*7919+i*31)%17-8) * 0.01
				}
				if err := n.Set(i, kernels.ParamValue, v); err != nil {
					t.Fatal(err)
				}
			}
			toks, pos, seg, labels := trainingRow(t, m, "Once upon a time, there was a little girl named Lily. She loved to play")
			if _, _, err := n.Loss(toks, pos, seg, labels, true); err != nil {
				t.Fatal(err)
			}
			for pi := range n.Params() {
				g, _ := n.Get(pi, kernels.ParamGrad)
				w, _ := n.Get(pi, kernels.ParamValue)
				k := 0
				for j := range g {
					if math.Abs(float64(g[j])) > math.Abs(float64(g[k])) {
						k = j
					}
				}
				orig := w[k]
				loss := func(x float32) float64 {
					w[k] = x
					if err := n.Set(pi, kernels.ParamValue, w); err != nil {
						t.Fatal(err)
					}
					l, _, err := n.Loss(toks, pos, seg, labels, false)
					if err != nil {
						t.Fatal(err)
					}
					return float64(l)
				}
				fd := (loss(orig+1e-2) - loss(orig-1e-2)) / 2e-2
				loss(orig)
				if rel := math.Abs(fd-float64(g[k])) / max(math.Abs(fd), math.Abs(float64(g[k])), 1e-4); rel > 1e-2 {
					t.Errorf("%d layers on SIM0, targets %v: %s[%d]: gradient %g, finite difference %g", layers, targets, n.Params()[pi].Name, k, g[k], fd)
				}
			}
			n.Close()
		}
	}
}

// trainResult is 20 AdamW steps of LoRA training: each step's loss and the
// trained tensors at the end.
type trainResult struct {
	losses []float32
	params [][]float32
}

// trainSteps trains attn_q, attn_v and ffn_up pairs of rank 4 on one
// sentence for 20 steps, with the model loaded as p says.
func trainSteps(t *testing.T, path string, p kernels.ModelParams) trainResult {
	t.Helper()
	p.NoRepack = true // the matmul backward reads the file layout
	m := load(t, path, p)
	n, err := kernels.NewNet(m, kernels.NetParams{Threads: testThreads, Rank: 4, Alpha: 8, Seed: 3,
		Targets: []string{"attn_q", "attn_v", "ffn_up"}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	toks, pos, seg, labels := trainingRow(t, m, "The purple zebra named Quix flew over the frozen lake at dawn.")
	var r trainResult
	for step := 1; step <= 20; step++ {
		loss, _, err := n.Loss(toks, pos, seg, labels, true)
		if err != nil {
			t.Fatal(err)
		}
		r.losses = append(r.losses, loss)
		if err := n.AdamW(5e-3, kernels.DefaultAdam, 1, step); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n.Params() {
		v, err := n.Get(i, kernels.ParamValue)
		if err != nil {
			t.Fatal(err)
		}
		r.params = append(r.params, v)
	}
	return r
}

// sameLosses fails unless the two runs' losses agree within 1e-3 relative.
func sameLosses(t *testing.T, what string, cpu, dev trainResult) {
	t.Helper()
	for i := range cpu.losses {
		if rel := math.Abs(float64(dev.losses[i]-cpu.losses[i])) / math.Abs(float64(cpu.losses[i])); rel > 1e-3 {
			t.Fatalf("%s, step %d: loss %.6f on the device, %.6f on the CPU", what, i+1, dev.losses[i], cpu.losses[i])
		}
	}
}

// A device without a kernel the training graph needs: ggml's scheduler
// runs the op on the CPU, training gives the CPU's losses, and the reason
// is logged once (a child process whose devices refuse OUT_PROD, the
// matmul backward).
func TestDeviceWithoutAnOpFallsBack(t *testing.T) {
	needSim(t)
	child(t, "TestDeviceWithoutAnOpChild", "LLMRT_SIM_GPUS="+simGPUs, "LLMRT_SIM_GPUS_REFUSE=OUT_PROD")
}

func TestDeviceWithoutAnOpChild(t *testing.T) {
	onlyInChild(t)
	needSim(t)
	path := modelPath(t, "stories260K")
	cpu := trainSteps(t, path, kernels.ModelParams{GPULayers: 0})
	dev := trainSteps(t, path, kernels.ModelParams{GPULayers: -1, TensorSplit: []float32{1, 0}})
	sameLosses(t, "OUT_PROD refused", cpu, dev)
	n := 0
	for _, l := range loggedLines() {
		if strings.Contains(l, "SIM0 cannot run OUT_PROD") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d log lines say SIM0 cannot run OUT_PROD, want 1:\n%s", n, strings.Join(loggedLines(), "\n"))
	}
}

// trainingRow is text as one training row: its tokens, positions, one
// segment, and every token labelled with the next.
func trainingRow(t *testing.T, m *kernels.Model, text string) (toks, pos, seg, labels []int32) {
	t.Helper()
	toks, err := m.Tokenize(text, true, false)
	if err != nil {
		t.Fatal(err)
	}
	L := len(toks)
	pos, seg, labels = make([]int32, L), make([]int32, L), make([]int32, L)
	for i := range toks {
		pos[i] = int32(i)
		labels[i] = -1
		if i+1 < L {
			labels[i] = toks[i+1]
		}
	}
	return toks, pos, seg, labels
}
