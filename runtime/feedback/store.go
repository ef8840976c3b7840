// Package feedback keeps what llmrt served and what people and a judge
// model said about it: served completions (the request, the answers, the
// model and adapter) for a bounded retention, and feedback attached to
// them by id — a rating (good/bad, optional score), a corrected answer, or
// a preference between two answers. Feedback is appended to a JSONL file
// and survives restarts; each entry carries a copy of the completion it is
// about, so it stays usable after the completion expires. Corrections
// become supervised examples and preferences (with corrections as
// preferences over the served answer) DPO pairs (export.go).
package feedback

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/llmrt/llmrt/internal/atomicfile"
	"github.com/llmrt/llmrt/runtime/httpapi"
)

func newID() string { return httpapi.NewID("fb-") }

// Message is a chat turn of a served prompt.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Completion is a served completion as the server recorded it.
type Completion struct {
	ID       string          `json:"id"`
	Created  int64           `json:"created"`
	Kind     string          `json:"kind"` // "chat" or "text"
	Model    string          `json:"model"`
	Base     string          `json:"base"`
	Adapters []string        `json:"adapters,omitempty"`
	Messages []Message       `json:"messages,omitempty"` // a chat completion's prompt
	Prompt   string          `json:"prompt,omitempty"`   // a text completion's prompt
	Choices  []string        `json:"choices"`            // the answers served, by choice index
	Request  json.RawMessage `json:"request,omitempty"`  // the request as received
}

// samePrompt says whether two completions answered the same prompt.
func (c *Completion) samePrompt(o *Completion) bool {
	if c.Kind != o.Kind || c.Prompt != o.Prompt || len(c.Messages) != len(o.Messages) {
		return false
	}
	for i := range c.Messages {
		if c.Messages[i] != o.Messages[i] {
			return false
		}
	}
	return true
}

// Feedback types and sources.
const (
	TypeRating     = "rating"
	TypeCorrection = "correction"
	TypePreference = "preference"
	SourceHuman    = "human"
	SourceAI       = "ai"
)

// Ref names one answer: a completion and its choice index.
type Ref struct {
	CompletionID string `json:"completion_id"`
	Choice       int    `json:"choice"`
}

// JudgeRecord is how a judge model reached its score.
type JudgeRecord struct {
	Model  string    `json:"model"`
	Prompt []Message `json:"prompt"`
	Output string    `json:"output"`
}

// Feedback is one piece of feedback. Rating and correction are about the
// answer Ref; a preference is between Chosen and Rejected (two choices of
// one completion, or answers of two completions of the same prompt).
type Feedback struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // "feedback"
	Created int64  `json:"created"`
	Type    string `json:"type"`
	Source  string `json:"source"`

	Ref
	Rating     string   `json:"rating,omitempty"` // "good" or "bad"
	Score      *float64 `json:"score,omitempty"`
	Correction string   `json:"correction,omitempty"`
	Comment    string   `json:"comment,omitempty"`

	Chosen   *Ref `json:"chosen,omitempty"`
	Rejected *Ref `json:"rejected,omitempty"`

	Judge *JudgeRecord `json:"judge,omitempty"`

	// The completions the feedback is about, as served.
	Completion *Completion `json:"completion"`
	Other      *Completion `json:"other_completion,omitempty"`
}

// answer returns the text of r among the feedback's completions.
func (f *Feedback) answer(r Ref) (string, *Completion) {
	for _, c := range []*Completion{f.Completion, f.Other} {
		if c != nil && c.ID == r.CompletionID && r.Choice >= 0 && r.Choice < len(c.Choices) {
			return c.Choices[r.Choice], c
		}
	}
	return "", nil
}

// Options configure a Store.
type Options struct {
	// Dir holds completions/ and feedback.jsonl.
	Dir string
	// MaxCompletions and MaxAge bound how many served completions are
	// kept and for how long (defaults 10000 and 30 days); feedback is kept.
	MaxCompletions int
	MaxAge         time.Duration
	Logger         *slog.Logger
}

// Store is the on-disk feedback store. It is safe for concurrent use.
type Store struct {
	opt Options

	mu      sync.Mutex
	fb      []Feedback
	f       *os.File
	records int // completions recorded since the last prune

	judgeQ    chan string // background judging (StartJudge)
	judgeStop context.CancelFunc
	judgeDone chan struct{}
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// ErrNotFound is returned for an unknown or expired completion.
var ErrNotFound = errors.New("not found")

// Open loads the feedback in opt.Dir (creating it) and prunes expired
// completions. A last line cut short by a crash is dropped.
func Open(opt Options) (*Store, error) {
	if opt.MaxCompletions <= 0 {
		opt.MaxCompletions = 10000
	}
	if opt.MaxAge <= 0 {
		opt.MaxAge = 30 * 24 * time.Hour
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Join(opt.Dir, "completions"), 0o755); err != nil {
		return nil, fmt.Errorf("feedback: %w", err)
	}
	s := &Store{opt: opt}
	path := s.feedbackPath()
	fb, keep, err := readFeedback(path)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(path); err == nil && st.Size() != keep {
		opt.Logger.Warn("feedback: dropping a last line cut short", "file", path, "bytes", st.Size()-keep)
		if err := os.Truncate(path, keep); err != nil {
			return nil, fmt.Errorf("feedback: %w", err)
		}
	}
	s.fb = fb
	if s.f, err = os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
		return nil, fmt.Errorf("feedback: %w", err)
	}
	if err := s.prune(); err != nil {
		opt.Logger.Warn("feedback: pruning completions failed", "err", err)
	}
	return s, nil
}

func (s *Store) feedbackPath() string { return filepath.Join(s.opt.Dir, "feedback.jsonl") }

func (s *Store) completionPath(id string) string {
	return filepath.Join(s.opt.Dir, "completions", id+".json")
}

// readFeedback parses a feedback file and returns the entries and the
// length of its whole lines (a crash may leave a partial last line).
func readFeedback(path string) ([]Feedback, int64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("feedback: %w", err)
	}
	keep := int64(bytes.LastIndexByte(b, '\n') + 1)
	var out []Feedback
	for i, line := range strings.Split(string(b[:keep]), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var f Feedback
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			return nil, 0, fmt.Errorf("feedback %s:%d: %w", path, i+1, err)
		}
		out = append(out, f)
	}
	return out, keep, nil
}

// ReadFile reads the feedback of a store directory, or a feedback JSONL
// file (feedback.jsonl, or GET /v1/feedback/export?format=raw saved), without
// opening the store.
func ReadFile(path string) ([]Feedback, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "feedback.jsonl")
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("feedback: %w", err)
	}
	fb, _, err := readFeedback(path)
	return fb, err
}

// Read parses feedback JSONL (as ReadFile does a file).
func Read(r io.Reader) ([]Feedback, error) {
	var out []Feedback
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var f Feedback
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			return nil, fmt.Errorf("feedback line %d: %w", line, err)
		}
		out = append(out, f)
	}
	return out, sc.Err()
}

// Record keeps a served completion (written atomically under its id).
func (s *Store) Record(c Completion) error {
	if !idRe.MatchString(c.ID) {
		return fmt.Errorf("feedback: bad completion id %q", c.ID)
	}
	if c.Created == 0 {
		c.Created = time.Now().Unix()
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(s.completionPath(c.ID), b); err != nil {
		return fmt.Errorf("feedback: %w", err)
	}
	s.mu.Lock()
	s.records++
	due := s.records >= 64
	if due {
		s.records = 0
	}
	s.mu.Unlock()
	s.enqueueJudge(c.ID)
	if due {
		return s.prune()
	}
	return nil
}

// Completion returns a recorded completion.
func (s *Store) Completion(id string) (*Completion, error) {
	if !idRe.MatchString(id) {
		return nil, fmt.Errorf("completion %q: %w", id, ErrNotFound)
	}
	b, err := os.ReadFile(s.completionPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("completion %q: %w (unknown, or older than the retention)", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("feedback: %w", err)
	}
	var c Completion
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("completion %q: %w", id, err)
	}
	return &c, nil
}

// prune removes completions older than MaxAge and the oldest beyond
// MaxCompletions.
func (s *Store) prune() error {
	dir := filepath.Join(s.opt.Dir, "completions")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	type item struct {
		name string
		mod  time.Time
	}
	var items []item
	cut := time.Now().Add(-s.opt.MaxAge)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if info.ModTime().Before(cut) {
			os.Remove(filepath.Join(dir, e.Name()))
			continue
		}
		items = append(items, item{e.Name(), info.ModTime()})
	}
	if len(items) <= s.opt.MaxCompletions {
		return nil
	}
	sort.Slice(items, func(i, j int) bool { return items[i].mod.Before(items[j].mod) })
	for _, it := range items[:len(items)-s.opt.MaxCompletions] {
		os.Remove(filepath.Join(dir, it.name))
	}
	return nil
}

