package rag

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// Document is a source file turned into text, with its sections.
type Document struct {
	// Source identifies the document (its absolute path when read from
	// a file).
	Source string
	// Format is "text", "markdown", "html" or "pdf".
	Format string
	// Text is what chunk offsets index into.
	Text string
	// Sections cover Text in order without overlapping; each one is the
	// body under a heading (the heading line itself is not part of it,
	// its text is in Title).
	Sections []Section
}

// Section is a part of a document under one heading.
type Section struct {
	// Title is the heading path, outermost first, joined by " > "; the
	// part before the first heading is titled with the document title
	// or file name.
	Title string
	// Level is the heading level (1-6), 0 for the part before the first
	// heading.
	Level int
	// Start and End are byte offsets of the body in Document.Text.
	Start, End int
}

// ErrUnsupported is returned for files of a format rag cannot read.
var ErrUnsupported = errors.New("unsupported file type")

// Formats maps the file extensions rag reads to their format names.
var formats = map[string]string{
	".txt": "text", ".text": "text",
	".md": "markdown", ".markdown": "markdown",
	".html": "html", ".htm": "html", ".xhtml": "html",
	".pdf": "pdf",
}

// FormatOf returns the format of a file name by its extension, or "" when
// rag does not read it.
func FormatOf(path string) string {
	return formats[strings.ToLower(filepath.Ext(path))]
}

// ReadDocument reads and parses a file by its extension.
func ReadDocument(ctx context.Context, path string) (Document, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Document{}, err
	}
	return ParseDocument(ctx, path, data)
}

// ParseDocument parses the content of a file named path by its extension.
func ParseDocument(ctx context.Context, path string, data []byte) (Document, error) {
	name := filepath.Base(path)
	var doc Document
	var err error
	switch FormatOf(path) {
	case "text":
		doc = ParseText(name, validUTF8(data))
	case "markdown":
		doc = ParseMarkdown(name, validUTF8(data))
	case "html":
		doc, err = ParseHTML(name, data)
	case "pdf":
		doc, err = ParsePDF(ctx, name, data)
	default:
		return Document{}, fmt.Errorf("%s: %w (want .txt, .md, .html or .pdf)", path, ErrUnsupported)
	}
	if err != nil {
		return Document{}, fmt.Errorf("parse %s: %w", path, err)
	}
	doc.Source = path
	return doc, nil
}

// ParseText reads plain text: one section titled name.
func ParseText(name, text string) Document {
	return Document{Format: "text", Text: text, Sections: []Section{{Title: name, Start: 0, End: len(text)}}}
}

// validUTF8 returns data as a string with invalid bytes replaced, keeping
// the length of valid input (so offsets into a UTF-8 file are offsets into
// the file).
func validUTF8(data []byte) string {
	if utf8.Valid(data) {
		return string(data)
	}
	return strings.ToValidUTF8(string(data), "\uFFFD")
}
