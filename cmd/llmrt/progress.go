package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/llmrt/llmrt/runtime/sched"
)

// progress shows long work: a bar with rate and ETA on a terminal; without
// one, a readable line at each tenth of the work (or now and then when the
// total is unknown or the work slow) and one at the end, or, when logs are
// on (-v, --log-format, llmrt serve), log records instead.
type progress struct {
	mu     sync.Mutex
	bar    *progressbar.ProgressBar
	w      io.Writer    // readable lines (no terminal, logs off)
	log    *slog.Logger // log records (no terminal, logs on)
	what   string
	unit   string
	total  int64
	done   int64
	start  time.Time
	last   time.Time // of the last line or record
	tenth  int64     // of the total, at the last line
	every  time.Duration
	closed bool
	note   string // shown beside the count (loss, ...)
	extra  []any  // the note's attributes in log records
}

// Note sets what is shown beside the count: text on the bar and in the
// lines, attributes in the log records.
func (p *progress) Note(text string, attrs ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.note, p.extra = text, attrs
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
// ("bytes" renders sizes) up to total (<= 0: unknown). Log records are
// written when log has info enabled (logs on), readable lines to w
// otherwise.
func newProgress(w io.Writer, log *slog.Logger, what, unit string, total int64) *progress {
	now := time.Now()
	p := &progress{what: what, unit: unit, total: total, start: now, last: now, every: 30 * time.Second}
	switch {
	case isTerminal(w):
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
	case log != nil && log.Enabled(context.Background(), slog.LevelInfo):
		p.log = log
	default:
		p.w = w
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
	now := time.Now()
	since := now.Sub(p.last)
	tenth := int64(0)
	if p.total > 0 {
		tenth = 10 * p.done / p.total
	}
	// A line per tenth of the work (not two within two seconds, nor any
	// for work that ends at once), else one every p.every: a few lines,
	// whatever the length of the work.
	step := tenth > p.tenth && tenth < 10 && since >= 2*time.Second
	if p.total <= 0 && p.every > 10*time.Second {
		p.every = 10 * time.Second // no tenths to go by
	}
	if step || since >= p.every {
		p.last, p.tenth = now, tenth
		p.report(false)
	}
}

// report writes one progress line or record (final: the done one).
func (p *progress) report(final bool) {
	el := time.Since(p.start)
	rate := 0.0
	if s := el.Seconds(); s > 0 {
		rate = float64(p.done) / s
	}
	var eta time.Duration
	if !final && p.total > 0 && p.done > 0 && p.done < p.total {
		eta = time.Duration(float64(el) * float64(p.total-p.done) / float64(p.done))
	}
	if p.log != nil {
		msg := "progress"
		if final {
			msg = "done"
		}
		attrs := []any{"task", p.what, "done", p.done, "unit", p.unit, "elapsed_s", math.Round(el.Seconds()*10) / 10, "rate", p.formatRate(rate)}
		if p.total > 0 {
			attrs = append(attrs, "total", p.total, "percent", math.Round(1000*float64(p.done)/float64(p.total))/10)
		}
		if eta > 0 {
			attrs = append(attrs, "eta_s", math.Round(eta.Seconds()))
		}
		p.log.Info(msg, append(attrs, p.extra...)...)
		return
	}
	var line string
	if final {
		line = fmt.Sprintf("%s: done in %s (%s", p.what, formatDuration(el), p.formatAmount(p.done))
		if el >= time.Second {
			line += ", " + p.formatRate(rate)
		}
		line += ")"
	} else {
		line = p.what + ": " + p.formatAmount(p.done)
		if p.total > 0 {
			done := fmt.Sprint(p.done) // "3 of 8 answers"
			if p.unit == "bytes" {
				done = p.formatAmount(p.done) // "12.0 MiB of 1.1 GiB"
			}
			line = fmt.Sprintf("%s: %s of %s (%d%%)", p.what, done, p.formatAmount(p.total), 100*p.done/p.total)
		}
		line += ", " + p.formatRate(rate)
		if eta > 0 {
			line += ", about " + formatDuration(eta) + " left"
		}
	}
	if p.note != "" {
		line += "; " + p.note
	}
	fmt.Fprintln(p.w, line)
}

func (p *progress) formatAmount(n int64) string {
	if p.unit == "bytes" {
		return sched.FormatBytes(n)
	}
	return fmt.Sprintf("%d %s", n, p.unit)
}

func (p *progress) formatRate(r float64) string {
	if p.unit == "bytes" {
		return sched.FormatBytes(int64(r)) + "/s"
	}
	return formatNumber(r) + " " + p.unit + "/s"
}

// formatNumber renders f with about 3 significant digits and no exponent.
func formatNumber(f float64) string {
	if math.Abs(f) >= 100 {
		return strconv.FormatFloat(math.Round(f), 'f', -1, 64)
	}
	return strconv.FormatFloat(roundSig(f, 3), 'f', -1, 64)
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
	if p.total > 0 {
		p.done = p.total
	}
	p.report(true)
}

// Abort ends the display without completing it; work that had shown
// progress says where it stopped.
func (p *progress) Abort() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	switch {
	case p.bar != nil:
		p.bar.Exit()
	case p.log != nil:
		p.log.Info("stopped", "task", p.what, "done", p.done, "unit", p.unit, "elapsed_s", math.Round(time.Since(p.start).Seconds()*10)/10)
	case p.done > 0:
		fmt.Fprintf(p.w, "%s: stopped at %s after %s\n", p.what, p.formatAmount(p.done), formatDuration(time.Since(p.start)))
	}
}