// Add validates f, attaches copies of the completions it is about, and
// appends it (synced) to the feedback file. It returns the stored entry.
func (s *Store) Add(f Feedback) (Feedback, error) {
	if f.Source == "" {
		f.Source = SourceHuman
	}
	if f.Source != SourceHuman && f.Source != SourceAI {
		return f, &InputError{Field: "source", Msg: fmt.Sprintf("source must be %q or %q, got %q", SourceHuman, SourceAI, f.Source)}
	}
	if err := s.attach(&f); err != nil {
		return f, err
	}
	f.ID = newID()
	f.Object = "feedback"
	if f.Created == 0 {
		f.Created = time.Now().Unix()
	}
	b, err := json.Marshal(f)
	if err != nil {
		return f, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return f, errors.New("feedback: store is closed")
	}
	if _, err := s.f.Write(append(b, '\n')); err != nil {
		return f, fmt.Errorf("feedback: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return f, fmt.Errorf("feedback: %w", err)
	}
	s.fb = append(s.fb, f)
	return f, nil
}

// InputError is feedback that cannot be accepted; Field names the
// offending field.
type InputError struct {
	Field, Msg string
	NotFound   bool // the completion it names is unknown or expired
}

func (e *InputError) Error() string { return e.Msg }

// attach checks the feedback's fields against its type and copies in the
// completions it refers to.
func (s *Store) attach(f *Feedback) error {
	load := func(field string, r Ref) (*Completion, error) {
		if r.CompletionID == "" {
			return nil, &InputError{Field: field + ".completion_id", Msg: "completion_id is required"}
		}
		c, err := s.Completion(r.CompletionID)
		if err != nil {
			return nil, &InputError{field + ".completion_id", err.Error(), errors.Is(err, ErrNotFound)}
		}
		if r.Choice < 0 || r.Choice >= len(c.Choices) {
			return nil, &InputError{Field: field + ".choice", Msg: fmt.Sprintf("completion %s has %d choices, not %d", c.ID, len(c.Choices), r.Choice+1)}
		}
		return c, nil
	}
	if f.Score != nil && (*f.Score != *f.Score || *f.Score < -1e6 || *f.Score > 1e6) {
		return &InputError{Field: "score", Msg: "score must be a finite number"}
	}
	switch f.Type {
	case TypeRating:
		if f.Rating != "good" && f.Rating != "bad" && f.Score == nil {
			return &InputError{Field: "rating", Msg: `a rating needs "rating": "good" or "bad", or a "score"`}
		}
		if f.Rating != "" && f.Rating != "good" && f.Rating != "bad" {
			return &InputError{Field: "rating", Msg: fmt.Sprintf(`rating must be "good" or "bad", got %q`, f.Rating)}
		}
	case TypeCorrection:
		if strings.TrimSpace(f.Correction) == "" {
			return &InputError{Field: "correction", Msg: "a correction needs the corrected answer in \"correction\""}
		}
	case TypePreference:
		if f.Chosen == nil || f.Rejected == nil {
			return &InputError{Field: "chosen", Msg: `a preference needs "chosen" and "rejected", each {"completion_id", "choice"}`}
		}
		if *f.Chosen == *f.Rejected {
			return &InputError{Field: "rejected", Msg: "chosen and rejected are the same answer"}
		}
		a, err := load("chosen", *f.Chosen)
		if err != nil {
			return err
		}
		b, err := load("rejected", *f.Rejected)
		if err != nil {
			return err
		}
		if !a.samePrompt(b) {
			return &InputError{Field: "rejected", Msg: fmt.Sprintf("completions %s and %s answer different prompts", a.ID, b.ID)}
		}
		f.Ref = *f.Chosen
		f.Completion = a
		if b.ID != a.ID {
			f.Other = b
		}
		return nil
	case "":
		return &InputError{Field: "type", Msg: `type is required: "rating", "correction" or "preference"`}
	default:
		return &InputError{Field: "type", Msg: fmt.Sprintf(`unknown type %q ("rating", "correction" or "preference")`, f.Type)}
	}
	c, err := load("", f.Ref)
	if err != nil {
		var ie *InputError
		if errors.As(err, &ie) {
			ie.Field = strings.TrimPrefix(ie.Field, ".")
		}
		return err
	}
	f.Completion = c
	return nil
}

// Filter selects feedback in List.
type Filter struct {
	CompletionID string
	Type         string
	Source       string
	Base         string // the base model the completions were served by
	Since        int64  // created at or after (unix seconds)
}

func (fl Filter) match(f *Feedback) bool {
	switch {
	case fl.CompletionID != "" && f.CompletionID != fl.CompletionID && (f.Other == nil || f.Other.ID != fl.CompletionID):
		return false
	case fl.Type != "" && f.Type != fl.Type:
		return false
	case fl.Source != "" && f.Source != fl.Source:
		return false
	case fl.Base != "" && (f.Completion == nil || f.Completion.Base != fl.Base):
		return false
	case f.Created < fl.Since:
		return false
	}
	return true
}

// List returns the feedback that matches fl, oldest first.
func (s *Store) List(fl Filter) []Feedback {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Select(s.fb, fl)
}

// Select filters feedback read with ReadFile or Read.
func Select(fbs []Feedback, fl Filter) []Feedback {
	var out []Feedback
	for i := range fbs {
		if fl.match(&fbs[i]) {
			out = append(out, fbs[i])
		}
	}
	return out
}

// Close stops the background judge and closes the feedback file.
func (s *Store) Close() error {
	s.mu.Lock()
	stop, done := s.judgeStop, s.judgeDone
	s.judgeQ, s.judgeStop = nil, nil
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
