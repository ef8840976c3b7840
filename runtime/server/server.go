// Package server is llmrt's OpenAI-compatible HTTP API.
//
// Endpoints: GET /v1/models[/{id}], POST /v1/chat/completions,
// POST /v1/completions, POST /v1/embeddings, GET /health, GET /metrics
// (Prometheus), admin routes under /v1/adapters and /v1/system, and the
// web console at / when Config.Console is set. Errors
// use OpenAI's error object with the status OpenAI uses. Every request runs
// under its client's context: a client that goes away frees its sequence at
// the engine's next step.
package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/llmrt/llmrt/runtime/httpapi"
	"github.com/llmrt/llmrt/runtime/registry"
)

// Config configures a Server.
type Config struct {
	// DefaultModel answers requests whose "model" is empty.
	DefaultModel string
	// APIKeys, when set, are required as "Authorization: Bearer KEY" on
	// /v1 routes.
	APIKeys []string
	// CORSOrigins allowed for browsers ("*" for any).
	CORSOrigins []string
	// MaxBodyBytes bounds request bodies (default 32 MiB).
	MaxBodyBytes int64
	// RequestTimeout bounds one request (0: none).
	RequestTimeout time.Duration
	// StreamInterval is the shortest time between two flushes of a
	// stream (0: flush every event). Events are never held longer.
	StreamInterval time.Duration
	// ShutdownGrace is how long in-flight requests may finish on shutdown.
	// Meanwhile the listener stays open and new requests get 503 with
	// Retry-After, so load balancers see the drain.
	ShutdownGrace time.Duration
	// AllowedHosts are the Host names the server answers to besides
	// loopback names ("*": any). Empty: on a loopback listener, loopback
	// names only (DNS-rebinding guard); elsewhere, any.
	AllowedHosts []string
	// MetricsPublic serves /metrics without an API key.
	MetricsPublic bool
	// DefaultMaxTokens bounds chat answers whose request sets no
	// max_tokens (0: until the model stops or the context is full).
	DefaultMaxTokens int
	// Retriever enables the "rag" extension of chat completions.
	Retriever Retriever
	// Console, when set, serves GET / and the paths the API does not
	// use (the web console, runtime/console). It is public: the page asks
	// for the API key and sends it with every API call.
	Console http.Handler
	// Recorder, when set, keeps every completion served (request, answers,
	// model and adapter) under its id, for feedback (runtime/feedback).
	Recorder CompletionRecorder
	Logger   *slog.Logger
}

// Server is the HTTP API over a registry.Registry.
type Server struct {
	cfg     Config
	reg     *registry.Registry
	log     *slog.Logger
	metrics *metrics
	mux     *http.ServeMux
	started time.Time
	flight  inflight
	// loopback is set when Serve listens on a loopback address only.
	loopback    atomic.Bool
	fingerprint string
}

// route says how handle treats a route's requests.
type route struct {
	auth bool     // needs an API key when keys are set
	body bodyKind // accepted request body
	// always answers while draining (not counted as in flight): /health.
	always bool
}

// New builds a server.
func New(cfg Config, reg *registry.Registry) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 32 << 20
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, reg: reg, log: cfg.Logger, metrics: newMetrics(reg), mux: http.NewServeMux(), started: time.Now(), fingerprint: "llmrt"}
	s.routes()
	return s
}

// Registry is the server's model registry.
func (s *Server) Registry() *registry.Registry { return s.reg }

