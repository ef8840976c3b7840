package feedback

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Generator runs a chat prompt through a model; grammar (GBNF, "" for
// none) constrains the output. cmd/llmrt wires it to the model registry.
type Generator interface {
	Generate(ctx context.Context, model string, msgs []Message, grammar string, maxTokens int) (string, error)
}

// DefaultInstructions is the judge's system prompt.
const DefaultInstructions = "You are a strict, fair judge of an AI assistant's answers. Read the conversation and the answer, " +
	"then rate how helpful, correct and well written the answer is, from 1 (useless or wrong) to 10 (excellent). " +
	"Reply with the number only."

// scoreGrammar makes any model answer with a score from 1 to 10.
const scoreGrammar = `root ::= [1-9] | "10"`

// Judge scores served answers with a model.
type Judge struct {
	Model        string
	Gen          Generator
	Instructions string // system prompt (DefaultInstructions when empty)
}

// Prompt is the judge's prompt for one answer of c (recorded with its score).
func (j *Judge) Prompt(c *Completion, choice int) []Message {
	inst := j.Instructions
	if inst == "" {
		inst = DefaultInstructions
	}
	var b strings.Builder
	if c.Kind == "chat" {
		b.WriteString("Conversation:\n")
		for _, m := range c.Messages {
			fmt.Fprintf(&b, "[%s] %s\n", m.Role, m.Content)
		}
	} else {
		fmt.Fprintf(&b, "Text to continue:\n%s\n", c.Prompt)
	}
	fmt.Fprintf(&b, "\nAnswer to rate:\n%s\n\nScore (1-10):", c.Choices[choice])
	return []Message{{Role: "system", Content: inst}, {Role: "user", Content: b.String()}}
}

// Score asks the judge model for a score of one answer of c.
func (j *Judge) Score(ctx context.Context, c *Completion, choice int) (float64, JudgeRecord, error) {
	rec := JudgeRecord{Model: j.Model, Prompt: j.Prompt(c, choice)}
	if j.Gen == nil || j.Model == "" {
		return 0, rec, errors.New("no judge model configured")
	}
	out, err := j.Gen.Generate(ctx, j.Model, rec.Prompt, scoreGrammar, 4)
	rec.Output = out
	if err != nil {
		return 0, rec, fmt.Errorf("judge %s: %w", j.Model, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || v < 1 || v > 10 {
		return 0, rec, fmt.Errorf("judge %s gave no score from 1 to 10: %q", j.Model, out)
	}
	return float64(v), rec, nil
}

// JudgeCompletion scores every answer of completion id with j and records
// a rating (source "ai", score 1-10, the judge's prompt and output) for
// each; with two or more answers whose scores differ, it also records a
// preference of the best over the worst.
func (s *Store) JudgeCompletion(ctx context.Context, j *Judge, id string) ([]Feedback, error) {
	c, err := s.Completion(id)
	if err != nil {
		return nil, &InputError{Field: "completion_id", Msg: err.Error(), NotFound: errors.Is(err, ErrNotFound)}
	}
	var out []Feedback
	best, worst := -1, -1
	scores := make([]float64, len(c.Choices))
	for i := range c.Choices {
		score, rec, err := j.Score(ctx, c, i)
		if err != nil {
			return out, err
		}
		scores[i] = score
		f, err := s.Add(Feedback{Type: TypeRating, Source: SourceAI, Ref: Ref{CompletionID: id, Choice: i}, Score: &score, Judge: &rec})
		if err != nil {
			return out, err
		}
		out = append(out, f)
		if best < 0 || score > scores[best] {
			best = i
		}
		if worst < 0 || score < scores[worst] {
			worst = i
		}
	}
	if len(c.Choices) > 1 && scores[best] > scores[worst] {
		f, err := s.Add(Feedback{Type: TypePreference, Source: SourceAI, Chosen: &Ref{id, best}, Rejected: &Ref{id, worst},
			Comment: fmt.Sprintf("judge %s scored %g over %g", j.Model, scores[best], scores[worst])})
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
	return out, nil
}

// StartJudge scores every completion recorded from now on in the
// background with j (at most queue waiting; more are skipped and
// logged). Close stops it.
func (s *Store) StartJudge(j *Judge, queue int) {
	if queue <= 0 {
		queue = 64
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.judgeQ != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.judgeQ, s.judgeStop, s.judgeDone = make(chan string, queue), cancel, make(chan struct{})
	go func(q chan string, done chan struct{}) {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case id := <-q:
				jctx, jcancel := context.WithTimeout(ctx, 5*time.Minute)
				if _, err := s.JudgeCompletion(jctx, j, id); err != nil && ctx.Err() == nil {
					s.opt.Logger.Warn("feedback: judging a completion failed", "completion", id, "judge", j.Model, "err", err)
				}
				jcancel()
			}
		}
	}(s.judgeQ, s.judgeDone)
}

// enqueueJudge hands a recorded completion to the background judge.
func (s *Store) enqueueJudge(id string) {
	s.mu.Lock()
	q := s.judgeQ
	s.mu.Unlock()
	if q == nil {
		return
	}
	select {
	case q <- id:
	default:
		s.opt.Logger.Warn("feedback: judge queue full; completion not judged", "completion", id)
	}
}
