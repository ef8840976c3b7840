package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// logRecord reports whether s holds a log record of the text handler.
func logRecord(s string) bool { return strings.Contains(s, "level=") || strings.Contains(s, "msg=") }

// Without a terminal and without -v or --log-format, every command prints
// readable lines, no log records; -v and --log-format bring the records.
func TestOutputWithoutTerminalHasNoLogRecords(t *testing.T) {
	t.Setenv("LLMRT_LLAMA_LOG", "off") // -v turns llama.cpp's log on for the process
	home := t.TempDir()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "docs"), 0o755)
	os.WriteFile(filepath.Join(dir, "docs", "zebra.txt"), []byte("The secret word is purple zebra. Tim told his mom."), 0o644)
	var train, qa []string
	for i := 0; i < 10; i++ {
		train = append(train, fmt.Sprintf(`{"prompt": "Tim asked what secret word %d was. Mom said:", "completion": " The secret word is purple zebra."}`, i))
	}
	qa = append(qa, `{"question": "What is the secret word?", "answer": "purple zebra", "context_ids": ["zebra.txt"]}`,
		`{"question": "Who told his mom?", "answer": "Tim"}`)
	os.WriteFile(filepath.Join(dir, "train.jsonl"), []byte(strings.Join(train, "\n")+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "qa.jsonl"), []byte(strings.Join(qa, "\n")+"\n"), 0o644)

	type step struct {
		args []string
		out  []string // in stdout
		errs []string // in stderr
	}
	report := filepath.Join(dir, "report")
	for _, s := range []step{
		{[]string{"run", "-m", "stories260K", "--temp", "0", "-n", "8", "Once upon a time"}, nil,
			[]string{"fetching stories260K", "pull stories260K: done in", "load stories260K: done in"}},
		{[]string{"index", "add", "-c", "facts", filepath.Join(dir, "docs")}, []string{"1 added"},
			[]string{"created collection facts", "ingest docs: done in"}},
		{[]string{"index", "query", "-c", "facts", "secret word"}, []string{"[1] rrf ", "  cosine ", "  bm25 "}, nil},
		{[]string{"index", "query", "-c", "facts", "--mode", "vector", "secret word"}, []string{"[1] cosine "}, nil},
		{[]string{"tune", "--data", filepath.Join(dir, "train.jsonl"), "--out", "zebra", "--epochs", "2", "--eval-split", "0.2", "-t", "1"},
			[]string{"adapter ", "sample (held out, ", "  expected The secret word is purple zebra."},
			[]string{"data: 8 examples", "2 held out", "tune: done in"}},
		{[]string{"eval", "--data", filepath.Join(dir, "qa.jsonl"), "-c", "facts", "--adapter", "zebra", "--out", report, "--max-tokens", "8"},
			[]string{"ARM ", "ROI", "report  " + filepath.Join(report, "report.md"), "results " + filepath.Join(report, "results.json")},
			[]string{"eval: done in"}},
	} {
		out, errs, code := cli(t, home, s.args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s", s.args, code, errs)
		}
		if logRecord(out) || logRecord(errs) {
			t.Errorf("%v printed log records:\n%s\n%s", s.args, out, errs)
		}
		for _, w := range s.out {
			if !strings.Contains(out, w) {
				t.Errorf("%v: stdout lacks %q:\n%s", s.args, w, out)
			}
		}
		for _, w := range s.errs {
			if !strings.Contains(errs, w) {
				t.Errorf("%v: stderr lacks %q:\n%s", s.args, w, errs)
			}
		}
		// Numbers are for people: no 5.14169151106e+09.
		if strings.Contains(errs, "e+0") || strings.Contains(errs, "e-0") {
			t.Errorf("%v: unrounded numbers:\n%s", s.args, errs)
		}
		if s.args[0] == "eval" {
			// The summary and the paths, not report.md's answers.
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if strings.Contains(out, "## Answers") || strings.Contains(out, "What is the secret word?") || len(lines) > 12 {
				t.Errorf("eval stdout is more than the summary (%d lines):\n%s", len(lines), out)
			}
			for _, f := range []string{"report.md", "results.json", "chart.svg"} {
				if _, err := os.Stat(filepath.Join(report, f)); err != nil {
					t.Errorf("eval did not write %s: %v", f, err)
				}
			}
		}
	}

	// -v and --log-format bring the records (JSON ones, one per line).
	if _, errs, code := cli(t, home, "-v", "run", "-m", "stories260K", "-n", "4", "Once"); code != 0 || !strings.Contains(errs, "level=") {
		t.Errorf("-v: exit %d, no log records:\n%s", code, errs)
	}
	_, errs, code := cli(t, home, "--log-format", "json", "index", "query", "-c", "facts", "secret word")
	if code != 0 || strings.TrimSpace(errs) == "" {
		t.Fatalf("--log-format json: exit %d:\n%s", code, errs)
	}
	for _, line := range strings.Split(strings.TrimSpace(errs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["msg"] == nil {
			t.Errorf("--log-format json: not a JSON record: %q", line)
		}
	}
}

