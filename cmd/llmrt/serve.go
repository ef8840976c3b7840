package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/models/names"
	"github.com/llmrt/llmrt/models/store"
	"github.com/llmrt/llmrt/runtime/console"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/eval"
	"github.com/llmrt/llmrt/runtime/feedback"
	"github.com/llmrt/llmrt/runtime/finetune"
	"github.com/llmrt/llmrt/runtime/qagen"
	"github.com/llmrt/llmrt/runtime/rag"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/server"
)

// serveFlagEnv maps serve's flags to the environment variables that set
// them when the flag is not given.
var serveFlagEnv = map[string]string{
	"addr": "LLMRT_ADDR", "model": "LLMRT_MODELS", "default-model": "LLMRT_MODEL",
	"parallel": "LLMRT_PARALLEL", "ctx": "LLMRT_CTX", "threads": "LLMRT_THREADS",
	"keep-alive": "LLMRT_KEEP_ALIVE", "queue": "LLMRT_QUEUE", "timeout": "LLMRT_TIMEOUT",
	"api-key": "LLMRT_API_KEYS", "cors": "LLMRT_CORS_ORIGINS", "gpu-layers": "LLMRT_GPU_LAYERS",
	"max-body": "LLMRT_MAX_BODY", "grace": "LLMRT_SHUTDOWN_GRACE", "embed-model": "LLMRT_EMBED_MODEL", "rerank-model": "LLMRT_RERANK_MODEL", "stream-interval": "LLMRT_STREAM_INTERVAL",
	"adapter-root": "LLMRT_ADAPTER_ROOTS", "allowed-host": "LLMRT_ALLOWED_HOSTS", "metrics-public": "LLMRT_METRICS_PUBLIC",
	"max-tokens": "LLMRT_MAX_TOKENS",
}

