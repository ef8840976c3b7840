package simgputest_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/gguf"
	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/sched"
)

const mib = int64(1) << 20

// simGPUs are the simulated devices: together they hold one "big" model
// (about 32 MiB with its KV cache and compute buffers) split over both,
// never two.
const simGPUs = "24MiB,16MiB"

// cudaLimit caps a CUDA device's budget to the simulated devices' total, so
// the same models meet the same pressure on a real GPU.
const cudaLimit = 40 * mib

// testThreads: one CPU thread per context (see kernels/simgputest: the
// device's own CPU workers and the context's take turns).
const testThreads = 1

// useCUDA is set by LLMRT_TEST_DEVICE=cuda: the tests run on the CUDA
// devices instead of the simulated ones.
var useCUDA = os.Getenv("LLMRT_TEST_DEVICE") == "cuda"

// setupErr is why the devices are not there; every test fails with it.
var setupErr error

// cudaBase is each CUDA device's use after warm-up (the CUDA context and
// cuBLAS's workspace stay for the process): used() subtracts it.
var cudaBase []int64

func libDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "lib")
}

func TestMain(m *testing.M) {
	kernels.SetLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	switch dev := os.Getenv("LLMRT_TEST_DEVICE"); dev {
	case "", "sim":
		os.Setenv("LLMRT_SIM_GPUS", simGPUs)
		p := filepath.Join(libDir(), "libggml-simgpu.so")
		if _, err := os.Stat(p); err != nil {
			setupErr = fmt.Errorf("%s missing: run make simgpu (make test does): %w", p, err)
		} else if _, err := kernels.LoadBackend(p); err != nil {
			setupErr = fmt.Errorf("load %s: %w", p, err)
		}
	case "cuda":
		if _, err := kernels.LoadBackends(libDir()); err != nil {
			setupErr = fmt.Errorf("load the CUDA backend from %s: %w", libDir(), err)
		} else if len(gpuDevices()) == 0 {
			setupErr = fmt.Errorf("LLMRT_TEST_DEVICE=cuda but ggml sees no CUDA device (run make cuda; is the driver loaded?)")
		}
	default:
		setupErr = fmt.Errorf("LLMRT_TEST_DEVICE=%q: want sim (default) or cuda", dev)
	}
	if setupErr == nil && useCUDA {
		setupErr = warmUpCUDA()
	}
	os.Exit(m.Run())
}

