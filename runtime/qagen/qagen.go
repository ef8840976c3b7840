// Package qagen writes fine-tuning and evaluation data from a collection's
// documents alone, so a RAG-versus-fine-tuning study needs no hand-written
// questions.
//
// For each chunk a model writes question/answer pairs (GenSystem,
// GenUser); a grammar holds it to the "Q: ...? / A: ..." format and makes
// every answer a phrase of the chunk (extractive, as the short gold answers
// llmrt eval scores against should be). A pair is kept only when the chunk
// supports its answer: by default a lexical check (the answer, normalised
// as llmrt eval scores, is not empty and occurs in the chunk as a phrase),
// or a judge model's yes/no; and when its question does not already hold
// the answer. Repeated questions (after normalisation) are dropped, first
// one kept. Each chunk's pairs then go whole either to the
// training file (chat lines) or to the evaluation file (questions with
// their chunk id, for llmrt eval), chosen by a seeded hash of the chunk
// id, so the evaluation never asks what training showed.
package qagen

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/llmrt/llmrt/kernels"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/eval"
	"github.com/llmrt/llmrt/runtime/grammar"
	"github.com/llmrt/llmrt/runtime/rag"
)

// The generation prompt: GenUser takes the passage's label (file: title),
// its text and the number of pairs.
const (
	GenSystem = "You write quiz questions about passages of a document."
	GenUser   = "Passage from %s:\n\n%s\n\nWrite %d different questions that this passage answers, each followed by its answer: " +
		"a few words copied from the passage. Use exactly this format:\nQ: <question>\nA: <answer>"
	// JudgeSystem and JudgeUser ask a judge model whether the passage
	// supports an answer (passage, question, answer).
	JudgeSystem = "You check quiz answers against a passage. Reply with one word: yes or no."
	JudgeUser   = "Passage: %s\n\nQuestion: %s\nAnswer: %s\n\nDoes the passage support this answer to the question?"
	// DefaultSystem is the training lines' system message: llmrt eval's
	// default, so a tuned model answers in the form eval asks for.
	DefaultSystem = "Answer the question briefly."
)

// Options configure a generation.
type Options struct {
	// Model writes the pairs (with Adapters); ModelName names it in the
	// summary.
	Model     *engine.Engine
	Adapters  []engine.AdapterRef
	ModelName string
	// PerChunk is how many pairs to ask for per chunk (default 3).
	PerChunk int
	// EvalShare is the share of chunks whose pairs go to evaluation
	// (default 0.2); Seed picks which.
	EvalShare float64
	Seed      uint64
	// Judge, if set, checks support instead of the lexical check.
	Judge     *engine.Engine
	JudgeName string
	// MaxChunks > 0 uses that many chunks, spread evenly over the
	// collection.
	MaxChunks int
	// Concurrency is how many chunks are worked on at once (default 1).
	Concurrency int
	// System is the training lines' system message (default
	// DefaultSystem; "-" for none).
	System   string
	Progress func(done, total int)
}

// Pair is a generated question and answer with the chunk it came from.
type Pair struct {
	Question string `json:"question"`
	Answer   string `json:"answer"`
	ChunkID  uint64 `json:"chunk_id"`
	Source   string `json:"source"`
	// Split is "train" or "eval" for kept pairs; Dropped says why a pair
	// was dropped ("unsupported", "answer in question", "duplicate").
	Split   string `json:"split,omitempty"`
	Dropped string `json:"dropped,omitempty"`
}

// Result is a generation: the figures and every pair.
type Result struct {
	Model string `json:"model"`
	// Check is how support was checked: "lexical" or "judge MODEL".
	Check       string `json:"check"`
	Chunks      int    `json:"chunks"`
	EvalChunks  int    `json:"eval_chunks"`
	Generated   int    `json:"generated"`
	Unsupported int    `json:"unsupported"`
	Leaky       int    `json:"answer_in_question"`
	Duplicates  int    `json:"duplicates"`
	Train       int    `json:"train"`
	Eval        int    `json:"eval"`
	// System is the training lines' system message.
	System string `json:"system,omitempty"`
	Pairs  []Pair `json:"pairs"`
}

// Chunks lists a collection's chunks, source by source in document order.
func Chunks(c *rag.Collection) []rag.Chunk {
	var out []rag.Chunk
	for _, s := range c.Sources() {
		out = append(out, c.Chunks(s.Path)...)
	}
	return out
}

