package dataset

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Pair is one tokenized preference: the same prompt with the chosen and
// the rejected answer, each an Example whose answer tokens (only the
// final answer, never earlier turns) carry loss.
type Pair struct {
	Source   string // file:line
	Chosen   Example
	Rejected Example
}

// pairRecord is the union of the preference line shapes:
//
//	{"prompt": "...", "chosen": "...", "rejected": "..."}
//	{"messages": [...], "chosen": "...", "rejected": "..."}  (chosen/rejected may be {"role","content"} or a list of one)
//	{"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", "content": "..."}],
//	 "non_preferred_output": [...]}  (OpenAI's DPO format)
type pairRecord struct {
	Prompt       *string         `json:"prompt"`
	Messages     []Message       `json:"messages"`
	Chosen       json.RawMessage `json:"chosen"`
	Rejected     json.RawMessage `json:"rejected"`
	Input        *pairInput      `json:"input"`
	Preferred    json.RawMessage `json:"preferred_output"`
	NonPreferred json.RawMessage `json:"non_preferred_output"`
}

type pairInput struct {
	Messages []Message `json:"messages"`
}

// answerText reads an answer given as a string, a message, or a list
// holding one assistant message.
func answerText(raw json.RawMessage, field string) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", fmt.Errorf("%q is missing", field)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var m Message
	if json.Unmarshal(raw, &m) == nil && m.Role != "" {
		if m.Role != "assistant" {
			return "", fmt.Errorf("%q: role %q, want assistant", field, m.Role)
		}
		return m.Content, nil
	}
	var ms []Message
	if json.Unmarshal(raw, &ms) == nil {
		if len(ms) != 1 || ms[0].Role != "assistant" {
			return "", fmt.Errorf("%q: want one assistant message, got %d messages", field, len(ms))
		}
		return ms[0].Content, nil
	}
	return "", fmt.Errorf("%q: want a string, an assistant message or a list of one", field)
}

// LoadPairs reads a JSONL file of preference pairs and tokenizes them
// (chat prompts with the model's chat template, as serving renders them).
// Bad lines are returned as *LineError warnings, or with Strict as the
// error.
func LoadPairs(path string, tok Tokenizer, opt Options) ([]Pair, []error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("preferences: %w", err)
	}
	defer f.Close()
	return readPairs(f, path, tok, opt)
}

func readPairs(r io.Reader, name string, tok Tokenizer, opt Options) ([]Pair, []error, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var out []Pair
	var warns []error
	line := 0
	for sc.Scan() {
		line++
		raw := strings.TrimSpace(sc.Text())
		if raw == "" {
			continue
		}
		p, err := parsePair(raw, tok)
		if err != nil {
			le := &LineError{File: name, Line: line, Err: err}
			if opt.Strict {
				return nil, nil, le
			}
			warns = append(warns, le)
			continue
		}
		p.Source = fmt.Sprintf("%s:%d", name, line)
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, warns, fmt.Errorf("preferences %s: after line %d: %w", name, line, err)
	}
	if len(out) == 0 {
		if len(warns) > 0 {
			return nil, warns, fmt.Errorf("preferences %s: no usable pairs (%d bad lines; first: %v)", name, len(warns), warns[0])
		}
		return nil, nil, fmt.Errorf("preferences %s: no pairs", name)
	}
	return out, warns, nil
}

// ParsePair tokenizes one preference line (any of LoadPairs' shapes).
func ParsePair(raw string, tok Tokenizer) (Pair, error) { return parsePair(raw, tok) }

func parsePair(raw string, tok Tokenizer) (Pair, error) {
	var rec pairRecord
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		return Pair{}, fmt.Errorf("not a JSON object: %v", err)
	}
	var (
		msgs             []Message
		prompt           *string
		chosen, rejected string
		err              error
	)
	switch {
	case rec.Input != nil || rec.Preferred != nil:
		if rec.Input == nil || len(rec.Input.Messages) == 0 {
			return Pair{}, errors.New(`"input.messages" is missing`)
		}
		msgs = rec.Input.Messages
		if chosen, err = answerText(rec.Preferred, "preferred_output"); err != nil {
			return Pair{}, err
		}
		if rejected, err = answerText(rec.NonPreferred, "non_preferred_output"); err != nil {
			return Pair{}, err
		}
	case rec.Messages != nil || rec.Prompt != nil:
		if rec.Messages != nil && rec.Prompt != nil {
			return Pair{}, errors.New(`both "prompt" and "messages": give one`)
		}
		msgs, prompt = rec.Messages, rec.Prompt
		if chosen, err = answerText(rec.Chosen, "chosen"); err != nil {
			return Pair{}, err
		}
		if rejected, err = answerText(rec.Rejected, "rejected"); err != nil {
			return Pair{}, err
		}
	default:
		return Pair{}, errors.New(`no known fields: want "prompt"/"messages" with "chosen" and "rejected", or "input" with "preferred_output" and "non_preferred_output"`)
	}
	if strings.TrimSpace(chosen) == "" || strings.TrimSpace(rejected) == "" {
		return Pair{}, errors.New("chosen and rejected answers must not be empty")
	}
	if chosen == rejected {
		return Pair{}, errors.New("chosen and rejected answers are the same")
	}
	var p Pair
	if prompt != nil {
		if p.Chosen, err = answerExample(*prompt, chosen, tok); err != nil {
			return Pair{}, err
		}
		if p.Rejected, err = answerExample(*prompt, rejected, tok); err != nil {
			return Pair{}, err
		}
		return p, nil
	}
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant", "tool":
		default:
			return Pair{}, fmt.Errorf("messages[%d]: unknown role %q", i, m.Role)
		}
	}
	if len(msgs) == 0 || msgs[len(msgs)-1].Role == "assistant" {
		return Pair{}, errors.New("the prompt's messages must end with a turn the answers reply to, not an assistant turn")
	}
	if p.Chosen, err = lastTurnExample(msgs, chosen, tok); err != nil {
		return Pair{}, err
	}
	if p.Rejected, err = lastTurnExample(msgs, rejected, tok); err != nil {
		return Pair{}, err
	}
	return p, nil
}