func (a *app) serveCmd() *cobra.Command {
	var (
		addr, defModel, configFile string
		embedModel, rerankModel    string
		ragPaths                   bool
		preload, apiKeys, cors     []string
		adapterRoots, allowedHosts []string
		metricsPublic              bool
		parallel, ctxLen, threads  int
		queue, gpuLayers, batch    int
		maxTokens                  int
		keepAlive, timeout, grace  time.Duration
		streamInterval             time.Duration
		noAuth                     bool
		maxBody                    int64
		fb                         feedbackFlags
		maxAdapters                int
		groupAdapters              bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve models behind an OpenAI-compatible API",
		Long: `serve answers the OpenAI API (/v1/chat/completions, /v1/completions,
/v1/embeddings, /v1/models, /v1/collections, /v1/rerank) on 127.0.0.1:8080. Models load on first use and
unload after --keep-alive; "BASE+ADAPTER" serves a LoRA adapter from
$LLMRT_HOME/adapters. -m, --default-model and --embed-model take a store name
or a .gguf path; a path is served under its file name without .gguf (listed
in /v1/models). Every flag can also come from an environment variable
(LLMRT_ADDR, LLMRT_PARALLEL, ...; see README) or a YAML config file whose keys
are the flag names; flags win over the environment, which wins over the file.

Listening beyond loopback requires --api-key (or LLMRT_API_KEYS) unless
--insecure-no-auth is given. SIGINT/SIGTERM drain: new requests are refused,
in-flight ones get --grace to finish.

Chat requests may carry "rag": {"collection": NAME, "top_k": 4}: the
server retrieves passages for the last user turn from the collection
(see llmrt index), answers from them, and returns the passages retrieved
and those the answer cites. "multi_query": N, "hyde": true and "rerank":
true switch on the retrieval stages (--rerank-model reranks, else the chat
model).`,
		Example: `  llmrt serve
  llmrt serve -m stories260K --parallel 8 --ctx 2048
  llmrt serve -m ./models/my-model.gguf        # served as "my-model"
  LLMRT_API_KEYS=secret llmrt serve --addr 0.0.0.0:8080
  llmrt serve --config /etc/llmrt.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := applyEnvAndConfig(cmd.Flags(), configFile); err != nil {
				return usageError{err}
			}
			for _, k := range apiKeys {
				if strings.TrimSpace(k) == "" {
					return usageError{errors.New("--api-key is empty: give a key, or leave the flag out to serve without one")}
				}
			}
			if len(apiKeys) == 0 && !noAuth && !isLoopback(addr) {
				return usageError{fmt.Errorf("--addr %s listens beyond loopback: set --api-key (or LLMRT_API_KEYS), or pass --insecure-no-auth", addr)}
			}
			ctx := cmd.Context()
			// Runs last, after every model is unloaded and file closed.
			var served bool
			defer func() {
				if served {
					a.log.Info("llmrt stopped")
				}
			}()
			st, err := a.openStore()
			if err != nil {
				return err
			}
			res := &serveResolver{st: st, paths: map[string]string{}}
			for i, m := range preload {
				if preload[i], err = a.serveID(ctx, res, m); err != nil {
					return err
				}
			}
			if defModel == "" {
				if len(preload) > 0 {
					defModel = preload[0]
				} else {
					defModel = defaultModel
				}
			}
			// The default model is fetched on first start (from the mirror when set).
			if defModel, err = a.serveID(ctx, res, defModel); err != nil {
				return err
			}
			sc, err := a.newScheduler()
			if err != nil {
				return err
			}
			defer sc.Close()
			reg := registry.NewRegistry(registry.RegistryConfig{
				Sched:        sc,
				Resolver:     res,
				KeepAlive:    keepAlive,
				AdapterDir:   filepath.Join(a.home, "adapters"),
				AdapterRoots: adapterRoots,
				Logger:       a.log,
				Engine: engine.Options{
					CtxPerSeq: ctxLen, NParallel: parallel, Threads: threads, QueueLen: queue, NBatch: batch,
					Model:       kernels.ModelParams{GPULayers: gpuLayers},
					MaxAdapters: maxAdapters, GroupAdapters: groupAdapters,
				},
			})
			defer reg.Close()
			for _, m := range preload {
				if err := reg.Preload(ctx, m); err != nil {
					return err
				}
			}
			// Collections (RAG): each embedded by the model it was built
			// with (new ones by --embed-model) through the registry, so
			// that model loads, unloads and reserves memory like any
			// served model.
			if embedModel == "" {
				embedModel = defModel
			}
			if embedModel, err = a.serveID(ctx, res, embedModel); err != nil {
				return err
			}
			if rerankModel != "" {
				if _, err := a.resolveModel(ctx, rerankModel); err != nil {
					return err
				}
			}
			coll, err := rag.OpenStore(filepath.Join(a.home, "collections"), rag.StoreOptions{
				Embedder:  rag.RegistryEmbedder{Reg: reg, Model: embedModel},
				Embedders: func(model string) rag.Embedder { return rag.RegistryEmbedder{Reg: reg, Model: model} },
				Memory:    sc.NewIndexBookings("collection", "cpu", "HNSW index of collection ", a.log),
				Logger:    a.log,
			})
			if err != nil {
				return err
			}
			defer coll.Close()
			// Feedback (/v1/feedback): every served completion is kept
			// for a while under its id, so ratings, corrections and
			// preferences can be attached to it.
			fbStore, judge, err := a.openFeedback(&fb, reg)
			if err != nil {
				return err
			}
			defer fbStore.Close()
			retriever := &rag.Retriever{Store: coll, RerankModel: rerankModel,
				Rerankers: func(model string) rag.Reranker { return rag.RegistryReranker{Reg: reg, Model: model} }}
			srv := server.New(server.Config{
				DefaultModel: defModel, APIKeys: apiKeys, CORSOrigins: cors, MaxBodyBytes: maxBody, DefaultMaxTokens: maxTokens,
				RequestTimeout: timeout, ShutdownGrace: grace, Logger: a.log, StreamInterval: streamInterval,
				AllowedHosts: allowedHosts, MetricsPublic: metricsPublic,
				Retriever: retriever, Console: console.Handler(), Recorder: fbStore,
			}, reg)
			(&rag.API{Store: coll, AllowPaths: ragPaths}).Register(srv)
			(&feedback.API{Store: fbStore, Judge: judge}).Register(srv)
			// /v1/rerank: --rerank-model (else the default model) for
			// requests that name no model.
			rerankDefault := rerankModel
			if rerankDefault == "" {
				rerankDefault = defModel
			}
			(&rag.RerankAPI{Reg: reg, DefaultModel: rerankDefault}).Register(srv)
			// Fine-tuning jobs (/v1/files, /v1/fine_tuning/jobs) train in
			// the background under the scheduler; finished adapters are
			// served as ft:BASE:SUFFIX without a restart.
			ft, err := finetune.Open(finetune.Config{
				Dir: filepath.Join(a.home, "finetune"), AdapterDir: filepath.Join(a.home, "adapters"), Registry: reg,
				Resolve: res.Resolve, Threads: threads, Logger: a.log, Sched: sc,
			})
			if err != nil {
				return err
			}
			defer ft.Close()
			ft.Register(srv)
			// QA generation (/v1/qagen) runs in the background on served models.
			(&qagen.Service{Dir: filepath.Join(a.home, "qagen"), Registry: reg, Collections: coll, Logger: a.log}).Register(srv)
			// Evaluations (/v1/evals) run in the background on served models.
			(&eval.Service{Dir: filepath.Join(a.home, "evals"), Registry: reg, Logger: a.log,
				Retriever: retriever}).Register(srv)
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", addr, err)
			}
			a.log.Info("llmrt serving", "addr", "http://"+ln.Addr().String()+"/v1", "default_model", defModel,
				"parallel", parallel, "auth", len(apiKeys) > 0)
			served = true
			return srv.Serve(ctx, ln)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&configFile, "config", os.Getenv("LLMRT_CONFIG"), "YAML config file (keys are flag names) (env LLMRT_CONFIG)")
	fl.StringVar(&addr, "addr", "127.0.0.1:8080", "listen address")
	fl.StringArrayVarP(&preload, "model", "m", nil, "model to load at start and keep loaded: a store name, a .gguf path (served under its file name) or BASE+ADAPTER (repeatable)")
	fl.StringVar(&defModel, "default-model", "", "model for requests that name none (default: the first -m, else "+defaultModel+")")
	fl.DurationVar(&streamInterval, "stream-interval", 40*time.Millisecond, "shortest time between two flushes of a stream (tokens arrive in small bursts; 0: every token at once)")
	fl.StringVar(&embedModel, "embed-model", "", "model that embeds new collections for RAG (default: the default model; a collection keeps the model it was built with)")
	fl.StringVar(&rerankModel, "rerank-model", "", "reranking model for rag requests that rerank (default: the chat model reranks)")
	fl.BoolVar(&ragPaths, "rag-allow-paths", false, "let POST /v1/collections/{name}/documents ingest files and folders the server can read")
	fl.IntVar(&parallel, "parallel", 4, "sequences decoded together per model")
	fl.IntVar(&ctxLen, "ctx", 0, "context length per sequence (default: the model's, at most 4096)")
	fl.IntVar(&batch, "batch", 512, "most tokens per decode step (longer prompts are prefilled in chunks)")
	fl.IntVarP(&threads, "threads", "t", 0, "CPU threads per model (default: all cores)")
	fl.IntVar(&gpuLayers, "gpu-layers", -1, "layers to offload to the GPU (-1: all that fit)")
	fl.DurationVar(&keepAlive, "keep-alive", 5*time.Minute, "unload a model idle this long (-1s: never)")
	fl.IntVar(&queue, "queue", 64, "requests that may wait per model before 429")
	fl.DurationVar(&timeout, "timeout", 0, "longest a request may run (0: no limit)")
	fl.IntVar(&maxTokens, "max-tokens", 0, "longest chat answer when a request sets no max_tokens (0: until the model stops or the context is full)")
	fl.DurationVar(&grace, "grace", 30*time.Second, "on shutdown, how long in-flight requests may finish")
	fl.StringArrayVar(&apiKeys, "api-key", nil, "required Bearer key (repeatable; env LLMRT_API_KEYS, comma-separated)")
	fl.BoolVar(&noAuth, "insecure-no-auth", false, "allow listening beyond loopback without API keys")
	fl.StringArrayVar(&cors, "cors", nil, "allowed CORS origin (repeatable; * for any); other sites' pages cannot POST to the server")
	fl.StringArrayVar(&allowedHosts, "allowed-host", nil, "Host name the server answers to besides loopback names, e.g. behind a proxy (repeatable; * for any)")
	fl.StringArrayVar(&adapterRoots, "adapter-root", nil, "folder POST /v1/adapters may register adapters from, besides $LLMRT_HOME/adapters (repeatable)")
	fl.BoolVar(&metricsPublic, "metrics-public", false, "serve /metrics without the API key (for scrapers)")
	fl.Int64Var(&maxBody, "max-body", 32<<20, "largest request body in bytes")
	fb.register(fl)
	fl.IntVar(&maxAdapters, "max-adapters", 8, "LoRA adapters kept in memory per model (others are read from disk when requested)")
	fl.BoolVar(&groupAdapters, "group-adapters", false, "run requests for different adapters in turn, one adapter set per decode step, instead of together")
	return cmd
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// applyEnvAndConfig fills flags the user did not set from the environment,
// then from the YAML config file.
func applyEnvAndConfig(fs *pflag.FlagSet, configFile string) error {
	var cfg map[string]any
	if configFile != "" {
		b, err := os.ReadFile(configFile)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			return fmt.Errorf("config %s: %w", configFile, err)
		}
		for k := range cfg {
			if fs.Lookup(k) == nil || k == "config" {
				return fmt.Errorf("config %s: unknown key %q (keys are serve's flag names)", configFile, k)
			}
		}
	}
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		if env, ok := serveFlagEnv[f.Name]; ok {
			if v, ok := os.LookupEnv(env); ok {
				for _, part := range splitList(f, v) {
					if err := f.Value.Set(part); err != nil {
						errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
					}
				}
				return
			}
		}
		if v, ok := cfg[f.Name]; ok {
			vals := []any{v}
			if list, ok := v.([]any); ok {
				vals = list
			}
			for _, x := range vals {
				if err := f.Value.Set(fmt.Sprint(x)); err != nil {
					errs = append(errs, fmt.Errorf("config %s: %s: %w", configFile, f.Name, err))
				}
			}
		}
	})
	return errors.Join(errs...)
}

func splitList(f *pflag.Flag, v string) []string {
	if strings.HasSuffix(f.Value.Type(), "Array") || strings.HasSuffix(f.Value.Type(), "Slice") {
		var out []string
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out
	}
	return []string{v}
}

// serveID makes a model the server was given (-m, --default-model,
// --embed-model) servable and returns its id: a .gguf path is served under
// its file name (names.FromPath), a store name or BASE+ADAPTER as is, after
// fetching a known model that is not in the store yet.
func (a *app) serveID(ctx context.Context, res *serveResolver, spec string) (string, error) {
	if _, ok := res.paths[spec]; ok {
		return spec, nil // a path's id, given again
	}
	st, err := os.Stat(spec)
	if err != nil || st.IsDir() {
		if _, err := a.resolveTarget(ctx, spec, true); err != nil {
			return "", err
		}
		return spec, nil
	}
	abs, err := filepath.Abs(spec)
	if err != nil {
		return "", fmt.Errorf("model %s: %w", spec, err)
	}
	id := names.FromPath(spec)
	if prev, ok := res.paths[id]; ok && prev != abs {
		return "", usageError{fmt.Errorf("model files %s and %s would both be served as %q: rename one", prev, abs, id)}
	}
	if p, err := res.st.Resolve(id); err == nil {
		a.log.Info("the file is served instead of the store model of the same name", "model", id, "file", abs, "store_file", p)
	}
	res.paths[id] = abs
	return id, nil
}

// serveResolver resolves the server's model ids: the files given by path
// under their ids, then the model store.
type serveResolver struct {
	st    *store.Store
	paths map[string]string // id -> file
}

func (r *serveResolver) Resolve(name string) (string, error) {
	if p, ok := r.paths[name]; ok {
		return p, nil
	}
	if names.IsPath(name) {
		return "", fmt.Errorf("the server takes model ids, not paths (serve -m %s serves it as %q)", name, names.FromPath(name))
	}
	return r.st.Resolve(name)
}

func (r *serveResolver) Names() ([]string, error) {
	list, err := r.st.List()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(list)+len(r.paths))
	for id := range r.paths {
		out = append(out, id)
	}
	for _, m := range list {
		if _, ok := r.paths[m.Name]; !ok {
			out = append(out, m.Name)
		}
	}
	sort.Strings(out)
	return out, nil
}
