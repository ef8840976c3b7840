package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// humanHandler is the logger of commands run without -v or --log-format:
// it drops info and debug records, and writes warnings and errors as one
// readable line each ("warning: MSG (key value, ...)"), not as log records.
type humanHandler struct {
	mu    *sync.Mutex
	w     io.Writer
	attrs []slog.Attr
	group string
}

func newHumanHandler(w io.Writer) *humanHandler { return &humanHandler{mu: &sync.Mutex{}, w: w} }

func (h *humanHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *humanHandler) Handle(_ context.Context, r slog.Record) error {
	var parts []string
	add := func(a slog.Attr) {
		if a.Equal(slog.Attr{}) {
			return
		}
		key := a.Key
		if h.group != "" {
			key = h.group + "." + key
		}
		parts = append(parts, key+" "+humanValue(a.Value))
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(func(a slog.Attr) bool { add(a); return true })
	prefix := "warning: "
	if r.Level >= slog.LevelError {
		prefix = "error: "
	}
	line := prefix + r.Message
	if len(parts) > 0 {
		line += " (" + strings.Join(parts, ", ") + ")"
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := fmt.Fprintln(h.w, line)
	return err
}

func (h *humanHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *humanHandler) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}

// humanValue renders a log value for people: floats to 3 significant
// digits, durations rounded.
func humanValue(v slog.Value) string {
	v = v.Resolve()
	switch v.Kind() {
	case slog.KindFloat64:
		return strconv.FormatFloat(roundSig(v.Float64(), 3), 'g', -1, 64)
	case slog.KindDuration:
		return formatDuration(v.Duration())
	}
	return v.String()
}

// roundSig rounds f to n significant digits (for log values people read).
func roundSig(f float64, n int) float64 {
	if f == 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return f
	}
	r, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'g', n, 64), 64)
	return r
}

// formatDuration renders a duration for people: "0.4 s", "22 s",
// "3 min 5 s", "2 h 10 min".
func formatDuration(d time.Duration) string {
	s := d.Seconds()
	switch {
	case s < 10:
		return strconv.FormatFloat(math.Round(s*10)/10, 'f', -1, 64) + " s"
	case s < 60:
		return fmt.Sprintf("%.0f s", s)
	case s < 3600:
		m, sec := int(s)/60, int(s)%60
		if sec == 0 {
			return fmt.Sprintf("%d min", m)
		}
		return fmt.Sprintf("%d min %d s", m, sec)
	}
	h, m := int(s)/3600, (int(s)%3600)/60
	if m == 0 {
		return fmt.Sprintf("%d h", h)
	}
	return fmt.Sprintf("%d h %d min", h, m)
}

// say tells the user what is happening: a readable line on stderr, or, when
// logs are on (-v, --log-format, llmrt serve), a log record instead.
func (a *app) say(line, msg string, attrs ...any) {
	if a.logs {
		a.log.Info(msg, attrs...)
		return
	}
	fmt.Fprintln(a.stderr, line)
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }
