package finetune

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/llmrt/llmrt/internal/atomicfile"
	"github.com/llmrt/llmrt/lora"
	"github.com/llmrt/llmrt/runtime/httpapi"
	"github.com/llmrt/llmrt/runtime/registry"
	"github.com/llmrt/llmrt/runtime/sched"
)

// Config configures a Service.
type Config struct {
	// Dir holds files, jobs and their events.
	Dir string
	// AdapterDir receives the trained adapters.
	AdapterDir string
	// Registry serves finished jobs' adapters as ft:BASE:SUFFIX.
	Registry AdapterRegistrar
	// Resolve maps a base model name to its GGUF file.
	Resolve func(name string) (string, error)
	// Sched, when set, books each job's memory (Reserve) before it
	// trains; a job waits in its queue while the memory is taken.
	Sched *sched.Scheduler
	// BaseLR is multiplied by learning_rate_multiplier (default 2e-4).
	BaseLR  float64
	Threads int
	Logger  *slog.Logger
}

// Service runs fine-tuning jobs one at a time in the background.
type Service struct {
	cfg   Config
	st    *store
	log   *slog.Logger
	queue chan string
	stop  chan struct{}
	done  chan struct{}

	mu      sync.Mutex
	cancels map[string]context.CancelFunc
}

// Open loads the jobs in cfg.Dir, serves the adapters of finished ones,
// requeues the ones a restart interrupted (they resume from their
// checkpoint) and starts the worker.
func Open(cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BaseLR == 0 {
		cfg.BaseLR = 2e-4
	}
	for _, d := range []string{cfg.Dir, cfg.AdapterDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	s := &Service{cfg: cfg, st: &store{dir: cfg.Dir}, log: cfg.Logger, queue: make(chan string, 1024), stop: make(chan struct{}),
		done: make(chan struct{}), cancels: map[string]context.CancelFunc{}}
	jobs, err := s.st.jobs()
	if err != nil {
		return nil, err
	}
	// Oldest first, so requeued jobs keep their order.
	for i := len(jobs) - 1; i >= 0; i-- {
		j := jobs[i]
		switch j.Status {
		case "succeeded":
			if err := s.register(j); err != nil {
				s.log.Warn("fine-tuned model not served", "job", j.ID, "err", err)
			}
		case "validating_files", "queued", "running":
			j.Status = "queued"
			s.st.saveJob(j)
			s.event(j.ID, "info", "Job requeued after a server restart", nil)
			s.queue <- j.ID
		}
	}
	go s.worker()
	return s, nil
}

// Close stops the worker; a running job saves a checkpoint and is resumed
// on the next Open.
func (s *Service) Close() error {
	close(s.stop)
	s.mu.Lock()
	for _, c := range s.cancels {
		c()
	}
	s.mu.Unlock()
	<-s.done
	return nil
}

func (s *Service) event(jobID, level, msg string, data map[string]any) {
	typ := "message"
	if data != nil {
		typ = "metrics"
	}
	if err := s.st.addEvent(jobID, Event{ID: httpapi.NewID("ftevent-"), Object: "fine_tuning.job.event", CreatedAt: time.Now().Unix(),
		Level: level, Message: msg, Type: typ, Data: data}); err != nil {
		s.log.Warn("fine-tuning event lost", "job", jobID, "err", err)
	}
}

// adapterPath is a job's adapter file in the adapters folder: SUFFIX.gguf
// (so that `adapter ls` names it and BASE+SUFFIX serves it too), or
// JOBID.gguf for a job without a suffix and for jobs that were already
// training into JOBID.gguf.
func (s *Service) adapterPath(j *Job) string {
	byID := filepath.Join(s.cfg.AdapterDir, j.ID+".gguf")
	if j.Suffix == "" {
		return byID
	}
	for _, p := range []string{byID, lora.CheckpointPath(byID)} {
		if _, err := os.Stat(p); err == nil {
			return byID
		}
	}
	return filepath.Join(s.cfg.AdapterDir, j.Suffix+".gguf")
}

// register serves a finished job's adapter under its ft: name.
func (s *Service) register(j *Job) error {
	if j.FineTunedModel == nil {
		return errors.New("no fine-tuned model name")
	}
	if s.cfg.Registry == nil {
		return nil
	}
	a := registry.AdapterInfo{Name: *j.FineTunedModel, Base: j.Model, Path: s.adapterPath(j)}
	if j.FinishedAt != nil {
		a.Created = time.Unix(*j.FinishedAt, 0)
	}
	return s.cfg.Registry.AddAdapter(a)
}

func (s *Service) worker() {
	defer close(s.done)
	for {
		select {
		case <-s.stop:
			return
		case id := <-s.queue:
			s.run(id)
		}
	}
}

func number(v any, def float64) (float64, error) {
	switch x := v.(type) {
	case nil:
		return def, nil
	case string:
		if x == "auto" {
			return def, nil
		}
		return strconv.ParseFloat(x, 64)
	case float64:
		return x, nil
	}
	return 0, fmt.Errorf("not a number: %v", v)
}

func (s *Service) fail(j *Job, code, msg string) {
	now := time.Now().Unix()
	j.Status, j.FinishedAt, j.Error = "failed", &now, &JobError{Code: code, Message: msg}
	s.st.saveJob(j)
	s.event(j.ID, "error", "Fine-tuning job failed: "+msg, nil)
}

func (s *Service) run(id string) {
	j, err := s.st.job(id)
	if err != nil || j.Status != "queued" {
		return // cancelled while queued, or gone
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.cancels[id] = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.cancels, id)
		s.mu.Unlock()
		cancel()
	}()
	basePath, err := s.cfg.Resolve(j.Model)
	if err != nil {
		s.fail(j, "invalid_model", err.Error())
		return
	}
	epochs, _ := number(j.Hyperparameters.NEpochs, 3)
	batch, _ := number(j.Hyperparameters.BatchSize, 1)
	mult, _ := number(j.Hyperparameters.LearningRateMultiplier, 1)
	spec := Spec{BasePath: basePath, BaseName: j.Model, Data: s.st.filePath(j.TrainingFile), Out: s.adapterPath(j),
		Epochs: int(epochs), Batch: int(batch), LR: s.cfg.BaseLR * mult, Seed: uint64(j.Seed), Threads: s.cfg.Threads,
		Targets: AllLinearTargets, Rank: 16, Alpha: 32, Schedule: "cosine", Ctx: 512, CheckpointEvery: 10,
		Meta: map[string]string{"llmrt.job": j.ID, "llmrt.fine_tuned_model": *j.FineTunedModel}}
	if j.ValidationFile != nil {
		spec.EvalData = s.st.filePath(*j.ValidationFile)
	}
	jm, err := methodOf(j)
	if err != nil {
		s.fail(j, "invalid_method", err.Error())
		return
	}
	spec.Method, spec.Beta, spec.SFTWeight = jm.Type, jm.Beta, jm.SFTWeight
	if _, err := os.Stat(lora.CheckpointPath(spec.Out)); err == nil {
		spec.Resume = true
	}
	if s.cfg.Sched != nil {
		res, err := Reserve(ctx, s.cfg.Sched, sched.Owner{Kind: "job", ID: j.ID}, spec)
		if err != nil {
			s.fail(j, "insufficient_memory", err.Error())
			return
		}
		defer res.Release()
	}
	// A cancel between dequeuing and here wins.
	s.mu.Lock()
	if cur, _ := s.st.job(id); cur == nil || cur.Status != "queued" {
		s.mu.Unlock()
		return
	}
	j.Status = "running"
	s.st.saveJob(j)
	s.mu.Unlock()
	if spec.Resume {
		s.event(j.ID, "info", "Fine-tuning job resumed from its checkpoint", nil)
	} else {
		s.event(j.ID, "info", "Fine-tuning job started", nil)
	}
	var warned int
	sum, err := Train(ctx, spec, Hooks{
		Logger: s.log,
		Warn: func(w error) {
			if warned++; warned <= 20 {
				s.event(j.ID, "warn", fmt.Sprintf("Skipped %v", w), nil)
			}
		},
		Progress: func(p lora.Progress) {
			data := map[string]any{"step": p.Step, "total_steps": p.TotalSteps, "train_loss": p.Loss}
			msg := fmt.Sprintf("Step %d/%d: training loss=%.4f", p.Step, p.TotalSteps, p.Loss)
			if pr := p.Preference; pr != nil {
				data["reward_margin"], data["reward_accuracy"] = pr.Margin, pr.Accuracy
				msg += fmt.Sprintf(", reward margin=%.4f, reward accuracy=%.2f", pr.Margin, pr.Accuracy)
			}
			if p.EvalLoss > 0 {
				data["valid_loss"] = p.EvalLoss
				msg += fmt.Sprintf(", validation loss=%.4f", p.EvalLoss)
			}
			s.event(j.ID, "info", msg, data)
			if p.ETA > 0 {
				eta := time.Now().Add(p.ETA).Unix()
				j.EstimatedFinish = &eta
			}
		},
	})
	now := time.Now().Unix()
	select {
	case <-s.stop:
		// Shutting down: leave it queued; Open resumes it.
		j.Status = "queued"
		s.st.saveJob(j)
		return
	default:
	}
	if ctx.Err() != nil {
		if cur, _ := s.st.job(id); cur != nil && cur.Status == "cancelled" {
			return
		}
	}
	if err != nil {
		s.fail(j, "training_failed", err.Error())
		return
	}
	tokens := sum.TrainTokens * max(1, int(math.Round(epochs)))
	j.Status, j.FinishedAt, j.TrainedTokens, j.EstimatedFinish = "succeeded", &now, &tokens, nil
	if err := s.register(j); err != nil {
		s.fail(j, "serve_failed", err.Error())
		return
	}
	s.st.saveJob(j)
	s.event(j.ID, "info", "New fine-tuned model created: "+*j.FineTunedModel, nil)
	s.event(j.ID, "info", "The job has successfully completed", nil)
}

var suffixRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

type createRequest struct {
	Model           string          `json:"model"`
	TrainingFile    string          `json:"training_file"`
	ValidationFile  *string         `json:"validation_file"`
	Hyperparameters Hyperparameters `json:"hyperparameters"`
	Suffix          *string         `json:"suffix"`
	Seed            *int64          `json:"seed"`
	Method          map[string]any  `json:"method"`
}

// Router registers routes with the HTTP layer (runtime/server's Server):
// auth, limits, metrics and OpenAI-shaped errors come with it.
type Router interface {
	Handle(pattern, endpoint string, h func(http.ResponseWriter, *http.Request) error)
	HandleUpload(pattern, endpoint string, h func(http.ResponseWriter, *http.Request) error)
}

// AdapterRegistrar serves finished adapters (runtime/registry's Registry).
type AdapterRegistrar interface {
	AddAdapter(a registry.AdapterInfo) error
}

// Register adds the files and fine-tuning routes to srv.
func (s *Service) Register(srv Router) {
	srv.HandleUpload("POST /v1/files", "files", s.uploadFile)
	srv.Handle("GET /v1/files", "files", s.listFiles)
	srv.Handle("GET /v1/files/{id}", "files", s.getFile)
	srv.Handle("GET /v1/files/{id}/content", "files", s.fileContent)
	srv.Handle("DELETE /v1/files/{id}", "files", s.deleteFile)
	srv.Handle("POST /v1/fine_tuning/jobs", "fine_tuning", s.createJob)
	srv.Handle("GET /v1/fine_tuning/jobs", "fine_tuning", s.listJobs)
	srv.Handle("GET /v1/fine_tuning/jobs/{id}", "fine_tuning", s.getJob)
	srv.Handle("GET /v1/fine_tuning/jobs/{id}/events", "fine_tuning", s.listEvents)
	srv.Handle("POST /v1/fine_tuning/jobs/{id}/cancel", "fine_tuning", s.cancelJob)
	srv.Handle("GET /v1/fine_tuning/jobs/{id}/adapter", "fine_tuning", s.downloadAdapter)
}

