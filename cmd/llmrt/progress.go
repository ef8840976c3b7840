package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows long work: a bar with rate and ETA on a terminal, and a
// structured log line every few seconds (and at the end) otherwise.
type progress struct {
	mu      sync.Mutex
	bar     *progressbar.ProgressBar
	log     *slog.Logger
	what    string
	unit    string
	total   int64
	done    int64
	start   time.Time
	lastLog time.Time
	every   time.Duration
	closed  bool
	extra   []any // attributes shown beside the count (loss, ...)
}

// Note sets what is shown beside the count: text on the bar, attributes
// in the log lines.
func (p *progress) Note(text string, attrs ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.extra = attrs
	if p.bar != nil && !p.closed {
		p.bar.Describe(p.what + " " + text)
	}
}

// isTerminal reports whether w is an interactive terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// newProgress starts a progress display for `what`, counting `unit`
// ("bytes" renders sizes) up to total (<= 0: unknown).
func newProgress(w io.Writer, log *slog.Logger, what, unit string, total int64) *progress {
	p := &progress{log: log, what: what, unit: unit, total: total, start: time.Now(), every: 2 * time.Second}
	if isTerminal(w) {
		opts := []progressbar.Option{
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100 * time.Millisecond),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
			progressbar.OptionFullWidth(),
		}
		if unit == "bytes" {
			opts = append(opts, progressbar.OptionShowBytes(true))
		} else {
			opts = append(opts, progressbar.OptionSetItsString(unit), progressbar.OptionShowIts())
		}
		if total <= 0 {
			total = -1
		}
		p.bar = progressbar.NewOptions64(total, opts...)
	}
	return p
}

// Set records the amount done so far (and a new total when known).
func (p *progress) Set(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if total > 0 && total != p.total {
		p.total = total
		if p.bar != nil {
			p.bar.ChangeMax64(total)
		}
	}
	p.done = done
	if p.bar != nil {
		p.bar.Set64(done)
		return
	}
	if time.Since(p.lastLog) >= p.every {
		p.lastLog = time.Now()
		p.logLine("progress")
	}
}

func (p *progress) logLine(msg string) {
	el := time.Since(p.start).Seconds()
	attrs := []any{"task", p.what, "done", p.done, "unit", p.unit, "elapsed_s", round2(el)}
	attrs = append(attrs, p.extra...)
	if el > 0 {
		attrs = append(attrs, "rate_per_s", round2(float64(p.done)/el))
	}
	if p.total > 0 {
		attrs = append(attrs, "total", p.total, "percent", round2(100*float64(p.done)/float64(p.total)))
		if p.done > 0 && p.done < p.total {
			eta := el * float64(p.total-p.done) / float64(p.done)
			attrs = append(attrs, "eta_s", round2(eta))
		}
	}
	p.log.Info(msg, attrs...)
}

// Finish completes the display.
func (p *progress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	if p.bar != nil {
		if p.total > 0 {
			p.bar.Set64(p.total)
		}
		p.bar.Finish()
		return
	}
	p.logLine("done")
}

// Abort ends the display without completing it.
func (p *progress) Abort() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	if p.bar != nil {
		p.bar.Exit()
	}
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
