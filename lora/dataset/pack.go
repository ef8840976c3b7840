package dataset

import (
	"math/rand/v2"
)

// Row is one training sequence of packed examples. Labels[i] is the token
// to predict at position i (the next token of the same example when that
// token is trained), or -1.
type Row struct {
	Tokens []int32
	Pos    []int32
	Seg    []int32
	Labels []int32
}

// TrainTokens is the number of labelled positions in the row.
func (r Row) TrainTokens() int {
	n := 0
	for _, l := range r.Labels {
		if l >= 0 {
			n++
		}
	}
	return n
}

// Pack truncates examples longer than ctx (texts should come as Windows
// of at most ctx tokens, which are never truncated) and packs them in
// order into rows of at most ctx tokens (first fit over the open rows, so
// short examples fill gaps). It updates stats with the truncation and row
// counts.
func Pack(examples []Example, ctx int, stats *Stats) []Row {
	type open struct {
		row  Row
		free int
	}
	var rows []*open
	for _, ex := range examples {
		toks, train := ex.Tokens, ex.Train
		stats.Examples++
		if ex.Windowed {
			stats.Windows++
		}
		stats.LongestExample = max(stats.LongestExample, len(toks))
		fresh := len(toks) - ex.Overlap // the tokens no earlier window held
		stats.AvailableTokens += fresh
		if len(toks) > ctx {
			stats.Truncated++
			stats.TruncatedToks += len(toks) - ctx
			fresh -= min(fresh, len(toks)-ctx)
			toks, train = toks[:ctx], train[:ctx]
		}
		stats.UsedTokens += fresh
		trained := 0
		for _, t := range train[1:] {
			if t {
				trained++
			}
		}
		if trained == 0 {
			stats.EmptyAnswers++
		}
		stats.Tokens += len(toks)
		stats.TrainTokens += trained
		var dst *open
		for _, o := range rows {
			if o.free >= len(toks) {
				dst = o
				break
			}
		}
		if dst == nil {
			dst = &open{free: ctx}
			rows = append(rows, dst)
		}
		seg := int32(0)
		if n := len(dst.row.Seg); n > 0 {
			seg = dst.row.Seg[n-1] + 1
		}
		for i, t := range toks {
			label := int32(-1)
			if i+1 < len(toks) && train[i+1] {
				label = toks[i+1]
			}
			dst.row.Tokens = append(dst.row.Tokens, t)
			dst.row.Pos = append(dst.row.Pos, int32(i))
			dst.row.Seg = append(dst.row.Seg, seg)
			dst.row.Labels = append(dst.row.Labels, label)
		}
		dst.free -= len(toks)
	}
	out := make([]Row, len(rows))
	for i, o := range rows {
		out[i] = o.row
		stats.PaddingTokens += o.free
	}
	stats.Rows += len(out)
	return out
}

// Order returns the row order of an epoch: a permutation drawn from seed
// and the epoch number, so a resumed run sees the same order.
func Order(nRows int, seed uint64, epoch int) []int {
	r := rand.New(rand.NewPCG(seed, uint64(epoch)+0x9e3779b97f4a7c15))
	return r.Perm(nRows)
}

// Split holds out every k-th example (k from share) for evaluation.
func Split(examples []Example, share float64) (train, eval []Example) {
	if share <= 0 || len(examples) < 2 {
		return examples, nil
	}
	k := int(1 / share)
	if k < 2 {
		k = 2
	}
	for i, ex := range examples {
		if i%k == k-1 {
			eval = append(eval, ex)
		} else {
			train = append(train, ex)
		}
	}
	return train, eval
}