func (s *Service) uploadFile(w http.ResponseWriter, r *http.Request) error {
	mr, err := r.MultipartReader()
	if err != nil {
		return httpapi.BadRequest("file", "expected a multipart/form-data upload with fields file and purpose: %v", err)
	}
	purpose := ""
	var f File
	got := false
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		switch p.FormName() {
		case "purpose":
			b := make([]byte, 64)
			n, _ := p.Read(b)
			purpose = string(b[:n])
		case "file":
			if purpose == "" {
				purpose = "fine-tune" // the SDK sends purpose first; tolerate other orders
			}
			if f, err = s.st.saveFile(p.FileName(), purpose, p); err != nil {
				if errors.Is(err, ErrBadFile) {
					return httpapi.BadRequest("file", "%v", err)
				}
				return err
			}
			got = true
		}
	}
	if !got {
		return httpapi.BadRequest("file", "no file in the upload")
	}
	if purpose != f.Purpose {
		f.Purpose = purpose
		atomicfile.WriteJSON(filepath.Join(s.st.filesDir(), f.ID+".json"), f)
	}
	return httpapi.WriteJSON(w, http.StatusOK, f)
}

func (s *Service) listFiles(w http.ResponseWriter, r *http.Request) error {
	fs, err := s.st.files()
	if err != nil {
		return err
	}
	if fs == nil {
		fs = []File{}
	}
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"object": "list", "data": fs, "has_more": false})
}

