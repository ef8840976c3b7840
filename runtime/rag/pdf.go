package rag

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// ErrNoPDFTool is returned for PDF files when pdftotext (poppler-utils) is
// not installed.
var ErrNoPDFTool = errors.New("pdftotext not found on PATH (install poppler-utils)")

// ParsePDF extracts the text of a PDF with pdftotext, one section per page
// titled "name, page N". The text keeps pdftotext's form feeds between
// pages, so offsets index into its output.
func ParsePDF(ctx context.Context, name string, data []byte) (Document, error) {
	tool, err := exec.LookPath("pdftotext")
	if err != nil {
		return Document{}, ErrNoPDFTool
	}
	// pdftotext reads a file, not stdin; write the bytes we hashed so the
	// text matches them even if the file changes meanwhile.
	f, err := os.CreateTemp("", "llmrt-*.pdf")
	if err != nil {
		return Document{}, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return Document{}, err
	}
	if err := f.Close(); err != nil {
		return Document{}, err
	}
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, "-enc", "UTF-8", "-eol", "unix", "-q", f.Name(), "-")
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return Document{}, ctx.Err()
		}
		return Document{}, fmt.Errorf("pdftotext: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	text := validUTF8(out.Bytes())
	doc := Document{Format: "pdf", Text: text}
	start := 0
	for page := 1; start < len(text) || page == 1; page++ {
		end := strings.IndexByte(text[start:], '\f')
		next := len(text)
		if end < 0 {
			end = len(text)
		} else {
			end += start
			next = end + 1
		}
		doc.Sections = append(doc.Sections, Section{Title: fmt.Sprintf("%s, page %d", name, page), Start: start, End: end})
		start = next
	}
	return doc, nil
}
