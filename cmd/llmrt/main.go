// Command llmrt serves, fine-tunes and evaluates local LLMs on llama.cpp.
//
// See README.md for the full reference. Exit codes: 0 success, 1 failure,
// 2 bad usage, 130 interrupted.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/store"
	"github.com/llmrt/llmrt/runtime/sched"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// app carries what every command shares: output streams, the logger and
// global settings. One is built per process in main (no package state).
type app struct {
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
	home      string
	verbose   bool
	logFormat string
	log       *slog.Logger
	// interrupts, when set, replaces SIGINT for the interactive chat
	// (tests send on it).
	interrupts <-chan os.Signal
	// logs is on with -v, --log-format or llmrt serve: status goes out as
	// log records; otherwise people get readable lines and only warnings.
	logs bool
}

// usageError marks errors caused by bad flags or arguments (exit code 2).
type usageError struct{ error }

func main() {
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := a.root().ExecuteContext(ctx)
	os.Exit(a.exitCode(ctx, err))
}

func (a *app) exitCode(ctx context.Context, err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintln(a.stderr, "error:", err)
	var ue usageError
	switch {
	case errors.As(err, &ue):
		return 2
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return 130
	}
	return 1
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "llmrt",
		Short: "Serve, fine-tune and evaluate local LLMs on llama.cpp",
		Long: `llmrt serves local GGUF models behind an OpenAI-compatible API, fine-tunes
them with LoRA, answers from your documents through a built-in vector index,
and measures which of retrieval, fine-tuning or both pays off.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return a.setup(cmd)
		},
	}
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.home, "home", "", "data directory (models, adapters, indexes) (env LLMRT_HOME, default ~/.local/share/llmrt)")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "show logs, with debug records and llama.cpp's")
	pf.StringVar(&a.logFormat, "log-format", "text", "show logs as text or json records (default: readable output, warnings only; serve always logs)")
	root.AddCommand(a.runCmd(), a.serveCmd(), a.embedCmd(), a.pullCmd(), a.modelsCmd(), a.quantizeCmd(), a.gpuCmd(), a.systemCmd(), a.indexCmd(), a.tuneCmd(), a.adapterCmd(), a.evalCmd(),
		a.showCmd(), a.psCmd(), a.stopCmd(), a.qagenCmd())
	return root
}

func (a *app) setup(cmd *cobra.Command) error {
	level := slog.LevelInfo
	if a.verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	// A server logs; other commands print for people unless asked for logs.
	a.logs = a.verbose || cmd.Flags().Changed("log-format") || cmd.CommandPath() == "llmrt serve"
	switch a.logFormat {
	case "text":
		a.log = slog.New(slog.NewTextHandler(a.stderr, opts))
	case "json":
		a.log = slog.New(slog.NewJSONHandler(a.stderr, opts))
	default:
		return usageError{fmt.Errorf("--log-format %q: want text or json", a.logFormat)}
	}
	if !a.logs {
		a.log = slog.New(newHumanHandler(a.stderr))
	}
	if a.home == "" {
		a.home = store.DefaultRoot()
	}
	if a.verbose {
		os.Setenv("LLMRT_LLAMA_LOG", "info")
	} else if os.Getenv("LLMRT_LLAMA_LOG") == "" {
		os.Setenv("LLMRT_LLAMA_LOG", "error")
	}
	kernels.SetLogger(a.log)
	// GPU backends (libggml-cuda.so) are loaded from LLMRT_LIB_PATH, or
	// lib/ beside the binary.
	libDir := os.Getenv("LLMRT_LIB_PATH")
	if libDir == "" {
		if exe, err := os.Executable(); err == nil {
			libDir = filepath.Join(filepath.Dir(exe), "..", "lib")
			if _, err := os.Stat(libDir); err != nil {
				libDir = filepath.Join(filepath.Dir(exe), "lib")
			}
		}
	}
	if libDir != "" {
		loaded, err := kernels.LoadBackends(libDir)
		if err != nil {
			a.log.Warn("GPU backends not loaded", "dir", libDir, "err", err)
		} else if len(loaded) > 0 {
			a.log.Debug("backends loaded", "dir", libDir, "backends", loaded)
		}
	}
	// The simulated GPU (`make simgpu`) only when asked for: it has no
	// name that LoadBackends looks for, so it is never picked up by chance.
	if spec := os.Getenv("LLMRT_SIM_GPUS"); strings.TrimSpace(spec) != "" {
		path := filepath.Join(libDir, "libggml-simgpu.so")
		if _, err := kernels.LoadBackend(path); errors.Is(err, fs.ErrNotExist) {
			a.log.Warn("simulated GPUs not loaded: no library (make simgpu builds it)", "LLMRT_SIM_GPUS", spec, "path", path)
		} else if err != nil {
			a.log.Warn("simulated GPUs not loaded", "LLMRT_SIM_GPUS", spec, "err", err)
		} else {
			var names []string
			for _, d := range kernels.DevicesOf(kernels.SimGPUBackend) {
				names = append(names, fmt.Sprintf("%s %.1f GiB", d.Name, float64(d.Total)/(1<<30)))
			}
			a.log.Info("simulated GPUs loaded", "LLMRT_SIM_GPUS", spec, "path", path, "devices", names)
		}
	}
	return nil
}

func (a *app) openStore() (*store.Store, error) {
	s, err := store.Open(a.home)
	if err != nil {
		return nil, fmt.Errorf("open model store %s: %w", a.home, err)
	}
	return s, nil
}

// defaultModel is used when -m is absent: small enough to fetch anywhere.
const defaultModel = "stories260K"

// resolveModel turns -m into a GGUF path: a file path, a store name, or
// (when absent) the default model, fetched into the store on first use.
func (a *app) resolveModel(ctx context.Context, name string) (string, error) {
	if name == "" {
		name = os.Getenv("LLMRT_MODEL")
	}
	if name == "" {
		name = defaultModel
	}
	if st, err := os.Stat(name); err == nil && !st.IsDir() {
		return name, nil
	}
	s, err := a.openStore()
	if err != nil {
		return "", err
	}
	if p, err := s.Resolve(name); err == nil {
		return p, nil
	}
	if _, ok := store.Catalog()[name]; !ok {
		return s.Resolve(name) // the store's error lists what is installed
	}
	var bar *progress
	defer func() {
		if bar != nil {
			bar.Abort()
		}
	}()
	opt := store.PullOptions{
		Mirror: os.Getenv("LLMRT_MIRROR"),
		Token:  os.Getenv("HF_TOKEN"),
		Progress: func(done, total int64) {
			if bar == nil {
				bar = newProgress(a.stderr, a.log, "pull "+name, "bytes", total)
			}
			bar.Set(done, total)
		},
	}
	a.say("fetching "+name+" (not in the store yet)", "model not in the store; fetching it", "model", name)
	p, err := s.Ensure(ctx, name, opt)
	if err == nil && bar != nil {
		bar.Finish()
	}
	return p, err
}

func (a *app) systemCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "system",
		Short: "Show the compute devices, their memory budgets and the CPU features llama.cpp sees",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, d := range kernels.Devices() {
				fmt.Fprintf(a.stdout, "%-8s %-5s %-40s %10s total %10s free %s\n", d.Name, d.Type, d.Description,
					sched.FormatBytes(int64(d.Total)), sched.FormatBytes(int64(d.Free)), d.PCIBusID)
			}
			// The scheduler's view: which devices it books memory on, and
			// how much it may hand out on each.
			sc, err := a.newScheduler()
			if err != nil {
				return err
			}
			defer sc.Close()
			snap := sc.Snapshot()
			fmt.Fprintf(a.stdout, "memory budgets (devices from %s):\n", snap.Source)
			for _, d := range snap.Devices {
				backend := d.Backend
				if backend == "" {
					backend = d.Name
				}
				fmt.Fprintf(a.stdout, "  %-5s %-8s budget %10s of %10s (margin %s, used by others %s; from %s)\n", d.ID, backend,
					sched.FormatBytes(d.Budget), sched.FormatBytes(d.Total), sched.FormatBytes(d.Margin), sched.FormatBytes(d.UsedByOthers), d.Source)
			}
			for _, n := range snap.Notes {
				fmt.Fprintln(a.stdout, "  note:", n)
			}
			for _, w := range snap.Warnings {
				fmt.Fprintln(a.stdout, "  warning:", w)
			}
			fmt.Fprintln(a.stdout, "features:", kernels.SystemInfo())
			return nil
		},
	}
}
