package qagen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/llmrt/llmrt/internal/atomicfile"
	"github.com/llmrt/llmrt/runtime/httpapi"
	"github.com/llmrt/llmrt/runtime/rag"
	"github.com/llmrt/llmrt/runtime/registry"
)

// Service runs generations in the background of llmrt serve, the API form
// of llmrt qagen:
//
//	POST /v1/qagen       {"collection", "model", "per_chunk", "eval_share", "seed",
//	                      "judge", "max_chunks", "concurrency", "system"}
//	GET  /v1/qagen/{id}  status and progress; once done the summary, every pair
//	                     (with its split or why it was dropped) and the files
//
// Each generation's files (train.jsonl, qa.jsonl, pairs.jsonl,
// summary.json) go to Dir/ID/, its status to Dir/ID.json.
type Service struct {
	Dir         string
	Registry    Leaser
	Collections Collections
	Logger      *slog.Logger

	mu   sync.Mutex
	jobs map[string]*job
}

// Leaser leases loaded models by id (runtime/registry's Registry).
type Leaser interface {
	Acquire(ctx context.Context, id string) (*registry.Lease, error)
}

// Collections opens collections by name (runtime/rag's Store).
type Collections interface {
	Get(ctx context.Context, name string) (*rag.Collection, error)
}

// Router registers routes with the HTTP layer (runtime/server's Server).
type Router interface {
	Handle(pattern, endpoint string, h func(http.ResponseWriter, *http.Request) error)
}

type job struct {
	ID         string  `json:"id"`
	Object     string  `json:"object"` // "qagen"
	Status     string  `json:"status"` // running, succeeded, failed
	Collection string  `json:"collection"`
	Model      string  `json:"model"`
	CreatedAt  int64   `json:"created_at"`
	Done       int     `json:"chunks_done"`
	Total      int     `json:"chunks"`
	Error      string  `json:"error,omitempty"`
	Result     *Result `json:"result,omitempty"`
	Files      *Files  `json:"files,omitempty"`
}

type request struct {
	Collection  string  `json:"collection"`
	Model       string  `json:"model"`
	PerChunk    int     `json:"per_chunk"`
	EvalShare   float64 `json:"eval_share"`
	Seed        uint64  `json:"seed"`
	Judge       string  `json:"judge"`
	MaxChunks   int     `json:"max_chunks"`
	Concurrency int     `json:"concurrency"`
	System      string  `json:"system"`
}

// Register adds the routes to srv.
func (s *Service) Register(srv Router) {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	s.jobs = map[string]*job{}
	srv.Handle("POST /v1/qagen", "qagen", s.create)
	srv.Handle("GET /v1/qagen/{id}", "qagen", s.get)
}

func (s *Service) create(w http.ResponseWriter, r *http.Request) error {
	var req request
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	switch {
	case req.Collection == "":
		return httpapi.BadRequest("collection", "collection is required")
	case req.Model == "":
		return httpapi.BadRequest("model", "model is required")
	case req.PerChunk < 0 || req.PerChunk > 10:
		return httpapi.BadRequest("per_chunk", "per_chunk must be between 1 and 10, got %d", req.PerChunk)
	case req.EvalShare < 0 || req.EvalShare > 1:
		return httpapi.BadRequest("eval_share", "eval_share must be in [0, 1], got %g", req.EvalShare)
	case req.MaxChunks < 0 || req.Concurrency < 0 || req.Concurrency > 64:
		return httpapi.BadRequest("max_chunks", "max_chunks must not be negative and concurrency must be between 0 and 64")
	}
	c, err := s.Collections.Get(r.Context(), req.Collection)
	if errors.Is(err, rag.ErrNotFound) {
		return httpapi.NotFound("collection_not_found", "collection %q does not exist", req.Collection)
	}
	if err != nil {
		return fmt.Errorf("collection %s: %w", req.Collection, err)
	}
	chunks := Chunks(c)
	if len(chunks) == 0 {
		return httpapi.BadRequest("collection", "collection %q has no documents", req.Collection)
	}
	// Load the models now, so a bad id fails the request.
	lease, err := s.Registry.Acquire(r.Context(), req.Model)
	if err != nil {
		return httpapi.MapError(err, "model")
	}
	var judge *registry.Lease
	if req.Judge != "" {
		if judge, err = s.Registry.Acquire(r.Context(), req.Judge); err != nil {
			lease.Release()
			return httpapi.MapError(err, "judge")
		}
	}
	j := &job{ID: httpapi.NewID("qagen-"), Object: "qagen", Status: "running", Collection: req.Collection, Model: req.Model, CreatedAt: time.Now().Unix()}
	opt := Options{Model: lease.Engine, Adapters: lease.Adapters, ModelName: req.Model, PerChunk: req.PerChunk, EvalShare: req.EvalShare,
		Seed: req.Seed, MaxChunks: req.MaxChunks, Concurrency: req.Concurrency, System: req.System,
		Progress: func(done, total int) {
			s.mu.Lock()
			j.Done, j.Total = done, total
			s.mu.Unlock()
		}}
	if judge != nil {
		opt.Judge, opt.JudgeName = judge.Engine, req.Judge
	}
	if opt.Concurrency == 0 {
		opt.Concurrency = 4
	}
	s.mu.Lock()
	s.jobs[j.ID] = j
	created := *j
	s.mu.Unlock()
	go func() {
		defer lease.Release()
		if judge != nil {
			defer judge.Release()
		}
		res, err := Generate(context.Background(), chunks, opt)
		var files Files
		if err == nil && s.Dir != "" {
			files, err = res.Write(filepath.Join(s.Dir, j.ID))
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			j.Status, j.Error = "failed", err.Error()
			s.Logger.Warn("QA generation failed", "id", j.ID, "err", err)
		} else {
			j.Status, j.Result = "succeeded", res
			if s.Dir != "" {
				j.Files = &files
			}
		}
		s.save(j)
	}()
	return httpapi.WriteJSON(w, http.StatusOK, &created)
}

// save keeps a finished generation's status (best effort: it is also in
// memory until the server stops). Called with s.mu held.
func (s *Service) save(j *job) {
	if s.Dir == "" {
		return
	}
	err := os.MkdirAll(s.Dir, 0o755)
	if err == nil {
		err = atomicfile.WriteJSON(filepath.Join(s.Dir, j.ID+".json"), j)
	}
	if err != nil {
		s.Logger.Warn("QA generation status not saved", "id", j.ID, "err", err)
	}
}

func (s *Service) get(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	s.mu.Lock()
	j, ok := s.jobs[id]
	var out []byte
	if ok {
		out, _ = json.Marshal(j)
	}
	s.mu.Unlock()
	return httpapi.WriteJob(w, out, ok, s.Dir, id, "qagen_not_found", "QA generation")
}
