package index

// cand is a node and its distance to the current query (lower is closer).
type cand struct {
	d  float32
	id uint32
}

// minHeap keeps the closest candidate on top: the search frontier.
type minHeap []cand

func (h minHeap) len() int  { return len(h) }
func (h minHeap) top() cand { return h[0] }

func (h *minHeap) push(c cand) {
	s := append(*h, c)
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if s[p].d <= c.d {
			break
		}
		s[i] = s[p]
		i = p
	}
	s[i] = c
	*h = s
}

func (h *minHeap) pop() cand {
	s := *h
	top := s[0]
	n := len(s) - 1
	last := s[n]
	s = s[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		if r := l + 1; r < n && s[r].d < s[l].d {
			l = r
		}
		if last.d <= s[l].d {
			break
		}
		s[i] = s[l]
		i = l
	}
	if n > 0 {
		s[i] = last
	}
	*h = s
	return top
}

// maxHeap keeps the farthest candidate on top: the bounded result set.
type maxHeap []cand

func (h maxHeap) len() int  { return len(h) }
func (h maxHeap) top() cand { return h[0] }

func (h *maxHeap) push(c cand) {
	s := append(*h, c)
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if s[p].d >= c.d {
			break
		}
		s[i] = s[p]
		i = p
	}
	s[i] = c
	*h = s
}

func (h *maxHeap) pop() cand {
	s := *h
	top := s[0]
	n := len(s) - 1
	last := s[n]
	s = s[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		if r := l + 1; r < n && s[r].d > s[l].d {
			l = r
		}
		if last.d >= s[l].d {
			break
		}
		s[i] = s[l]
		i = l
	}
	if n > 0 {
		s[i] = last
	}
	*h = s
	return top
}

// replaceTop replaces the farthest element with c (which must be closer)
// and restores the heap: a push and a pop in one sift.
func (h maxHeap) replaceTop(c cand) {
	n := len(h)
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		if r := l + 1; r < n && h[r].d > h[l].d {
			l = r
		}
		if c.d >= h[l].d {
			break
		}
		h[i] = h[l]
		i = l
	}
	h[i] = c
}

// sortedAsc empties h into dst in ascending distance order.
func (h *maxHeap) sortedAsc(dst []cand) []cand {
	n := h.len()
	if cap(dst) < n {
		dst = make([]cand, n)
	}
	dst = dst[:n]
	for i := n - 1; i >= 0; i-- {
		dst[i] = h.pop()
	}
	return dst
}
