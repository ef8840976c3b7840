package rag

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ChunkOptions control chunking.
type ChunkOptions struct {
	// Size is the most tokens of a chunk, its title included (default 256).
	Size int `json:"size"`
	// Overlap is how many tokens of whole sentences at the end of a chunk
	// are repeated at the start of the next chunk of the same section
	// (default 32; negative for none).
	Overlap int `json:"overlap"`
}

func (o ChunkOptions) withDefaults() ChunkOptions {
	if o.Size <= 0 {
		o.Size = 256
	}
	if o.Overlap == 0 {
		o.Overlap = 32
	}
	if o.Overlap < 0 {
		o.Overlap = 0
	}
	o.Overlap = min(o.Overlap, o.Size/2)
	return o
}

// TokenCounter counts the tokens of a text.
type TokenCounter func(text string) (int, error)

// Piece is a chunk of a document before it is stored: Text[Start:End] of
// the document, under Title, with Tokens tokens (the title not counted).
type Piece struct {
	Title      string
	Start, End int
	Tokens     int
}

// EmbedText is what is embedded for a chunk: its title, a blank line and
// its text.
func EmbedText(title, text string) string {
	if title == "" {
		return text
	}
	return title + "\n\n" + text
}

// Split cuts a document into chunks (see the package doc). Empty sections
// give no chunks.
func Split(doc Document, count TokenCounter, opt ChunkOptions) ([]Piece, error) {
	opt = opt.withDefaults()
	var out []Piece
	for _, sec := range doc.Sections {
		if sec.Start < 0 || sec.End > len(doc.Text) || sec.Start > sec.End {
			return nil, fmt.Errorf("section %q spans %d..%d outside the text (%d bytes)", sec.Title, sec.Start, sec.End, len(doc.Text))
		}
		ps, err := splitSection(doc.Text, sec, count, opt)
		if err != nil {
			return nil, fmt.Errorf("section %q: %w", sec.Title, err)
		}
		out = append(out, ps...)
	}
	return out, nil
}

// unit is the smallest unit packed into chunks: a sentence, or a run of
// words of an over-long sentence.
type unit struct {
	start, end, tokens int
	para               int
}

var blankLines = regexp.MustCompile(`\n[ \t\r\f\v]*\n`)

func splitSection(text string, sec Section, count TokenCounter, opt ChunkOptions) ([]Piece, error) {
	body := text[sec.Start:sec.End]
	if strings.TrimSpace(body) == "" {
		return nil, nil
	}
	budget := opt.Size
	if sec.Title != "" {
		tt, err := count(sec.Title + "\n\n")
		if err != nil {
			return nil, err
		}
		budget = max(opt.Size-tt, opt.Size/2, 1)
	}
	overlap := min(opt.Overlap, budget/2)
	// Small atoms keep overlaps possible inside over-long sentences.
	wordPiece := budget
	if overlap > 0 {
		wordPiece = overlap
	}

	var atoms []unit
	var paraTokens []int
	prev := 0
	seps := blankLines.FindAllStringIndex(body, -1)
	seps = append(seps, []int{len(body), len(body)})
	for _, sep := range seps {
		ps, pe := trimSpan(body, prev, sep[0])
		prev = sep[1]
		if ps >= pe {
			continue
		}
		para := len(paraTokens)
		ptok := 0
		for _, s := range sentences(body, ps, pe) {
			n, err := count(body[s[0]:s[1]])
			if err != nil {
				return nil, err
			}
			if n <= budget {
				atoms = append(atoms, unit{s[0], s[1], n, para})
				ptok += n
				continue
			}
			ws, err := splitWords(body, s[0], s[1], wordPiece, count)
			if err != nil {
				return nil, err
			}
			for _, w := range ws {
				w.para = para
				atoms = append(atoms, w)
				ptok += w.tokens
			}
		}
		paraTokens = append(paraTokens, ptok)
	}

	var out []Piece
	prevBegin := -1
	for i := 0; i < len(atoms); {
		j := i
		total := 0
		if prevBegin >= 0 {
			for j > prevBegin+1 && total+atoms[j-1].tokens <= overlap {
				j--
				total += atoms[j].tokens
			}
		}
		end := i
		for end < len(atoms) && total+atoms[end].tokens <= budget {
			total += atoms[end].tokens
			end++
		}
		if end == i {
			// The next atom does not fit after the overlap: shrink it.
			for j < i && total+atoms[i].tokens > budget {
				total -= atoms[j].tokens
				j++
			}
			end = i + 1
		}
		// Prefer to end at a paragraph boundary when the cut paragraph
		// fits whole in the next chunk.
		if end < len(atoms) && atoms[end].para == atoms[end-1].para {
			p := atoms[end].para
			b := end
			for b > i && atoms[b-1].para == p {
				b--
			}
			if b > i && paraTokens[p] <= budget-overlap {
				end = b
			}
		}
		// The sum of the parts can undercount the whole: check it.
		var n int
		for {
			var err error
			n, err = count(body[atoms[j].start:atoms[end-1].end])
			if err != nil {
				return nil, err
			}
			if n <= budget {
				break
			}
			if end-1 > i {
				end--
			} else if j < i {
				j++
			} else {
				break
			}
		}
		out = append(out, Piece{Title: sec.Title, Start: sec.Start + atoms[j].start, End: sec.Start + atoms[end-1].end, Tokens: n})
		prevBegin = j
		i = end
	}
	return out, nil
}