// needDevices fails the test when the devices did not load.
func needDevices(t *testing.T) {
	t.Helper()
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

// gpuDevices are ggml's GPUs under test, in ggml's order.
func gpuDevices() []kernels.Device {
	if useCUDA {
		return kernels.DevicesOf("CUDA")
	}
	return kernels.DevicesOf(kernels.SimGPUBackend)
}

// used is what GPU i holds by its own count: the simulated device's live
// buffers, or a CUDA device's used memory above its warmed-up baseline.
func used(t *testing.T, i int) int64 {
	t.Helper()
	if !useCUDA {
		st, err := kernels.SimGPUStatsOf(i, false)
		if err != nil {
			t.Fatal(err)
		}
		return int64(st.Allocated)
	}
	d := gpuDevices()[i]
	return int64(d.Total-d.Free) - cudaBase[i]
}

// warmUpCUDA runs a model once on every CUDA device so that what CUDA
// keeps for the process (context, cuBLAS handles) is in the baseline.
func warmUpCUDA() error {
	ctx := context.Background()
	path := filepath.Join(testmodel.SharedDir(), "stories260K.gguf")
	e, err := engine.Open(ctx, engine.Options{Path: path, NParallel: 1, CtxPerSeq: 256, Threads: testThreads,
		Model: kernels.ModelParams{GPULayers: -1}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return fmt.Errorf("warm up CUDA with %s: %w", path, err)
	}
	_, err = generate(ctx, e)
	e.Close()
	if err != nil {
		return fmt.Errorf("warm up CUDA: %w", err)
	}
	for _, d := range gpuDevices() {
		cudaBase = append(cudaBase, int64(d.Total-d.Free))
	}
	return nil
}

// bigModel generates (once per test binary) a llama of 8 layers of about
// 3.3 MiB each in F32, with stories260K's 512-token vocabulary so that the
// head is small: placement is decided by the layers.
var bigModel = struct {
	path string
	err  error
}{}

func bigModelPath(t *testing.T) string {
	t.Helper()
	if bigModel.path == "" && bigModel.err == nil {
		dir, err := os.MkdirTemp("", "registry-simgputest")
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "big.gguf")
		spec := testmodel.Spec{Arch: "llama", Name: "big-random", NEmbd: 256, NLayer: 8, NHead: 4, NHeadKV: 4, NFF: 768,
			NCtxTrain: 2048, VocabFile: testmodel.Shared(t, "stories260K.gguf"), Type: gguf.TypeF32,
			RopeFreqBase: 10000, NormEps: 1e-5, Seed: 3}
		bigModel.path, bigModel.err = p, testmodel.Write(context.Background(), p, spec)
	}
	if bigModel.err != nil {
		t.Fatalf("generate the test model: %v", bigModel.err)
	}
	return bigModel.path
}

// models makes a folder where each name is a link to path (the registry
// resolves NAME.gguf): two names make two models of the same size.
func models(t *testing.T, links map[string]string) registry.DirResolver {
	t.Helper()
	dir := t.TempDir()
	for name, p := range links {
		if err := os.Symlink(p, filepath.Join(dir, name+".gguf")); err != nil {
			t.Fatal(err)
		}
	}
	return registry.DirResolver{Dir: dir}
}

// rig is a registry over a scheduler over the devices under test.
type rig struct {
	sc  *sched.Scheduler
	reg *registry.Registry
}

// newRig builds the scheduler from kernels.Devices() as cmd/llmrt does,
// without margins (the devices are a few MiB) and with the CPU at 1 GiB.
func newRig(t *testing.T, res registry.DirResolver, tweak func(*sched.Config)) *rig {
	t.Helper()
	needDevices(t)
	var backends []sched.BackendDevice
	for _, d := range kernels.Devices() {
		backends = append(backends, sched.BackendDevice{Name: d.Name, Description: d.Description, Type: string(d.Type),
			Total: d.Total, Free: d.Free, ID: d.ID, PCIBusID: d.PCIBusID})
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := sched.Config{Backends: backends, NoNVML: !useCUDA, MarginBytes: -1, MarginFraction: -1, CPULimit: 1 << 30, Logger: quiet}
	if useCUDA {
		cfg.GPULimit = cudaLimit
	}
	if tweak != nil {
		tweak(&cfg)
	}
	sc, err := sched.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.NewRegistry(registry.RegistryConfig{
		Resolver: res, Sched: sc, KeepAlive: -1, Logger: quiet,
		Engine: engine.Options{NParallel: 1, CtxPerSeq: 256, Threads: testThreads},
	})
	t.Cleanup(func() {
		reg.Close()
		sc.Close()
	})
	return &rig{sc: sc, reg: reg}
}

// reservation returns the scheduler's reservation held by owner.
func (r *rig) reservation(t *testing.T, owner sched.Owner) sched.ReservationInfo {
	t.Helper()
	for _, res := range r.sc.Snapshot().Reservations {
		if res.Owner == owner {
			return res
		}
	}
	t.Fatalf("no reservation of %s in %+v", owner, r.sc.Snapshot().Reservations)
	return sched.ReservationInfo{}
}

// ledgerDevice maps a ggml device name (SIM0, CUDA0) to the scheduler's
// device id (gpu0, ...).
func (r *rig) ledgerDevice(t *testing.T, backend string) sched.Device {
	t.Helper()
	for _, d := range r.sc.Devices() {
		if d.Backend == backend {
			return d
		}
	}
	t.Fatalf("the scheduler has no device for %s: %+v", backend, r.sc.Devices())
	return sched.Device{}
}

// onDevice is the reservation's bytes on a scheduler device.
func onDevice(res sched.ReservationInfo, id string) sched.DeviceBytes {
	for _, d := range res.PerDevice {
		if d.Device == id {
			return d
		}
	}
	return sched.DeviceBytes{Device: id}
}

// pct is a's difference from b in percent of b.
func pct(a, b int64) float64 {
	if b == 0 {
		return 100
	}
	return 100 * float64(a-b) / float64(b)
}

// generate runs a short greedy completion: the layers on the devices
// really compute.
func generate(ctx context.Context, e *engine.Engine) (string, error) {
	toks, err := e.Tokenize("Once upon a time", true, false)
	if err != nil {
		return "", err
	}
	res, err := e.Generate(ctx, engine.Request{Prompt: toks, MaxTokens: 4})
	if err != nil {
		return "", fmt.Errorf("generate: %w", err)
	}
	return res.Text, nil
}
