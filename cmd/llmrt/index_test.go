package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llmrt/llmrt/models/testmodel"
	"github.com/llmrt/llmrt/runtime/engine"
	"github.com/llmrt/llmrt/runtime/rag"
)

// cliChildEnv makes this test binary run llmrt with the arguments it holds
// (JSON) instead of its tests: the child of TestIndexAddSurvivesKill9.
const cliChildEnv = "LLMRT_TEST_CLI_ARGS"

// runCLIChild is TestMain's branch for cliChildEnv: llmrt as its own
// process, as main runs it.
func runCLIChild(args string) {
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		fmt.Fprintln(os.Stderr, "bad", cliChildEnv, err)
		os.Exit(2)
	}
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	root := a.root()
	root.SetArgs(argv)
	ctx := context.Background()
	os.Exit(a.exitCode(ctx, root.ExecuteContext(ctx)))
}

// story is version v of test document i: sentences of the small story
// model's vocabulary, different for every document and version.
func story(i, v int) string {
	r := rand.New(rand.NewPCG(uint64(i), uint64(v)))
	names := []string{"Lily", "Tom", "Sue", "Ben", "Max", "Anna", "Tim", "Mia"}
	verbs := []string{"saw", "found", "liked", "wanted", "made", "lost", "shared", "hugged"}
	things := []string{"a red ball", "a big tree", "a small dog", "the park", "a toy car", "a blue bird", "the sun", "a cake"}
	var b strings.Builder
	fmt.Fprintf(&b, "Story %d, part %d.\n\n", i, v)
	for s := 0; s < 14; s++ {
		fmt.Fprintf(&b, "%s %s %s. ", names[r.IntN(len(names))], verbs[r.IntN(len(verbs))], things[r.IntN(len(things))])
		if s%5 == 4 {
			b.WriteString("\n\n")
		}
	}
	return b.String()
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// A document is acknowledged when a run logs it stored, or unchanged: a
// kill can land between a document's commit and its "stored" line, and the
// next run then finds it stored already.
var storedLine = regexp.MustCompile(`msg=(?:stored|unchanged) source=(\S+)`)

// TestIndexAddSurvivesKill9 kills `llmrt index add` (a child process) with
// SIGKILL at random moments while it ingests real files with the real
// model, several rounds on one collection, with files changed between
// rounds so that kills also land in replacements. After every kill a
// read-only open (what `llmrt index query` does) finds every document whose
// add was acknowledged ("stored" in the -v log: written and fsynced) at
// that version or a newer one, complete, each chunk with its vector; and
// any other document stored is complete too. A last run to the end leaves
// the collection equal to one built without kills, and it opens clean.
func TestIndexAddSurvivesKill9(t *testing.T) {
	home := t.TempDir()
	docs := filepath.Join(t.TempDir(), "docs")
	const nDocs = 24
	version := map[string]int{}  // path -> version on disk
	texts := map[string]string{} // hash -> text of every version written
	write := func(i, v int) {
		p := filepath.Join(docs, fmt.Sprintf("story%02d.txt", i))
		os.MkdirAll(docs, 0o755)
		if err := os.WriteFile(p, []byte(story(i, v)), 0o644); err != nil {
			t.Fatal(err)
		}
		version[p], texts[sha(story(i, v))] = v, story(i, v)
	}
	for i := 0; i < nDocs; i++ {
		write(i, 0)
	}
	flags := []string{"index", "add", "-c", "kb", "--chunk-size", "24", "--chunk-overlap", "4", "--batch", "4"}
	// Create the collection (and fetch the model into home) unkilled, with
	// one document.
	if out, errs, code := cli(t, home, append(flags, filepath.Join(docs, "story00.txt"))...); code != 0 {
		t.Fatalf("first add: %d %s %s", code, out, errs)
	}
	acked := map[string]int{filepath.Join(docs, "story00.txt"): 0} // path -> version acknowledged

	ctx := context.Background()
	e, err := engine.Open(ctx, engine.Options{Path: testmodel.Shared(t, "stories260K.gguf"), CtxPerSeq: 256, NParallel: 1, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	emb := rag.EngineEmbedder{E: e, Model: "stories260K"}
	// check opens the collection read-only and verifies it.
	check := func(round int) {
		t.Helper()
		s, err := rag.OpenStore(filepath.Join(home, "collections"), rag.StoreOptions{Embedder: emb, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		c, err := s.Get(ctx, "kb")
		if err != nil {
			t.Fatalf("round %d: read-only open after the kill: %v", round, err)
		}
		if rec := c.Recovery(); rec.MissingVectors != 0 || rec.Index.Corrupt != nil || rec.Index.DamagedSnapshot != nil {
			t.Fatalf("round %d: read-only open found %+v", round, rec)
		}
		stored := map[string]rag.SourceInfo{}
		for _, si := range c.Sources() {
			stored[si.Path] = si
			text, ok := texts[si.Hash]
			chunks := c.Chunks(si.Path)
			if !ok || len(chunks) == 0 || len(chunks) != si.Chunks {
				t.Fatalf("round %d: %s stored with %d chunks (record says %d), known content %v", round, si.Path, len(chunks), si.Chunks, ok)
			}
			for _, ch := range chunks {
				if ch.SourceHash != si.Hash || ch.End > len(text) || text[ch.Start:ch.End] != ch.Text {
					t.Fatalf("round %d: %s: chunk %d is not its document's text at %d-%d", round, si.Path, ch.ID, ch.Start, ch.End)
				}
			}
		}
		for p, v := range acked {
			si, ok := stored[p]
			if !ok {
				t.Fatalf("round %d: acknowledged %s is missing", round, p)
			}
			if si.Hash != sha(story(nth(p), v)) && si.Hash != sha(story(nth(p), version[p])) {
				t.Fatalf("round %d: acknowledged %s holds neither its acknowledged version %d nor the newest %d", round, p, v, version[p])
			}
			// Searchable by vector: its first and last chunks come back
			// for their own text.
			chunks := c.Chunks(p)
			for _, ch := range []rag.Chunk{chunks[0], chunks[len(chunks)-1]} {
				hits, err := c.Search(ctx, rag.EmbedText(ch.Title, ch.Text), rag.SearchOptions{K: 5, Mode: rag.Vector})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.ContainsFunc(hits, func(h rag.Hit) bool { return h.Chunk.ID == ch.ID }) {
					t.Fatalf("round %d: chunk %d of acknowledged %s is not found by its own text", round, ch.ID, p)
				}
			}
		}
		t.Logf("round %d: %d documents stored, %d acknowledged; read-only open: %s", round, len(stored), len(acked), c.Recovery())
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("LLMRT_KILL_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("kill delays from LLMRT_KILL_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	rounds := 6
	if testing.Short() {
		rounds = 3
	}
	for round := 1; round <= rounds; round++ {
		last := round == rounds
		if round%2 == 0 {
			for _, i := range rng.Perm(nDocs)[:6] { // new versions
				p := filepath.Join(docs, fmt.Sprintf("story%02d.txt", i))
				write(i, version[p]+1)
			}
		}
		args, _ := json.Marshal(append([]string{"--home", home, "-v"}, append(flags, docs)...))
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), cliChildEnv+"="+string(args))
		errPipe, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 256)
		go func() {
			sc := bufio.NewScanner(errPipe)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Kill after a random number of the documents left are stored,
		// a few milliseconds into the next one (none: while it starts).
		left := 0
		for p, v := range version {
			if a, ok := acked[p]; !ok || a != v {
				left++
			}
		}
		target := rng.IntN(left + 1)
		var deadline <-chan time.Time
		var delay time.Duration
		arm := func(d time.Duration) {
			if !last {
				delay, deadline = d, time.After(d)
			}
		}
		if target == 0 {
			arm(time.Duration(20+rng.IntN(300)) * time.Millisecond)
		}
		storedNow := 0
		handle := func(l string) {
			if m := storedLine.FindStringSubmatch(l); m != nil {
				acked[m[1]] = version[m[1]]
				if storedNow++; storedNow == target {
					arm(time.Duration(rng.IntN(25)) * time.Millisecond)
				}
			} else if strings.Contains(l, "collection recovered") || strings.Contains(l, "level=ERROR") || strings.HasPrefix(l, "error:") {
				t.Logf("round %d child: %s", round, l)
			}
		}
		killed := false
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				handle(l)
			case <-deadline:
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
				for l := range lines { // what it logged before dying counts
					handle(l)
				}
				break read
			}
		}
		err = cmd.Wait()
		if !killed && err != nil {
			t.Fatalf("round %d: llmrt index add ended before the kill: %v", round, err)
		}
		if killed {
			t.Logf("round %d: killed %v after %d documents were stored", round, delay, target)
		}
		check(round)
	}
	if len(acked) != nDocs {
		t.Fatalf("the last, unkilled run acknowledged %d of %d documents", len(acked), nDocs)
	}

	// Equal to a collection built in one go, and clean for a writer.
	ref := t.TempDir()
	if out, errs, code := cli(t, ref, append(flags, docs)...); code != 0 {
		t.Fatalf("reference add: %d %s %s", code, out, errs)
	}
	got, want := collectionChunks(t, home, emb), collectionChunks(t, ref, emb)
	if !slices.Equal(got, want) {
		t.Fatalf("after the kills the collection holds\n%q\nbuilt in one go it holds\n%q", got, want)
	}
	s, err := rag.OpenStore(filepath.Join(home, "collections"), rag.StoreOptions{Embedder: emb})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := s.Get(ctx, "kb")
	if err != nil || c.Recovery().String() != "" {
		t.Fatalf("writer open after the last run: %v, %s", err, c.Recovery())
	}
}

// nth is the document number in a story file's name.
func nth(path string) int {
	n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(path), "story"), ".txt"))
	return n
}