// lastTurnExample renders msgs followed by the assistant answer and marks
// only that answer (with the template's end of turn) for training.
func lastTurnExample(msgs []Message, answer string, tok Tokenizer) (Example, error) {
	render := func(ms []Message, gen bool) ([]int32, error) {
		text, err := tok.RenderChat(ms, gen)
		if err != nil {
			return nil, fmt.Errorf("chat template: %w", err)
		}
		return tok.Tokenize(text, true, true)
	}
	all := append(append([]Message(nil), msgs...), Message{Role: "assistant", Content: answer})
	full, err := render(all, false)
	if err != nil {
		return Example{}, err
	}
	before, err := render(msgs, true)
	if err != nil {
		return Example{}, err
	}
	ex := Example{Tokens: full, Train: make([]bool, len(full))}
	for j := commonPrefix(before, full); j < len(full); j++ {
		ex.Train[j] = true
	}
	return ex, nil
}

// PackPairs packs preference pairs into rows of at most ctx tokens, both
// sides of a pair in the same row: pair k of a row is segments 2k (chosen)
// and 2k+1 (rejected), each with positions from 0. A pair longer than ctx
// has each side cut to ctx/2 tokens (counted as truncated); a pair left
// with a side that has no answer token is dropped and counted in
// EmptyAnswers.
func PackPairs(pairs []Pair, ctx int, stats *Stats) []Row {
	type open struct {
		row  Row
		free int
	}
	var rows []*open
	for _, p := range pairs {
		c, r := p.Chosen, p.Rejected
		stats.Examples++
		stats.LongestExample = max(stats.LongestExample, len(c.Tokens)+len(r.Tokens))
		if len(c.Tokens)+len(r.Tokens) > ctx {
			stats.Truncated++
			for _, ex := range []*Example{&c, &r} {
				if len(ex.Tokens) > ctx/2 {
					stats.TruncatedToks += len(ex.Tokens) - ctx/2
					ex.Tokens, ex.Train = ex.Tokens[:ctx/2], ex.Train[:ctx/2]
				}
			}
		}
		trained := [2]int{}
		for j, ex := range []Example{c, r} {
			for _, t := range ex.Train[1:] {
				if t {
					trained[j]++
				}
			}
		}
		if trained[0] == 0 || trained[1] == 0 {
			stats.EmptyAnswers++
			continue
		}
		n := len(c.Tokens) + len(r.Tokens)
		stats.Tokens += n
		stats.TrainTokens += trained[0] + trained[1]
		var dst *open
		for _, o := range rows {
			if o.free >= n {
				dst = o
				break
			}
		}
		if dst == nil {
			dst = &open{free: ctx}
			rows = append(rows, dst)
		}
		seg := int32(0)
		if k := len(dst.row.Seg); k > 0 {
			seg = dst.row.Seg[k-1] + 1
		}
		for j, ex := range []Example{c, r} {
			for i, t := range ex.Tokens {
				label := int32(-1)
				if i+1 < len(ex.Tokens) && ex.Train[i+1] {
					label = ex.Tokens[i+1]
				}
				dst.row.Tokens = append(dst.row.Tokens, t)
				dst.row.Pos = append(dst.row.Pos, int32(i))
				dst.row.Seg = append(dst.row.Seg, seg+int32(j))
				dst.row.Labels = append(dst.row.Labels, label)
			}
		}
		dst.free -= n
	}
	out := make([]Row, len(rows))
	for i, o := range rows {
		out[i] = o.row
		stats.PaddingTokens += o.free
	}
	stats.Rows += len(out)
	return out
}

// Pairs is the number of preference pairs in a row packed by PackPairs.
func (r Row) Pairs() int {
	if len(r.Seg) == 0 {
		return 0
	}
	return int(r.Seg[len(r.Seg)-1]+1) / 2
}

// SplitPairs holds out every k-th pair (k from share) for evaluation.
func SplitPairs(pairs []Pair, share float64) (train, eval []Pair) {
	if share <= 0 || len(pairs) < 2 {
		return pairs, nil
	}
	k := max(int(1/share), 2)
	for i, p := range pairs {
		if i%k == k-1 {
			eval = append(eval, p)
		} else {
			train = append(train, p)
		}
	}
	return train, eval
}
