// Package dataset turns fine-tuning data into packed training rows.
//
// Input is JSONL, one example per line, in one of four shapes:
//
//	{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
//	{"prompt": "...", "completion": "..."}
//	{"instruction": "...", "input": "...", "output": "..."}   (Alpaca)
//	{"text": "..."}
//
// or documents for continued pre-training: a document file, or a folder of
// them (.txt and .md by default; Options.Documents reads other formats,
// such as the HTML and PDF that runtime/rag ingests). Loss is taken only on
// the answer: assistant turns, the completion, the output; the rest is
// masked; a text trains on every token. Chat examples are rendered with the same chat template and
// tokenizer that serving uses (the Tokenizer interface), so a tuned adapter
// answers in the format the server prompts it with.
//
// Short examples are packed together into rows of the training context;
// each keeps its own positions (from 0) and a segment id so attention never
// crosses examples. With Options.Window set, texts (documents and "text"
// lines) longer than a window are cut into windows that together cover
// every token, so nothing of a document is thrown away; other examples
// longer than the context are truncated and counted.
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
	// Overlap is how many leading tokens repeat the end of the previous
	// window of the same text (context only, not trained again).
	Overlap int
	// Windowed is set on the windows of a text longer than one window.
	Windowed bool
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
	Examples int `json:"examples"`
	// Windows counts the examples that are windows of a longer text.
	Windows int `json:"windows,omitempty"`
	// AvailableTokens are the tokens of the data as loaded (each text
	// whole); UsedTokens those of them in some row (the rest was
	// truncated).
	AvailableTokens int `json:"available_tokens"`
	UsedTokens      int `json:"used_tokens"`
	Skipped         int `json:"skipped_lines"`
	Tokens          int `json:"tokens"`
	TrainTokens     int `json:"train_tokens"`
	Truncated       int `json:"truncated_examples"`
	TruncatedToks   int `json:"truncated_tokens"`
	EmptyAnswers    int `json:"empty_answers"`
	Rows            int `json:"rows"`
	PaddingTokens   int `json:"padding_tokens"`
	LongestExample  int `json:"longest_example"`
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
	// Window > 0 cuts texts longer than Window tokens into windows of at
	// most Window tokens (see Windows); set it to the training context.
	Window int
	// Stride is how many tokens of context consecutive windows share
	// (at least 1, so every token is predicted from the one before).
	Stride int
	// Documents reads document files (nil: .txt and .md as plain text).
	Documents Documents
}

// Documents reads the document files of continued pre-training.
type Documents interface {
	// IsDocument reports whether the file is a document it reads.
	IsDocument(path string) bool
	// Text is the document's text.
	Text(path string) (string, error)
}

// plainText reads .txt and .md files as they are.
type plainText struct{}

func (plainText) IsDocument(p string) bool {
	switch strings.ToLower(filepath.Ext(p)) {
	case ".txt", ".md", ".markdown":
		return true
	}
	return false
}

func (plainText) Text(p string) (string, error) {
	b, err := os.ReadFile(p)
	return string(b), err
}

// Document is a text for continued pre-training.
type Document struct {
	Source string
	Text   string
}

// Load reads a JSONL file, a document, or a folder of documents, and
// tokenizes every example. Bad lines are returned as *LineError warnings
// (or, with Strict, as the error).
func Load(path string, tok Tokenizer, opt Options) ([]Example, []error, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset: %w", err)
	}
	if opt.Documents == nil {
		opt.Documents = plainText{}
	}
	if st.IsDir() {
		ex, err := loadFolder(path, tok, opt)
		return ex, nil, err
	}
	if opt.Documents.IsDocument(path) && !strings.EqualFold(filepath.Ext(path), ".jsonl") {
		text, err := opt.Documents.Text(path)
		if err != nil {
			return nil, nil, fmt.Errorf("dataset: %w", err)
		}
		ex, err := DocumentExamples([]Document{{Source: path, Text: text}}, tok, opt)
		return ex, nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset: %w", err)
	}
	defer f.Close()
	return loadJSONL(f, path, tok, opt)
}

func loadFolder(dir string, tok Tokenizer, opt Options) ([]Example, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && opt.Documents.IsDocument(p) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("dataset %s: no documents", dir)
	}
	sort.Strings(files)
	docs := make([]Document, 0, len(files))
	for _, p := range files {
		text, err := opt.Documents.Text(p)
		if err != nil {
			return nil, fmt.Errorf("dataset: %w", err)
		}
		docs = append(docs, Document{Source: p, Text: text})
	}
	return DocumentExamples(docs, tok, opt)
}

// DocumentExamples tokenizes whole documents (BOS, text, EOS; every token
// trained) and, with opt.Window, cuts each into windows. Empty documents
// are skipped; none at all is an error.
func DocumentExamples(docs []Document, tok Tokenizer, opt Options) ([]Example, error) {
	var out []Example
	for _, d := range docs {
		if strings.TrimSpace(d.Text) == "" {
			continue
		}
		ex, err := textExample(d.Text, tok)
		if err != nil {
			return nil, fmt.Errorf("dataset %s: %w", d.Source, err)
		}
		ex.Source = d.Source
		out = append(out, Windows(ex, opt.Window, opt.Stride)...)
	}
	if len(out) == 0 {
		return nil, errors.New("dataset: the documents have no text")
	}
	return out, nil
}

// Windows cuts an example longer than size tokens into windows of at most
// size tokens. Each window after the first starts with the last stride
// tokens (at least 1) of the one before, as context: they carry no loss
// there, so every token is trained exactly as often as in the whole
// example. An example that fits (or size <= 0) is returned as it is.
func Windows(ex Example, size, stride int) []Example {
	if size <= 0 || len(ex.Tokens) <= size {
		return []Example{ex}
	}
	stride = min(max(stride, 1), size/2)
	var out []Example
	for start, part := 0, 0; ; part++ {
		end := min(start+size, len(ex.Tokens))
		w := Example{Source: fmt.Sprintf("%s#%d", ex.Source, part+1), Tokens: ex.Tokens[start:end], Windowed: true,
			Train: append([]bool(nil), ex.Train[start:end]...)}
		if part > 0 {
			w.Overlap = stride
			for i := 0; i < stride; i++ {
				w.Train[i] = false
			}
		}
		out = append(out, w)
		if end == len(ex.Tokens) {
			return out
		}
		start = end - stride
	}
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
		ex, format, err := parseLine(raw, tok, opt.Format)
		if err != nil {
			le := &LineError{File: name, Line: line, Err: err}
			if opt.Strict {
				return nil, nil, le
			}
			warns = append(warns, le)
			continue
		}
		ex.Source = fmt.Sprintf("%s:%d", name, line)
		if format == FormatText {
			// A text is continued pre-training: windows, not truncation.
			out = append(out, Windows(ex, opt.Window, opt.Stride)...)
			continue
		}
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

func parseLine(raw string, tok Tokenizer, want Format) (Example, Format, error) {
	var rec record
	dec := json.NewDecoder(strings.NewReader(raw))
	if err := dec.Decode(&rec); err != nil {
		return Example{}, "", fmt.Errorf("not a JSON object: %v", err)
	}
	got, err := rec.format()
	if err != nil {
		return Example{}, "", err
	}
	if want != FormatAuto && want != "" && want != got {
		return Example{}, "", fmt.Errorf("line is %s, but --format is %s", got, want)
	}
	ex, err := parseRecord(&rec, got, tok)
	return ex, got, err
}

func parseRecord(rec *record, got Format, tok Tokenizer) (Example, error) {
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
