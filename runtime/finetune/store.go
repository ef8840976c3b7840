package finetune

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/llmrt/llmrt/internal/atomicfile"
	"github.com/llmrt/llmrt/runtime/httpapi"
)

// File is an uploaded file in OpenAI's shape.
type File struct {
	ID        string `json:"id"`
	Object    string `json:"object"` // "file"
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"` // "processed"
}

// Hyperparameters are a job's settings; OpenAI sends numbers or "auto".
type Hyperparameters struct {
	NEpochs                any `json:"n_epochs"`
	BatchSize              any `json:"batch_size"`
	LearningRateMultiplier any `json:"learning_rate_multiplier"`
}

// JobError says why a job failed.
type JobError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
}

// Job is a fine-tuning job in OpenAI's shape.
type Job struct {
	ID              string          `json:"id"`
	Object          string          `json:"object"` // "fine_tuning.job"
	Model           string          `json:"model"`
	CreatedAt       int64           `json:"created_at"`
	FinishedAt      *int64          `json:"finished_at"`
	FineTunedModel  *string         `json:"fine_tuned_model"`
	OrganizationID  string          `json:"organization_id"`
	ResultFiles     []string        `json:"result_files"`
	Status          string          `json:"status"` // validating_files, queued, running, succeeded, failed, cancelled
	TrainingFile    string          `json:"training_file"`
	ValidationFile  *string         `json:"validation_file"`
	Hyperparameters Hyperparameters `json:"hyperparameters"`
	TrainedTokens   *int            `json:"trained_tokens"`
	Error           *JobError       `json:"error"`
	Seed            int64           `json:"seed"`
	Suffix          string          `json:"user_provided_suffix,omitempty"`
	EstimatedFinish *int64          `json:"estimated_finish"`
	Integrations    []any           `json:"integrations"`
	Method          map[string]any  `json:"method,omitempty"`
}

// Event is a line of a job's log in OpenAI's shape.
type Event struct {
	ID        string         `json:"id"`
	Object    string         `json:"object"` // "fine_tuning.job.event"
	CreatedAt int64          `json:"created_at"`
	Level     string         `json:"level"` // info, warn, error
	Message   string         `json:"message"`
	Type      string         `json:"type"` // message, metrics
	Data      map[string]any `json:"data,omitempty"`
}

// store keeps files, jobs and events under one directory:
//
//	files/ID.json, files/ID.data   uploaded files
//	jobs/ID.json                   the job (rewritten atomically on change)
//	jobs/ID.events.jsonl           its events, appended
type store struct {
	dir string
	mu  sync.Mutex
}

func (s *store) filesDir() string { return filepath.Join(s.dir, "files") }
func (s *store) jobsDir() string  { return filepath.Join(s.dir, "jobs") }

func validID(id string) bool {
	return id != "" && len(id) < 100 && !strings.ContainsAny(id, "/\\.") && strings.TrimSpace(id) == id
}

// saveFile stores an upload. Fine-tune files must be JSONL objects: a
// line that is not is rejected with its number.
func (s *store) saveFile(name, purpose string, r io.Reader) (File, error) {
	if err := os.MkdirAll(s.filesDir(), 0o755); err != nil {
		return File{}, err
	}
	f := File{ID: httpapi.NewID("file-"), Object: "file", CreatedAt: time.Now().Unix(), Filename: filepath.Base(name), Purpose: purpose, Status: "processed"}
	data := filepath.Join(s.filesDir(), f.ID+".data")
	tmp := data + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return File{}, err
	}
	n, err := io.Copy(out, r)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && purpose == "fine-tune" {
		err = checkJSONL(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, data)
	}
	if err != nil {
		os.Remove(tmp)
		return File{}, err
	}
	f.Bytes = n
	if err := atomicfile.WriteJSON(filepath.Join(s.filesDir(), f.ID+".json"), f); err != nil {
		os.Remove(data)
		return File{}, err
	}
	return f, nil
}

// ErrBadFile is a fine-tune file that is not JSONL.
var ErrBadFile = errors.New("invalid training file")

// maxBadLines is how many bad lines an upload's error lists.
const maxBadLines = 20

func checkJSONL(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	line, n, bad := 0, 0, 0
	var msgs []string
	for sc.Scan() {
		line++
		b := strings.TrimSpace(sc.Text())
		if b == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(b), &m); err != nil {
			if bad++; bad <= maxBadLines {
				msgs = append(msgs, fmt.Sprintf("line %d is not a JSON object: %v", line, err))
			}
			continue
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: line %d: %v", ErrBadFile, line+1, err)
	}
	if bad > 0 {
		if bad > maxBadLines {
			msgs = append(msgs, fmt.Sprintf("and %d more", bad-maxBadLines))
		}
		return fmt.Errorf("%w: %d of %d lines are bad:\n%s", ErrBadFile, bad, n+bad, strings.Join(msgs, "\n"))
	}
	if n == 0 {
		return fmt.Errorf("%w: the file has no examples", ErrBadFile)
	}
	return nil
}

func (s *store) file(id string) (File, error) {
	var f File
	if !validID(id) {
		return f, os.ErrNotExist
	}
	b, err := os.ReadFile(filepath.Join(s.filesDir(), id+".json"))
	if err != nil {
		return f, err
	}
	return f, json.Unmarshal(b, &f)
}

func (s *store) filePath(id string) string { return filepath.Join(s.filesDir(), id+".data") }

func (s *store) files() ([]File, error) {
	ents, err := os.ReadDir(s.filesDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var out []File
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			if f, err := s.file(id); err == nil {
				out = append(out, f)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt > out[j].CreatedAt })
	return out, err
}

func (s *store) deleteFile(id string) error {
	if _, err := s.file(id); err != nil {
		return err
	}
	os.Remove(s.filePath(id))
	return os.Remove(filepath.Join(s.filesDir(), id+".json"))
}

func (s *store) saveJob(j *Job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.MkdirAll(s.jobsDir(), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteJSON(filepath.Join(s.jobsDir(), j.ID+".json"), j)
}

func (s *store) job(id string) (*Job, error) {
	if !validID(id) {
		return nil, os.ErrNotExist
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := os.ReadFile(filepath.Join(s.jobsDir(), id+".json"))
	if err != nil {
		return nil, err
	}
	var j Job
	return &j, json.Unmarshal(b, &j)
}

func (s *store) jobs() ([]*Job, error) {
	ents, err := os.ReadDir(s.jobsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var out []*Job
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			if j, err := s.job(id); err == nil {
				out = append(out, j)
			}
		}
	}
	sort.Slice(out, func(i, k int) bool {
		if out[i].CreatedAt != out[k].CreatedAt {
			return out[i].CreatedAt > out[k].CreatedAt
		}
		return out[i].ID > out[k].ID
	})
	return out, err
}

func (s *store) addEvent(jobID string, ev Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.MkdirAll(s.jobsDir(), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(s.jobsDir(), jobID+".events.jsonl"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	return err
}

// events returns a job's events, newest first.
func (s *store) events(jobID string) ([]Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.Open(filepath.Join(s.jobsDir(), jobID+".events.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev Event
		if json.Unmarshal(sc.Bytes(), &ev) == nil { // a torn last line is skipped
			out = append(out, ev)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, sc.Err()
}