// trimSpan narrows s[a:b] to exclude leading and trailing white space.
func trimSpan(s string, a, b int) (int, int) {
	for a < b {
		r, n := utf8.DecodeRuneInString(s[a:b])
		if !unicode.IsSpace(r) {
			break
		}
		a += n
	}
	for b > a {
		r, n := utf8.DecodeLastRuneInString(s[a:b])
		if !unicode.IsSpace(r) {
			break
		}
		b -= n
	}
	return a, b
}

// sentences splits s[a:b] (trimmed) into sentence spans: after . ! ? or …
// (and closing quotes or brackets) followed by white space, and before a
// line that starts a list item.
func sentences(s string, a, b int) [][2]int {
	var out [][2]int
	start := a
	for i := a; i < b; {
		r, n := utf8.DecodeRuneInString(s[i:b])
		cut := -1
		switch {
		case r == '.' && listNumber(s[start:i]):
			// "1. item": the dot of a list number ends no sentence.
		case r == '.' || r == '!' || r == '?' || r == '…' || r == '。':
			e := i + n
			for e < b {
				q, m := utf8.DecodeRuneInString(s[e:b])
				if !strings.ContainsRune(`"')]}’”»`, q) {
					break
				}
				e += m
			}
			if e == b {
				break
			}
			if q, _ := utf8.DecodeRuneInString(s[e:b]); unicode.IsSpace(q) || r == '。' {
				cut = e
			}
		case r == '\n':
			if listStart(s[i+1 : b]) {
				cut = i
			}
		}
		if cut < 0 {
			i += n
			continue
		}
		ss, se := trimSpan(s, start, cut)
		if ss < se {
			out = append(out, [2]int{ss, se})
		}
		start = cut
		i = max(cut, i+n)
	}
	if ss, se := trimSpan(s, start, b); ss < se {
		out = append(out, [2]int{ss, se})
	}
	return out
}

// listNumber reports whether the current line of s, up to a dot, is a
// list number ("  12").
func listNumber(s string) bool {
	line := s[strings.LastIndexByte(s, '\n')+1:]
	line = strings.TrimLeft(line, " \t")
	if line == "" || len(line) > 9 {
		return false
	}
	for _, c := range line {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// listStart reports whether a line begins a list item.
func listStart(line string) bool {
	line = strings.TrimLeft(line, " \t")
	if len(line) >= 2 && strings.ContainsRune("-*+•", rune(line[0])) && (line[1] == ' ' || line[1] == '\t') {
		return true
	}
	if strings.HasPrefix(line, "• ") {
		return true
	}
	return orderedItem.MatchString(line)
}

// splitWords cuts s[a:b] into runs of whole words of at most limit tokens
// each (counted word by word); a single word over the limit is cut between
// characters.
func splitWords(s string, a, b, limit int, count TokenCounter) ([]unit, error) {
	var out []unit
	cur := unit{start: -1}
	flush := func() {
		if cur.start >= 0 {
			out = append(out, cur)
		}
		cur = unit{start: -1}
	}
	for i := a; i < b; {
		// The next word: s[ws:we].
		ws := i
		for ws < b {
			r, n := utf8.DecodeRuneInString(s[ws:b])
			if !unicode.IsSpace(r) {
				break
			}
			ws += n
		}
		if ws >= b {
			break
		}
		we := ws
		for we < b {
			r, n := utf8.DecodeRuneInString(s[we:b])
			if unicode.IsSpace(r) {
				break
			}
			we += n
		}
		i = we
		n, err := count(s[ws:we])
		if err != nil {
			return nil, err
		}
		if n > limit {
			flush()
			parts, err := splitRunes(s, ws, we, limit, count)
			if err != nil {
				return nil, err
			}
			out = append(out, parts...)
			continue
		}
		if cur.start >= 0 && cur.tokens+n > limit {
			flush()
		}
		if cur.start < 0 {
			cur.start = ws
		}
		cur.end, cur.tokens = we, cur.tokens+n
	}
	flush()
	return out, nil
}

// splitRunes cuts s[a:b] into pieces of at most limit tokens at character
// boundaries (at least one character each).
func splitRunes(s string, a, b, limit int, count TokenCounter) ([]unit, error) {
	// bounds[k] is the end of the k-th character of s[a:b].
	bounds := []int{a}
	for i := a; i < b; {
		_, n := utf8.DecodeRuneInString(s[i:b])
		i += n
		bounds = append(bounds, i)
	}
	var out []unit
	for k := 0; k < len(bounds)-1; {
		// The longest piece from bounds[k] that fits; one character even
		// if it does not. Pieces are searched within a window that grows
		// until it no longer fits, so a long word costs O(n log n) counts.
		lo, hi := k+1, k+1
		for step := 1; ; step *= 2 {
			next := min(k+step, len(bounds)-1)
			n, err := count(s[bounds[k]:bounds[next]])
			if err != nil {
				return nil, err
			}
			if n > limit {
				hi = next - 1
				break
			}
			lo = next
			if next == len(bounds)-1 {
				hi = next
				break
			}
		}
		for lo < hi {
			mid := (lo + hi + 1) / 2
			n, err := count(s[bounds[k]:bounds[mid]])
			if err != nil {
				return nil, err
			}
			if n <= limit {
				lo = mid
			} else {
				hi = mid - 1
			}
		}
		n, err := count(s[bounds[k]:bounds[lo]])
		if err != nil {
			return nil, err
		}
		out = append(out, unit{start: bounds[k], end: bounds[lo], tokens: n})
		k = lo
	}
	return out, nil
}