func (s *Service) getFile(w http.ResponseWriter, r *http.Request) error {
	f, err := s.st.file(r.PathValue("id"))
	if err != nil {
		return httpapi.NotFound("file_not_found", "no file %q", r.PathValue("id"))
	}
	return httpapi.WriteJSON(w, http.StatusOK, f)
}

func (s *Service) fileContent(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.st.file(id); err != nil {
		return httpapi.NotFound("file_not_found", "no file %q", id)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeFile(w, r, s.st.filePath(id))
	return nil
}

func (s *Service) deleteFile(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := s.st.deleteFile(id); err != nil {
		return httpapi.NotFound("file_not_found", "no file %q", id)
	}
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"id": id, "object": "file", "deleted": true})
}

func (s *Service) createJob(w http.ResponseWriter, r *http.Request) error {
	var req createRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if req.Model == "" {
		return httpapi.BadRequest("model", "model is required")
	}
	if _, err := s.cfg.Resolve(req.Model); err != nil {
		return httpapi.NotFound("model_not_found", "model %q not found: %v", req.Model, err)
	}
	if _, err := s.st.file(req.TrainingFile); err != nil {
		return httpapi.BadRequest("training_file", "no file %q", req.TrainingFile)
	}
	if req.ValidationFile != nil {
		if _, err := s.st.file(*req.ValidationFile); err != nil {
			return httpapi.BadRequest("validation_file", "no file %q", *req.ValidationFile)
		}
	}
	jm, err := parseMethod(req.Method, &req.Hyperparameters)
	if err != nil {
		return err
	}
	for name, v := range map[string]any{"n_epochs": req.Hyperparameters.NEpochs, "batch_size": req.Hyperparameters.BatchSize,
		"learning_rate_multiplier": req.Hyperparameters.LearningRateMultiplier} {
		x, err := number(v, 1)
		if err != nil || x <= 0 || (name == "n_epochs" && x > 1000) {
			return httpapi.BadRequest("hyperparameters."+name, "hyperparameters.%s must be a positive number or \"auto\", got %v", name, v)
		}
	}
	j := &Job{ID: httpapi.NewID("ftjob-"), Object: "fine_tuning.job", Model: req.Model, CreatedAt: time.Now().Unix(), OrganizationID: "llmrt",
		ResultFiles: []string{}, Status: "queued", TrainingFile: req.TrainingFile, ValidationFile: req.ValidationFile,
		Hyperparameters: req.Hyperparameters, Integrations: []any{}}
	suffix := j.ID
	if req.Suffix != nil && *req.Suffix != "" {
		if !suffixRe.MatchString(*req.Suffix) || strings.HasPrefix(*req.Suffix, ".") || strings.HasSuffix(*req.Suffix, ".ckpt") {
			return httpapi.BadRequest("suffix", "suffix must be 1-64 letters, digits, '.', '_' or '-', not start with '.' nor end in .ckpt")
		}
		suffix = *req.Suffix
		j.Suffix = suffix
	}
	name := "ft:" + req.Model + ":" + suffix
	j.FineTunedModel = &name
	if req.Seed != nil {
		j.Seed = *req.Seed
	} else {
		j.Seed = time.Now().UnixNano() % 1e9
	}
	if epochs, _ := number(j.Hyperparameters.NEpochs, 3); j.Hyperparameters.NEpochs == nil || j.Hyperparameters.NEpochs == "auto" {
		j.Hyperparameters.NEpochs = epochs
	}
	if j.Hyperparameters.BatchSize == nil || j.Hyperparameters.BatchSize == "auto" {
		j.Hyperparameters.BatchSize = 1
	}
	if j.Hyperparameters.LearningRateMultiplier == nil || j.Hyperparameters.LearningRateMultiplier == "auto" {
		j.Hyperparameters.LearningRateMultiplier = 1.0
	}
	j.Method = jm.shape(j.Hyperparameters)
	// The ft: name and the adapter file SUFFIX.gguf are taken once a job
	// succeeds; refuse a duplicate now, and never overwrite an adapter.
	if jobs, _ := s.st.jobs(); jobs != nil {
		for _, o := range jobs {
			live := o.Status != "failed" && o.Status != "cancelled"
			if live && ((o.FineTunedModel != nil && *o.FineTunedModel == name) || (j.Suffix != "" && o.Suffix == j.Suffix)) {
				return httpapi.Conflict("suffix_in_use", "job %s already makes the adapter %s: choose another suffix", o.ID, suffix)
			}
		}
	}
	if j.Suffix != "" {
		p := filepath.Join(s.cfg.AdapterDir, j.Suffix+".gguf")
		for _, f := range []string{p, lora.CheckpointPath(p)} {
			if _, err := os.Stat(f); err == nil {
				return httpapi.Conflict("suffix_in_use", "the adapters folder already holds %s: choose another suffix (or remove the file)", filepath.Base(f))
			}
		}
	}
	if err := s.st.saveJob(j); err != nil {
		return err
	}
	s.event(j.ID, "info", "Created fine-tuning job: "+j.ID, nil)
	select {
	case s.queue <- j.ID:
	default:
		s.fail(j, "queue_full", "too many queued jobs")
	}
	return httpapi.WriteJSON(w, http.StatusOK, j)
}

