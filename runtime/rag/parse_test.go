package rag

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func sectionTitles(doc Document) []string {
	var out []string
	for _, s := range doc.Sections {
		out = append(out, s.Title)
	}
	return out
}

func sectionBody(doc Document, title string) string {
	for _, s := range doc.Sections {
		if s.Title == title {
			return strings.TrimSpace(doc.Text[s.Start:s.End])
		}
	}
	return "<no section " + title + ">"
}

func TestParseMarkdown(t *testing.T) {
	md := "Intro paragraph.\n\n" +
		"# Install **now**\n\nRun the [installer](http://x).\n\n" +
		"## On Linux ##\n\nUse apt.\n\n" +
		"```sh\n# not a heading\napt install x\n```\n\n" +
		"### Deep\n\ndeep text\n\n" +
		"Usage\n=====\n\nCall it.\n\n" +
		"Options\n-------\n\n- a list\n---\n\n" +
		"#hashtag is text\n"
	doc := ParseMarkdown("guide.md", md)
	want := []string{"guide.md", "Install now", "Install now > On Linux", "Install now > On Linux > Deep", "Usage", "Usage > Options"}
	if got := sectionTitles(doc); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("titles\n got %q\nwant %q", got, want)
	}
	if got := sectionBody(doc, "Install now > On Linux"); got != "Use apt.\n\n```sh\n# not a heading\napt install x\n```" {
		t.Errorf("On Linux body %q", got)
	}
	if got := sectionBody(doc, "Usage > Options"); !strings.Contains(got, "#hashtag is text") || !strings.Contains(got, "- a list\n---") {
		t.Errorf("Options body %q", got)
	}
	if got := sectionBody(doc, "guide.md"); got != "Intro paragraph." {
		t.Errorf("preamble %q", got)
	}
	if doc.Text != md {
		t.Error("markdown text is not the file")
	}
	// Front matter is preamble, not a setext heading.
	doc = ParseMarkdown("fm.md", "---\ntitle: Front\ntags: [a]\n---\n\n# Real\n\nbody\n")
	if got := sectionTitles(doc); strings.Join(got, "|") != "fm.md|Real" {
		t.Errorf("front matter titles %q", got)
	}
	if got := sectionBody(doc, "fm.md"); got != "---\ntitle: Front\ntags: [a]\n---" {
		t.Errorf("front matter preamble %q", got)
	}
}

func TestParseHTML(t *testing.T) {
	page := `<!doctype html><html><head><title> The  Manual </title>
<style>body { color: red }</style><script>alert("x")</script></head>
<body><nav><a href="/">Home</a> <a href="/x">Nav link</a></nav>
<p>Before   any
heading &amp; more.</p>
<h1>Chapter <em>One</em></h1>
<p>First <b>bold</b>word and <a href="#">link</a>.</p>
<div hidden>secret</div><p style="display: none">also secret</p>
<ul><li>item one</li><li>item two</li></ul>
<h2>Part A</h2><pre>code  line 1
  code line 2</pre>
<table><tr><td>c1</td><td>c2</td></tr></table>
<h1>Chapter Two</h1><p>Last<br>line.</p><noscript>enable js</noscript>
</body></html>`
	doc, err := ParseHTML("manual.html", []byte(page))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"The Manual", "Chapter One", "Chapter One > Part A", "Chapter Two"}
	if got := sectionTitles(doc); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("titles\n got %q\nwant %q", got, want)
	}
	for _, bad := range []string{"alert", "color", "Nav link", "Home", "secret", "enable js"} {
		if strings.Contains(doc.Text, bad) {
			t.Errorf("text keeps %q:\n%s", bad, doc.Text)
		}
	}
	checks := map[string]string{
		"The Manual":           "Before any heading & more.",
		"Chapter One":          "First boldword and link.\n\nitem one\nitem two",
		"Chapter One > Part A": "code  line 1\n  code line 2\n\nc1 c2",
		"Chapter Two":          "Last\nline.",
	}
	for title, body := range checks {
		if got := sectionBody(doc, title); got != body {
			t.Errorf("section %q body %q, want %q", title, got, body)
		}
	}
	// Headings are in the text (between sections), not in section bodies.
	if !strings.Contains(doc.Text, "\n\nChapter One\n\n") {
		t.Errorf("heading text missing: %q", doc.Text)
	}
}

func needPDFTool(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("pdftotext"); err != nil {
		t.Fatal("pdftotext is required for PDF ingestion: install poppler-utils (.ci/run does)")
	}
}

func TestParsePDF(t *testing.T) {
	needPDFTool(t)
	data := pdfFile(
		pdfLines("Quarterly report", "Revenue grew by twelve percent (12%).", "Costs were flat."),
		"BT /F1 12 Tf 72 720 Td [(Kerned)-278(words)-278(stay)-278(apart.)] TJ ET",
	)
	doc, err := ParsePDF(context.Background(), "report.pdf", data)
	if err != nil {
		t.Fatal(err)
	}
	if got := sectionTitles(doc); strings.Join(got, "|") != "report.pdf, page 1|report.pdf, page 2" {
		t.Fatalf("titles %q", got)
	}
	if got := sectionBody(doc, "report.pdf, page 1"); got != "Quarterly report\nRevenue grew by twelve percent (12%).\nCosts were flat." {
		t.Errorf("page 1 %q", got)
	}
	if got := sectionBody(doc, "report.pdf, page 2"); got != "Kerned words stay apart." {
		t.Errorf("page 2 %q", got)
	}
	// Not a PDF: pdftotext's error comes back.
	if _, err := ParsePDF(context.Background(), "bad.pdf", []byte("not a pdf")); err == nil {
		t.Error("garbage parsed as PDF")
	}
}

func TestParsePDFWithoutTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := ParsePDF(context.Background(), "x.pdf", pdfFile(pdfLines("x")))
	if !errors.Is(err, ErrNoPDFTool) {
		t.Fatalf("err = %v, want ErrNoPDFTool", err)
	}
}

func TestReadDocument(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.TXT"), "plain")
	writeFile(t, filepath.Join(dir, "b.bin"), "x")
	doc, err := ReadDocument(context.Background(), filepath.Join(dir, "a.TXT"))
	if err != nil || doc.Format != "text" || doc.Text != "plain" || doc.Source != filepath.Join(dir, "a.TXT") {
		t.Fatalf("doc %+v, err %v", doc, err)
	}
	if _, err := ReadDocument(context.Background(), filepath.Join(dir, "b.bin")); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("err = %v, want ErrUnsupported", err)
	}
	if _, err := ReadDocument(context.Background(), filepath.Join(dir, "none.md")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want not-exist", err)
	}
}