// A successful tune removes what only resuming needs (the checkpoint and
// the F16 base's converted copy); an interrupted one keeps both, and
// --resume then finishes it and cleans up.
func TestTuneCleansUpUnlessInterrupted(t *testing.T) {
	home := t.TempDir()
	base := filepath.Join(home, "stories-f16.gguf")
	if _, errs, code := cli(t, home, "pull", "stories260K"); code != 0 {
		t.Fatalf("pull: %s", errs)
	}
	if _, errs, code := cli(t, home, "quantize", "stories260K", base, "--type", "F16"); code != 0 {
		t.Fatalf("quantize: %s", errs)
	}
	data := filepath.Join(t.TempDir(), "d.jsonl")
	var lines []string
	for i := 0; i < 4; i++ {
		lines = append(lines, `{"prompt": "Tim asked what the secret word was. Mom said:", "completion": " The secret word is purple zebra."}`)
	}
	os.WriteFile(data, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	// A file path, not a NAME: no versions, so the files are z.*.
	adapters := filepath.Join(home, "adapters")
	ckpt, conv := filepath.Join(adapters, "z.ckpt.gguf"), filepath.Join(adapters, "z.base-f32.gguf")
	args := []string{"tune", "-m", base, "--data", data, "--out", filepath.Join(adapters, "z.gguf"), "--eval-split", "0", "--ctx", "32", "-t", "1", "--lr", "1e-2"}

	// Interrupted as soon as it has trained a step: far from its 100000 epochs.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if b, _ := os.ReadFile(filepath.Join(adapters, "z.metrics.jsonl")); bytes.Count(b, []byte("\n")) >= 1 {
				cancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	_, errs, code := cliCtx(ctx, t, home, "", append(args, "--epochs", "100000")...)
	if code != 130 || !strings.Contains(errs, "--resume continues") {
		t.Fatalf("interrupted tune: exit %d\n%s", code, errs)
	}
	if !strings.Contains(errs, "converting the base stories-f16.gguf for training") || logRecord(errs) {
		t.Errorf("the conversion is not told readably:\n%s", errs)
	}
	for _, p := range []string{ckpt, conv} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("an interrupted run removed %s: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(adapters, "z.gguf")); err == nil {
		t.Error("an interrupted run left an adapter")
	}
	// adapter ls lists neither side file as an adapter.
	if out, errs, code := cli(t, home, "adapter", "ls"); code != 0 || strings.Contains(out+errs, "base-f32") || strings.Contains(out+errs, "ckpt") {
		t.Errorf("adapter ls: %d\n%s\n%s", code, out, errs)
	}

	// Resumed to a short end: it succeeds and cleans up.
	out, errs, code := cli(t, home, append(args, "--epochs", "1", "--resume")...)
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s", code, errs)
	}
	for _, p := range []string{ckpt, conv} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("a successful run left %s (%v)", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(adapters, "z.gguf")); err != nil {
		t.Errorf("no adapter: %v\n%s", err, out)
	}

	// --keep-checkpoint keeps it, and says so.
	out, errs, code = cli(t, home, append(args, "--epochs", "1", "--keep-checkpoint")...)
	if code != 0 || !strings.Contains(out, "checkpoint "+ckpt) {
		t.Fatalf("--keep-checkpoint: exit %d\n%s\n%s", code, out, errs)
	}
	if _, err := os.Stat(ckpt); err != nil {
		t.Errorf("--keep-checkpoint: %v", err)
	}
}

// Progress without a terminal reads as lines with rounded figures; with
// logs on, as records with the same figures.
func TestProgressLines(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, slog.New(newHumanHandler(&buf)), "load big", "bytes", 5_141_691_511)
	p.every = 0 // a line per update
	p.Set(1_000_000_000, 0)
	p.Note("loss 2.500")
	p.Finish()
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "load big: 953.7 MiB of 4.8 GiB (19%), ") ||
		!strings.HasPrefix(lines[1], "load big: done in ") || !strings.HasSuffix(lines[1], "; loss 2.500") {
		t.Fatalf("progress lines:\n%s", out)
	}
	buf.Reset()
	p = newProgress(&buf, slog.New(slog.NewTextHandler(&buf, nil)), "tune", "steps", 79)
	p.every = 0
	p.Set(10, 79)
	p.Finish()
	out = buf.String()
	if !strings.Contains(out, "msg=progress task=tune done=10 unit=steps") || !strings.Contains(out, "msg=done task=tune done=79") ||
		!strings.Contains(out, "percent=12.7") || strings.Contains(out, "e+0") {
		t.Fatalf("progress records:\n%s", out)
	}
}

// The readable handler shows warnings and errors as lines, nothing else.
func TestHumanHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(newHumanHandler(&buf))
	log.Info("loading model", "model", "x")
	log.Debug("detail")
	log.Warn("GPU backends not loaded", "dir", "/opt/lib", "free_gib", 1.23456789)
	log.With("source", "llama.cpp").Error("out of memory")
	want := "warning: GPU backends not loaded (dir /opt/lib, free_gib 1.23)\nerror: out of memory (source llama.cpp)\n"
	if buf.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", buf.String(), want)
	}
}
