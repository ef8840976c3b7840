package rag

import (
	"sort"
	"strings"
)

// SourceText is an ingested document's text, rebuilt from its chunks.
type SourceText struct {
	Source string
	Text   string
}

// Texts rebuilds the text of every source from its chunks, in document
// order: text shared by overlapping chunks comes once, a section's title
// is written as a heading where the section changes (headings are not
// part of chunks), and separate pieces are joined by a blank line. It
// serves continued pre-training on a collection (llmrt tune --collection),
// which needs the documents even when they were uploaded, not read from
// files.
func (c *Collection) Texts() []SourceText {
	var out []SourceText
	for _, src := range c.Sources() {
		chunks := c.Chunks(src.Path)
		if len(chunks) == 0 {
			continue
		}
		sort.SliceStable(chunks, func(i, j int) bool { return chunks[i].Start < chunks[j].Start })
		var sb strings.Builder
		end, title := -1, ""
		for _, ch := range chunks {
			if ch.Title != title {
				title = ch.Title
				if sb.Len() > 0 {
					sb.WriteString("\n\n")
				}
				sb.WriteString(lastTitle(title))
				sb.WriteString("\n\n")
				end = -1
			}
			text, start := ch.Text, ch.Start
			if end > start {
				// The overlap with the previous chunk is already written;
				// the rest continues it as it is.
				cut := min(end-start, len(text))
				text, start = text[cut:], start+cut
			} else {
				if end >= 0 {
					sb.WriteString("\n\n")
				}
				text = strings.TrimLeft(text, " \t\r\n")
			}
			sb.WriteString(text)
			end = max(end, ch.End)
		}
		out = append(out, SourceText{Source: src.Path, Text: strings.TrimSpace(sb.String())})
	}
	return out
}

// lastTitle is the innermost heading of a heading path ("A > B" -> "B").
func lastTitle(t string) string {
	if i := strings.LastIndex(t, " > "); i >= 0 {
		return t[i+3:]
	}
	return t
}
