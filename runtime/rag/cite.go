package rag

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// CiteInstruction tells a model to answer from numbered passages and cite
// them.
const CiteInstruction = "Answer using the numbered passages below. Cite the passages you use as [n]. If they do not contain the answer, say so."

// ContextBlock numbers the hits for a prompt, one per paragraph:
//
//	[1] (guide.md: Install > Linux) text of the chunk
func ContextBlock(hits []Hit) string {
	var sb strings.Builder
	for i, h := range hits {
		label := filepath.Base(h.Chunk.Source)
		if h.Chunk.Title != "" && h.Chunk.Title != label {
			label += ": " + h.Chunk.Title
		}
		fmt.Fprintf(&sb, "[%d] (%s) %s\n\n", i+1, label, strings.TrimSpace(h.Chunk.Text))
	}
	return sb.String()
}

// SystemPrompt is CiteInstruction followed by the context block: a system
// message that grounds an answer in the hits.
func SystemPrompt(hits []Hit) string {
	return CiteInstruction + "\n\n" + ContextBlock(hits)
}

// Citation is a passage an answer cites.
type Citation struct {
	// N is the passage's number in the context block (1-based).
	N   int `json:"n"`
	Hit Hit `json:"hit"`
}

// citeRef matches [1], [1, 3], [2-4], [1][2] (each bracket on its own).
var (
	citeRef = regexp.MustCompile(`\[\s*(\d+(?:\s*(?:,|;|-|–|and)\s*\d+)*)\s*\]`)
	citeSep = regexp.MustCompile(`\s*(?:,|;|and)\s*`)
)

// Citations returns the passages an answer cites as [n], in the order of
// their first citation, each once. Numbers outside 1..len(hits) are
// ignored.
func Citations(answer string, hits []Hit) []Citation {
	var out []Citation
	seen := map[int]bool{}
	add := func(n int) {
		if n >= 1 && n <= len(hits) && !seen[n] {
			seen[n] = true
			out = append(out, Citation{N: n, Hit: hits[n-1]})
		}
	}
	for _, m := range citeRef.FindAllStringSubmatch(answer, -1) {
		list := m[1]
		for _, part := range citeSep.Split(list, -1) {
			lo, hi, isRange := strings.Cut(strings.ReplaceAll(part, "–", "-"), "-")
			a, err := strconv.Atoi(strings.TrimSpace(lo))
			if err != nil {
				continue
			}
			b := a
			if isRange {
				if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil || b < a || b-a > len(hits) {
					b = a
				}
			}
			for n := a; n <= b; n++ {
				add(n)
			}
		}
	}
	return out
}
