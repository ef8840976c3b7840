// Package dataset turns fine-tuning data into packed training rows.
//
// Input is JSONL, one example per line, in one of four shapes:
//
//	{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
//	{"prompt": "...", "completion": "..."}
//	{"instruction": "...", "input": "...", "output": "..."}   (Alpaca)
//	{"text": "..."}
//
// or a folder of .txt/.md files for continued pre-training. Loss is taken
// only on the answer: assistant turns, the completion, the output; the rest
// is masked. Chat examples are rendered with the same chat template and
// tokenizer that serving uses (the Tokenizer interface), so a tuned adapter
// answers in the format the server prompts it with.
//
// Short examples are packed together into rows of the training context;
// each keeps its own positions (from 0) and a segment id so attention never
// crosses examples. Examples longer than the context are truncated and
// counted.
package dataset

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
)

// Format names an input shape.
type Format string

// Input formats.
const (
	FormatAuto             Format = "auto"
	FormatChat             Format = "chat"
	FormatPromptCompletion Format = "prompt-completion"
	FormatAlpaca           Format = "alpaca"
	FormatText             Format = "text"
)

// ParseFormat validates a --format value.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case FormatAuto, FormatChat, FormatPromptCompletion, FormatAlpaca, FormatText:
		return f, nil
	case "":
		return FormatAuto, nil
	}
	return "", fmt.Errorf("unknown format %q (auto, chat, prompt-completion, alpaca, text)", s)
}

// Message is a chat turn.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Tokenizer is what the dataset needs from the model: its chat template
// and tokenizer, exactly as serving uses them.
type Tokenizer interface {
	// RenderChat renders msgs; addGenerationPrompt appends the assistant
	// header.
	RenderChat(msgs []Message, addGenerationPrompt bool) (string, error)
	// Tokenize converts text to tokens; addSpecial adds BOS as the model
	// wants; parseSpecial maps special-token text to its token.
	Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error)
	// EOS is the end-of-sequence token appended after plain answers.
	EOS() int32
}

// Example is one tokenized example: its tokens and which of them carry
// loss (Train[i] is true when token i is part of an answer).
type Example struct {
	Source string // file:line
	Tokens []int32
	Train  []bool
}

// LineError reports an input line that could not be used.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

func (e *LineError) Unwrap() error { return e.Err }

// Stats summarise a loaded dataset.
type Stats struct {
	Examples       int `json:"examples"`
	Skipped        int `json:"skipped_lines"`
	Tokens         int `json:"tokens"`
	TrainTokens    int `json:"train_tokens"`
	Truncated      int `json:"truncated_examples"`
	TruncatedToks  int `json:"truncated_tokens"`
	EmptyAnswers   int `json:"empty_answers"`
	Rows           int `json:"rows"`
	PaddingTokens  int `json:"padding_tokens"`
	LongestExample int `json:"longest_example"`
}

// MaskedShare is the share of tokens that carry no loss.
func (s Stats) MaskedShare() float64 {
	if s.Tokens == 0 {
		return 0
	}
	return 1 - float64(s.TrainTokens)/float64(s.Tokens)
}

// Options control loading.
type Options struct {
	Format Format
	// Strict makes the first bad line fatal; otherwise bad lines are
	// skipped and returned as warnings.
	Strict bool
}

// Load reads a JSONL file or a folder of .txt/.md files and tokenizes every
// example. Bad lines are returned as *LineError warnings (or, with Strict,
// as the error).
func Load(path string, tok Tokenizer, opt Options) ([]Example, []error, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset: %w", err)
	}
	if st.IsDir() {
		ex, err := loadFolder(path, tok)
		return ex, nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset: %w", err)
	}
	defer f.Close()
	return loadJSONL(f, path, tok, opt)
}

func loadFolder(dir string, tok Tokenizer) ([]Example, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		ext := strings.ToLower(filepath.Ext(p))
		if !d.IsDir() && (ext == ".txt" || ext == ".md" || ext == ".markdown") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("dataset %s: no .txt or .md files", dir)
	}
	sort.Strings(files)
	var out []Example
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("dataset: %w", err)
		}
		ex, err := textExample(string(b), tok)
		if err != nil {
			return nil, fmt.Errorf("dataset %s: %w", p, err)
		}
		ex.Source = p
		out = append(out, ex)
	}
	return out, nil
}

// record is the union of every line shape.
type record struct {
	Messages    []Message `json:"messages"`
	Prompt      *string   `json:"prompt"`
	Completion  *string   `json:"completion"`
	Instruction *string   `json:"instruction"`
	Input       *string   `json:"input"`
	Output      *string   `json:"output"`
	Text        *string   `json:"text"`
}

