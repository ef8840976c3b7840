package rag

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// corpus writes one file of every format into dir and returns their paths
// by format.
func corpus(t *testing.T, dir string, withPDF bool) map[string]string {
	t.Helper()
	files := map[string]string{
		"text":     filepath.Join(dir, "notes.txt"),
		"markdown": filepath.Join(dir, "guide", "install.md"),
		"html":     filepath.Join(dir, "web", "faq.html"),
	}
	writeFile(t, files["text"], "Meeting notes. The llama grazes in the meadow every morning.\n\nBudget approved for the new barn.\n")
	writeFile(t, files["markdown"], "# Install\n\nDownload the archive and unpack it into your home folder.\n\n## Linux\n\nRun the setup script with bash and reboot the machine.\n")
	writeFile(t, files["html"], "<html><head><title>FAQ</title><script>var secret='zzsecret';</script></head><body><h1>Questions</h1><p>How do I reset my password? Use the account page and follow the email link.</p></body></html>")
	writeFile(t, filepath.Join(dir, ".hidden", "skip.md"), "hidden folder")
	writeFile(t, filepath.Join(dir, ".skip.txt"), "hidden file")
	writeFile(t, filepath.Join(dir, "image.png"), "not a document")
	if withPDF {
		files["pdf"] = filepath.Join(dir, "report.pdf")
		data := pdfFile(pdfLines("Quarterly report.", "Revenue of the observatory grew by twelve percent."))
		if err := os.WriteFile(files["pdf"], data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func sourcesOf(c *Collection) []string {
	var out []string
	for _, s := range c.Sources() {
		out = append(out, s.Path)
	}
	return out
}

func chunkIDs(c *Collection, path string) []uint64 {
	var ids []uint64
	for _, ch := range c.Chunks(path) {
		ids = append(ids, ch.ID)
	}
	return ids
}

func TestIngestFormats(t *testing.T) {
	needPDFTool(t)
	emb := newBOW()
	s, _ := openTestStore(t, emb)
	ctx := context.Background()
	c, err := s.Create(ctx, "docs", CreateOptions{Chunking: ChunkOptions{Size: 64, Overlap: 8}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := corpus(t, dir, true)
	var calls [][2]int
	rep, err := c.AddPath(ctx, dir, AddOptions{BatchSize: 2, Progress: func(d, n int) { calls = append(calls, [2]int{d, n}) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failed) != 0 {
		t.Fatalf("failed: %v", rep.Failed)
	}
	want := []string{files["text"], files["markdown"], files["html"], files["pdf"]}
	slices.Sort(want)
	if got := sourcesOf(c); !slices.Equal(got, want) {
		t.Fatalf("sources %q, want %q", got, want)
	}
	if len(rep.Added) != 4 || rep.Chunks == 0 || rep.Tokens == 0 {
		t.Fatalf("report %+v", rep)
	}
	// Progress went from 0 to all in batches of 2.
	if len(calls) < 2 || calls[0][0] != 0 || calls[len(calls)-1][0] != rep.Chunks || calls[len(calls)-1][1] != rep.Chunks {
		t.Fatalf("progress calls %v for %d chunks", calls, rep.Chunks)
	}
	if int(emb.calls.Load()) != (rep.Chunks+1)/2 {
		t.Errorf("%d embed calls for %d chunks in batches of 2", emb.calls.Load(), rep.Chunks)
	}
	// Every format's text is found, with the right titles and offsets.
	for format, path := range files {
		info := c.Sources()[slices.Index(want, path)]
		if info.Format != format || info.Hash == "" || info.Chunks == 0 {
			t.Errorf("%s: info %+v", path, info)
		}
		doc, err := ReadDocument(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range c.Chunks(path) {
			if doc.Text[ch.Start:ch.End] != ch.Text {
				t.Errorf("%s: chunk %d text is not text[%d:%d]", path, ch.ID, ch.Start, ch.End)
			}
			if ch.Source != path || ch.SourceHash != info.Hash {
				t.Errorf("chunk source %q hash %q", ch.Source, ch.SourceHash)
			}
		}
	}
	for _, q := range []struct{ query, source, title string }{
		{"setup script bash reboot", files["markdown"], "Install > Linux"},
		{"reset my password", files["html"], "Questions"},
		{"observatory revenue", files["pdf"], "report.pdf, page 1"},
		{"llama grazes meadow", files["text"], "notes.txt"},
	} {
		hits, err := c.Search(ctx, q.query, SearchOptions{K: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) != 1 || hits[0].Chunk.Source != q.source || hits[0].Chunk.Title != q.title {
			t.Errorf("query %q: hits %+v, want %s (%s)", q.query, hits, q.source, q.title)
		}
	}
	// Script text never made it in.
	if hits, _ := c.Search(ctx, "zzsecret", SearchOptions{K: 1, Mode: Keyword}); len(hits) != 0 {
		t.Errorf("script text indexed: %+v", hits)
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Documents != 4 || st.Chunks != rep.Chunks || st.Tokens != rep.Tokens || st.Model != "bow-test" || st.Dim != 512 || st.DiskBytes == 0 || st.IndexBytes == 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestReingest(t *testing.T) {
	emb := newBOW()
	s, _ := openTestStore(t, emb)
	ctx := context.Background()
	c, err := s.Create(ctx, "docs", CreateOptions{Chunking: ChunkOptions{Size: 32, Overlap: 4}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := corpus(t, dir, false)
	if _, err := c.AddPath(ctx, dir, AddOptions{}); err != nil {
		t.Fatal(err)
	}
	before := map[string][]uint64{}
	for _, p := range files {
		before[p] = chunkIDs(c, p)
	}

	// Unchanged: nothing is embedded.
	calls := emb.calls.Load()
	rep, err := c.AddPath(ctx, dir, AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if emb.calls.Load() != calls || len(rep.Unchanged) != 3 || len(rep.Added)+len(rep.Updated) != 0 {
		t.Fatalf("re-ingest of unchanged files: %d embed calls, report %+v", emb.calls.Load()-calls, rep)
	}

	// One file changed: only its chunks are replaced.
	writeFile(t, files["markdown"], "# Install\n\nThe installer now ships as a flatpak bundle.\n")
	texts := emb.texts.Load()
	rep, err = c.AddPath(ctx, dir, AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Updated, []string{files["markdown"]}) || len(rep.Unchanged) != 2 {
		t.Fatalf("report %+v", rep)
	}
	if got := emb.texts.Load() - texts; got != int64(rep.Chunks) || rep.Chunks != 1 {
		t.Fatalf("embedded %d texts for %d new chunks, want 1", got, rep.Chunks)
	}
	for _, p := range []string{files["text"], files["html"]} {
		if got := chunkIDs(c, p); !slices.Equal(got, before[p]) {
			t.Errorf("%s: ids %v changed from %v", p, got, before[p])
		}
	}
	newIDs := chunkIDs(c, files["markdown"])
	for _, id := range newIDs {
		if slices.Contains(before[files["markdown"]], id) {
			t.Errorf("changed file kept chunk id %d", id)
		}
	}
	hits, err := c.Search(ctx, "setup script bash reboot", SearchOptions{K: 10, Mode: Keyword})
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 0 {
		t.Errorf("old text still found: %+v", hits)
	}
	hits, err = c.Search(ctx, "flatpak bundle installer", SearchOptions{K: 1})
	if err != nil || len(hits) != 1 || hits[0].Chunk.ID != newIDs[0] {
		t.Fatalf("new text: hits %+v, err %v", hits, err)
	}
	// The index holds only live chunks.
	if n := c.vectors().Len(); n != len(c.chunks) {
		t.Errorf("index holds %d vectors for %d chunks", n, len(c.chunks))
	}

	// Removal: explicit, then by pruning a deleted file.
	if err := c.RemoveSource(ctx, files["text"]); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveSource(ctx, files["text"]); err == nil {
		t.Error("removing a removed source succeeded")
	}
	if err := os.Remove(files["html"]); err != nil {
		t.Fatal(err)
	}
	rep, err = c.AddPath(ctx, dir, AddOptions{Prune: true})
	if err != nil {
		t.Fatal(err)
	}
	// notes.txt is back (its file is there), faq.html is pruned.
	if !slices.Equal(rep.Removed, []string{files["html"]}) || !slices.Equal(rep.Added, []string{files["text"]}) {
		t.Fatalf("report %+v", rep)
	}
	if got := sourcesOf(c); !slices.Equal(got, []string{files["markdown"], files["text"]}) {
		t.Fatalf("sources %q", got)
	}
	if hits, _ := c.Search(ctx, "password", SearchOptions{Mode: Keyword}); len(hits) != 0 {
		t.Errorf("pruned source still found: %+v", hits)
	}
	if c.vectors().Len() != len(c.chunks) {
		t.Errorf("index holds %d vectors for %d chunks", c.vectors().Len(), len(c.chunks))
	}
}

func TestIngestSingleFileAndErrors(t *testing.T) {
	emb := newBOW()
	s, _ := openTestStore(t, emb)
	ctx := context.Background()
	c, err := s.Create(ctx, "one", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "a.md")
	writeFile(t, p, "# A\n\nalpha text\n")
	writeFile(t, filepath.Join(dir, "empty.txt"), "")
	bad := filepath.Join(dir, "x.bin")
	writeFile(t, bad, "x")
	if _, err := c.AddPath(ctx, bad, AddOptions{}); err == nil {
		t.Error("unsupported file accepted")
	}
	if _, err := c.AddPath(ctx, filepath.Join(dir, "missing.md"), AddOptions{}); err == nil {
		t.Error("missing file accepted")
	}
	rel, err := filepath.Rel(mustWd(t), p)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := c.AddPath(ctx, rel, AddOptions{})
	if err != nil || !slices.Equal(rep.Added, []string{p}) {
		t.Fatalf("relative path: report %+v, err %v", rep, err)
	}
	// An empty file is a source with no chunks, skipped next time.
	rep, err = c.AddPath(ctx, filepath.Join(dir, "empty.txt"), AddOptions{})
	if err != nil || len(rep.Added) != 1 || rep.Chunks != 0 {
		t.Fatalf("empty file: report %+v, err %v", rep, err)
	}
	rep, err = c.AddPath(ctx, filepath.Join(dir, "empty.txt"), AddOptions{})
	if err != nil || len(rep.Unchanged) != 1 {
		t.Fatalf("empty file again: report %+v, err %v", rep, err)
	}
	// A document given directly.
	doc := ParseMarkdown("mem.md", "# Memo\n\nquokka sightings doubled\n")
	doc.Source = "memo://1"
	if _, err := c.AddDocument(ctx, doc, "", AddOptions{}); err != nil {
		t.Fatal(err)
	}
	hits, err := c.Search(ctx, "quokka", SearchOptions{Mode: Hybrid, K: 1})
	if err != nil || len(hits) != 1 || hits[0].Chunk.Source != "memo://1" || hits[0].Chunk.Title != "Memo" {
		t.Fatalf("hits %+v, err %v", hits, err)
	}
	// A linked file is ingested under its link's path; a linked folder
	// is not followed.
	linked := t.TempDir()
	writeFile(t, filepath.Join(linked, "target.md"), "# Linked\n\nwombat burrows\n")
	writeFile(t, filepath.Join(linked, "sub", "deep.md"), "# Deep\n\nnot followed\n")
	ldir := t.TempDir()
	if err := os.Symlink(filepath.Join(linked, "target.md"), filepath.Join(ldir, "link.md")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(linked, "sub"), filepath.Join(ldir, "sub")); err != nil {
		t.Fatal(err)
	}
	rep, err = c.AddPath(ctx, ldir, AddOptions{})
	if err != nil || !slices.Equal(rep.Added, []string{filepath.Join(ldir, "link.md")}) {
		t.Fatalf("links: report %+v, err %v", rep, err)
	}
	// A cancelled context stops ingestion.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	writeFile(t, filepath.Join(dir, "b.txt"), "beta")
	if _, err := c.AddPath(cctx, dir, AddOptions{}); err == nil {
		t.Error("cancelled ingestion succeeded")
	}
	if strings.Contains(strings.Join(sourcesOf(c), " "), "b.txt") {
		t.Error("cancelled ingestion stored a file")
	}
}

func mustWd(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}
