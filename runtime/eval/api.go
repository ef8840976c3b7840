package eval

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/llmrt/llmrt/internal/atomicfile"
	"github.com/llmrt/llmrt/runtime/httpapi"
	"github.com/llmrt/llmrt/runtime/rag/grounding"
	"github.com/llmrt/llmrt/runtime/registry"
)

// Service runs evaluations in the background of llmrt serve:
//
//	POST /v1/evals       {"model", "questions": [...] | "questions_file", "collection",
//	                      "adapter", "top_k", "stages": {"multi_query", "hyde", "rerank"},
//	                      "rerank_model", "ablation", "concurrency", "max_tokens", "future_queries"}
//	GET  /v1/evals/{id}  status, and the report once it has finished
//	GET  /v1/evals       every evaluation, newest first, with its arms' summaries
//	                     (without the answers)
//
// Reports are kept in Dir (one JSON file per evaluation).
type Service struct {
	Dir       string
	Registry  Leaser
	Retriever Retriever // nil: no RAG arms
	Logger    *slog.Logger

	mu   sync.Mutex
	jobs map[string]*evalJob
}

type evalJob struct {
	ID        string    `json:"id"`
	Object    string    `json:"object"` // "eval"
	Status    string    `json:"status"` // running, succeeded, failed
	Model     string    `json:"model"`
	CreatedAt int64     `json:"created_at"`
	Done      int       `json:"answered"`
	Total     int       `json:"total"`
	Error     string    `json:"error,omitempty"`
	Report    *Report   `json:"report,omitempty"`
	Markdown  string    `json:"report_markdown,omitempty"`
	started   time.Time `json:"-"`
}

type evalRequest struct {
	Model         string           `json:"model"`
	Questions     []Question       `json:"questions"`
	QuestionsFile string           `json:"questions_file"`
	Collection    string           `json:"collection"`
	Adapter       string           `json:"adapter"`
	TopK          int              `json:"top_k"`
	Stages        grounding.Stages `json:"stages"`
	RerankModel   string           `json:"rerank_model"`
	Ablation      bool             `json:"ablation"`
	Concurrency   int              `json:"concurrency"`
	MaxTokens     int              `json:"max_tokens"`
	FutureQueries int              `json:"future_queries"`
	System        string           `json:"system"`
}

// Router registers routes with the HTTP layer (runtime/server's Server).
type Router interface {
	Handle(pattern, endpoint string, h func(http.ResponseWriter, *http.Request) error)
}

// Leaser leases loaded models by id (runtime/registry's Registry).
type Leaser interface {
	Acquire(ctx context.Context, id string) (*registry.Lease, error)
}

// Register adds the evaluation routes to srv.
func (s *Service) Register(srv Router) {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	s.jobs = map[string]*evalJob{}
	srv.Handle("POST /v1/evals", "evals", s.create)
	srv.Handle("GET /v1/evals/{id}", "evals", s.get)
	srv.Handle("GET /v1/evals", "evals", s.list)
}