func (s *Server) routes() {
	api := route{auth: true, body: bodyJSON}
	get := route{auth: true, body: bodyNone}
	s.handle("GET /health", "health", route{body: bodyNone, always: true}, s.health)
	metrics := promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
	s.handle("GET /metrics", "metrics", route{auth: !s.cfg.MetricsPublic, body: bodyNone}, func(w http.ResponseWriter, r *http.Request) error {
		metrics.ServeHTTP(w, r)
		return nil
	})
	s.handle("GET /v1/models", "models", get, s.listModels)
	s.handle("GET /v1/models/{id...}", "models", get, s.getModel)
	s.handle("POST /v1/chat/completions", "chat", api, s.chatCompletions)
	s.handle("POST /v1/completions", "completions", api, s.completions)
	s.handle("POST /v1/embeddings", "embeddings", api, s.embeddings)
	s.handle("GET /v1/adapters", "adapters", get, s.listAdapters)
	s.handle("POST /v1/adapters", "adapters", api, s.addAdapter)
	s.handle("DELETE /v1/adapters/{name...}", "adapters", api, s.removeAdapter)
	s.handle("GET /v1/system", "system", get, s.system)
	s.handle("POST /v1/system/load", "system", api, s.loadModel)
	s.handle("POST /v1/system/unload", "system", api, s.unloadModel)
	s.handle("POST /v1/system/keep_alive", "system", api, s.setKeepAlive)
	if s.cfg.Console != nil {
		s.handle("/", "console", route{body: bodyNone}, s.console)
	}
	s.handle("/v1/", "unknown", get, func(w http.ResponseWriter, r *http.Request) error {
		return httpapi.NotFound("unknown_url", "unknown endpoint %s %s", r.Method, r.URL.Path)
	})
}

// Handle registers an extra API route (e.g. RAG or fine-tuning) with the
// server's auth, limits, metrics and error handling. Its body, if any, must
// be JSON.
func (s *Server) Handle(pattern, endpoint string, h func(http.ResponseWriter, *http.Request) error) {
	s.handle(pattern, endpoint, route{auth: true, body: bodyJSON}, h)
}

// HandleUpload is Handle for a route that also takes multipart/form-data
// uploads.
func (s *Server) HandleUpload(pattern, endpoint string, h func(http.ResponseWriter, *http.Request) error) {
	s.handle(pattern, endpoint, route{auth: true, body: bodyUpload}, h)
}

// statusWriter records the status for metrics and logs.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// handle wraps a handler with panic recovery, the cross-site checks
// (guard.go), auth, CORS, the drain, body limits, timeouts, metrics and
// OpenAI-shaped errors.
func (s *Server) handle(pattern, endpoint string, rt route, h func(http.ResponseWriter, *http.Request) error) {
	s.mux.HandleFunc(pattern, func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w := &statusWriter{ResponseWriter: rw}
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("handler panic", "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
				if w.status == 0 {
					httpapi.WriteError(w, httpapi.Internal(fmt.Errorf("internal error: %v", p)))
				}
			}
			code := w.status
			if code == 0 {
				code = http.StatusOK
			}
			s.metrics.requests.WithLabelValues(endpoint, fmt.Sprint(code)).Inc()
			s.metrics.latency.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
			// The access log: every API request at info, probes and scrapes at debug.
			level := slog.LevelInfo
			if endpoint == "health" || endpoint == "metrics" {
				level = slog.LevelDebug
			}
			s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "status", code,
				"ms", time.Since(start).Milliseconds(), "remote", r.RemoteAddr)
		}()
		if aerr := s.checkHost(r); aerr != nil {
			httpapi.WriteError(w, aerr)
			return
		}
		if s.cors(w, r) {
			return
		}
		if aerr := s.checkOrigin(r); aerr != nil {
			httpapi.WriteError(w, aerr)
			return
		}
		if rt.auth && !s.authorized(r) {
			httpapi.WriteError(w, &httpapi.APIError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: httpapi.Ptr("invalid_api_key"),
				Message: "missing or invalid API key: send it as \"Authorization: Bearer KEY\""})
			return
		}
		if !rt.always {
			if !s.flight.enter() {
				w.Header().Set("Connection", "close")
				httpapi.WriteError(w, httpapi.Unavailable(5, "server is shutting down; retry on another instance or after restart"))
				return
			}
			defer s.flight.leave()
		}
		if aerr := checkContentType(r, rt.body); aerr != nil {
			httpapi.WriteError(w, aerr)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		if s.cfg.RequestTimeout > 0 {
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
			defer cancel()
			r = r.WithContext(ctx)
		}
		if err := h(w, r); err != nil {
			if w.status != 0 {
				// Headers are out (a stream): the handler reported in-band.
				s.log.Warn("request failed after response started", "path", r.URL.Path, "err", err)
				return
			}
			var ae *httpapi.APIError
			if !errors.As(err, &ae) {
				s.log.Error("request failed", "path", r.URL.Path, "err", err)
			}
			httpapi.WriteError(w, err)
		}
	})
}

