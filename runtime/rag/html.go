package rag

import (
	"bytes"
	"fmt"
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// ParseHTML extracts the visible text of an HTML page. Script, style,
// template, nav and hidden elements are dropped; block elements become
// paragraphs (separated by blank lines), list items and table rows lines;
// h1-h6 start sections titled by their heading path. The text before the
// first heading is titled with the page's <title>, or name.
func ParseHTML(name string, data []byte) (Document, error) {
	root, err := html.Parse(bytes.NewReader(data))
	if err != nil {
		return Document{}, fmt.Errorf("html: %w", err)
	}
	w := &htmlText{}
	w.walk(root, false)
	title := name
	if t := strings.TrimSpace(w.title); t != "" {
		title = t
	}
	doc := Document{Format: "html", Text: w.b.String()}
	first := len(doc.Text)
	if len(w.heads) > 0 {
		first = w.heads[0].start
	}
	doc.Sections = append(doc.Sections, Section{Title: title, Start: 0, End: first})
	var path [6]string
	for i, h := range w.heads {
		path[h.level-1] = h.title
		for l := h.level; l < 6; l++ {
			path[l] = ""
		}
		var parts []string
		for _, p := range path[:h.level] {
			if p != "" {
				parts = append(parts, p)
			}
		}
		end := len(doc.Text)
		if i+1 < len(w.heads) {
			end = w.heads[i+1].start
		}
		doc.Sections = append(doc.Sections, Section{Title: strings.Join(parts, " > "), Level: h.level, Start: min(h.bodyStart, end), End: end})
	}
	return doc, nil
}

type htmlHeading struct {
	level            int
	title            string
	start, bodyStart int
}

// htmlText accumulates visible text. Breaks between pieces of text are
// pending until the next text arrives, so the output has no leading or
// trailing blank lines and never more than one blank line in a row.
type htmlText struct {
	b       strings.Builder
	pending int // 0 nothing, 1 space, 2 newline, 3 blank line
	title   string
	heads   []htmlHeading
}

const (
	brSpace = 1 + iota
	brLine
	brPara
)

func (w *htmlText) brk(kind int) { w.pending = max(w.pending, kind) }

func (w *htmlText) text(s string, pre bool) {
	if !pre {
		s = strings.Join(strings.Fields(s), " ")
	}
	if s == "" {
		return
	}
	if w.b.Len() > 0 {
		switch w.pending {
		case brSpace:
			w.b.WriteByte(' ')
		case brLine:
			w.b.WriteByte('\n')
		case brPara:
			w.b.WriteString("\n\n")
		}
	}
	w.pending = 0
	w.b.WriteString(s)
}

func isSpaceStart(s string) bool { return s != "" && (s[0] == ' ' || s[0] == '\t' || s[0] == '\n') }

// rawHasTrailingSpace tells whether a text node ends in white space, which
// separates it from the next inline text.
func rawHasTrailingSpace(s string) bool {
	return s != "" && strings.ContainsRune(" \t\n\r\f", rune(s[len(s)-1]))
}

func (w *htmlText) walk(n *html.Node, pre bool) {
	switch n.Type {
	case html.TextNode:
		if !pre && isSpaceStart(n.Data) {
			w.brk(brSpace)
		}
		w.text(n.Data, pre)
		if !pre && rawHasTrailingSpace(n.Data) {
			w.brk(brSpace)
		}
		return
	case html.ElementNode:
		if hidden(n) {
			return
		}
		switch n.DataAtom {
		case atom.Script, atom.Style, atom.Noscript, atom.Template, atom.Nav, atom.Svg,
			atom.Iframe, atom.Object, atom.Canvas, atom.Button, atom.Select, atom.Input, atom.Textarea:
			return
		case atom.Title:
			w.title = strings.Join(strings.Fields(textOf(n)), " ")
			return
		case atom.Head:
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				if c.Type == html.ElementNode && c.DataAtom == atom.Title {
					w.walk(c, false)
				}
			}
			return
		case atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6:
			t := strings.Join(strings.Fields(textOf(n)), " ")
			if t == "" {
				return
			}
			w.brk(brPara)
			w.text(t, false)
			// The heading's offset is where its text begins.
			start := w.b.Len() - len(t)
			w.brk(brPara)
			body := w.b.Len()
			w.heads = append(w.heads, htmlHeading{level: int(n.Data[1] - '0'), title: t, start: start, bodyStart: body})
			return
		case atom.Br:
			w.brk(brLine)
			return
		case atom.Pre:
			w.brk(brPara)
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				w.walk(c, true)
			}
			w.brk(brPara)
			return
		}
	}
	kind := blockBreak(n)
	w.brk(kind)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		w.walk(c, pre)
	}
	w.brk(kind)
}

// blockBreak is the break an element puts around its content.
func blockBreak(n *html.Node) int {
	if n.Type != html.ElementNode {
		return 0
	}
	switch n.DataAtom {
	case atom.Li, atom.Tr, atom.Dt, atom.Dd, atom.Option, atom.Caption, atom.Figcaption:
		return brLine
	case atom.Td, atom.Th:
		return brSpace
	case atom.P, atom.Div, atom.Section, atom.Article, atom.Main, atom.Header, atom.Footer,
		atom.Aside, atom.Blockquote, atom.Ul, atom.Ol, atom.Dl, atom.Table, atom.Form,
		atom.Fieldset, atom.Figure, atom.Address, atom.Details, atom.Summary, atom.Hr, atom.Body:
		return brPara
	}
	return 0
}

func hidden(n *html.Node) bool {
	for _, a := range n.Attr {
		switch strings.ToLower(a.Key) {
		case "hidden":
			return true
		case "aria-hidden":
			if a.Val == "true" {
				return true
			}
		case "style":
			v := strings.ReplaceAll(strings.ToLower(a.Val), " ", "")
			if strings.Contains(v, "display:none") || strings.Contains(v, "visibility:hidden") {
				return true
			}
		}
	}
	return false
}

func textOf(n *html.Node) string {
	var sb strings.Builder
	var rec func(*html.Node)
	rec = func(n *html.Node) {
		if n.Type == html.TextNode {
			sb.WriteString(n.Data)
			return
		}
		if n.Type == html.ElementNode && (n.DataAtom == atom.Script || n.DataAtom == atom.Style || hidden(n)) {
			return
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			rec(c)
		}
	}
	rec(n)
	return sb.String()
}
