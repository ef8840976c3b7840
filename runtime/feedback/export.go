package feedback

import (
	"encoding/json"
	"io"
)

// Training lines made from feedback, in the shapes llmrt tune reads:
// supervised examples from corrections, DPO pairs from preferences and
// from corrections (the corrected answer chosen over the one served).

// SFTLine is a supervised example: chat completions give "messages",
// text completions "prompt" and "completion".
type SFTLine struct {
	Messages   []Message `json:"messages,omitempty"`
	Prompt     *string   `json:"prompt,omitempty"`
	Completion *string   `json:"completion,omitempty"`
}

// PairLine is a preference pair: a chat prompt in "messages" or a text
// prompt in "prompt", with the chosen and rejected answers.
type PairLine struct {
	Messages []Message `json:"messages,omitempty"`
	Prompt   *string   `json:"prompt,omitempty"`
	Chosen   string    `json:"chosen"`
	Rejected string    `json:"rejected"`
}

// SFT turns corrections into supervised examples.
func SFT(fbs []Feedback) []SFTLine {
	var out []SFTLine
	for _, f := range fbs {
		if f.Type != TypeCorrection || f.Completion == nil {
			continue
		}
		c := f.Completion
		if c.Kind == "chat" {
			msgs := append(append([]Message(nil), c.Messages...), Message{Role: "assistant", Content: f.Correction})
			out = append(out, SFTLine{Messages: msgs})
		} else {
			p, a := c.Prompt, f.Correction
			out = append(out, SFTLine{Prompt: &p, Completion: &a})
		}
	}
	return out
}

// Pairs turns preferences, and corrections against the answer served,
// into DPO pairs.
func Pairs(fbs []Feedback) []PairLine {
	var out []PairLine
	for i := range fbs {
		f := &fbs[i]
		var chosen, rejected string
		var c *Completion
		switch f.Type {
		case TypePreference:
			if f.Chosen == nil || f.Rejected == nil {
				continue
			}
			chosen, c = f.answer(*f.Chosen)
			rejected, _ = f.answer(*f.Rejected)
		case TypeCorrection:
			chosen = f.Correction
			rejected, c = f.answer(f.Ref)
		default:
			continue
		}
		if c == nil || chosen == rejected || chosen == "" || rejected == "" {
			continue
		}
		l := PairLine{Chosen: chosen, Rejected: rejected}
		if c.Kind == "chat" {
			l.Messages = c.Messages
		} else {
			p := c.Prompt
			l.Prompt = &p
		}
		out = append(out, l)
	}
	return out
}

// WriteJSONL writes one JSON value per line.
func WriteJSONL[T any](w io.Writer, lines []T) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, l := range lines {
		if err := enc.Encode(l); err != nil {
			return err
		}
	}
	return nil
}
