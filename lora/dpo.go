package lora

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
)

// DPOBackend trains LoRA pairs with Direct Preference Optimisation on
// rows packed by dataset.PackPairs (pair k of a row: segment 2k the
// chosen answer, 2k+1 the rejected one). The reference model is the base
// without the adapter: the same net with its LoRA terms left out, so no
// second copy of the weights is loaded. Each row's reference
// log-probabilities are computed once and kept. It satisfies Backend and
// PreferenceBackend; the loss it reports is the mean over pairs.
type DPOBackend struct {
	*NetBackend
	beta, sft   float32
	ref         map[uint64][]float32
	train, eval PreferenceStats
}

var _ PreferenceBackend = (*DPOBackend)(nil)

// NewDPOBackend wraps b for DPO with temperature beta (TRL's default is
// 0.1). sft > 0 adds that weight times the chosen answer's mean negative
// log-likelihood to each pair's loss (RPO), which keeps the chosen
// answers likely while the rejected ones are pushed down; 0 is plain DPO.
func NewDPOBackend(b *NetBackend, beta, sft float64) (*DPOBackend, error) {
	if !(beta > 0) || math.IsInf(beta, 0) {
		return nil, fmt.Errorf("lora: DPO beta must be positive, got %v", beta)
	}
	if !(sft >= 0) || math.IsInf(sft, 0) {
		return nil, fmt.Errorf("lora: the chosen answers' loss weight must be >= 0, got %v", sft)
	}
	return &DPOBackend{NetBackend: b, beta: float32(beta), sft: float32(sft), ref: map[uint64][]float32{}}, nil
}

// PreferenceStats are DPO's statistics over some pairs: the implicit
// rewards β(π−ref) of the chosen and rejected answers, their margin and
// the share of pairs whose chosen answer has the higher reward.
type PreferenceStats struct {
	Pairs    int     `json:"pairs"`
	Margin   float64 `json:"reward_margin"`
	Accuracy float64 `json:"reward_accuracy"`
	Chosen   float64 `json:"chosen_reward"`
	Rejected float64 `json:"rejected_reward"`
}

// add folds one pair's rewards into sums (turned into means by mean).
func (s *PreferenceStats) add(chosen, rejected float64) {
	s.Pairs++
	s.Chosen += chosen
	s.Rejected += rejected
	s.Margin += chosen - rejected
	if chosen > rejected {
		s.Accuracy++
	}
}

func (s PreferenceStats) mean() PreferenceStats {
	if s.Pairs == 0 {
		return s
	}
	n := float64(s.Pairs)
	return PreferenceStats{Pairs: s.Pairs, Margin: s.Margin / n, Accuracy: s.Accuracy / n, Chosen: s.Chosen / n, Rejected: s.Rejected / n}
}

// PreferenceBackend is a Backend that trains on preference pairs; the loop
// asks it for the statistics of the rows accumulated (eval false) or
// evaluated (eval true) since the last call, as means over pairs.
type PreferenceBackend interface {
	Backend
	TakePreferenceStats(eval bool) PreferenceStats
}

func rowKey(tokens, seg, labels []int32) uint64 {
	h := fnv.New64a()
	var b [4]byte
	for _, s := range [][]int32{tokens, seg, labels} {
		for _, v := range s {
			binary.LittleEndian.PutUint32(b[:], uint32(v))
			h.Write(b[:])
		}
		h.Write([]byte{0xff})
	}
	return h.Sum64()
}

// reference is the row's per-segment log-probabilities under the base.
func (b *DPOBackend) reference(tokens, pos, seg, labels []int32) ([]float32, error) {
	k := rowKey(tokens, seg, labels)
	if r, ok := b.ref[k]; ok {
		return r, nil
	}
	r, err := b.net.SeqLogProbs(tokens, pos, seg, labels, false)
	if err != nil {
		return nil, fmt.Errorf("reference: %w", err)
	}
	b.ref[k] = r
	return r, nil
}

func (b *DPOBackend) pass(tokens, pos, seg, labels []int32, backward bool, st *PreferenceStats) (float32, int, error) {
	ref, err := b.reference(tokens, pos, seg, labels)
	if err != nil {
		return 0, 0, err
	}
	loss, pi, err := b.net.DPO(tokens, pos, seg, labels, ref, b.beta, b.sft, backward)
	if err != nil {
		return 0, 0, err
	}
	pairs := len(pi) / 2
	for k := 0; k < pairs; k++ {
		st.add(float64(b.beta)*float64(pi[2*k]-ref[2*k]), float64(b.beta)*float64(pi[2*k+1]-ref[2*k+1]))
	}
	if pairs == 0 {
		return 0, 0, nil
	}
	return loss / float32(pairs), pairs, nil
}

// Accumulate adds the gradients of the row's DPO loss; it returns the mean
// loss over the row's pairs and their count.
func (b *DPOBackend) Accumulate(tokens, pos, seg, labels []int32) (float32, int, error) {
	loss, n, err := b.pass(tokens, pos, seg, labels, true, &b.train)
	if err == nil {
		b.rows += n // Step averages the gradients over pairs
	}
	return loss, n, err
}

// Eval is the row's mean DPO loss without gradients.
func (b *DPOBackend) Eval(tokens, pos, seg, labels []int32) (float32, int, error) {
	return b.pass(tokens, pos, seg, labels, false, &b.eval)
}

// TakePreferenceStats returns and clears the statistics since the last call.
func (b *DPOBackend) TakePreferenceStats(eval bool) PreferenceStats {
	p := &b.train
	if eval {
		p = &b.eval
	}
	s := p.mean()
	*p = PreferenceStats{}
	return s
}