// Generate writes pairs for the chunks and checks, deduplicates and splits
// them.
func Generate(ctx context.Context, chunks []rag.Chunk, o Options) (*Result, error) {
	if o.Model == nil {
		return nil, errors.New("qagen: no model")
	}
	if o.PerChunk <= 0 {
		o.PerChunk = 3
	}
	if o.PerChunk > 10 {
		return nil, fmt.Errorf("qagen: at most 10 pairs per chunk, got %d", o.PerChunk)
	}
	if o.EvalShare == 0 {
		o.EvalShare = 0.2
	}
	if o.EvalShare < 0 || o.EvalShare > 1 {
		return nil, fmt.Errorf("qagen: eval share %v outside [0, 1]", o.EvalShare)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	switch o.System {
	case "":
		o.System = DefaultSystem
	case "-":
		o.System = ""
	}
	if len(chunks) == 0 {
		return nil, errors.New("qagen: the collection has no chunks")
	}
	if o.MaxChunks > 0 && o.MaxChunks < len(chunks) {
		picked := make([]rag.Chunk, o.MaxChunks)
		for i := range picked {
			picked[i] = chunks[i*len(chunks)/o.MaxChunks]
		}
		chunks = picked
	}
	res := &Result{Model: o.ModelName, Check: "lexical", Chunks: len(chunks), System: o.System}
	if o.Judge != nil {
		res.Check = "judge " + o.JudgeName
	}
	// Each chunk's pairs, generated and checked in parallel.
	per := make([][]Pair, len(chunks))
	errs := make([]error, len(chunks))
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				per[i], errs[i] = chunkPairs(ctx, chunks[i], o)
				mu.Lock()
				done++
				if o.Progress != nil {
					o.Progress(done, len(chunks))
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for i := range chunks {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("qagen: chunk %d of %s: %w", chunks[i].ID, chunks[i].Source, err)
		}
	}
	seen := map[string]bool{}
	for i, ps := range per {
		split := "train"
		if inEval(o.Seed, chunks[i].ID, o.EvalShare) {
			split = "eval"
			res.EvalChunks++
		}
		for _, p := range ps {
			res.Generated++
			key := eval.Normalize(p.Question)
			switch {
			case p.Dropped == "unsupported":
				res.Unsupported++
			case p.Dropped != "":
				res.Leaky++
			case seen[key]:
				p.Dropped = "duplicate"
				res.Duplicates++
			default:
				seen[key] = true
				p.Split = split
				if split == "eval" {
					res.Eval++
				} else {
					res.Train++
				}
			}
			res.Pairs = append(res.Pairs, p)
		}
	}
	return res, nil
}

// inEval decides a chunk's split from a hash of the seed and its id.
func inEval(seed, id uint64, share float64) bool {
	h := fnv.New64a()
	var b [16]byte
	for i := 0; i < 8; i++ {
		b[i], b[8+i] = byte(seed>>(8*i)), byte(id>>(8*i))
	}
	h.Write(b[:])
	return float64(h.Sum64()>>11)/float64(1<<53) < share
}

var pairLine = regexp.MustCompile(`(?m)^Q: *(.+?) *\nA: *(.+?) *$`)

// chunkPairs asks the model for a chunk's pairs and checks each; a pair
// that fails the check comes back with Dropped set.
func chunkPairs(ctx context.Context, ch rag.Chunk, o Options) ([]Pair, error) {
	words := passageWords(ch.Text)
	if len(words) == 0 {
		return nil, nil
	}
	label := filepath.Base(ch.Source)
	if ch.Title != "" && ch.Title != label {
		label += ": " + ch.Title
	}
	text := ch.Text
	var toks []int32
	for {
		msgs := []engine.ChatMessage{{Role: "system", Content: GenSystem}, {Role: "user", Content: fmt.Sprintf(GenUser, label, strings.TrimSpace(text), o.PerChunk)}}
		var err error
		if toks, err = o.Model.ChatTokens(msgs, nil, true); err != nil {
			return nil, err
		}
		if len(toks)+o.PerChunk*pairTokens < o.Model.CtxPerSeq() || len(text) < 64 {
			break
		}
		text = text[:len(text)*3/4] // the passage is cut until the prompt and the pairs fit
	}
	if len(toks)+16 >= o.Model.CtxPerSeq() {
		return nil, &engine.PromptTooLongError{Tokens: len(toks), Limit: o.Model.CtxPerSeq()}
	}
	res, err := o.Model.Generate(ctx, engine.Request{Prompt: toks, MaxTokens: min(o.PerChunk*pairTokens, o.Model.CtxPerSeq()-len(toks)-1),
		Adapters: o.Adapters, Sampling: samplingWithGrammar(pairGrammar(words, o.PerChunk))})
	if err != nil {
		return nil, err
	}
	var out []Pair
	for _, m := range pairLine.FindAllStringSubmatch(res.Text, -1) {
		p := Pair{Question: m[1], Answer: m[2], ChunkID: ch.ID, Source: ch.Source}
		ok, err := supported(ctx, p, ch, o)
		if err != nil {
			return nil, err
		}
		switch {
		case !ok:
			p.Dropped = "unsupported"
		case Supports(p.Question, p.Answer):
			p.Dropped = "answer in question"
		}
		out = append(out, p)
	}
	return out, nil
}

// supported checks a pair against its chunk: the judge's yes/no, else the
// lexical check.
func supported(ctx context.Context, p Pair, ch rag.Chunk, o Options) (bool, error) {
	if o.Judge != nil {
		msgs := []engine.ChatMessage{{Role: "system", Content: JudgeSystem}, {Role: "user", Content: fmt.Sprintf(JudgeUser, strings.TrimSpace(ch.Text), p.Question, p.Answer)}}
		toks, err := o.Judge.ChatTokens(msgs, nil, true)
		if err != nil {
			return false, err
		}
		if len(toks) >= o.Judge.CtxPerSeq()-1 {
			return false, &engine.PromptTooLongError{Tokens: len(toks), Limit: o.Judge.CtxPerSeq()}
		}
		yes, err := rag.YesProbability(ctx, o.Judge, nil, toks)
		return yes > 0.5, err
	}
	return Supports(ch.Title+"\n"+ch.Text, p.Answer), nil
}

// Supports is the lexical check: the answer, normalised as llmrt eval
// scores answers, occurs in the passage as a whole phrase.
func Supports(passage, answer string) bool {
	a := eval.Normalize(answer)
	return a != "" && strings.Contains(" "+eval.Normalize(passage)+" ", " "+a+" ")
}

// trimPunct is what passageWords strips from the ends of a word.
const trimPunct = `.,;:!?()[]{}"'“”‘’«»`

// maxAnswerWords bounds an answer.
const maxAnswerWords = 8

// passageWords are the words of a passage in order, without surrounding
// punctuation (at most 400).
func passageWords(text string) []string {
	var out []string
	for _, f := range strings.Fields(text) {
		if w := strings.Trim(f, trimPunct); w != "" {
			out = append(out, w)
			if len(out) == 400 {
				break
			}
		}
	}
	return out
}

// pairGrammar holds the model to 1..n pairs of "Q: <3 to 20 words of at
// most 16 characters>?" and "A: <1 to maxAnswerWords consecutive words of
// the passage>": answers are extracted, not invented. Rule c<i>-<k> is
// what may follow passage word i with k more words allowed.
func pairGrammar(words []string, n int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "root ::= pair{1,%d}\n", n)
	sb.WriteString("pair ::= \"Q: \" qw (\" \" qw){2,19} \"?\\n\" \"A: \" answer \"\\n\"\n")
	sb.WriteString("qw ::= [^ \\n?]{1,16}\n")
	follow := func(i, k int) string {
		if k == 0 || i+1 >= len(words) {
			return ""
		}
		return fmt.Sprintf(" c%d-%d", i, k)
	}
	starts := map[string]bool{}
	var alts []string
	for i, w := range words {
		alt := grammar.Literal(w) + follow(i, maxAnswerWords-1)
		if !starts[alt] {
			starts[alt] = true
			alts = append(alts, alt)
		}
	}
	sb.WriteString("answer ::= " + strings.Join(alts, " | ") + "\n")
	for i := range words {
		for k := 1; k < maxAnswerWords && i+1 < len(words); k++ {
			fmt.Fprintf(&sb, "c%d-%d ::= (\" \" %s%s)?\n", i, k, grammar.Literal(words[i+1]), follow(i+1, k-1))
		}
	}
	return sb.String()
}

// pairTokens is the generation budget per pair.
const pairTokens = 120

// samplingWithGrammar decodes greedily under the grammar, with a mild
// repeat penalty so that pairs do not repeat each other word for word.
func samplingWithGrammar(g string) kernels.SamplerParams {
	return kernels.SamplerParams{Grammar: g, RepeatPenalty: 1.1}
}