// cors answers preflight requests and sets headers; it reports whether the
// request was fully handled.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(s.cfg.CORSOrigins) == 0 {
		return false
	}
	allowed := false
	for _, o := range s.cfg.CORSOrigins {
		if o == "*" || o == origin {
			allowed = true
		}
	}
	if !allowed {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, OpenAI-Organization, OpenAI-Project, X-Stainless-*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

func (s *Server) authorized(r *http.Request) bool {
	if len(s.cfg.APIKeys) == 0 {
		return true
	}
	h := r.Header.Get("Authorization")
	key, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return false
	}
	for _, k := range s.cfg.APIKeys {
		if subtle.ConstantTimeCompare([]byte(k), []byte(key)) == 1 {
			return true
		}
	}
	return false
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) error {
	status := "ok"
	code := http.StatusOK
	if s.flight.isDraining() {
		status, code = "draining", http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "5")
		w.Header().Set("Connection", "close")
	}
	return httpapi.WriteJSON(w, code, map[string]any{"status": status, "uptime_seconds": int(time.Since(s.started).Seconds()), "models_loaded": len(s.reg.Loaded())})
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) error {
	return httpapi.WriteJSON(w, http.StatusOK, ModelList{Object: "list", Data: s.modelObjects()})
}

func (s *Server) modelObjects() []ModelObject {
	loaded := map[string]bool{}
	for _, m := range s.reg.Loaded() {
		loaded[m.Name] = true
	}
	seen := map[string]bool{}
	var out []ModelObject
	add := func(m ModelObject) {
		if !seen[m.ID] {
			seen[m.ID] = true
			out = append(out, m)
		}
	}
	// created: a model's or adapter's file time, a registered adapter's
	// registration time; the server's start when there is none.
	created := func(t time.Time) int64 {
		if t.IsZero() {
			return s.started.Unix()
		}
		return t.Unix()
	}
	models, err := s.reg.Models()
	if err != nil {
		s.log.Warn("list models", "err", err)
	}
	bases := map[string]bool{}
	for _, m := range models {
		bases[m.Name] = true
		add(ModelObject{ID: m.Name, Object: "model", Created: created(m.Modified), OwnedBy: "llmrt", Loaded: loaded[m.Name], Kind: "model"})
	}
	for n := range loaded {
		bases[n] = true
		add(ModelObject{ID: n, Object: "model", Created: s.started.Unix(), OwnedBy: "llmrt", Loaded: true, Kind: "model"})
	}
	// The base and real file of every registered adapter.
	key := func(a registry.AdapterInfo) string {
		p, err := filepath.EvalSymlinks(a.Path)
		if err != nil {
			p = a.Path
		}
		return a.Base + "\x00" + p
	}
	registered := map[string]bool{}
	for _, a := range s.reg.AdapterList() {
		registered[key(a)] = true
		add(ModelObject{ID: a.Name, Object: "model", Created: created(a.Created), OwnedBy: "llmrt", Parent: a.Base, Loaded: loaded[a.Base], Kind: "adapter"})
	}
	// BASE+NAME for the adapters folder's files whose base is served here
	// and that are not already listed under a registered name.
	folder, err := s.reg.FolderAdapters()
	if err != nil {
		s.log.Warn("list adapters", "err", err)
	}
	for _, a := range folder {
		if bases[a.Base] && !registered[key(a)] {
			add(ModelObject{ID: a.Base + "+" + a.Name, Object: "model", Created: created(a.Created), OwnedBy: "llmrt", Parent: a.Base, Loaded: loaded[a.Base], Kind: "adapter"})
		}
	}
	return out
}