func (s *Service) create(w http.ResponseWriter, r *http.Request) error {
	var req evalRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Model == "" {
		return httpapi.BadRequest("model", "model is required")
	}
	qs := req.Questions
	if req.QuestionsFile != "" {
		var err error
		if qs, err = LoadQuestions(req.QuestionsFile); err != nil {
			return httpapi.BadRequest("questions_file", "%v", err)
		}
	}
	if len(qs) == 0 {
		return httpapi.BadRequest("questions", "give questions or questions_file")
	}
	for i, q := range qs {
		if strings.TrimSpace(q.Question) == "" || strings.TrimSpace(q.Answer) == "" {
			return httpapi.BadRequest(fmt.Sprintf("questions[%d]", i), "each question needs \"question\" and \"answer\"")
		}
		if qs[i].Line == 0 {
			qs[i].Line = i + 1
		}
	}
	if req.Collection != "" && (s.Retriever == nil || !s.Retriever.HasCollection(req.Collection)) {
		return httpapi.NotFound("collection_not_found", "collection %q does not exist", req.Collection)
	}
	// Load the model (and adapter) now, so a bad id fails the request.
	lease, err := s.Registry.Acquire(r.Context(), req.Model)
	if err != nil {
		return httpapi.MapError(err, "model")
	}
	var adLease *registry.Lease
	if req.Adapter != "" {
		id := req.Adapter
		if !strings.Contains(id, "+") && !strings.HasPrefix(id, "ft:") {
			id = req.Model + "+" + id
		}
		if adLease, err = s.Registry.Acquire(r.Context(), id); err != nil {
			lease.Release()
			return httpapi.MapError(err, "adapter")
		}
		if adLease.Engine != lease.Engine || len(adLease.Adapters) != 1 {
			lease.Release()
			adLease.Release()
			return httpapi.BadRequest("adapter", "adapter %q is not an adapter of %q", req.Adapter, req.Model)
		}
	}
	j := &evalJob{ID: httpapi.NewID("eval-"), Object: "eval", Status: "running", Model: req.Model, CreatedAt: time.Now().Unix(), started: time.Now()}
	if req.Stages.MultiQuery < 0 || req.Stages.MultiQuery > 8 {
		return httpapi.BadRequest("stages.multi_query", "stages.multi_query must be between 0 and 8, got %d", req.Stages.MultiQuery)
	}
	if (req.Stages.Any() || req.Ablation) && req.Collection == "" {
		return httpapi.BadRequest("collection", "retrieval stages and the ablation need a collection")
	}
	opt := Options{Engine: lease.Engine, ModelName: req.Model, Collection: req.Collection, TopK: req.TopK, Concurrency: req.Concurrency,
		Stages: req.Stages, RerankModel: req.RerankModel, Ablation: req.Ablation,
		MaxTokens: req.MaxTokens, FutureQueries: req.FutureQueries, System: req.System, Retriever: s.Retriever}
	if opt.System == "" {
		opt.System = "Answer the question briefly."
	}
	if adLease != nil {
		opt.Adapter = adLease.Adapters[0].Name
	}
	j.Total = len(qs) * opt.Variants()
	opt.Progress = func(done, total int) {
		s.mu.Lock()
		j.Done, j.Total = done, total
		s.mu.Unlock()
	}
	// The job runs at once and its progress writes j under s.mu: answer
	// with a copy taken under the lock.
	s.mu.Lock()
	s.jobs[j.ID] = j
	created := *j
	s.mu.Unlock()
	go func() {
		defer lease.Release()
		if adLease != nil {
			defer adLease.Release()
		}
		rep, err := Run(context.Background(), qs, opt)
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			j.Status, j.Error = "failed", err.Error()
			s.Logger.Warn("evaluation failed", "id", j.ID, "err", err)
		} else {
			var md strings.Builder
			rep.Markdown(&md)
			j.Status, j.Report, j.Markdown = "succeeded", rep, md.String()
		}
		s.save(j)
	}()
	return httpapi.WriteJSON(w, http.StatusOK, &created)
}

// save keeps a finished evaluation (best effort: the report is also in
// memory until the server stops). The file is replaced atomically: a crash
// must not leave a torn report that later lists skip as unreadable.
func (s *Service) save(j *evalJob) {
	if s.Dir == "" {
		return
	}
	err := os.MkdirAll(s.Dir, 0o755)
	if err == nil {
		err = atomicfile.WriteJSON(filepath.Join(s.Dir, j.ID+".json"), j)
	}
	if err != nil {
		s.Logger.Warn("evaluation report not saved", "id", j.ID, "err", err)
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
	return httpapi.WriteJob(w, out, ok, s.Dir, id, "eval_not_found", "evaluation")
}

// list answers every evaluation, running and kept, newest first; reports
// come without their answers (GET /v1/evals/{id} has them).
func (s *Service) list(w http.ResponseWriter, r *http.Request) error {
	byID := map[string]evalJob{}
	if s.Dir != "" {
		ents, err := os.ReadDir(s.Dir)
		if err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("list evaluations: %w", err)
		}
		for _, e := range ents {
			id, ok := strings.CutSuffix(e.Name(), ".json")
			if !ok {
				continue
			}
			b, err := os.ReadFile(filepath.Join(s.Dir, e.Name()))
			var j evalJob
			if err != nil || json.Unmarshal(b, &j) != nil || j.ID != id {
				s.Logger.Warn("unreadable evaluation report skipped", "file", e.Name())
				continue
			}
			byID[id] = j
		}
	}
	s.mu.Lock()
	for id, j := range s.jobs {
		c := *j
		if c.Report != nil {
			rep := *c.Report
			c.Report = &rep
		}
		byID[id] = c
	}
	s.mu.Unlock()
	out := make([]evalJob, 0, len(byID))
	for _, j := range byID {
		if j.Report != nil {
			j.Report.Answers = nil
		}
		j.Markdown = ""
		out = append(out, j)
	}
	slices.SortFunc(out, func(a, b evalJob) int {
		if a.CreatedAt != b.CreatedAt {
			return int(b.CreatedAt - a.CreatedAt)
		}
		return strings.Compare(b.ID, a.ID)
	})
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"object": "list", "data": out})
}