// collectionChunks lists collection kb of home, read-only: per chunk its
// source's name, title, offsets, tokens and text.
func collectionChunks(t *testing.T, home string, emb rag.Embedder) []string {
	t.Helper()
	s, err := rag.OpenStore(filepath.Join(home, "collections"), rag.StoreOptions{Embedder: emb, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := s.Get(context.Background(), "kb")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, si := range c.Sources() {
		for _, ch := range c.Chunks(si.Path) {
			out = append(out, fmt.Sprintf("%s %q %d-%d %d %q", filepath.Base(si.Path), ch.Title, ch.Start, ch.End, ch.Tokens, ch.Text))
		}
	}
	return out
}

// While llmrt serve holds a collection (it ingested through the API),
// llmrt index query and stats read it; index add, a second writer, is
// refused with a pointer to the API.
func TestIndexQueryBesideServer(t *testing.T) {
	home := t.TempDir()
	docs := t.TempDir()
	os.WriteFile(filepath.Join(docs, "tom.txt"), []byte("Tom lived by the sea. Every morning he went fishing in a small blue boat.\n"), 0o644)
	if out, errs, code := cli(t, home, "index", "add", "-c", "demo", docs); code != 0 {
		t.Fatalf("add: %d %s %s", code, out, errs)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		_, _, code := cliCtx(ctx, t, home, "", "serve", "--addr", addr, "--parallel", "1", "--ctx", "256")
		done <- code
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 && code != 130 {
			t.Errorf("serve exited %d", code)
		}
	}()
	body := `{"documents": [{"name": "lily.md", "text": "# Lily\n\nLily was a little girl who loved to play outside in the sun with her dog."}]}`
	var resp *http.Response
	var err error
	for i := 0; i < 200; i++ {
		if resp, err = http.Post("http://"+addr+"/v1/collections/demo/documents", "application/json", strings.NewReader(body)); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("server ingestion: %s", resp.Status)
	}

	out, errs, code := cli(t, home, "index", "query", "-c", "demo", "-k", "1", "Lily was a little girl who loved to play outside in the sun with her dog.")
	if code != 0 || !strings.Contains(out, "lily.md") {
		t.Fatalf("query beside the server: %d %s %s", code, out, errs)
	}
	if out, errs, code = cli(t, home, "index", "stats", "-c", "demo"); code != 0 || !strings.Contains(out, "2 documents") || !strings.Contains(out, "lily.md") {
		t.Fatalf("stats beside the server: %d %s %s", code, out, errs)
	}
	if _, errs, code = cli(t, home, "index", "add", "-c", "demo", docs); code != 1 || !strings.Contains(errs, "open in another process") {
		t.Fatalf("a second writer: %d %s", code, errs)
	}
}
