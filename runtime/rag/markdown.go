package rag

import (
	"regexp"
	"strings"
)

// ParseMarkdown splits Markdown into sections by its ATX (# Title) and
// setext (Title / ===) headings, ignoring heading-like lines in fenced code
// blocks and in YAML front matter. The text is the file itself.
func ParseMarkdown(name, text string) Document {
	type heading struct {
		level            int
		title            string
		start, bodyStart int
	}
	var heads []heading
	var fence string // the open code fence ("```" or "~~~"), "" outside
	prevStart, prevEnd := -1, -1
	prevText := false // the previous line is paragraph text (setext candidate)
	for pos := frontMatterEnd(text); pos < len(text); {
		end := strings.IndexByte(text[pos:], '\n')
		next := len(text)
		if end < 0 {
			end = len(text)
		} else {
			end += pos
			next = end + 1
		}
		line := strings.TrimRight(text[pos:end], "\r")
		indent := len(line) - len(strings.TrimLeft(line, " "))
		body := strings.TrimSpace(line)
		isText := false
		switch {
		case fence != "":
			if indent <= 3 && strings.HasPrefix(body, fence) && strings.Trim(body, fence[:1]) == "" {
				fence = ""
			}
		case indent <= 3 && (strings.HasPrefix(body, "```") || strings.HasPrefix(body, "~~~")):
			fence = body[:3]
		case indent <= 3 && strings.HasPrefix(body, "#"):
			if lvl, title, ok := atxHeading(body); ok {
				heads = append(heads, heading{lvl, title, pos, next})
				break
			}
			isText = true
		case indent <= 3 && prevText && body != "" && (strings.Trim(body, "=") == "" || strings.Trim(body, "-") == ""):
			lvl := 1
			if body[0] == '-' {
				lvl = 2
			}
			heads = append(heads, heading{lvl, cleanInline(strings.TrimSpace(text[prevStart:prevEnd])), prevStart, next})
		default:
			isText = body != "" && indent < 4 && !isBlockMarker(body)
		}
		prevText, prevStart, prevEnd = isText, pos, end
		pos = next
	}
	doc := Document{Format: "markdown", Text: text}
	first := len(text)
	if len(heads) > 0 {
		first = heads[0].start
	}
	doc.Sections = append(doc.Sections, Section{Title: name, Start: 0, End: first})
	var path [6]string
	for i, h := range heads {
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
		end := len(text)
		if i+1 < len(heads) {
			end = heads[i+1].start
		}
		doc.Sections = append(doc.Sections, Section{Title: strings.Join(parts, " > "), Level: h.level, Start: min(h.bodyStart, end), End: end})
	}
	return doc
}

// frontMatterEnd returns the offset after a leading YAML front matter block
// ("---" lines around it), or 0.
func frontMatterEnd(text string) int {
	first, rest, ok := strings.Cut(text, "\n")
	if !ok || strings.TrimRight(first, " \r") != "---" {
		return 0
	}
	off := len(first) + 1
	for rest != "" {
		line, after, _ := strings.Cut(rest, "\n")
		off += len(line) + 1
		if l := strings.TrimRight(line, " \r"); l == "---" || l == "..." {
			return min(off, len(text))
		}
		rest = after
	}
	return 0
}

// atxHeading parses "## Title ##" (body without indentation).
func atxHeading(body string) (level int, title string, ok bool) {
	for level < len(body) && body[level] == '#' {
		level++
	}
	if level > 6 || (level < len(body) && body[level] != ' ' && body[level] != '\t') {
		return 0, "", false
	}
	title = strings.TrimSpace(body[level:])
	if t := strings.TrimRight(title, "#"); t != title && (t == "" || strings.HasSuffix(t, " ") || strings.HasSuffix(t, "\t")) {
		title = strings.TrimSpace(t)
	}
	return level, cleanInline(title), true
}

// isBlockMarker reports lines that cannot be a setext heading's text.
func isBlockMarker(body string) bool {
	switch {
	case strings.HasPrefix(body, ">"), strings.HasPrefix(body, "|"):
		return true
	case len(body) >= 2 && strings.ContainsRune("-*+", rune(body[0])) && (body[1] == ' ' || body[1] == '\t'):
		return true
	}
	return orderedItem.MatchString(body)
}

var (
	orderedItem = regexp.MustCompile(`^\d{1,9}[.)](\s|$)`)
	mdLink      = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
)

// cleanInline drops inline Markdown from a heading: links keep their text,
// emphasis and code markers go.
func cleanInline(s string) string {
	s = mdLink.ReplaceAllString(s, "$1")
	s = strings.NewReplacer("**", "", "__", "", "`", "").Replace(s)
	return strings.TrimSpace(strings.Trim(s, "*_"))
}