func (r *record) format() (Format, error) {
	var found []Format
	if r.Messages != nil {
		found = append(found, FormatChat)
	}
	if r.Prompt != nil || r.Completion != nil {
		found = append(found, FormatPromptCompletion)
	}
	if r.Instruction != nil || r.Output != nil {
		found = append(found, FormatAlpaca)
	}
	if r.Text != nil {
		found = append(found, FormatText)
	}
	switch len(found) {
	case 0:
		return "", errors.New(`no known fields: want "messages", "prompt"+"completion", "instruction"+"output", or "text"`)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("fields of several formats on one line (%v)", found)
}

func loadJSONL(r io.Reader, name string, tok Tokenizer, opt Options) ([]Example, []error, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var out []Example
	var warns []error
	line := 0
	for sc.Scan() {
		line++
		raw := strings.TrimSpace(sc.Text())
		if raw == "" {
			continue
		}
		ex, err := parseLine(raw, tok, opt.Format)
		if err != nil {
			le := &LineError{File: name, Line: line, Err: err}
			if opt.Strict {
				return nil, nil, le
			}
			warns = append(warns, le)
			continue
		}
		ex.Source = fmt.Sprintf("%s:%d", name, line)
		out = append(out, ex)
	}
	if err := sc.Err(); err != nil {
		return nil, warns, fmt.Errorf("dataset %s: after line %d: %w", name, line, err)
	}
	if len(out) == 0 {
		if len(warns) > 0 {
			return nil, warns, fmt.Errorf("dataset %s: no usable examples (%d bad lines; first: %v)", name, len(warns), warns[0])
		}
		return nil, nil, fmt.Errorf("dataset %s: no examples", name)
	}
	return out, warns, nil
}

func parseLine(raw string, tok Tokenizer, want Format) (Example, error) {
	var rec record
	dec := json.NewDecoder(strings.NewReader(raw))
	if err := dec.Decode(&rec); err != nil {
		return Example{}, fmt.Errorf("not a JSON object: %v", err)
	}
	got, err := rec.format()
	if err != nil {
		return Example{}, err
	}
	if want != FormatAuto && want != "" && want != got {
		return Example{}, fmt.Errorf("line is %s, but --format is %s", got, want)
	}
	switch got {
	case FormatChat:
		return chatExample(rec.Messages, tok)
	case FormatPromptCompletion:
		if rec.Prompt == nil || rec.Completion == nil {
			return Example{}, errors.New(`prompt-completion lines need both "prompt" and "completion"`)
		}
		return answerExample(*rec.Prompt, *rec.Completion, tok)
	case FormatAlpaca:
		if rec.Instruction == nil || rec.Output == nil {
			return Example{}, errors.New(`alpaca lines need "instruction" and "output"`)
		}
		in := ""
		if rec.Input != nil {
			in = *rec.Input
		}
		return answerExample(AlpacaPrompt(*rec.Instruction, in), *rec.Output, tok)
	default:
		return textExample(*rec.Text, tok)
	}
}

// AlpacaPrompt is the Stanford Alpaca prompt an Alpaca example is trained
// (and should be queried) with.
func AlpacaPrompt(instruction, input string) string {
	if strings.TrimSpace(input) == "" {
		return "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
			"### Instruction:\n" + instruction + "\n\n### Response:\n"
	}
	return "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n" +
		"### Instruction:\n" + instruction + "\n\n### Input:\n" + input + "\n\n### Response:\n"
}

// answerExample tokenizes prompt+answer as one text (as the model will see
// it at inference) and trains on what follows the prompt's tokens, then EOS.
func answerExample(prompt, answer string, tok Tokenizer) (Example, error) {
	full, err := tok.Tokenize(prompt+answer, true, false)
	if err != nil {
		return Example{}, err
	}
	pre, err := tok.Tokenize(prompt, true, false)
	if err != nil {
		return Example{}, err
	}
	n := commonPrefix(pre, full)
	if answer == "" {
		// Nothing to learn: the example stays (it is context) but carries
		// no loss, not even an end-of-sequence.
		return Example{Tokens: full, Train: make([]bool, len(full))}, nil
	}
	full = append(full, tok.EOS())
	ex := Example{Tokens: full, Train: make([]bool, len(full))}
	for i := n; i < len(full); i++ {
		ex.Train[i] = true
	}
	return ex, nil
}

func textExample(text string, tok Tokenizer) (Example, error) {
	if strings.TrimSpace(text) == "" {
		return Example{}, errors.New("empty text")
	}
	toks, err := tok.Tokenize(text, true, false)
	if err != nil {
		return Example{}, err
	}
	toks = append(toks, tok.EOS())
	ex := Example{Tokens: toks, Train: make([]bool, len(toks))}
	for i := 1; i < len(toks); i++ { // everything but BOS is predicted
		ex.Train[i] = true
	}
	return ex, nil
}

// chatExample renders the whole conversation and marks the tokens of each
// assistant turn (its content and the template's end-of-turn) for training.
func chatExample(msgs []Message, tok Tokenizer) (Example, error) {
	if len(msgs) == 0 {
		return Example{}, errors.New("messages is empty")
	}
	hasAssistant := false
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant", "tool":
		default:
			return Example{}, fmt.Errorf("messages[%d]: unknown role %q", i, m.Role)
		}
		if m.Role == "assistant" {
			hasAssistant = true
		}
	}
	if !hasAssistant {
		return Example{}, errors.New("no assistant message to learn from")
	}
	render := func(upto int, gen bool) ([]int32, error) {
		text, err := tok.RenderChat(msgs[:upto], gen)
		if err != nil {
			return nil, fmt.Errorf("chat template: %w", err)
		}
		return tok.Tokenize(text, true, true)
	}
	full, err := render(len(msgs), false)
	if err != nil {
		return Example{}, err
	}
	ex := Example{Tokens: full, Train: make([]bool, len(full))}
	for i, m := range msgs {
		if m.Role != "assistant" || strings.TrimSpace(m.Content) == "" {
			continue
		}
		before, err := render(i, true)
		if err != nil {
			return Example{}, err
		}
		after, err := render(i+1, false)
		if err != nil {
			return Example{}, err
		}
		start, end := commonPrefix(before, full), commonPrefix(after, full)
		for j := start; j < end; j++ {
			ex.Train[j] = true
		}
	}
	return ex, nil
}

func commonPrefix(a, b []int32) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}
