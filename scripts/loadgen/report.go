package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"text/tabwriter"
	"time"
)

// num is a measured figure; NaN (not measurable) prints as "n/a" and
// marshals as JSON null.
type num float64

func (n num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, math.Round(f*1000)/1000, 'f', -1, 64), nil
}

// format prints n with prec decimals, "n/a" when not measurable.
func (n num) format(prec int) string {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "n/a"
	}
	return strconv.FormatFloat(f, 'f', prec, 64)
}

// report is the whole run, as written by -json.
type report struct {
	URL          string    `json:"url"`
	Model        string    `json:"model"`
	Mode         string    `json:"mode"`
	StartedAt    time.Time `json:"started_at"`
	PromptTokens int       `json:"prompt_tokens_target,omitempty"`
	// PromptTokensServer is the warm-up prompt's size as the server counted it.
	PromptTokensServer int  `json:"prompt_tokens_server,omitempty"`
	MaxTokens          int  `json:"max_tokens,omitempty"`
	IgnoreEOS          bool `json:"ignore_eos,omitempty"`
	SharedPrefix       bool `json:"shared_prefix,omitempty"`
	EmbTokens          int  `json:"emb_tokens,omitempty"`
	Interrupted        bool `json:"interrupted,omitempty"`

	Levels     []levelResult `json:"levels,omitempty"`
	Embeddings []embResult   `json:"embeddings,omitempty"`
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing -json file: %w", err)
	}
	return nil
}

// printGenTable prints one row per concurrency level.
func printGenTable(w io.Writer, levels []levelResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streams\treqs\tok\terr\tretry\tprompt_tok\tgen_tok\tttft_p50_ms\tttft_p95_ms\tstream_tok/s\tdecode_agg_tok/s\twall_agg_tok/s\t")
	for _, l := range levels {
		s := l.Summary
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n",
			s.Streams, s.Requests, s.OK, s.Errors, s.Retries, s.PromptTokens.format(0), s.GenTokens,
			s.TTFTP50Ms.format(1), s.TTFTP95Ms.format(1), s.StreamTPS.format(1),
			s.DecodeAggTPS.format(1), s.WallAggTPS.format(1))
	}
	tw.Flush()
}

// printEmbTable prints one row per (clients, batch) combination.
func printEmbTable(w io.Writer, rows []embResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "clients\tbatch\treqs\terr\tretry\temb/s\treq/s\tlat_p50_ms\tlat_p95_ms\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t\n",
			r.Clients, r.Batch, r.Requests, r.Errors, r.Retries, r.EmbPerSec.format(1),
			r.ReqPerSec.format(1), r.LatP50Ms.format(1), r.LatP95Ms.format(1))
	}
	tw.Flush()
}