func (s *Server) getModel(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	for _, m := range s.modelObjects() {
		if m.ID == id {
			return httpapi.WriteJSON(w, http.StatusOK, m)
		}
	}
	if base, ad, err := s.reg.ParseID(id); err == nil && ad != nil {
		created := ad.Created.Unix()
		if ad.Created.IsZero() {
			created = s.started.Unix()
		}
		return httpapi.WriteJSON(w, http.StatusOK, ModelObject{ID: id, Object: "model", Created: created, OwnedBy: "llmrt", Parent: base, Kind: "adapter"})
	}
	return httpapi.NotFound("model_not_found", "The model %q does not exist", id)
}

func (s *Server) listAdapters(w http.ResponseWriter, r *http.Request) error {
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"object": "list", "data": s.reg.AdapterList()})
}

func (s *Server) addAdapter(w http.ResponseWriter, r *http.Request) error {
	var req registry.AdapterInfo
	if err := httpapi.Decode(r, &req); err != nil {
		return err
	}
	if req.Name == "" || req.Base == "" || req.Path == "" {
		return httpapi.BadRequest("", "name, base and path are required")
	}
	req.Created = time.Time{} // the registry stamps the registration time
	if err := s.reg.AddAdapter(req); err != nil {
		var um *registry.ErrUnknownModel
		if errors.As(err, &um) {
			return httpapi.NotFound("model_not_found", "%v", err)
		}
		if errors.Is(err, registry.ErrAdapterPath) {
			e := httpapi.BadRequest("path", "%v", err)
			e.Code = httpapi.Ptr("path_not_allowed")
			return e
		}
		return httpapi.BadRequest("path", "%v", err)
	}
	for _, a := range s.reg.AdapterList() {
		if a.Name == req.Name {
			req = a
		}
	}
	return httpapi.WriteJSON(w, http.StatusCreated, req)
}

func (s *Server) removeAdapter(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := s.reg.RemoveAdapter(name); err != nil {
		var um *registry.ErrUnknownModel
		if errors.As(err, &um) {
			return httpapi.NotFound("model_not_found", "%v", err)
		}
		return &httpapi.APIError{Status: http.StatusConflict, Type: "invalid_request_error", Message: err.Error()}
	}
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"id": name, "object": "adapter", "deleted": true})
}

func (s *Server) system(w http.ResponseWriter, r *http.Request) error {
	out := map[string]any{"models": s.reg.Loaded(), "adapters": s.reg.AdapterList()}
	if sc := s.reg.Scheduler(); sc != nil {
		out["scheduler"] = sc.Snapshot()
	}
	return httpapi.WriteJSON(w, http.StatusOK, out)
}

// Handler is the server's http.Handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve answers on ln until ctx is cancelled, then drains: the listener
// stays open and new requests get 503 with Retry-After while the in-flight
// ones finish, for at most ShutdownGrace; then the rest are cancelled, the
// listener closes, and Serve returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && ta.IP.IsLoopback() {
		s.loopback.Store(true)
	}
	base, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	hs := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       120 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	idle := s.flight.drain()
	s.log.Info("shutting down: draining in-flight requests", "grace", s.cfg.ShutdownGrace)
	grace := time.NewTimer(s.cfg.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-idle:
	case <-grace.C:
		s.log.Warn("grace period over: cancelling the remaining requests")
		cancelAll()
	}
	// Every handler has returned or been cancelled: close the listener and
	// wait briefly for the cancelled ones to write their last bytes.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		hs.Close()
		err = nil
	}
	if e := <-errc; e != nil && !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}
