package rag

import (
	"fmt"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// sentence i is a distinct 8-word sentence.
func sentence(i int) string {
	return fmt.Sprintf("Sentence %d says word%da word%db word%dc here.", i, i, i, i)
}

func paragraph(from, n int) string {
	var s []string
	for i := from; i < from+n; i++ {
		s = append(s, sentence(i))
	}
	return strings.Join(s, " ")
}

// checkPieces asserts the invariants every chunking must keep: exact
// offsets, one section per chunk, the token budget (title included), and
// that every word of every section is in some chunk.
func checkPieces(t *testing.T, doc Document, ps []Piece, opt ChunkOptions) {
	t.Helper()
	opt = opt.withDefaults()
	for i, p := range ps {
		if p.Start < 0 || p.End > len(doc.Text) || p.Start >= p.End {
			t.Fatalf("piece %d spans %d..%d of %d bytes", i, p.Start, p.End, len(doc.Text))
		}
		text := doc.Text[p.Start:p.End]
		if strings.TrimSpace(text) != text {
			t.Errorf("piece %d has surrounding white space: %q", i, text)
		}
		n, _ := wsCount(text)
		if n != p.Tokens {
			t.Errorf("piece %d records %d tokens, its text has %d", i, p.Tokens, n)
		}
		tt, _ := wsCount(p.Title + "\n\n")
		if tt+n > opt.Size && n > 1 {
			t.Errorf("piece %d: %d title + %d text tokens > size %d", i, tt, n, opt.Size)
		}
		in := 0
		for _, s := range doc.Sections {
			if p.Start >= s.Start && p.End <= s.End {
				in++
				if p.Title != s.Title {
					t.Errorf("piece %d titled %q, its section %q", i, p.Title, s.Title)
				}
			}
		}
		if in != 1 {
			t.Errorf("piece %d (%d..%d) lies in %d sections, want 1", i, p.Start, p.End, in)
		}
	}
	for _, s := range doc.Sections {
		covered := make([]bool, s.End-s.Start)
		for _, p := range ps {
			if p.Start >= s.Start && p.End <= s.End {
				for j := p.Start; j < p.End; j++ {
					covered[j-s.Start] = true
				}
			}
		}
		for j, c := range covered {
			if c || !utf8.RuneStart(doc.Text[s.Start+j]) {
				continue
			}
			if r, _ := utf8.DecodeRuneInString(doc.Text[s.Start+j : s.End]); !unicode.IsSpace(r) {
				t.Fatalf("byte %d (%q) of section %q is in no chunk", s.Start+j, doc.Text[s.Start+j:min(s.End, s.Start+j+20)], s.Title)
			}
		}
	}
}

func TestChunkHeadingsRespected(t *testing.T) {
	md := "# Alpha\n\n" + paragraph(0, 3) + "\n\n" + paragraph(3, 3) + "\n\n" +
		"# Beta\n\n" + paragraph(6, 2) + "\n\n## Beta child\n\n" + paragraph(8, 4) + "\n\n" +
		"# Gamma\n\n" + paragraph(12, 1) + "\n"
	doc := ParseMarkdown("doc.md", md)
	opt := ChunkOptions{Size: 40, Overlap: 8}
	ps, err := Split(doc, wsCount, opt)
	if err != nil {
		t.Fatal(err)
	}
	checkPieces(t, doc, ps, opt)
	titles := map[string]int{}
	for _, p := range ps {
		titles[p.Title]++
		text := doc.Text[p.Start:p.End]
		if strings.Contains(text, "#") {
			t.Errorf("chunk contains a heading line: %q", text)
		}
	}
	for _, want := range []string{"Alpha", "Beta", "Beta > Beta child", "Gamma"} {
		if titles[want] == 0 {
			t.Errorf("no chunk titled %q (titles %v)", want, titles)
		}
	}
	// Gamma's single sentence is a chunk of its own, not glued to Beta.
	last := ps[len(ps)-1]
	if got := doc.Text[last.Start:last.End]; got != sentence(12) {
		t.Errorf("last chunk %q, want %q", got, sentence(12))
	}
}

func TestChunkOverlap(t *testing.T) {
	text := paragraph(0, 20) // 160 words, one paragraph
	doc := ParseText("t.txt", text)
	opt := ChunkOptions{Size: 50, Overlap: 16}
	ps, err := Split(doc, wsCount, opt)
	if err != nil {
		t.Fatal(err)
	}
	checkPieces(t, doc, ps, opt)
	if len(ps) < 4 {
		t.Fatalf("%d chunks, want at least 4", len(ps))
	}
	for i := 1; i < len(ps); i++ {
		a, b := ps[i-1], ps[i]
		if b.Start >= a.End {
			t.Fatalf("chunks %d and %d do not overlap (%d..%d, %d..%d)", i-1, i, a.Start, a.End, b.Start, b.End)
		}
		if b.Start <= a.Start {
			t.Fatalf("chunk %d starts at %d, not after chunk %d at %d", i, b.Start, i-1, a.Start)
		}
		ov := text[b.Start:a.End]
		n, _ := wsCount(ov)
		if n > opt.Overlap {
			t.Errorf("overlap of %d tokens > %d: %q", n, opt.Overlap, ov)
		}
		// Overlaps are whole sentences.
		if !strings.HasPrefix(ov, "Sentence ") || !strings.HasSuffix(ov, "here.") {
			t.Errorf("overlap %q is not whole sentences", ov)
		}
	}
	// No overlap asked, none given.
	ps, err = Split(doc, wsCount, ChunkOptions{Size: 50, Overlap: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(ps); i++ {
		if ps[i].Start < ps[i-1].End {
			t.Fatalf("chunks overlap with Overlap -1")
		}
	}
}

func TestChunkParagraphsPacked(t *testing.T) {
	// Paragraphs of 16 words: two fit in 40 tokens, three do not.
	var paras []string
	for i := 0; i < 7; i++ {
		paras = append(paras, paragraph(2*i, 2))
	}
	text := strings.Join(paras, "\n\n")
	doc := ParseText("p.txt", text)
	opt := ChunkOptions{Size: 40, Overlap: -1}
	ps, err := Split(doc, wsCount, opt)
	if err != nil {
		t.Fatal(err)
	}
	checkPieces(t, doc, ps, opt)
	if len(ps) != 4 {
		t.Fatalf("%d chunks, want 4 (2+2+2+1 paragraphs)", len(ps))
	}
	for i, p := range ps {
		got := text[p.Start:p.End]
		want := strings.Join(paras[2*i:min(2*i+2, len(paras))], "\n\n")
		if got != want {
			t.Errorf("chunk %d = %q, want %q", i, got, want)
		}
	}
}

func TestChunkLongParagraphSplit(t *testing.T) {
	// One 300-word "sentence" without punctuation, and a 1000-character
	// word, in a paragraph.
	words := make([]string, 300)
	for i := range words {
		words[i] = fmt.Sprintf("w%d", i)
	}
	long := strings.Join(words, " ")
	giant := strings.Repeat("x", 1000)
	text := "Intro line.\n\n" + long + " " + giant + " end.\n\nOutro line."
	doc := ParseText("long.txt", text)
	// A counter where every 10 bytes of a word is a token, so the giant
	// word must be cut inside.
	count := func(s string) (int, error) {
		n := 0
		for _, w := range strings.Fields(s) {
			n += (len(w) + 9) / 10
		}
		return n, nil
	}
	opt := ChunkOptions{Size: 64, Overlap: 8}
	ps, err := Split(doc, count, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) < 5 {
		t.Fatalf("%d chunks, want the long paragraph split in several", len(ps))
	}
	cut := false
	for i, p := range ps {
		s := text[p.Start:p.End]
		n, _ := count(s)
		tt, _ := count(p.Title + "\n\n")
		if n+tt > opt.Size {
			t.Errorf("chunk %d has %d+%d tokens > %d", i, tt, n, opt.Size)
		}
		if strings.Contains(s, "x") && !strings.Contains(s, giant) {
			cut = true
		}
		if n != p.Tokens {
			t.Errorf("chunk %d records %d tokens, has %d", i, p.Tokens, n)
		}
	}
	if !cut {
		t.Error("the over-long word was not cut")
	}
	// Every word is in some chunk.
	for _, w := range append(words, "Intro", "Outro") {
		found := false
		for _, p := range ps {
			for _, f := range strings.Fields(text[p.Start:p.End]) {
				if f == w || strings.TrimSuffix(f, ".") == w {
					found = true
				}
			}
		}
		if !found {
			t.Fatalf("word %q lost", w)
		}
	}
}

func TestChunkOffsetsFormats(t *testing.T) {
	html := `<html><head><title>Page</title><style>p{}</style></head><body>
<nav>Home | About</nav><h1>Guide</h1><p>` + paragraph(0, 4) + `</p><h2>Setup</h2><p>` + paragraph(4, 6) + `</p>
<script>var x = "hidden";</script></body></html>`
	hdoc, err := ParseHTML("page.html", []byte(html))
	if err != nil {
		t.Fatal(err)
	}
	mdoc := ParseMarkdown("x.md", "Preamble text here.\n\nTitle\n=====\n\n"+paragraph(0, 9)+"\n\nSub\n---\n\n"+paragraph(9, 3))
	for _, doc := range []Document{hdoc, mdoc, ParseText("x.txt", "  \n\n"+paragraph(0, 12)+"\n\n\n"+paragraph(12, 5)+"\n  ")} {
		opt := ChunkOptions{Size: 30, Overlap: 8}
		ps, err := Split(doc, wsCount, opt)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) < 3 {
			t.Errorf("%s: %d chunks", doc.Format, len(ps))
		}
		checkPieces(t, doc, ps, opt)
	}
}

func TestChunkTitleBudget(t *testing.T) {
	// A 10-word title leaves 20 of 30 tokens for the text.
	title := "one two three four five six seven eight nine ten"
	doc := Document{Text: paragraph(0, 10), Sections: []Section{{Title: title, Start: 0, End: len(paragraph(0, 10))}}}
	ps, err := Split(doc, wsCount, ChunkOptions{Size: 30, Overlap: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Tokens > 20 {
			t.Fatalf("chunk of %d tokens under a 10-token title, size 30", p.Tokens)
		}
	}
	if len(ps) != 5 {
		t.Fatalf("%d chunks, want 5 (two 8-word sentences each)", len(ps))
	}
}

func TestSentences(t *testing.T) {
	s := `First one. "Quoted!" Then (a list):
- item a
- item b
1. numbered
Last? yes… end`
	var got []string
	for _, sp := range sentences(s, 0, len(s)) {
		got = append(got, s[sp[0]:sp[1]])
	}
	want := []string{"First one.", `"Quoted!"`, "Then (a list):", "- item a", "- item b", "1. numbered\nLast?", "yes…", "end"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("sentences\n got %q\nwant %q", got, want)
	}
}