// writePage answers one page of items (newest first) in OpenAI's list
// shape, after the item whose id is ?after= and at most ?limit= long.
func writePage[T any](w http.ResponseWriter, r *http.Request, items []T, id func(T) string) error {
	limit := 20
	if v, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && v > 0 && v <= 100 {
		limit = v
	}
	if after := r.URL.Query().Get("after"); after != "" {
		for i, it := range items {
			if id(it) == after {
				items = items[i+1:]
				break
			}
		}
	}
	more := len(items) > limit
	if more {
		items = items[:limit]
	}
	if items == nil {
		items = []T{}
	}
	return httpapi.WriteJSON(w, http.StatusOK, map[string]any{"object": "list", "data": items, "has_more": more})
}

func (s *Service) listJobs(w http.ResponseWriter, r *http.Request) error {
	jobs, err := s.st.jobs()
	if err != nil {
		return err
	}
	return writePage(w, r, jobs, func(j *Job) string { return j.ID })
}

func (s *Service) getJob(w http.ResponseWriter, r *http.Request) error {
	j, err := s.st.job(r.PathValue("id"))
	if err != nil {
		return httpapi.NotFound("job_not_found", "no fine-tuning job %q", r.PathValue("id"))
	}
	return httpapi.WriteJSON(w, http.StatusOK, j)
}

func (s *Service) listEvents(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, err := s.st.job(id); err != nil {
		return httpapi.NotFound("job_not_found", "no fine-tuning job %q", id)
	}
	evs, err := s.st.events(id)
	if err != nil {
		return err
	}
	return writePage(w, r, evs, func(e Event) string { return e.ID })
}

func (s *Service) cancelJob(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	s.mu.Lock()
	defer s.mu.Unlock()
	j, err := s.st.job(id)
	if err != nil {
		return httpapi.NotFound("job_not_found", "no fine-tuning job %q", id)
	}
	switch j.Status {
	case "succeeded", "failed", "cancelled":
		return httpapi.BadRequest("", "job %s has already %s", id, j.Status)
	}
	now := time.Now().Unix()
	j.Status, j.FinishedAt = "cancelled", &now
	if err := s.st.saveJob(j); err != nil {
		return err
	}
	if c := s.cancels[id]; c != nil {
		c()
	}
	s.event(id, "info", "Fine-tuning job cancelled", nil)
	return httpapi.WriteJSON(w, http.StatusOK, j)
}
